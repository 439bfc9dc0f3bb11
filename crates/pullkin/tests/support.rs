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
