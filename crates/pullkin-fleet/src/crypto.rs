//! Credentials at rest: [`FleetKey`] and the AES-256-GCM sealing of each identity's
//! credentials JSON.
//!
//! The whole credentials document (security token, GCM and FCM tokens, Firebase
//! installation and its refresh token, the Web Push private key and auth secret) is
//! encrypted as one piece with AES-256-GCM under the fleet key, with a fresh random
//! 12-byte nonce per write (a random nonce is safe far beyond the number of writes a
//! fleet makes under one key). The associated data is the identity's id, so a sealed
//! row copied onto another identity does not open. The key never goes into the
//! database; its `key_id` (a SHA-256 fingerprint of the key, truncated) does, so that a
//! worker claims only identities it can open and an operator can see which key a row
//! needs.

use std::path::Path;

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use rand::RngCore;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::error::FleetError;

/// The environment variable naming the key file.
pub const KEY_FILE_ENV: &str = "PULLKIN_FLEET_KEY_FILE";

/// The size of a nonce, in bytes.
pub(crate) const NONCE_LEN: usize = 12;

/// The 32-byte key that encrypts every identity's credentials. Printed as redacted;
/// zeroized when dropped.
#[derive(Clone)]
pub struct FleetKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for FleetKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FleetKey({}, redacted)", self.id())
    }
}

impl FleetKey {
    /// A key from its 32 bytes.
    #[must_use]
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self {
            key: Zeroizing::new(bytes),
        }
    }

    /// A new random key (from the operating system's generator).
    #[must_use]
    pub fn generate() -> Self {
        let mut key = Zeroizing::new([0_u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self { key }
    }

    /// Parses a key file's content: 64 hex characters (surrounding whitespace allowed),
    /// or exactly 32 raw bytes.
    pub fn parse(content: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(content).ok().map(str::trim);
        if let Some(text) = text
            && text.len() == 64
            && text.bytes().all(|b| b.is_ascii_hexdigit())
        {
            let mut key = Zeroizing::new([0_u8; 32]);
            hex::decode_to_slice(text, key.as_mut()).map_err(|e| e.to_string())?;
            return Ok(Self { key });
        }
        if content.len() == 32 {
            let mut key = Zeroizing::new([0_u8; 32]);
            key.copy_from_slice(content);
            return Ok(Self { key });
        }
        Err(format!(
            "expected 64 hex characters or 32 raw bytes, found {} bytes",
            content.len()
        ))
    }

    /// Reads the key from a file (see [`FleetKey::parse`]).
    pub fn from_file(path: &Path) -> Result<Self, FleetError> {
        let content = Zeroizing::new(std::fs::read(path).map_err(|e| FleetError::KeyFile {
            path: path.to_owned(),
            reason: e.to_string(),
        })?);
        Self::parse(&content).map_err(|reason| FleetError::KeyFile {
            path: path.to_owned(),
            reason,
        })
    }

    /// Reads the key from the file `PULLKIN_FLEET_KEY_FILE` names.
    pub fn from_env() -> Result<Self, FleetError> {
        match std::env::var_os(KEY_FILE_ENV) {
            Some(path) if !path.is_empty() => Self::from_file(Path::new(&path)),
            _ => Err(FleetError::MissingKey),
        }
    }

    /// The key as 64 hex characters, to write into a key file.
    #[must_use]
    pub fn to_hex(&self) -> Zeroizing<String> {
        Zeroizing::new(hex::encode(self.key.as_ref()))
    }

    /// The key's fingerprint, stored beside each row it sealed: 16 hex characters of
    /// SHA-256 over a label and the key. It reveals nothing of the key.
    #[must_use]
    pub fn id(&self) -> String {
        let mut hash = Sha256::new();
        hash.update(b"pullkin-fleet key id\0");
        hash.update(self.key.as_ref());
        hex::encode(&hash.finalize()[..8])
    }

    /// Encrypts `plaintext` for identity `identity`: (ciphertext with its tag, nonce).
    pub(crate) fn seal(
        &self,
        identity: i64,
        plaintext: &[u8],
    ) -> Result<(Vec<u8>, Vec<u8>), FleetError> {
        let mut nonce = [0_u8; NONCE_LEN];
        rand::rngs::OsRng.fill_bytes(&mut nonce);
        let aad = associated_data(identity);
        let cipher = Aes256Gcm::new(self.key.as_ref().into());
        // Fails only beyond AES-GCM's 64 GiB message limit.
        let ciphertext = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plaintext,
                    aad: &aad,
                },
            )
            .map_err(|_| FleetError::Credentials("cannot encrypt the credentials".into()))?;
        Ok((ciphertext, nonce.to_vec()))
    }

    /// Decrypts what [`FleetKey::seal`] made for `identity`.
    pub(crate) fn open(
        &self,
        identity: i64,
        ciphertext: &[u8],
        nonce: &[u8],
    ) -> Result<Zeroizing<Vec<u8>>, FleetError> {
        if nonce.len() != NONCE_LEN {
            return Err(FleetError::BadKey { identity });
        }
        let aad = associated_data(identity);
        let cipher = Aes256Gcm::new(self.key.as_ref().into());
        cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| FleetError::BadKey { identity })
    }
}

/// What binds a sealed row to its identity.
fn associated_data(identity: i64) -> Vec<u8> {
    let mut aad = b"pullkin-fleet identity ".to_vec();
    aad.extend_from_slice(&identity.to_be_bytes());
    aad
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn a_key_file_holds_hex_or_raw_bytes() {
        let hex_key = "00112233445566778899aabbccddeeff00112233445566778899AABBCCDDEEFF\n";
        let key = FleetKey::parse(hex_key.as_bytes()).unwrap();
        assert_eq!(key.to_hex().as_str(), hex_key.trim().to_lowercase());
        let raw = [7_u8; 32];
        assert_eq!(FleetKey::parse(&raw).unwrap().key.as_ref(), &raw);
        let error = FleetKey::parse(b"too short").unwrap_err();
        assert!(error.contains("64 hex characters"), "{error}");
    }

    #[test]
    fn a_sealed_row_opens_only_for_its_identity_and_key() {
        let key = FleetKey::generate();
        let (ciphertext, nonce) = key.seal(7, b"{\"secret\":1}").unwrap();
        assert_eq!(
            key.open(7, &ciphertext, &nonce).unwrap().as_slice(),
            b"{\"secret\":1}"
        );
        assert!(matches!(
            key.open(8, &ciphertext, &nonce),
            Err(FleetError::BadKey { identity: 8 })
        ));
        let other = FleetKey::generate();
        let error = other.open(7, &ciphertext, &nonce).unwrap_err();
        assert_eq!(
            error.to_string(),
            "the fleet key does not open identity 7 (wrong key?)"
        );
        // Fresh nonces: the same plaintext never seals the same twice.
        assert_ne!(key.seal(7, b"x").unwrap().1, key.seal(7, b"x").unwrap().1);
    }

    #[test]
    fn the_key_never_shows_in_debug_or_its_id() {
        let key = FleetKey::from_bytes([0xab; 32]);
        let shown = format!("{key:?} {}", key.id());
        assert!(!shown.contains("abab"), "{shown}");
        assert_eq!(key.id().len(), 16);
    }
}
