//! `PullkinCore` end to end against `fcm-emulator`: Google's four HTTP APIs at Google's
//! paths, over real TLS with the emulator's CA, for both personas; then the upkeep
//! (token refresh, dead device) against the same server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use fcm_emulator::{Emulator, HttpFailure, Persona as EmulatorPersona};
use fcm_install::AuthToken;
use gcm_checkin::{CHROME_VAPID_KEY, SecurityToken};
use pullkin::{AppCredentials, Persona, RegisterParams};

use crate::support::emulated::{API_KEY, APP_ID, PROJECT, SENDER};
use crate::support::{emulator, emulator_core as core};

fn android() -> RegisterParams {
    RegisterParams::android(SENDER, APP_ID, API_KEY, PROJECT).app_name("com.example.emulated")
}

fn web() -> RegisterParams {
    RegisterParams::web(SENDER, "1:998877665544:web:4567cdef", API_KEY, PROJECT)
}

/// What the emulator knows of `credentials` matches them.
fn assert_known(emulator: &Emulator, credentials: &AppCredentials) {
    let gcm = emulator
        .gcm_registration(credentials.gcm.token.as_str())
        .expect("the emulator knows the GCM token");
    assert_eq!(gcm.android_id, credentials.gcm.android_id);
    let device = emulator.device(credentials.gcm.android_id).unwrap();
    assert_eq!(
        device.credentials.security_token,
        credentials.gcm.security_token.expose()
    );
    let installation = credentials.gcm.installation.as_ref().unwrap();
    let known = emulator.installation(&installation.fid).unwrap();
    assert_eq!(known.project, PROJECT);
    assert!(
        known
            .auth_tokens
            .iter()
            .any(|t| t == installation.auth_token.token())
    );
    let fcm = emulator
        .fcm_registration(credentials.fcm.token().unwrap())
        .expect("the emulator knows the FCM token");
    assert_eq!(fcm.gcm_token, credentials.gcm.token.as_str());
    assert_eq!(fcm.fid, installation.fid);
    assert_eq!(
        fcm.endpoint,
        emulator
            .webpush_endpoint(credentials.gcm.token.as_str())
            .as_str()
    );
    let keys = credentials.keys.receiver_keys().unwrap();
    assert_eq!(fcm.p256dh.trim_end_matches('='), keys.public_key_base64());
    assert_eq!(
        fcm.auth.trim_end_matches('='),
        credentials.keys.secret.expose().as_str()
    );
}

#[tokio::test]
async fn android_persona_registers_end_to_end() {
    let emulator = emulator().await;
    let credentials = core(&emulator).register(&android()).await.unwrap();

    assert!(credentials.fcm.is_success(), "{:?}", credentials.fcm.error);
    assert_known(&emulator, &credentials);
    let gcm = emulator
        .gcm_registration(credentials.gcm.token.as_str())
        .unwrap();
    assert_eq!(gcm.persona, EmulatorPersona::Android);
    assert_eq!(gcm.app, "com.example.emulated");
    assert_eq!(gcm.sender, SENDER);
    assert!(matches!(
        credentials.config.as_ref().unwrap().persona,
        Persona::Android { .. }
    ));
    emulator.shutdown().await;
}

#[tokio::test]
async fn web_persona_registers_end_to_end() {
    let emulator = emulator().await;
    let credentials = core(&emulator).register(&web()).await.unwrap();

    assert!(credentials.fcm.is_success(), "{:?}", credentials.fcm.error);
    assert_known(&emulator, &credentials);
    let gcm = emulator
        .gcm_registration(credentials.gcm.token.as_str())
        .unwrap();
    assert_eq!(gcm.persona, EmulatorPersona::Web);
    assert_eq!(gcm.app, "org.chromium.linux");
    assert_eq!(gcm.sender, CHROME_VAPID_KEY);
    assert_eq!(
        gcm.subtype.as_deref(),
        Some(credentials.gcm.app_id.as_str())
    );
    let fcm = emulator
        .fcm_registration(credentials.fcm.token().unwrap())
        .unwrap();
    assert_eq!(fcm.application_pub_key, None);
    emulator.shutdown().await;
}

#[tokio::test]
async fn transient_register3_errors_are_survived() {
    let emulator = emulator().await;
    emulator.fail_register3(2, "PHONE_REGISTRATION_ERROR");
    let credentials = core(&emulator).register(&android()).await.unwrap();
    assert_known(&emulator, &credentials);
    emulator.shutdown().await;
}

#[tokio::test]
async fn an_fcm_refusal_is_reported_end_to_end() {
    let emulator = emulator().await;
    emulator.fail_next(
        fcm_emulator::Endpoint::CreateRegistration,
        1,
        HttpFailure::Status(403),
    );
    let credentials = core(&emulator).register(&web()).await.unwrap();
    assert!(!credentials.fcm.is_success());
    assert!(credentials.fcm.error.is_some());
    assert!(
        emulator
            .gcm_registration(credentials.gcm.token.as_str())
            .is_some()
    );
    emulator.shutdown().await;
}

#[tokio::test]
async fn renew_keeps_live_credentials_and_refreshes_the_auth_token() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = core.register(&android()).await.unwrap();

    // Fresh credentials: nothing to do.
    let renewal = core.renew(&credentials).await.unwrap();
    assert!(!renewal.changed);
    assert_eq!(renewal.credentials, credentials);
    let checkin = renewal.checkin.expect("the renewal checked in");
    assert_eq!(
        checkin.checkin_interval, None,
        "the emulator sets none at first"
    );

    // The check-in answer's interval is handed on (docs/protocol.md §2.1).
    emulator.set_checkin_interval(Some(Duration::from_secs(3 * 24 * 60 * 60)));
    let renewal = core.renew(&credentials).await.unwrap();
    assert_eq!(
        renewal.checkin.unwrap().checkin_interval,
        Some(Duration::from_secs(3 * 24 * 60 * 60))
    );
    // A token sync makes no check-in.
    assert_eq!(core.sync_token(&credentials).await.unwrap().checkin, None);
    emulator.set_checkin_interval(None);

    // An auth token about to expire is refreshed at the emulator.
    let installation = credentials.gcm.installation.as_mut().unwrap();
    installation.auth_token = AuthToken::new(
        installation.auth_token.token(),
        SystemTime::now() + Duration::from_secs(60),
    );
    let renewal = core.renew(&credentials).await.unwrap();
    assert!(renewal.changed);
    assert!(!renewal.identity_changed);
    let renewed = renewal.credentials.gcm.installation.as_ref().unwrap();
    assert_ne!(
        renewed.auth_token.token(),
        credentials
            .gcm
            .installation
            .as_ref()
            .unwrap()
            .auth_token
            .token()
    );
    assert_known(&emulator, &renewal.credentials);
    emulator.shutdown().await;
}

#[tokio::test]
async fn a_dead_device_is_registered_again_end_to_end() {
    let emulator = emulator().await;
    let core = core(&emulator);
    let mut credentials = core.register(&web()).await.unwrap();
    // A security token the emulator never handed out: the re-check-in is refused.
    credentials.gcm.security_token =
        SecurityToken::new(credentials.gcm.security_token.expose() ^ 1);

    emulator.set_checkin_interval(Some(Duration::from_secs(24 * 60 * 60)));
    let renewal = core.renew(&credentials).await.unwrap();

    assert!(renewal.changed);
    assert!(renewal.identity_changed);
    // The settings of the new device's check-in.
    assert_eq!(
        renewal.checkin.as_ref().unwrap().checkin_interval,
        Some(Duration::from_secs(24 * 60 * 60))
    );
    assert_ne!(
        renewal.credentials.gcm.android_id,
        credentials.gcm.android_id
    );
    assert_ne!(renewal.credentials.gcm.token, credentials.gcm.token);
    assert_eq!(renewal.credentials.config, credentials.config);
    assert_known(&emulator, &renewal.credentials);
    emulator.shutdown().await;
}
