//! v1 invites: the signed payload, its token encoding and verification.

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::crypto;

/// The JSON inside an `ic://join/<token>` link. Field order is the order
/// claudemesh clients write, so tokens we make look like theirs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvitePayload {
    pub v: u32,
    pub mesh_id: String,
    pub mesh_slug: String,
    pub broker_url: String,
    pub expires_at: i64,
    pub mesh_root_key: String,
    pub role: String,
    pub owner_pubkey: String,
    pub signature: String,
}

impl InvitePayload {
    /// `v|mesh_id|mesh_slug|broker_url|expires_at|mesh_root_key|role|owner_pubkey`
    pub fn signed_text(&self) -> String {
        format!(
            "{}|{}|{}|{}|{}|{}|{}|{}",
            self.v,
            self.mesh_id,
            self.mesh_slug,
            self.broker_url,
            self.expires_at,
            self.mesh_root_key,
            self.role,
            self.owner_pubkey
        )
    }

    /// True when `signature` is the owner key's signature over the payload.
    pub fn signature_valid(&self) -> bool {
        let (Some(key), Some(sig)) = (
            crypto::parse_pubkey(&self.owner_pubkey),
            crypto::parse_signature(&self.signature),
        ) else {
            return false;
        };
        crypto::verify(&key, self.signed_text().as_bytes(), &sig)
    }

    /// Fills `signature` using the owner's hex secret key.
    pub fn sign(&mut self, owner_secret_hex: &str) -> Option<()> {
        self.signature = crypto::sign_hex(owner_secret_hex, self.signed_text().as_bytes())?;
        Some(())
    }

    pub fn to_token(&self) -> String {
        let json = serde_json::to_vec(self).expect("invite payload serialises");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// Decodes a token (with or without the `ic://join/` prefix, padded or
    /// not). `None` when it is not base64url JSON of the right shape.
    pub fn from_token(token: &str) -> Option<InvitePayload> {
        let token = token.strip_prefix("ic://join/").unwrap_or(token);
        let trimmed = token.trim_end_matches('=');
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(trimmed)
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vectors() -> serde_json::Value {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.json");
        serde_json::from_str(&std::fs::read_to_string(path).expect("tests/vectors.json")).unwrap()
    }

    #[test]
    fn libsodium_invite_vector_verifies_and_round_trips() {
        let v = vectors();
        let inv = &v["invite"];
        let payload: InvitePayload = serde_json::from_value(inv["payload"].clone()).unwrap();
        assert_eq!(payload.signed_text(), inv["signedText"].as_str().unwrap());
        assert!(payload.signature_valid());
        assert_eq!(payload.to_token(), inv["token"].as_str().unwrap());
        let decoded = InvitePayload::from_token(inv["link"].as_str().unwrap()).unwrap();
        assert_eq!(decoded, payload);

        let mut resigned = payload.clone();
        resigned
            .sign(inv["owner"]["secretKey"].as_str().unwrap())
            .unwrap();
        assert_eq!(
            resigned.signature, payload.signature,
            "ed25519 is deterministic"
        );
    }

    #[test]
    fn tampered_invites_fail() {
        let v = vectors();
        let payload: InvitePayload =
            serde_json::from_value(v["invite"]["payload"].clone()).unwrap();
        let mut p = payload.clone();
        p.role = "admin".into();
        assert!(!p.signature_valid());
        let mut p = payload.clone();
        p.expires_at += 1;
        assert!(!p.signature_valid());
        let mut p = payload;
        p.signature = "zz".into();
        assert!(!p.signature_valid());
        assert!(InvitePayload::from_token("not base64 !!").is_none());
        assert!(
            InvitePayload::from_token("e30").is_none(),
            "{{}} lacks fields"
        );
    }
}
