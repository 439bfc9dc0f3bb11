//! Differential tests between the two P-256 implementations (only with the `aws-lc`
//! feature): the pure-Rust `p256` and aws-lc-rs must compute the same ECDH for random keys,
//! read each other's messages in both encodings, and refuse the same invalid keys with the
//! same errors.
#![cfg(feature = "aws-lc")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use webpush_ece::backend::Backend;
use webpush_ece::{
    AesGcmParams, EncryptOptions, Error, ReceiverKeys, SenderKeys, aes128gcm, aesgcm,
};

/// A receiver from either generator: aws-lc-rs's (`generate`) or a `p256` scalar drawn from
/// a caller's generator (`generate_with`), or re-imported from its raw scalar.
fn receiver(i: usize) -> ReceiverKeys {
    match i % 3 {
        0 => ReceiverKeys::generate(),
        1 => ReceiverKeys::generate_with(&mut rand::rngs::OsRng),
        _ => {
            let keys = ReceiverKeys::generate();
            ReceiverKeys::from_raw(&keys.private_key_raw()[..], keys.auth_secret()).unwrap()
        }
    }
}

#[test]
fn ecdh_agrees_on_random_keys() {
    for i in 0..48 {
        let a = receiver(i);
        let b = receiver(i + 1);
        let ab_p256 = Backend::P256.ecdh(&a, b.public_key()).unwrap();
        let ab_aws = Backend::AwsLc.ecdh(&a, b.public_key()).unwrap();
        let ba_p256 = Backend::P256.ecdh(&b, a.public_key()).unwrap();
        let ba_aws = Backend::AwsLc.ecdh(&b, a.public_key()).unwrap();
        assert_eq!(*ab_p256, *ab_aws, "round {i}");
        assert_eq!(*ab_p256, *ba_p256, "round {i}");
        assert_eq!(*ab_p256, *ba_aws, "round {i}");
    }
}

#[test]
fn public_keys_agree_between_generators() {
    // The same scalar gives the same public key whichever implementation derived it.
    for i in 0..16 {
        let keys = receiver(i);
        let again = ReceiverKeys::from_pkcs8_der(
            &keys.private_key_pkcs8_der().unwrap(),
            keys.auth_secret(),
        )
        .unwrap();
        assert_eq!(keys.public_key(), again.public_key());
        let sender = SenderKeys::from_raw(&keys.private_key_raw()[..]).unwrap();
        assert_eq!(sender.public_key(), keys.public_key());
    }
}

#[test]
fn active_backend_is_aws_lc() {
    assert_eq!(Backend::ACTIVE, Backend::AwsLc);
    assert_eq!(Backend::ALL.map(Backend::name), ["p256", "aws-lc"]);
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
    fn aes128gcm_across_backends(
        plaintext in proptest::collection::vec(any::<u8>(), 0..3000),
        rs in 18u32..5000,
        pad in 0usize..64,
        salt in any::<[u8; 16]>(),
        seed in 0usize..3,
    ) {
        let keys = receiver(seed);
        let sender = SenderKeys::generate();
        let opts = EncryptOptions::new().record_size(rs).padding(pad);
        let mut bodies = Vec::new();
        for enc in Backend::ALL {
            let body = enc
                .aes128gcm_encrypt_with(&keys.subscription_keys(), &plaintext, &opts, &sender, &salt)
                .unwrap();
            for dec in Backend::ALL {
                prop_assert_eq!(&dec.aes128gcm_decrypt(&keys, &body).unwrap(), &plaintext);
            }
            bodies.push(body);
        }
        // Same sender key and salt: byte-for-byte the same message.
        prop_assert_eq!(&bodies[0], &bodies[1]);
        // The crate-level functions (aws-lc) read the p256 output and vice versa.
        prop_assert_eq!(&aes128gcm::decrypt(&keys, &bodies[0]).unwrap(), &plaintext);
    }

    #[test]
    fn aesgcm_across_backends(
        plaintext in proptest::collection::vec(any::<u8>(), 0..3000),
        rs in 3u32..5000,
        pad in 0usize..64,
        salt in any::<[u8; 16]>(),
        seed in 0usize..3,
    ) {
        let keys = receiver(seed);
        let sender = SenderKeys::generate();
        let opts = EncryptOptions::new().record_size(rs).padding(pad);
        let mut messages = Vec::new();
        for enc in Backend::ALL {
            let msg = enc
                .aesgcm_encrypt_with(&keys.subscription_keys(), &plaintext, &opts, &sender, &salt)
                .unwrap();
            for dec in Backend::ALL {
                prop_assert_eq!(
                    &dec.aesgcm_decrypt(&keys, &msg.params(), &msg.ciphertext).unwrap(),
                    &plaintext
                );
            }
            messages.push(msg);
        }
        prop_assert_eq!(&messages[0], &messages[1]);
        let msg = &messages[0];
        let via_headers = aesgcm::decrypt_headers(
            &keys, &msg.crypto_key_header(), &msg.encryption_header(), &msg.ciphertext,
        ).unwrap();
        prop_assert_eq!(&via_headers, &plaintext);
    }

    #[test]
    fn invalid_sender_keys_fail_alike(
        mut point in any::<[u8; 65]>(),
        prefix in prop_oneof![Just(4u8), any::<u8>()],
    ) {
        point[0] = prefix;
        let keys = receiver(0);
        let p = Backend::P256.ecdh(&keys, &point).map(|s| *s);
        let a = Backend::AwsLc.ecdh(&keys, &point).map(|s| *s);
        prop_assert_eq!(&p, &a);
        // Random bytes are (overwhelmingly) not a point.
        prop_assert_eq!(p, Err(Error::InvalidPublicKey));
    }
}

/// Points that are close to valid: each must be refused by both, with the same error, both
/// by the raw ECDH and inside the two decoders.
#[test]
fn near_valid_points_fail_alike() {
    let keys = ReceiverKeys::generate();
    let valid = *SenderKeys::generate().public_key();
    let mut cases: Vec<Vec<u8>> = Vec::new();
    // The identity / all zeros, an off-curve point, a compressed and a hybrid prefix, a
    // coordinate equal to the field prime, truncated and over-long encodings.
    cases.push([&[4u8][..], &[0; 64]].concat());
    let mut off_curve = valid;
    off_curve[64] ^= 1;
    cases.push(off_curve.to_vec());
    let mut compressed = valid[..33].to_vec();
    compressed[0] = 2 + (valid[64] & 1);
    cases.push(compressed);
    let mut hybrid = valid;
    hybrid[0] = 6 + (valid[64] & 1);
    cases.push(hybrid.to_vec());
    let p =
        hex::decode("ffffffff00000001000000000000000000000000ffffffffffffffffffffffff").unwrap();
    let mut x_is_p = valid;
    x_is_p[1..33].copy_from_slice(&p);
    cases.push(x_is_p.to_vec());
    let mut y_is_p = valid;
    y_is_p[33..].copy_from_slice(&p);
    cases.push(y_is_p.to_vec());
    cases.push(valid[..64].to_vec());
    cases.push([&valid[..], &[0]].concat());
    cases.push(Vec::new());

    for (i, point) in cases.iter().enumerate() {
        for backend in Backend::ALL {
            let err = backend.ecdh(&keys, point).map(|_| ());
            assert_eq!(err, Err(Error::InvalidPublicKey), "case {i}, {backend:?}");
            // aesgcm: the sender key is the `dh` parameter.
            let params = AesGcmParams::new(point.clone(), [1; 16], 4096);
            let err = backend.aesgcm_decrypt(&keys, &params, &[0; 40]);
            assert_eq!(err, Err(Error::InvalidPublicKey), "case {i}, {backend:?}");
        }
        // aes128gcm: the sender key is the header's key id.
        let Ok(keyid_len) = u8::try_from(point.len()) else {
            continue;
        };
        let mut body = vec![0u8; 16];
        body.extend_from_slice(&4096u32.to_be_bytes());
        body.push(keyid_len);
        body.extend_from_slice(point);
        body.extend_from_slice(&[0; 40]);
        for backend in Backend::ALL {
            let err = backend.aes128gcm_decrypt(&keys, &body);
            assert_eq!(err, Err(Error::InvalidPublicKey), "case {i}, {backend:?}");
        }
        assert_eq!(
            aes128gcm::decrypt(&keys, &body),
            Err(Error::InvalidPublicKey),
            "case {i}"
        );
    }
    // The valid point itself goes through both.
    for backend in Backend::ALL {
        assert!(backend.ecdh(&keys, &valid).is_ok());
    }
}

#[test]
fn malformed_dh_is_still_invalid_dh() {
    // Header-level failures come before any ECDH and do not depend on the implementation.
    let keys = ReceiverKeys::generate();
    assert_eq!(
        aesgcm::decrypt_headers(&keys, "dh=A", "salt=AAAAAAAAAAAAAAAAAAAAAA", &[0; 40]),
        Err(Error::InvalidDh)
    );
}
