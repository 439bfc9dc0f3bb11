#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod connection;
pub mod core;
pub mod credentials;
mod dial;
mod event;
mod handoff;
pub mod listener;
pub mod message;
mod resume;
pub mod secret;
pub mod session;
pub mod store;
mod tls;

pub use crate::core::{
    DEFAULT_APP_NAME, DEFAULT_REFRESH_MARGIN, DEFAULT_RETRIES, FcmRegisterParams, PullkinCore,
    PullkinCoreBuilder, RegisterParams, Renewal,
};
pub use connection::{ConnectionState, Health};
pub use credentials::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, CredentialsError,
    FirebaseConfig, Persona,
};
pub use event::{Event, Incoming};
pub use listener::{HandlerResult, ListenerConfig, Pullkin};
pub use mcs_codec::proto::DataMessageStanza;
pub use message::{Message, Notification};
pub use secret::Secret;
pub use store::{DirStore, MemoryStore, Store, StoreError};

/// Errors of the `pullkin` facade.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PullkinError {
    /// A setting is unusable.
    #[error("configuration: {0}")]
    Config(String),
    /// The credentials are unusable.
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// An app of that name was added already.
    #[error("app {0:?} was added already")]
    AppExists(String),
    /// No app of that name was added.
    #[error("no app {0:?} was added")]
    UnknownApp(String),
    /// The app's messages already go to another stream or `run`.
    #[error("app {0:?} already has a consumer")]
    AlreadyListening(String),
    /// Check-in or GCM registration failed.
    #[error(transparent)]
    Checkin(#[from] gcm_checkin::Error),
    /// Firebase Installations or FCM registration failed.
    #[error(transparent)]
    Install(#[from] fcm_install::Error),
    /// The HTTP client could not be set up or a request failed.
    #[error(transparent)]
    Http(#[from] fcm_http::Error),
}

impl PullkinError {
    /// How long Google asked to wait before trying again (an HTTP `Retry-After`), for a
    /// failed request whose answer carried one. The retries inside [`PullkinCore`] wait at
    /// least that long; the listener's reconnection does too.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            PullkinError::Checkin(e) => e.retry_after(),
            PullkinError::Install(e) => e.retry_after(),
            PullkinError::Http(e) => e.retry_after(),
            _ => None,
        }
    }
}
