//! A local stand-in for Google's side of FCM, for tests. This root holds only the public
//! API, re-exported from the modules: the [`Emulator`] facade and its builder, the types
//! they take and return, [`ConnectProxy`] and [`local_server_tls`]. It may name any
//! module; the modules' own arrows are under "Layout" below.
//!
#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod accept;
mod delivery;
mod emulator;
mod error;
mod http;
mod ids;
mod mcs;
mod proxy;
mod shared;
mod state;
mod tls;
mod topics;
mod types;
mod vapid;

pub use emulator::{Emulator, EmulatorBuilder};
pub use error::Error;
pub use proxy::ConnectProxy;
pub use tls::local_server_tls;
pub use topics::{ConditionError, MAX_CONDITION_TOPICS, MAX_TOPIC_LEN, is_valid_topic_name};
pub use types::{
    DeviceCredentials, DeviceInfo, Endpoint, Fault, FcmRegistration, GcmRegistration, HttpFailure,
    IidCommand, Installation, LoginRecord, Notification, Overlap, Persona, SendMessage, Sent,
    Target,
};
pub use vapid::VapidKey;

/// The MCS and checkin protobuf types the emulator's API uses, re-exported.
pub mod proto {
    pub use gcm_checkin::proto::{AndroidCheckinRequest, AndroidCheckinResponse};
    pub use mcs_codec::proto::*;
}

/// The `ErrorInfo.code` the MCS server puts in the LoginResponse of a refused login.
pub const LOGIN_ERROR_CODE: i32 = mcs::LOGIN_ERROR_CODE;

/// Chrome's VAPID key, the default `sender` of web-persona registrations (and the sender
/// [`Emulator::subscribe_web`] registers with).
pub use gcm_checkin::CHROME_VAPID_KEY;
