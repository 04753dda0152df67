//! What the load generator puts in a `send`'s `ciphertext`: a 24-byte
//! header (sender index, sequence number, send time in microseconds since
//! the UNIX epoch, each big-endian u64) padded with filler to the requested
//! size, base64 with the standard alphabet. The broker never decodes it; the
//! receiving peer reads the header back to measure latency and spot
//! duplicates and loss.

use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Raw header bytes: sender, sequence, send time.
pub const HEADER_BYTES: usize = 24;
/// The header's base64 length: 24 bytes is a multiple of 3, so the header
/// encodes on its own and the filler's encoding can be appended unchanged.
const HEADER_B64: usize = HEADER_BYTES / 3 * 4;

/// The fixed `nonce` every send carries (24 bytes, base64).
pub const NONCE_B64: &str = "bG9hZGdlbi1ub25jZS0wMTIzNDU2Nzg5";

/// One message's identity and send time, as carried in its ciphertext.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub sender: u64,
    pub seq: u64,
    pub sent_us: u64,
}

/// Microseconds since the UNIX epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Builds ciphertexts of one size; the filler's base64 is computed once.
pub struct Encoder {
    filler_b64: String,
}

impl Encoder {
    /// `payload_bytes` is the raw ciphertext size; at least `HEADER_BYTES`.
    pub fn new(payload_bytes: usize) -> Result<Encoder, String> {
        if payload_bytes < HEADER_BYTES {
            return Err(format!(
                "--payload-bytes must be at least {HEADER_BYTES} (the id and timestamp header)"
            ));
        }
        let filler: Vec<u8> = (0..payload_bytes - HEADER_BYTES)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(7))
            .collect();
        Ok(Encoder {
            filler_b64: STANDARD.encode(filler),
        })
    }

    /// Length of every ciphertext this encoder makes, in base64 characters.
    pub fn encoded_len(&self) -> usize {
        HEADER_B64 + self.filler_b64.len()
    }

    pub fn encode(&self, h: Header) -> String {
        let mut raw = [0u8; HEADER_BYTES];
        raw[..8].copy_from_slice(&h.sender.to_be_bytes());
        raw[8..16].copy_from_slice(&h.seq.to_be_bytes());
        raw[16..].copy_from_slice(&h.sent_us.to_be_bytes());
        let mut out = String::with_capacity(self.encoded_len());
        STANDARD.encode_string(raw, &mut out);
        out.push_str(&self.filler_b64);
        out
    }
}

/// Reads the header back from a received ciphertext; `None` when it is not
/// one of ours.
pub fn decode(ciphertext: &str) -> Option<Header> {
    let head = ciphertext.get(..HEADER_B64)?;
    let mut raw = [0u8; HEADER_BYTES];
    let n = STANDARD.decode_slice(head, &mut raw).ok()?;
    if n != HEADER_BYTES {
        return None;
    }
    let word = |i: usize| u64::from_be_bytes(raw[i..i + 8].try_into().unwrap_or([0; 8]));
    Some(Header {
        sender: word(0),
        seq: word(8),
        sent_us: word(16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_has_the_requested_size() {
        for size in [24, 25, 26, 27, 256, 1000] {
            let enc = Encoder::new(size).unwrap();
            let h = Header {
                sender: 7,
                seq: 123_456,
                sent_us: now_us(),
            };
            let text = enc.encode(h);
            assert_eq!(text.len(), enc.encoded_len());
            let raw = STANDARD.decode(&text).expect("valid standard base64");
            assert_eq!(raw.len(), size);
            assert_eq!(decode(&text), Some(h));
        }
    }

    #[test]
    fn refuses_too_small_and_foreign_payloads() {
        assert!(Encoder::new(23).is_err());
        assert_eq!(decode("Y2lwaGVy"), None);
        assert_eq!(decode(""), None);
        assert_eq!(STANDARD.decode(NONCE_B64).unwrap().len(), 24);
    }
}
