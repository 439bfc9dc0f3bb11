#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod checkin;
mod credentials;
mod error;
mod register;
mod send;
mod settings;

/// The protobuf messages of the check-in endpoint, generated from `proto/checkin.proto`
/// and `proto/android_checkin.proto` by `cargo xtask codegen`.
pub mod proto {
    #![allow(missing_docs, unreachable_pub, clippy::all)]
    include!("generated/checkin_proto.rs");
}

pub use checkin::{
    CheckinRequest, CheckinResponse, ChromeBuild, DEFAULT_CHROME_VERSION, check_in,
    parse_checkin_response,
};
pub use credentials::{CheckinCredentials, GcmToken, SecurityToken};
pub use error::{Error, Register3Code};
pub use proto::chrome_build_proto::{Channel, Platform};
pub use register::{
    AndroidRegistration, CHROME_APP, CHROME_VAPID_KEY, DEFAULT_ANDROID_CERT,
    DEFAULT_FIREBASE_APP_NAME, DEFAULT_WEB_BUNDLE, InstallationAuth, Persona, RegisterRequest,
    TOPIC_PREFIX, WebRegistration, firebase_app_name_hash, is_valid_topic_name,
    parse_delete_response, parse_register_response, register, register_with, unregister,
};
pub use settings::{
    CHECKIN_INTERVAL_SETTING, CheckinSettings, DEFAULT_CHECKIN_INTERVAL, MIN_CHECKIN_INTERVAL,
};
