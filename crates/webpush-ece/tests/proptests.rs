//! Property tests: encrypt → decrypt round trips over random sizes, record sizes and
//! padding; arbitrary bytes into every decoder never panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use webpush_ece::{
    AesGcmParams, EncryptOptions, Error, ReceiverKeys, SenderKeys, aes128gcm, aesgcm,
    decrypt_message,
};

/// Key generation is the slow part in debug builds: share one receiver and one sender.
fn keys() -> &'static (ReceiverKeys, SenderKeys) {
    static KEYS: std::sync::OnceLock<(ReceiverKeys, SenderKeys)> = std::sync::OnceLock::new();
    KEYS.get_or_init(|| (ReceiverKeys::generate(), SenderKeys::generate()))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn aes128gcm_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
        rs in prop_oneof![18u32..40, 40u32..5000],
        pad in 0usize..200,
        salt in any::<[u8; 16]>(),
    ) {
        let (receiver, sender) = keys();
        let opts = EncryptOptions::new().record_size(rs).padding(pad);
        let body = aes128gcm::encrypt_with(
            &receiver.subscription_keys(), &plaintext, &opts, sender, &salt,
        ).expect("encrypt");
        let records = body.len() - aes128gcm::HEADER_LEN - 65;
        let rs_len = rs as usize;
        let min_len = plaintext.len() + pad + 17;
        prop_assert!(records >= min_len);
        // Every record but the last is exactly rs bytes; the last holds at least a
        // delimiter and a tag.
        prop_assert!(records.is_multiple_of(rs_len) || records % rs_len >= 17);
        prop_assert_eq!(aes128gcm::decrypt(receiver, &body).expect("decrypt"), plaintext);
    }

    #[test]
    fn aes128gcm_ikm_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
        rs in 18u32..300,
        pad in 0usize..100,
        ikm in proptest::collection::vec(any::<u8>(), 0..48),
        keyid in proptest::collection::vec(any::<u8>(), 0..255),
    ) {
        let opts = EncryptOptions::new().record_size(rs).padding(pad);
        let body = aes128gcm::encrypt_with_ikm(&ikm, &[7; 16], &keyid, &plaintext, &opts)
            .expect("encrypt");
        let (header, _) = aes128gcm::Header::parse(&body).expect("header");
        prop_assert_eq!(header.keyid, &keyid[..]);
        prop_assert_eq!(aes128gcm::decrypt_with_ikm(&ikm, &body).expect("decrypt"), plaintext);
    }

    #[test]
    fn aesgcm_round_trip(
        plaintext in proptest::collection::vec(any::<u8>(), 0..2000),
        rs in prop_oneof![3u32..40, 40u32..5000],
        pad in 0usize..200,
        salt in any::<[u8; 16]>(),
    ) {
        let (receiver, sender) = keys();
        let opts = EncryptOptions::new().record_size(rs).padding(pad);
        let msg = aesgcm::encrypt_with(
            &receiver.subscription_keys(), &plaintext, &opts, sender, &salt,
        ).expect("encrypt");
        // The last record is short: the body never ends on a record boundary.
        prop_assert!(!msg.ciphertext.len().is_multiple_of(rs as usize + 16));
        let plain = aesgcm::decrypt_headers(
            receiver, &msg.crypto_key_header(), &msg.encryption_header(), &msg.ciphertext,
        ).expect("decrypt");
        prop_assert_eq!(plain, plaintext);
    }

    #[test]
    fn tampering_is_detected(
        plaintext in proptest::collection::vec(any::<u8>(), 0..300),
        flip in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (receiver, sender) = keys();
        let mut body = aes128gcm::encrypt_with(
            &receiver.subscription_keys(), &plaintext, &EncryptOptions::new(), sender, &[1; 16],
        ).expect("encrypt");
        // Any bit but those of rs, which RFC 8188 leaves unauthenticated (a larger rs
        // reads a single record the same way).
        let mut i = flip.index(body.len() - 4);
        if i >= 16 { i += 4; }
        if let Some(byte) = body.get_mut(i) { *byte ^= 1 << bit; }
        prop_assert!(aes128gcm::decrypt(receiver, &body).is_err());
    }

    #[test]
    fn arbitrary_aes128gcm_never_panics(payload in proptest::collection::vec(any::<u8>(), 0..300)) {
        let _ = aes128gcm::decrypt_with_ikm(&[0; 16], &payload);
        let _ = aes128gcm::Header::parse(&payload);
    }

    #[test]
    fn arbitrary_aesgcm_never_panics(
        body in proptest::collection::vec(any::<u8>(), 0..300),
        dh in proptest::collection::vec(any::<u8>(), 0..70),
        salt in proptest::collection::vec(any::<u8>(), 0..20),
        rs in any::<u32>(),
    ) {
        let (receiver, _) = keys();
        let _ = aesgcm::decrypt(receiver, &AesGcmParams::new(dh, salt, rs), &body);
    }

    #[test]
    fn arbitrary_headers_never_panic(crypto_key in ".{0,80}", encryption in ".{0,80}") {
        let _ = AesGcmParams::parse(&crypto_key, &encryption);
    }

    #[test]
    fn header_like_strings_never_panic(
        crypto_key in "[ \t,;=\"a-zA-Z0-9_+/-]{0,60}",
        encryption in "[ \t,;=\"a-z0-9_+/-]{0,60}",
    ) {
        if let Ok(p) = AesGcmParams::parse(&crypto_key, &encryption) {
            prop_assert!(p.rs() >= 3);
        }
    }

    #[test]
    fn arbitrary_keys_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        let _ = ReceiverKeys::from_raw(&bytes, &[0; 16]);
        let _ = ReceiverKeys::from_pkcs8_der(&bytes, &bytes);
        let _ = webpush_ece::SubscriptionKeys::from_raw(&bytes, &[0; 16]);
        let text = String::from_utf8_lossy(&bytes);
        let _ = ReceiverKeys::from_base64(&text, &text);
    }
}

#[test]
fn dispatch_without_crypto_key_is_a_typed_error() {
    let (receiver, _) = keys();
    let err = decrypt_message(
        receiver,
        [("encryption", "salt=AAAAAAAAAAAAAAAAAAAAAA")],
        b"x",
    )
    .expect_err("missing crypto-key");
    assert_eq!(err, Error::MissingParameter("crypto-key"));
    let err = decrypt_message(receiver, [("crypto-key", "dh=AAAA")], b"x").expect_err("missing");
    assert_eq!(err, Error::MissingParameter("encryption"));
    let err = decrypt_message(receiver, [("content-encoding", "aesgcm")], b"x").expect_err("x");
    assert_eq!(err, Error::MissingParameter("crypto-key"));
    let err = decrypt_message(receiver, [("content-encoding", "gzip")], b"x").expect_err("x");
    assert_eq!(err, Error::UnsupportedContentEncoding("gzip".into()));
    let deleted = [("message_type", "deleted_messages"), ("total_deleted", "3")];
    assert_eq!(
        decrypt_message(receiver, deleted, b"").expect("plain"),
        webpush_ece::Payload::NotEncrypted
    );
    assert_eq!(
        decrypt_message(receiver, [("content-encoding", "aes128gcm")], b"").expect_err("short"),
        Error::ShortHeader
    );
}

#[test]
fn empty_and_edge_bodies() {
    let (receiver, sender) = keys();
    let sub = receiver.subscription_keys();
    // Exactly one full aesgcm record of plaintext gets an empty trailer record.
    let opts = EncryptOptions::new().record_size(10);
    let msg = aesgcm::encrypt_with(&sub, &[5; 8], &opts, sender, &[0; 16]).expect("encrypt");
    assert_eq!(msg.ciphertext.len(), 26 + 18);
    assert_eq!(
        aesgcm::decrypt(receiver, &msg.params(), &msg.ciphertext).expect("ok"),
        [5; 8]
    );
    // Dropping the trailer is truncation.
    let cut = msg.ciphertext.get(..26).expect("prefix");
    assert_eq!(
        aesgcm::decrypt(receiver, &msg.params(), cut),
        Err(Error::Truncated)
    );
    assert_eq!(
        aesgcm::decrypt(receiver, &msg.params(), &[]),
        Err(Error::ZeroCiphertext)
    );
    // aes128gcm: dropping the final record of a multi-record message is truncation.
    let opts = EncryptOptions::new().record_size(20);
    let body = aes128gcm::encrypt_with(&sub, &[1; 5], &opts, sender, &[0; 16]).expect("encrypt");
    let header = aes128gcm::HEADER_LEN + 65;
    assert_eq!(body.len(), header + 20 + 19);
    let cut = body.get(..header + 20).expect("prefix");
    assert_eq!(aes128gcm::decrypt(receiver, cut), Err(Error::Truncated));
    // Bad record sizes are refused on both sides.
    assert_eq!(
        aes128gcm::encrypt(&sub, b"x", &EncryptOptions::new().record_size(17)),
        Err(Error::InvalidRecordSize)
    );
    assert_eq!(
        aesgcm::encrypt(&sub, b"x", &EncryptOptions::new().record_size(2)).map(|_| ()),
        Err(Error::InvalidRecordSize)
    );
    // Wrong key lengths.
    let short_salt = AesGcmParams::new(*sender.public_key(), [0; 15], 4096);
    assert_eq!(
        aesgcm::decrypt(receiver, &short_salt, &[0; 40]),
        Err(Error::InvalidSalt)
    );
    let short_dh = AesGcmParams::new([4; 64], [0; 16], 4096);
    assert_eq!(
        aesgcm::decrypt(receiver, &short_dh, &[0; 40]),
        Err(Error::InvalidPublicKey)
    );
    let off_curve = AesGcmParams::new([4; 65], [0; 16], 4096);
    assert_eq!(
        aesgcm::decrypt(receiver, &off_curve, &[0; 40]),
        Err(Error::InvalidPublicKey)
    );
}
