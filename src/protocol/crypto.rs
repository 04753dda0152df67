//! ed25519 keys and signatures in the hex forms claudemesh clients use
//! (libsodium: 32-byte public keys, 64-byte secret keys = seed || public).

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use rand::rngs::OsRng;
use rand::RngCore;

/// A public key given as 64 hex characters.
pub fn parse_pubkey(hex_key: &str) -> Option<VerifyingKey> {
    if hex_key.len() != 64 {
        return None;
    }
    let mut bytes = [0u8; 32];
    hex::decode_to_slice(hex_key, &mut bytes).ok()?;
    VerifyingKey::from_bytes(&bytes).ok()
}

/// True when `s` is exactly 64 hex characters (a key's shape, not its math).
pub fn is_pubkey_hex(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A detached signature given as 128 hex characters.
pub fn parse_signature(hex_sig: &str) -> Option<Signature> {
    if hex_sig.len() != 128 {
        return None;
    }
    let mut bytes = [0u8; 64];
    hex::decode_to_slice(hex_sig, &mut bytes).ok()?;
    Some(Signature::from_bytes(&bytes))
}

/// Strict verification (rejects small-order keys and malleable signatures),
/// which libsodium's `crypto_sign_verify_detached` also enforces.
pub fn verify(key: &VerifyingKey, message: &[u8], sig: &Signature) -> bool {
    key.verify_strict(message, sig).is_ok()
}

/// A freshly generated key pair, both halves hex encoded.
#[derive(Clone)]
pub struct KeyPair {
    pub public_hex: String,
    /// seed || public key, the 64-byte form clients keep.
    pub secret_hex: String,
}

impl KeyPair {
    pub fn generate() -> KeyPair {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        let signing = SigningKey::from_bytes(&seed);
        KeyPair {
            public_hex: hex::encode(signing.verifying_key().as_bytes()),
            secret_hex: hex::encode(signing.to_keypair_bytes()),
        }
    }
}

/// Loads a 64-byte (or 32-byte seed) hex secret key.
pub fn signing_key(secret_hex: &str) -> Option<SigningKey> {
    let bytes = hex::decode(secret_hex).ok()?;
    match bytes.len() {
        64 => SigningKey::from_keypair_bytes(bytes.as_slice().try_into().ok()?).ok(),
        32 => Some(SigningKey::from_bytes(bytes.as_slice().try_into().ok()?)),
        _ => None,
    }
}

/// Signs `message` with a hex secret key, returning the hex signature.
pub fn sign_hex(secret_hex: &str, message: &[u8]) -> Option<String> {
    Some(hex::encode(
        signing_key(secret_hex)?.sign(message).to_bytes(),
    ))
}

/// `n` random bytes, base64url without padding (root keys, tokens).
pub fn random_token(n: usize) -> String {
    use base64::Engine;
    let mut buf = vec![0u8; n];
    OsRng.fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_pairs_sign_and_verify() {
        let kp = KeyPair::generate();
        assert_eq!(kp.public_hex.len(), 64);
        assert_eq!(kp.secret_hex.len(), 128);
        assert!(kp.secret_hex.ends_with(&kp.public_hex));
        let sig = sign_hex(&kp.secret_hex, b"hi").unwrap();
        let key = parse_pubkey(&kp.public_hex).unwrap();
        assert!(verify(&key, b"hi", &parse_signature(&sig).unwrap()));
        assert!(!verify(&key, b"ho", &parse_signature(&sig).unwrap()));
    }

    #[test]
    fn shapes_are_checked() {
        assert!(parse_pubkey("zz").is_none());
        assert!(parse_pubkey(&"g".repeat(64)).is_none());
        assert!(parse_signature(&"0".repeat(127)).is_none());
        assert!(is_pubkey_hex(&"aB".repeat(32)));
        assert!(!is_pubkey_hex(&"aB".repeat(31)));
        assert!(signing_key("00").is_none());
    }
}
