#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod aes128gcm;
pub mod aesgcm;
mod b64;
#[cfg(feature = "aws-lc")]
#[cfg_attr(docsrs, doc(cfg(feature = "aws-lc")))]
pub mod backend;
mod ec;
mod error;
mod header;
mod kdf;
mod keys;
mod message;
mod options;

pub use error::Error;
pub use header::{AesGcmParams, DEFAULT_RS, MIN_AESGCM_RS};
pub use keys::{
    AUTH_SECRET_LEN, PRIVATE_KEY_LEN, PUBLIC_KEY_LEN, ReceiverKeys, SenderKeys, SubscriptionKeys,
};
pub use message::{ContentEncoding, Payload, decrypt_message};
pub use options::{DEFAULT_RECORD_SIZE, EncryptOptions};

/// Length of the salt of both encodings.
pub const SALT_LEN: usize = kdf::SALT_LEN;
