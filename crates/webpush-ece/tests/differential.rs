//! Differential tests against Mozilla's `ece` crate (OpenSSL backend), an independent
//! implementation: random keys and payloads encrypted by one, decrypted by the other, in
//! both encodings.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use base64::Engine;
use ece::EcKeyComponents;
use ece::legacy::AesGcmEncryptedBlock;
use proptest::prelude::*;
use webpush_ece::{
    ContentEncoding, EncryptOptions, Payload, ReceiverKeys, aes128gcm, aesgcm, decrypt_message,
};

/// A receiver key set made by `ece`, imported into ours.
fn ece_receiver() -> (EcKeyComponents, [u8; 16], ReceiverKeys) {
    let (pair, auth) = ece::generate_keypair_and_auth_secret().expect("ece keys");
    let components = pair.raw_components().expect("components");
    let ours = ReceiverKeys::from_raw(components.private_key(), &auth).expect("import");
    assert_eq!(&ours.public_key()[..], components.public_key());
    (components, auth, ours)
}

/// A receiver key set made by us, exported to `ece`.
fn our_receiver() -> (ReceiverKeys, EcKeyComponents) {
    let ours = ReceiverKeys::generate();
    let components =
        EcKeyComponents::new(ours.private_key_raw().to_vec(), ours.public_key().to_vec());
    (ours, components)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 24,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn ece_aes128gcm_to_us(plaintext in proptest::collection::vec(any::<u8>(), 1..6000)) {
        let (_, auth, ours) = ece_receiver();
        let body = ece::encrypt(ours.public_key(), &auth, &plaintext).expect("ece encrypt");
        prop_assert_eq!(aes128gcm::decrypt(&ours, &body).expect("decrypt"), plaintext.clone());
        let via_app_data = decrypt_message(&ours, [("content-encoding", "aes128gcm")], &body)
            .expect("dispatch");
        prop_assert_eq!(
            via_app_data,
            Payload::Decrypted { encoding: ContentEncoding::Aes128Gcm, plaintext }
        );
    }

    #[test]
    fn us_aes128gcm_to_ece(
        plaintext in proptest::collection::vec(any::<u8>(), 0..3000),
        rs in prop_oneof![18u32..64, 64u32..5000],
        pad in 0usize..300,
    ) {
        let (ours, components) = our_receiver();
        let opts = EncryptOptions::new().record_size(rs).padding(pad);
        let body = aes128gcm::encrypt(&ours.subscription_keys(), &plaintext, &opts)
            .expect("encrypt");
        let plain = ece::decrypt(&components, ours.auth_secret(), &body).expect("ece decrypt");
        prop_assert_eq!(plain, plaintext);
    }

    #[test]
    fn ece_aesgcm_to_us(plaintext in proptest::collection::vec(any::<u8>(), 1..3900)) {
        let (_, auth, ours) = ece_receiver();
        let block = ece::legacy::encrypt_aesgcm(ours.public_key(), &auth, &plaintext)
            .expect("ece encrypt");
        let app_data: Vec<(String, String)> = block
            .headers(None)
            .into_iter()
            .map(|(name, value)| (name.to_ascii_lowercase(), value))
            .collect();
        let body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(block.body())
            .expect("body");
        let payload = decrypt_message(&ours, app_data, &body).expect("decrypt");
        prop_assert_eq!(
            payload,
            Payload::Decrypted { encoding: ContentEncoding::AesGcm, plaintext }
        );
    }

    #[test]
    fn us_aesgcm_to_ece(
        plaintext in proptest::collection::vec(any::<u8>(), 1..3900),
        pad in 0usize..190,
    ) {
        // `ece` reads a single aesgcm record only, with a non-empty plaintext.
        let (ours, components) = our_receiver();
        let opts = EncryptOptions::new().padding(pad);
        let msg = aesgcm::encrypt(&ours.subscription_keys(), &plaintext, &opts).expect("encrypt");
        let block = AesGcmEncryptedBlock::new(
            &msg.sender_public_key,
            &msg.salt,
            msg.rs,
            msg.ciphertext.clone(),
        )
        .expect("block");
        let plain = ece::legacy::decrypt_aesgcm(&components, ours.auth_secret(), &block)
            .expect("ece decrypt");
        prop_assert_eq!(plain, plaintext);
    }
}
