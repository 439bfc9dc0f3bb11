//! Firebase installation ids (FIDs), generated as the Firebase SDKs do.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::RngCore;

/// A fresh random FID: 17 random bytes whose first byte's high nibble is forced to
/// `0b0111`, base64url, first 22 characters. It always matches `^[cdef][\w-]{21}$`.
///
/// ```
/// let fid = fcm_install::generate_fid();
/// assert!(fcm_install::is_valid_fid(&fid));
/// ```
pub fn generate_fid() -> String {
    let mut bytes = [0u8; 17];
    rand::thread_rng().fill_bytes(&mut bytes);
    fid_from_bytes(bytes)
}

/// The FID made from these 17 bytes (the high nibble of the first is replaced).
pub fn fid_from_bytes(mut bytes: [u8; 17]) -> String {
    bytes[0] = 0b0111_0000 | (bytes[0] & 0b0000_1111);
    let mut encoded = URL_SAFE_NO_PAD.encode(bytes);
    encoded.truncate(22);
    encoded
}

/// Whether `fid` has the shape the Firebase SDKs accept: `^[cdef][\w-]{21}$`.
pub fn is_valid_fid(fid: &str) -> bool {
    let bytes = fid.as_bytes();
    bytes.len() == 22
        && matches!(bytes[0], b'c' | b'd' | b'e' | b'f')
        && bytes[1..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_bytes() {
        assert_eq!(fid_from_bytes([0; 17]), "cAAAAAAAAAAAAAAAAAAAAA");
        assert_eq!(
            fid_from_bytes([0xff; 17]),
            "f_______________________"[..22].to_owned()
        );
    }

    #[test]
    fn generated_fids_are_valid_and_differ() {
        let a = generate_fid();
        let b = generate_fid();
        assert_ne!(a, b);
        for _ in 0..1000 {
            let fid = generate_fid();
            assert!(is_valid_fid(&fid), "{fid}");
        }
        assert!(!is_valid_fid("aAAAAAAAAAAAAAAAAAAAAA"));
        assert!(!is_valid_fid("cAAA"));
        assert!(!is_valid_fid("cAAAAAAAAAAAAAAAAAAAA+"));
    }

    proptest::proptest! {
        #[test]
        fn any_bytes_give_a_valid_fid(bytes: [u8; 17]) {
            proptest::prop_assert!(is_valid_fid(&fid_from_bytes(bytes)));
        }
    }
}
