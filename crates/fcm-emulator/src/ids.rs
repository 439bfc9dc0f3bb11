//! Identifiers in the shapes Google uses.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE_NO_PAD};
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

/// The FID to use for a FID a client sent (docs/protocol.md §7.5): the SDKs' shape (22
/// url-safe characters, first `c`–`f`) as it is; 17 bytes with the high nibble `0111`
/// written in base64 of another variant (the 24 characters of padded standard base64
/// that some clients send, or 23 unpadded, in either alphabet) as the SDKs' shape of
/// the same bytes; anything else is malformed (`None`).
pub(crate) fn canonical_fid(fid: &str) -> Option<String> {
    if is_valid_fid(fid) {
        return Some(fid.to_owned());
    }
    if !(23..=24).contains(&fid.len()) {
        return None;
    }
    let trimmed = fid.strip_suffix('=').unwrap_or(fid);
    let bytes = URL_SAFE_NO_PAD
        .decode(trimmed)
        .or_else(|_| STANDARD_NO_PAD.decode(trimmed))
        .ok()?;
    if bytes.len() != 17 || bytes[0] >> 4 != 0b0111 {
        return None;
    }
    let mut text = URL_SAFE_NO_PAD.encode(bytes);
    text.truncate(22);
    Some(text)
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
    use base64::engine::general_purpose::STANDARD;

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
        // Padded standard base64 of the same 17 bytes, with `+` and `/` in it.
        let bytes = [
            0x7f, 0xef, 0xbf, 0xfb, 0xef, 0xff, 0xfe, 0xfb, 0xbf, 0xfb, 0xff, 0xbe, 0xff, 0xef,
            0xbf, 0xfb, 0xef,
        ];
        let padded = STANDARD.encode(bytes);
        assert_eq!(padded.len(), 24);
        assert!(padded.contains('+') || padded.contains('/'), "{padded}");
        let canonical = canonical_fid(&padded).unwrap();
        assert!(is_valid_fid(&canonical));
        assert_eq!(&canonical, &URL_SAFE_NO_PAD.encode(bytes)[..22]);
        assert_eq!(
            canonical_fid(&canonical).as_deref(),
            Some(canonical.as_str())
        );
        assert_eq!(canonical_fid(padded.trim_end_matches('=')), Some(canonical));
        // Wrong nibble, wrong length, not base64.
        let mut other = bytes;
        other[0] = 0x8f;
        assert_eq!(canonical_fid(&STANDARD.encode(other)), None);
        assert_eq!(canonical_fid(&STANDARD.encode([0x70u8; 18])), None);
        assert_eq!(canonical_fid("************************"), None);
        let t = registration_token(None);
        assert!(t.contains(":APA91b"));
        assert!(t.len() > 140);
    }
}
