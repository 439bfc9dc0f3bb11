//! Lenient base64: Web Push values arrive URL-safe or standard, padded or not.

use base64::Engine;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// URL-safe decoder that ignores padding (it is stripped first) and tolerates non-zero
/// trailing bits, as Python's and Node's decoders do.
const DECODER: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireNone)
        .with_decode_allow_trailing_bits(true),
);

/// Decodes base64 in either alphabet (even mixed), with or without `=` padding.
///
/// Returns `None` for anything else: other characters, a length that no encoder produces,
/// or padding in the middle.
pub(crate) fn decode(input: &str) -> Option<Vec<u8>> {
    let trimmed = input.trim_end_matches('=');
    // At most two padding characters, and only where padding can be.
    let pad = input.len() - trimmed.len();
    if pad > 2 || (pad > 0 && !input.len().is_multiple_of(4)) {
        return None;
    }
    let normalized: Vec<u8> = trimmed
        .bytes()
        .map(|b| match b {
            b'+' => b'-',
            b'/' => b'_',
            other => other,
        })
        .collect();
    DECODER.decode(normalized).ok()
}

/// Encodes as URL-safe base64 without padding (the Web Push convention).
pub(crate) fn encode(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_every_flavour() {
        let bytes = [0xfb, 0xff, 0xfe, 0x01];
        for s in ["-__-AQ", "-__-AQ==", "+//+AQ", "+//+AQ==", "-/_+AQ"] {
            assert_eq!(decode(s).as_deref(), Some(&bytes[..]), "{s}");
        }
        assert_eq!(decode("").as_deref(), Some(&[][..]));
    }

    #[test]
    fn rejects_garbage() {
        for s in ["a", "ab=c", "AQ===", "AQ=", "A Q", "Zg=Zg==", "!!!!", "="] {
            assert_eq!(decode(s), None, "{s}");
        }
    }
}
