#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

mod client;
mod endpoints;
mod error;
mod proxy;
mod retry;
pub mod secret;

pub use client::{
    BoxFuture, Client, ClientBuilder, DEFAULT_CONNECT_TIMEOUT, DEFAULT_MAX_RESPONSE_BYTES,
    DEFAULT_TIMEOUT, HttpClient, RequestTimeout,
};
pub use endpoints::{
    Endpoints, GOOGLE_CHECKIN, GOOGLE_FCM_REGISTRATIONS, GOOGLE_FCM_SEND, GOOGLE_INSTALLATIONS,
    GOOGLE_REGISTER3, join, to_uri,
};
pub use error::{
    BoxError, EXCERPT_LEN, Error, MAX_RETRY_AFTER, excerpt, is_transient_status, retry_after,
};
pub use proxy::{Proxy, ProxyEnv, connect_through};
pub use retry::RetryPolicy;
pub use secret::Secret;

/// Re-exported so that users of this crate's types need not depend on these crates.
pub use {bytes, http, url};
