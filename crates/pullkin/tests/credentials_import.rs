//! Credential files of the Python libraries, read by `AppCredentials::from_python_json`.
//!
//! The fixtures were written from the libraries' documented shapes, with real keys (a
//! fresh P-256 key, PKCS#8 DER, URL-safe base64, as the libraries write it):
//! - `pullkin_credentials.json`: the Python `pullkin` 1.0 `AppCredentials` (`gcm` with
//!   the installation inside it, `fcm` as the FCM registration answer, unpadded keys);
//! - `firebase_messaging_credentials.json`: `firebase-messaging`'s `FcmRegister.register()`
//!   (`keys`, `gcm` with string ids, `fcm.registration`, `fcm.installation`, `config`,
//!   padded keys);
//! - `legacy_camelcase_credentials.json`: the older camelCase shape (`androidId`,
//!   `securityToken`, `fcm.pushSet`) of pullkin 0.x, firebase-messaging 0.1 and
//!   push_receiver.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use pullkin::{AppCredentials, Persona};
use serde_json::Value;
use webpush_ece::{EncryptOptions, SubscriptionKeys, aes128gcm, aesgcm};

const PULLKIN: &str = include_str!("fixtures/pullkin_credentials.json");
const FIREBASE_MESSAGING: &str = include_str!("fixtures/firebase_messaging_credentials.json");
const LEGACY: &str = include_str!("fixtures/legacy_camelcase_credentials.json");

/// Encrypts to the subscription the *file* describes (its `public` and `secret` entries,
/// read independently of the import) and checks that the imported keys decrypt it.
fn assert_keys_decrypt(json: &str, credentials: &AppCredentials) {
    let document: Value = serde_json::from_str(json).unwrap();
    let subscription = SubscriptionKeys::from_base64(
        document["keys"]["public"].as_str().unwrap(),
        document["keys"]["secret"].as_str().unwrap(),
    )
    .unwrap();
    let keys = credentials.keys.receiver_keys().unwrap();
    let plaintext = br#"{"notification":{"title":"moved over","body":"no re-registration"}}"#;

    let message = aesgcm::encrypt(&subscription, plaintext, &EncryptOptions::new()).unwrap();
    let decrypted = aesgcm::decrypt_headers(
        &keys,
        &message.crypto_key_header(),
        &message.encryption_header(),
        &message.ciphertext,
    )
    .unwrap();
    assert_eq!(decrypted, plaintext);

    let body = aes128gcm::encrypt(&subscription, plaintext, &EncryptOptions::new()).unwrap();
    assert_eq!(aes128gcm::decrypt(&keys, &body).unwrap(), plaintext);
}

#[test]
fn reads_python_pullkin_credentials() {
    let credentials = AppCredentials::from_python_json(PULLKIN).unwrap();

    assert_eq!(credentials.gcm.android_id, 5_678_901_234_567_890_123);
    assert_eq!(
        credentials.gcm.security_token.expose(),
        1_234_567_890_123_456_789
    );
    assert_eq!(
        credentials.gcm.token.as_str(),
        "cT1fWc9xQYu:APA91bHh2tM0fJd3r7Y_fixture-pullkin-gcm-token"
    );
    assert_eq!(
        credentials.gcm.app_id,
        "1:123456789012:android:0a1b2c3d4e5f6a7b"
    );
    let installation = credentials.gcm.installation.as_ref().unwrap();
    assert_eq!(installation.fid, "cW2c0fQ9Rk2nL1bXyZa8pQ");
    assert_eq!(
        installation.refresh_token.as_str(),
        "3_AS3qfwLcFixtureRefreshToken"
    );
    assert_eq!(
        installation.auth_token.token(),
        "eyJhbGciOiJFUzI1NiIsInR5cCI6IkpXVCJ9.fixture.signature"
    );
    // The file says how long the token lived, not since when: treat it as due.
    assert!(
        installation
            .auth_token
            .expires_within(SystemTime::now(), Duration::ZERO)
    );
    assert!(credentials.fcm.is_success());
    assert_eq!(
        credentials.fcm.token(),
        Some("fFixtureFcmToken:APA91bFixture")
    );
    assert_eq!(
        credentials.fcm.registration.as_ref().unwrap().name,
        "projects/my-project/registrations/fFixtureFcmToken:APA91bFixture"
    );
    // The seed keeps no Firebase config in its file.
    assert!(credentials.config.is_none());
    assert_keys_decrypt(PULLKIN, &credentials);
}

#[test]
fn reads_firebase_messaging_credentials() {
    let credentials = AppCredentials::from_python_json(FIREBASE_MESSAGING).unwrap();

    // Ids as strings (protobuf JSON of fixed64).
    assert_eq!(credentials.gcm.android_id, 4_987_654_321_098_765_432);
    assert_eq!(
        credentials.gcm.security_token.expose(),
        8_765_432_109_876_543_210
    );
    assert_eq!(
        credentials.gcm.app_id,
        "wp:receiver.push.com#6f1c2a3b-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    );
    assert_eq!(
        credentials.fcm.token(),
        Some("eFixtureFmToken:APA91bFixture")
    );
    let installation = credentials.gcm.installation.as_ref().unwrap();
    assert_eq!(installation.fid, "dX3d1gR0Sl3oM2cYzAb9qR");
    assert_eq!(
        installation.refresh_token.as_str(),
        "3_AS3qfwFmFixtureRefreshToken"
    );
    // `created_at` is a monotonic clock reading: the expiry it gives is long past.
    assert!(
        installation
            .auth_token
            .expires_within(SystemTime::now(), Duration::ZERO)
    );
    // Its `config` lacks the app id and API key: not enough to register again.
    assert!(credentials.config.is_none());
    assert_keys_decrypt(FIREBASE_MESSAGING, &credentials);
}

#[test]
fn reads_firebase_messaging_credentials_with_a_full_config() {
    let mut document: Value = serde_json::from_str(FIREBASE_MESSAGING).unwrap();
    document["config"]["app_id"] = "1:123456789012:web:0a1b2c3d4e5f".into();
    document["config"]["api_key"] = "AIzaSyFixture".into();
    document["config"]["bundle_id"] = "com.example.web".into();
    let credentials = AppCredentials::from_python_json(&document.to_string()).unwrap();
    let config = credentials.config.unwrap();
    assert_eq!(config.project_id, "my-web-project");
    assert_eq!(config.app_id, "1:123456789012:web:0a1b2c3d4e5f");
    assert_eq!(config.api_key, "AIzaSyFixture");
    assert_eq!(
        config.persona,
        Persona::Web {
            bundle: "com.example.web".into()
        }
    );
    assert_eq!(
        config.vapid_key.as_deref(),
        Some(gcm_checkin::CHROME_VAPID_KEY)
    );
}

#[test]
fn reads_the_legacy_camelcase_shape() {
    let credentials = AppCredentials::from_python_json(LEGACY).unwrap();
    assert_eq!(credentials.gcm.android_id, 5_678_901_234_567_890_124);
    assert_eq!(
        credentials.gcm.security_token.expose(),
        123_456_789_012_345_678
    );
    assert_eq!(
        credentials.gcm.app_id,
        "wp:receiver.push.com#0a1b2c3d-4e5f-4a6b-8c7d-8e9f0a1b2c3d"
    );
    assert_eq!(
        credentials.fcm.token(),
        Some("fLegacyFcmToken:APA91bFixture")
    );
    assert!(credentials.gcm.installation.is_none());
    assert_keys_decrypt(LEGACY, &credentials);
}

#[test]
fn from_json_detects_each_shape_and_round_trips() {
    for json in [PULLKIN, FIREBASE_MESSAGING, LEGACY] {
        let imported = AppCredentials::from_json(json).unwrap();
        assert_eq!(imported, AppCredentials::from_python_json(json).unwrap());
        // Written in this crate's format and read back: the same credentials.
        let native = imported.to_json().unwrap();
        let again = AppCredentials::from_json(&native).unwrap();
        assert_eq!(again, imported);
        assert_keys_decrypt(json, &again);
    }
}

#[test]
fn secrets_are_redacted_in_debug_output() {
    let credentials = AppCredentials::from_python_json(PULLKIN).unwrap();
    let document: Value = serde_json::from_str(PULLKIN).unwrap();
    let shown = format!("{credentials:?}");
    for secret in [
        document["keys"]["private"].as_str().unwrap(),
        document["keys"]["secret"].as_str().unwrap(),
        document["gcm"]["token"].as_str().unwrap(),
        document["gcm"]["installation"]["refresh_token"]
            .as_str()
            .unwrap(),
        document["gcm"]["installation"]["auth_token"]
            .as_str()
            .unwrap(),
        document["fcm"]["token"].as_str().unwrap(),
        "1234567890123456789",
    ] {
        assert!(!shown.contains(secret), "{secret} leaks into {shown}");
    }
}

#[test]
fn a_key_that_does_not_match_is_refused() {
    let mut document: Value = serde_json::from_str(PULLKIN).unwrap();
    let other: Value = serde_json::from_str(FIREBASE_MESSAGING).unwrap();
    document["keys"]["public"] = other["keys"]["public"].clone();
    assert!(AppCredentials::from_python_json(&document.to_string()).is_err());
}

#[test]
fn malformed_documents_are_errors() {
    for bad in [
        "",
        "[]",
        r#"{"gcm": {}}"#,
        r#"{"gcm": {"android_id": "x", "security_token": 1, "token": "t"}, "keys": {}}"#,
    ] {
        assert!(AppCredentials::from_python_json(bad).is_err(), "{bad}");
    }
    let mut document: Value = serde_json::from_str(PULLKIN).unwrap();
    document["keys"]["private"] = "bm90IGEga2V5".into();
    assert!(AppCredentials::from_python_json(&document.to_string()).is_err());
}

#[test]
fn absurd_times_neither_panic_nor_fail() {
    let mut document: Value = serde_json::from_str(FIREBASE_MESSAGING).unwrap();
    for (created, lifetime) in [("inf", "1e300"), ("NaN", "-5"), ("1e300", "inf")] {
        document["fcm"]["installation"]["created_at"] = created.into();
        document["fcm"]["installation"]["expires_in"] = lifetime.into();
        let credentials = AppCredentials::from_python_json(&document.to_string()).unwrap();
        let installation = credentials.gcm.installation.unwrap();
        // Unknown expiry: due for a refresh.
        assert!(
            installation
                .auth_token
                .expires_within(SystemTime::now(), Duration::ZERO),
            "{created} {lifetime}"
        );
    }
}
