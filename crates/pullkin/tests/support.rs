//! Helpers shared by the listener test modules.
#![allow(clippy::expect_used)]

use std::time::Duration;

use pullkin::{ConnectionState, Health};
use tokio::sync::watch;

/// How long a test waits for a state it expects.
const WAIT: Duration = Duration::from_secs(10);

/// Waits (at most 10 s) until the app's connection state matches `wanted`.
pub(crate) async fn wait_for_state(
    health: &mut watch::Receiver<Health>,
    wanted: impl Fn(&ConnectionState) -> bool,
) {
    tokio::time::timeout(WAIT, health.wait_for(|h| wanted(&h.state)))
        .await
        .expect("the state in time")
        .expect("the listener goes on");
}

/// Connected.
pub(crate) fn connected(state: &ConnectionState) -> bool {
    matches!(state, ConnectionState::Connected { .. })
}

/// Waiting to reconnect.
pub(crate) fn backing_off(state: &ConnectionState) -> bool {
    matches!(state, ConnectionState::BackingOff { .. })
}

/// Stopped.
pub(crate) fn stopped(state: &ConnectionState) -> bool {
    matches!(state, ConnectionState::Stopped { .. })
}

/// A core builder for the emulator's endpoints, trusting only its CA.
pub(crate) fn core_builder(emulator: &fcm_emulator::Emulator) -> pullkin::PullkinCoreBuilder {
    pullkin::PullkinCore::builder()
        .endpoints(pullkin_test_support::emulator::endpoints(emulator))
        .webpki_roots(false)
        .add_root_certificates_pem(emulator.ca_cert_pem().as_bytes())
}

/// Listener settings for the emulator's MCS server, reconnecting within 10–100 ms.
pub(crate) fn listener_config(emulator: &fcm_emulator::Emulator) -> pullkin::ListenerConfig {
    let mut config = pullkin::ListenerConfig::default();
    config.mcs_addr = pullkin_test_support::emulator::mcs_addr(emulator);
    config.reconnect = fcm_http::RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100));
    config
}
