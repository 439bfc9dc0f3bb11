//! Arbitrary text as a `Crypto-Key` line and an `Encryption` line: never a panic, and
//! whatever parses has a usable record size.
#![no_main]

use libfuzzer_sys::fuzz_target;
use webpush_ece::{AesGcmParams, MIN_AESGCM_RS};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (crypto_key, encryption) = text.split_once('\n').unwrap_or((&text, ""));
    if let Ok(params) = AesGcmParams::parse(crypto_key, encryption) {
        assert!(params.rs() >= MIN_AESGCM_RS);
    }
});
