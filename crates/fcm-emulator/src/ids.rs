//! Identifiers in the shapes Google uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::{Rng, RngCore};

static SEQUENCE: AtomicU32 = AtomicU32::new(0);

/// Milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// A unique persistent id: `0:<unix ms>%<16 hex digits>`; the first 8 digits are a
/// process-wide sequence number, so ids never repeat.
pub(crate) fn persistent_id() -> String {
    let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed);
    let noise: u32 = rand::thread_rng().r#gen();
    format!("0:{}%{seq:08x}{noise:08x}", unix_ms())
}

/// A non-zero random id below 2^63 (it travels as an `int64` in some messages).
pub(crate) fn random_id() -> u64 {
    let mut rng = rand::thread_rng();
    loop {
        let id = rng.next_u64() >> 1;
        if id >= 1 << 40 {
            return id;
        }
    }
}

/// `n` random bytes, base64url without padding.
pub(crate) fn random_b64(n: usize) -> String {
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A FID: 17 random bytes with the first byte's high nibble `0b0111`, base64url, first
/// 22 characters (matches `^[cdef][\w-]{21}$`).
pub(crate) fn fid() -> String {
    let mut bytes = [0u8; 17];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes[0] = 0b0111_0000 | (bytes[0] & 0x0f);
    let mut text = URL_SAFE_NO_PAD.encode(bytes);
    text.truncate(22);
    text
}

/// Whether `fid` has the shape the Firebase SDKs generate.
pub(crate) fn is_valid_fid(fid: &str) -> bool {
    let bytes = fid.as_bytes();
    bytes.len() == 22
        && matches!(bytes[0], b'c' | b'd' | b'e' | b'f')
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

/// A GCM/FCM token: `<prefix>:APA91b<random>`, about 160 characters like Google's.
pub(crate) fn registration_token(prefix: Option<&str>) -> String {
    let prefix = prefix.map_or_else(
        || {
            let mut p = random_b64(9);
            p.truncate(11);
            p
        },
        str::to_owned,
    );
    let mut token = format!("{prefix}:APA91b{}", random_b64(102));
    token.truncate(163);
    token
}

/// A FIS auth token, shaped like a JWT.
pub(crate) fn fis_auth_token() -> String {
    format!(
        "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.{}.{}",
        random_b64(96),
        random_b64(64)
    )
}

/// A FIS refresh token.
pub(crate) fn refresh_token() -> String {
    format!("3_{}", random_b64(96))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shapes() {
        let a = persistent_id();
        let b = persistent_id();
        assert_ne!(a, b);
        assert!(a.starts_with("0:"));
        let (_, hex) = a.split_once('%').unwrap();
        assert_eq!(hex.len(), 16);
        for _ in 0..50 {
            assert!(is_valid_fid(&fid()));
            assert!(random_id() > 0);
        }
        assert!(!is_valid_fid("aXXXXXXXXXXXXXXXXXXXXX"));
        let t = registration_token(None);
        assert!(t.contains(":APA91b"));
        assert!(t.len() > 140);
    }
}
