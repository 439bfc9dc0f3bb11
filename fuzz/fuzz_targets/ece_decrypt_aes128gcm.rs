//! Arbitrary bytes as an `aes128gcm` payload, for a Web Push receiver and for the plain
//! RFC 8188 (IKM) form: never a panic. Then an IKM-keyed round trip whose record size,
//! padding and plaintext come from the input, to walk the multi-record paths.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use webpush_ece::{EncryptOptions, ReceiverKeys, aes128gcm};

fn keys() -> &'static ReceiverKeys {
    static KEYS: OnceLock<ReceiverKeys> = OnceLock::new();
    KEYS.get_or_init(|| {
        ReceiverKeys::from_raw(&[0x42; 32], &[0x24; 16]).expect("a valid fixed scalar")
    })
}

fuzz_target!(|data: &[u8]| {
    let _ = aes128gcm::decrypt(keys(), data);
    let _ = aes128gcm::decrypt_with_ikm(&[7; 16], data);

    if let [rs_byte, pad_byte, plaintext @ ..] = data {
        let opts = EncryptOptions::new()
            .record_size(18 + u32::from(*rs_byte))
            .padding(usize::from(*pad_byte));
        let body = aes128gcm::encrypt_with_ikm(&[7; 16], &[1; 16], b"id", plaintext, &opts)
            .expect("valid options encrypt");
        let back = aes128gcm::decrypt_with_ikm(&[7; 16], &body).expect("own output decrypts");
        assert_eq!(back, plaintext);
    }
});
