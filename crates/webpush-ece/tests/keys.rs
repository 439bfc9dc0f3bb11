//! Key import and export, including the credentials the Python `pullkin` and
//! `firebase-messaging` store.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use webpush_ece::{EncryptOptions, Error, ReceiverKeys, SenderKeys, SubscriptionKeys, aes128gcm};

// Made with Python `cryptography` 48 exactly as firebase-messaging / pullkin do:
// urlsafe_b64encode(private_bytes(DER, PKCS8, NoEncryption())),
// urlsafe_b64encode(public_bytes(X962, UncompressedPoint)), urlsafe_b64encode(urandom(16)).
const PY_PRIVATE: &str = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg4SMLAtw2OmVatbOUaoM7cZsJppBk3A9PxdJHiGJhgnihRANCAATNjl04B9iSuO5S908wlqIM4rWwHWabHstUreBgb7NtWTD1-VZUU46K781c2KqIKpcxL_-P7Ej_u9qW4JBnWet2";
const PY_PUBLIC: &str =
    "BM2OXTgH2JK47lL3TzCWogzitbAdZpsey1St4GBvs21ZMPX5VlRTjorvzVzYqogqlzEv_4_sSP-72pbgkGdZ63Y=";
const PY_SECRET: &str = "D8qSBcoDGG_yWLLVvOnfbg==";
// The same key as a SEC1 ECPrivateKey (standard base64), and as the raw scalar.
const PY_SEC1: &str = "MHcCAQEEIOEjCwLcNjplWrWzlGqDO3GbCaaQZNwPT8XSR4hiYYJ4oAoGCCqGSM49AwEHoUQDQgAEzY5dOAfYkrjuUvdPMJaiDOK1sB1mmx7LVK3gYG+zbVkw9flWVFOOiu/NXNiqiCqXMS//j+xI/7valuCQZ1nrdg==";
const PY_RAW_HEX: &str = "e1230b02dc363a655ab5b3946a833b719b09a69064dc0f4fc5d2478862618278";

#[test]
fn python_credentials_load() {
    let keys = ReceiverKeys::from_base64(PY_PRIVATE, PY_SECRET).expect("pkcs8 import");
    keys.check_public_key(PY_PUBLIC)
        .expect("public key matches");
    assert_eq!(
        keys.public_key_base64(),
        PY_PUBLIC.trim_end_matches('='),
        "exported without padding"
    );
    assert_eq!(hex::encode(*keys.private_key_raw()), PY_RAW_HEX);
    // The same key in the other accepted forms.
    let sec1 = ReceiverKeys::from_base64(PY_SEC1, PY_SECRET).expect("sec1 import");
    assert_eq!(sec1.public_key(), keys.public_key());
    let raw = hex::decode(PY_RAW_HEX).expect("hex");
    let from_raw = ReceiverKeys::from_raw(&raw, keys.auth_secret()).expect("raw import");
    assert_eq!(from_raw.public_key(), keys.public_key());
    let from_raw_b64 =
        ReceiverKeys::from_base64(&keys.private_key_base64(), &keys.auth_secret_base64())
            .expect("raw base64 import");
    assert_eq!(from_raw_b64.public_key(), keys.public_key());
    // Our PKCS#8 export reads back, and so does the direct DER entry point.
    let der = keys.private_key_pkcs8_der().expect("export");
    let again = ReceiverKeys::from_pkcs8_der(&der, keys.auth_secret()).expect("reimport");
    assert_eq!(again.public_key(), keys.public_key());
    assert_eq!(
        ReceiverKeys::from_pkcs8_der(&raw, keys.auth_secret()).map(|_| ()),
        Err(Error::InvalidPrivateKey)
    );
}

#[test]
fn wrong_public_key_is_caught() {
    let keys = ReceiverKeys::from_base64(PY_PRIVATE, PY_SECRET).expect("import");
    let other = ReceiverKeys::generate();
    assert_eq!(
        keys.check_public_key(other.public_key()),
        Err(Error::InvalidPublicKey)
    );
    assert_eq!(
        keys.check_public_key("not base64!"),
        Err(Error::InvalidPublicKey)
    );
    keys.check_public_key(keys.public_key())
        .expect("raw bytes match");
}

#[test]
fn bad_keys_are_typed_errors() {
    assert_eq!(
        ReceiverKeys::from_raw(&[0; 32], &[0; 16]).map(|_| ()),
        Err(Error::InvalidPrivateKey),
        "zero scalar"
    );
    assert_eq!(
        ReceiverKeys::from_raw(&[0xff; 32], &[0; 16]).map(|_| ()),
        Err(Error::InvalidPrivateKey),
        "scalar above the group order"
    );
    assert_eq!(
        ReceiverKeys::from_raw(&[1; 33], &[0; 16]).map(|_| ()),
        Err(Error::InvalidPrivateKey),
        "neither a scalar nor DER"
    );
    assert_eq!(
        ReceiverKeys::from_raw(&[1; 32], &[0; 15]).map(|_| ()),
        Err(Error::InvalidAuthSecret)
    );
    assert_eq!(
        ReceiverKeys::from_base64("%%%", PY_SECRET).map(|_| ()),
        Err(Error::InvalidBase64)
    );
    assert_eq!(
        SubscriptionKeys::from_raw(&[4; 65], &[0; 16]).map(|_| ()),
        Err(Error::InvalidPublicKey),
        "off-curve point"
    );
    let keys = ReceiverKeys::generate();
    let compressed_len = &keys.public_key()[..33];
    assert_eq!(
        SubscriptionKeys::from_raw(compressed_len, &[0; 16]).map(|_| ()),
        Err(Error::InvalidPublicKey)
    );
    assert_eq!(
        SenderKeys::from_raw(b"junk").map(|_| ()),
        Err(Error::InvalidPrivateKey)
    );
}

#[test]
fn secrets_are_redacted_in_debug() {
    let keys = ReceiverKeys::from_base64(PY_PRIVATE, PY_SECRET).expect("import");
    let shown = format!("{keys:?} {:?}", keys.subscription_keys());
    assert!(shown.contains("<redacted>"));
    assert!(!shown.contains(PY_SECRET.trim_end_matches('=')));
    assert!(!shown.contains(&keys.auth_secret_base64()[..]));
    assert!(!shown.contains(PY_RAW_HEX));
    assert!(!shown.contains(&webpush_ece_b64(&keys.private_key_raw()[..])));
    let sender = SenderKeys::generate();
    assert!(format!("{sender:?}").contains("<redacted>"));
}

fn webpush_ece_b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn subscription_from_base64_round_trip() {
    let keys = ReceiverKeys::generate();
    let sub = SubscriptionKeys::from_base64(&keys.public_key_base64(), &keys.auth_secret_base64())
        .expect("parse");
    assert_eq!(sub.public_key(), keys.public_key());
    assert_eq!(sub.auth_secret(), keys.auth_secret());
    let body = aes128gcm::encrypt(&sub, b"x", &EncryptOptions::default()).expect("encrypt");
    assert_eq!(aes128gcm::decrypt(&keys, &body).expect("decrypt"), b"x");
    // The wrong auth secret fails authentication.
    let wrong = ReceiverKeys::from_raw(&keys.private_key_raw()[..], &[9; 16]).expect("keys");
    assert_eq!(aes128gcm::decrypt(&wrong, &body), Err(Error::BadTag));
}

#[test]
fn a_raw_scalar_without_its_leading_zero_bytes_is_accepted() {
    // Keys whose scalar starts with zero bytes, as OpenSSL exports them (minimal length).
    let mut found = 0;
    let mut attempts = 0;
    while found < 3 && attempts < 20_000 {
        attempts += 1;
        let keys = ReceiverKeys::generate();
        let raw = keys.private_key_raw();
        if raw[0] != 0 {
            continue;
        }
        found += 1;
        let trimmed: Vec<u8> = raw.iter().copied().skip_while(|b| *b == 0).collect();
        assert!(trimmed.len() < 32);
        let again = ReceiverKeys::from_raw(&trimmed, keys.auth_secret()).unwrap();
        assert_eq!(again.public_key(), keys.public_key());
    }
    assert_eq!(
        found, 3,
        "a key with a leading zero byte in {attempts} attempts"
    );
    assert!(matches!(
        ReceiverKeys::from_raw(&[], &[0; 16]),
        Err(webpush_ece::Error::InvalidPrivateKey)
    ));
}
