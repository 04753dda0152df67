//! Message ids on the wire (PROTOCOL-SESSIONS.md §2): a UUIDv7 read as a
//! 128-bit unsigned integer, written as 22 base62 digits (left-padded with
//! `0`) followed by ten `0`s: 32 characters of `[0-9A-Za-z]`. The alphabet
//! is in ASCII order and every id has the same width, so string order is
//! creation order, and the first 8 characters (what the 1.37 client prints)
//! carry the timestamp.

use uuid::Uuid;

const ALPHABET: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Digits that carry the value: 62^22 > 2^128, 62^21 < 2^128.
const VALUE_DIGITS: usize = 22;
/// The padding after them (the `× 62^10` of the definition).
const PAD: usize = 10;
pub const ID_LEN: usize = VALUE_DIGITS + PAD;
/// The shortest prefix a client may hand back (`message status <prefix>`).
pub const MIN_PREFIX: usize = 8;

fn digit(c: u8) -> Option<u128> {
    match c {
        b'0'..=b'9' => Some(u128::from(c - b'0')),
        b'A'..=b'Z' => Some(u128::from(c - b'A') + 10),
        b'a'..=b'z' => Some(u128::from(c - b'a') + 36),
        _ => None,
    }
}

/// The value of base62 `digits`, if it fits in 128 bits.
fn value(digits: &[u8]) -> Option<u128> {
    digits
        .iter()
        .try_fold(0u128, |acc, &c| acc.checked_mul(62)?.checked_add(digit(c)?))
}

/// The wire form of a message id.
pub fn encode(id: Uuid) -> String {
    let mut u = id.as_u128();
    let mut out = [b'0'; ID_LEN];
    for slot in out[..VALUE_DIGITS].iter_mut().rev() {
        *slot = ALPHABET[(u % 62) as usize];
        u /= 62;
    }
    String::from_utf8(out.to_vec()).expect("ASCII")
}

/// The id a client handed back, or `None` when it is not one of ours
/// (wrong length or alphabet, non-zero padding, over 128 bits).
pub fn decode(s: &str) -> Option<Uuid> {
    let b = s.as_bytes();
    if b.len() != ID_LEN || b[VALUE_DIGITS..].iter().any(|&c| c != b'0') {
        return None;
    }
    value(&b[..VALUE_DIGITS]).map(Uuid::from_u128)
}

/// The ids a prefix of 8 to 31 characters names, as an inclusive range of
/// UUIDs (Postgres orders `uuid` as unsigned big-endian, as here); `None`
/// when nothing can match.
pub fn prefix_range(p: &str) -> Option<(Uuid, Uuid)> {
    let b = p.as_bytes();
    if !(MIN_PREFIX..ID_LEN).contains(&b.len()) || b.iter().any(|&c| digit(c).is_none()) {
        return None;
    }
    if b.len() > VALUE_DIGITS {
        if b[VALUE_DIGITS..].iter().any(|&c| c != b'0') {
            return None;
        }
        let u = Uuid::from_u128(value(&b[..VALUE_DIGITS])?);
        return Some((u, u));
    }
    let scale = 62u128.pow((VALUE_DIGITS - b.len()) as u32);
    let low = value(b)?.checked_mul(scale)?;
    let high = low.saturating_add(scale - 1);
    Some((Uuid::from_u128(low), Uuid::from_u128(high)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn vectors() -> Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    #[test]
    fn the_clients_vectors_round_trip() {
        let v = vectors();
        let cases = v["message_ids"].as_array().unwrap();
        assert_eq!(cases.len(), 3);
        for case in cases {
            let uuid = Uuid::parse_str(case["uuid"].as_str().unwrap()).unwrap();
            let id = case["id"].as_str().unwrap();
            assert_eq!(encode(uuid), id);
            assert_eq!(decode(id), Some(uuid));
        }
    }

    #[test]
    fn ids_sort_by_creation_and_their_prefix_carries_the_time() {
        let a = Uuid::now_v7();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = Uuid::now_v7();
        let (ea, eb) = (encode(a), encode(b));
        assert!(ea < eb);
        assert_ne!(ea[..8], eb[..8], "20 ms apart differ in the first 8");
        assert!(ea.bytes().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn what_is_not_ours_decodes_to_nothing() {
        let ok = "0357S7tR8aKksslUdH6nUq0000000000";
        for bad in [
            "",
            "0357S7tR8aKksslUdH6nUq000000000",   // 31
            "0357S7tR8aKksslUdH6nUq00000000000", // 33
            "0357S7tR8aKksslUdH6nUq0000000001",  // padding
            "0357S7tR8aKksslUdH6nU-0000000000",  // alphabet
            "zzzzzzzzzzzzzzzzzzzzzz0000000000",  // over 128 bits
            "01a2347b-0f78-7078-a471-7ba8d9e57b3c",
        ] {
            assert_eq!(decode(bad), None, "{bad}");
        }
        assert!(decode(ok).is_some());
    }

    #[test]
    fn prefixes_name_a_range_of_ids() {
        let (lo, hi) = prefix_range("0357S7tR").unwrap();
        assert_eq!(lo.to_string(), "01a2347b-0f77-04c9-4644-9add239e4000");
        assert_eq!(hi.to_string(), "01a2347b-0f81-46f6-8aec-7153fe2e7fff");
        let id = Uuid::parse_str("01a2347b-0f78-7078-a471-7ba8d9e57b3c").unwrap();
        assert!(lo <= id && id <= hi);
        let full22 = "0357S7tR8aKksslUdH6nUq";
        assert_eq!(prefix_range(full22), Some((id, id)));
        assert_eq!(prefix_range(&format!("{full22}000")), Some((id, id)));
        assert_eq!(prefix_range(&format!("{full22}001")), None);
        assert_eq!(prefix_range("0357S7t"), None, "under 8");
        assert_eq!(prefix_range("0357S7t_"), None);
        let (_, top) = prefix_range("7n42DGM5").unwrap();
        assert!(top.as_u128() >= Uuid::max().as_u128() - 62u128.pow(14));
        assert_eq!(prefix_range("zzzzzzzz"), None, "past 128 bits");
    }
}
