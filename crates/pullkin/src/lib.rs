#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod connection;
pub mod credentials;
mod event;
pub mod listener;
pub mod message;
pub mod secret;
pub mod session;
pub mod store;

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
}
