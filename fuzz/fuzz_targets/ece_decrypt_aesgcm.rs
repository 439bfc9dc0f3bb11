//! Arbitrary bytes as an FCM data message: `crypto-key` line, `encryption` line, then the
//! body, through the app-data dispatch: never a panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use webpush_ece::{AesGcmParams, ReceiverKeys, aesgcm, decrypt_message};

fn keys() -> &'static ReceiverKeys {
    static KEYS: OnceLock<ReceiverKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        ReceiverKeys::from_raw(&[0x42; 32], &[0x24; 16]).expect("a valid fixed scalar")
    })
}

fuzz_target!(|data: &[u8]| {
    let mut parts = data.splitn(3, |&b| b == b'\n');
    let crypto_key = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let encryption = String::from_utf8_lossy(parts.next().unwrap_or_default());
    let body = parts.next().unwrap_or_default();
    let app_data = [("crypto-key", &*crypto_key), ("encryption", &*encryption)];
    let _ = decrypt_message(keys(), app_data, body);

    // The record layer alone, with a valid sender key and salt and an input-chosen rs.
    if let [a, b, rest @ ..] = data {
        let rs = u32::from(u16::from_be_bytes([*a, *b]));
        let params = AesGcmParams::new(*keys().public_key(), [0; 16], rs);
        let _ = aesgcm::decrypt(keys(), &params, rest);
    }
});
