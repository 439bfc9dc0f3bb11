//! Helpers of the end-to-end tests: an emulator with a [`PullkinCore`] pointed at it, so
//! that registration goes through real HTTPS and listening through real TLS, and nothing
//! touches the internet.
//!
//! The tests live in `tests/tests/`; the `pullkin` command line is tested as a subprocess
//! in `crates/pullkin-cli/tests/`, where cargo builds the binary for its tests.
#![forbid(unsafe_code)]
// A test helper: failing loudly is its job.
#![allow(clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use fcm_emulator::Emulator;
use fcm_http::{Endpoints, RetryPolicy};
use futures_util::{Stream, StreamExt};
use pullkin::{
    AppCredentials, ConnectionState, Incoming, ListenerConfig, Pullkin, PullkinCore, PullkinError,
    RegisterParams, Store,
};

/// How long any single wait of a test may take (each normally takes milliseconds).
pub const WAIT: Duration = Duration::from_secs(10);

/// The project the test devices register with.
pub const PROJECT: &str = "pullkin-e2e";

/// An emulator and a registration core that trusts only its CA.
#[derive(Debug)]
pub struct Harness {
    /// The emulator, in this process.
    pub emulator: Emulator,
    /// A core whose endpoints are the emulator's.
    pub core: PullkinCore,
}

impl Harness {
    /// Starts an emulator and points a core at it.
    pub async fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let emulator = Emulator::start().await?;
        let core = PullkinCore::builder()
            .endpoints(Endpoints::at(emulator.base_url().as_str())?)
            .webpki_roots(false)
            .add_root_certificates_pem(emulator.ca_cert_pem().as_bytes())
            .retry(
                RetryPolicy::default()
                    .with_max_attempts(3)
                    .with_initial_delay(Duration::from_millis(20)),
            )
            .build()?;
        Ok(Self { emulator, core })
    }

    /// Registers an Android-persona device (package `com.example.e2e`).
    pub async fn register_android(&self) -> Result<AppCredentials, PullkinError> {
        let params = RegisterParams::android("42", "1:42:android:0a1b", "AIza-e2e", PROJECT)
            .app_name("com.example.e2e");
        self.core.register(&params).await
    }

    /// Registers a web-persona (Chrome) device.
    pub async fn register_web(&self) -> Result<AppCredentials, PullkinError> {
        let params = RegisterParams::web("42", "1:42:web:0a1b", "AIza-e2e", PROJECT);
        self.core.register(&params).await
    }

    /// A listener on the emulator's MCS server, with `store` (in memory when `None`).
    pub fn listener(&self, store: Option<Arc<dyn Store>>) -> Pullkin {
        let mut config = ListenerConfig::default();
        config.mcs_endpoints = vec![self.emulator.mcs_addr().to_string()];
        config.ack_delay = Duration::from_millis(50);
        self.listener_with(config, store)
    }

    /// A listener with `config` (whose `mcs_endpoints` should be the emulator's) and `store`
    /// (in memory when `None`), trusting the emulator's CA. Panics when it cannot be built.
    pub fn listener_with(&self, config: ListenerConfig, store: Option<Arc<dyn Store>>) -> Pullkin {
        let mut builder = Pullkin::builder()
            .config(config)
            .tls(self.core.tls_config());
        if let Some(store) = store {
            builder = builder.store(store);
        }
        match builder.build() {
            Ok(pullkin) => pullkin,
            Err(error) => panic!("cannot build the listener: {error}"),
        }
    }
}

/// Waits until an app of `pullkin` is connected; panics after [`WAIT`].
pub async fn wait_connected(pullkin: &Pullkin, app: &str) {
    let Some(mut health) = pullkin.health(app) else {
        panic!("no app {app:?}");
    };
    let result = tokio::time::timeout(
        WAIT,
        health.wait_for(|h| matches!(h.state, ConnectionState::Connected { .. })),
    )
    .await
    .map(|waited| waited.map(|_| ()));
    match result {
        Ok(Ok(_)) => {}
        Ok(Err(_)) => panic!("{app}: the listener went away"),
        Err(_) => panic!(
            "{app}: not connected within {WAIT:?}: {:?}",
            health.borrow().state
        ),
    }
}

/// The next message of a stream; panics after [`WAIT`].
pub async fn next(stream: &mut (impl Stream<Item = Incoming> + Unpin)) -> Incoming {
    match tokio::time::timeout(WAIT, stream.next()).await {
        Ok(Some(incoming)) => incoming,
        Ok(None) => panic!("the stream ended"),
        Err(_) => panic!("no message within {WAIT:?}"),
    }
}
