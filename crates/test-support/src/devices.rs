//! Devices in a running [`Emulator`], with the [`AppCredentials`] a registration would
//! leave: a listener given [`Device::credentials`] logs in as the device and receives
//! what the emulator sends to [`Device::token`].

use std::time::Duration;

use fcm_emulator::Emulator;
use fcm_install::{FcmRegistration, FcmToken};
use gcm_checkin::{GcmToken, SecurityToken};
use pullkin::{AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys};
use webpush_ece::ReceiverKeys;

/// The app id of [`web_device`]: Chrome's on Linux.
pub const WEB_APP_ID: &str = "org.chromium.linux";
/// The app id of [`android_device`].
pub const ANDROID_APP_ID: &str = "com.example.app";
/// The sender id [`android_device`] registers for.
pub const ANDROID_SENDER_ID: &str = "1234567890";

/// A device created in the emulator and registered for one app.
#[derive(Clone)]
pub struct Device {
    /// What `pullkin` needs to listen as this device's app.
    pub credentials: AppCredentials,
    /// The Web Push keys of the credentials (a web device's subscription is made with
    /// them; an Android device has them too, unused by plain payloads).
    pub keys: ReceiverKeys,
    /// The FCM token (web) or GCM token (Android) senders target.
    pub token: String,
    /// The emulator's id of the device.
    pub android_id: u64,
}

/// A web-persona device (app [`WEB_APP_ID`]) subscribed with fresh keys, as `register`
/// would leave it: aesgcm and aes128gcm payloads.
///
/// # Panics
///
/// If the emulator refuses the subscription, or the keys cannot be exported.
pub fn web_device(emulator: &Emulator) -> Device {
    let device = emulator.create_device();
    let keys = ReceiverKeys::generate();
    let fcm = emulator
        .subscribe_web(
            device.android_id,
            &keys.public_key_base64(),
            &keys.auth_secret_base64(),
        )
        .expect("the emulator subscribes a new web device");
    let credentials = AppCredentials {
        gcm: AppCredentialsGcm {
            token: GcmToken::new(fcm.gcm_token.clone()),
            app_id: WEB_APP_ID.into(),
            android_id: device.android_id,
            security_token: SecurityToken::new(device.security_token),
            installation: None,
        },
        fcm: AppCredentialsFcm {
            registration: Some(FcmRegistration::new(
                format!("projects/p/registrations/{}", fcm.token),
                FcmToken::new(fcm.token.clone()),
            )),
            error: None,
        },
        keys: AppCredentialsKeys::from_keys(&keys).expect("fresh keys can be exported"),
        config: None,
    };
    Device {
        credentials,
        keys,
        token: fcm.token,
        android_id: device.android_id,
    }
}

/// An Android-persona device (app [`ANDROID_APP_ID`], sender [`ANDROID_SENDER_ID`], no
/// FCM registration): plain payloads.
///
/// # Panics
///
/// If the emulator refuses the registration, or the keys cannot be exported.
pub fn android_device(emulator: &Emulator) -> Device {
    let device = emulator.create_device();
    let gcm = emulator
        .register_gcm(device.android_id, ANDROID_APP_ID, None, ANDROID_SENDER_ID)
        .expect("the emulator registers a new Android device");
    let keys = ReceiverKeys::generate();
    let credentials = AppCredentials {
        gcm: AppCredentialsGcm {
            token: GcmToken::new(gcm.token.clone()),
            app_id: ANDROID_APP_ID.into(),
            android_id: device.android_id,
            security_token: SecurityToken::new(device.security_token),
            installation: None,
        },
        fcm: AppCredentialsFcm::default(),
        keys: AppCredentialsKeys::from_keys(&keys).expect("fresh keys can be exported"),
        config: None,
    };
    Device {
        credentials,
        keys,
        token: gcm.token,
        android_id: device.android_id,
    }
}

/// Waits until the emulator has nothing unacknowledged or pending for `device`.
///
/// # Panics
///
/// If something still is after `within`.
pub async fn wait_acked(emulator: &Emulator, device: &Device, within: Duration) {
    assert!(
        emulator
            .wait_until(within, |e| e.unacked_ids(device.android_id).is_empty()
                && e.pending_ids(device.android_id).is_empty())
            .await,
        "the emulator saw every message acknowledged"
    );
}
