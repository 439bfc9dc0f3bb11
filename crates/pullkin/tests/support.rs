//! Helpers shared by the test modules.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use mcs_codec::proto::{AppData, DataMessageStanza};
use pullkin::{ConnectionState, Health, Incoming, Pullkin};
use tokio::sync::watch;

/// How long a test waits for a state or a message it expects.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

/// Waits (at most 10 s) for the stream's next message.
pub(crate) async fn next(stream: &mut (impl Stream<Item = Incoming> + Unpin)) -> Incoming {
    tokio::time::timeout(WAIT, stream.next())
        .await
        .expect("a message in time")
        .expect("the stream goes on")
}

/// Shuts the listener down, then the emulator.
pub(crate) async fn shutdown(pullkin: &Pullkin, emulator: &fcm_emulator::Emulator) {
    pullkin.shutdown().await;
    emulator.shutdown().await;
}

/// The MCS server's idle notification (docs/protocol.md §3), without a persistent id.
pub(crate) fn idle_notification() -> DataMessageStanza {
    DataMessageStanza {
        from: "google.com".into(),
        category: "com.google.android.gsf.gtalkservice".into(),
        app_data: vec![AppData {
            key: "IdleNotification".into(),
            value: "true".into(),
        }],
        ..Default::default()
    }
}

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
    config.mcs_endpoints = vec![pullkin_test_support::emulator::mcs_addr(emulator)];
    config.reconnect = fcm_http::RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100));
    config
}

/// A retry policy that waits 1–5 ms between attempts.
pub(crate) fn fast_retry() -> fcm_http::RetryPolicy {
    fcm_http::RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(1))
        .with_max_delay(Duration::from_millis(5))
}

/// A core for wiremock's fake of Google at `server`, retrying within 1–5 ms.
pub(crate) fn wiremock_core(server: &wiremock::MockServer) -> pullkin::PullkinCore {
    pullkin::PullkinCore::builder()
        .endpoints(fcm_http::Endpoints::at(&server.uri()).unwrap())
        .retry(fast_retry())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// A check-in answer for device (`android_id`, `security_token`).
pub(crate) fn checkin_answer(android_id: u64, security_token: u64) -> wiremock::ResponseTemplate {
    use prost::Message;
    let body = gcm_checkin::proto::AndroidCheckinResponse {
        stats_ok: true,
        android_id: Some(android_id),
        security_token: Some(security_token),
        ..Default::default()
    }
    .encode_to_vec();
    wiremock::ResponseTemplate::new(200)
        .insert_header("content-type", "application/x-protobuf")
        .set_body_bytes(body)
}

/// The project the emulator tests register in.
pub(crate) mod emulated {
    pub(crate) const API_KEY: &str = "AIzaSyEmulatorKey";
    pub(crate) const PROJECT: &str = "emulated-project";
    pub(crate) const SENDER: &str = "998877665544";
    pub(crate) const APP_ID: &str = "1:998877665544:android:0123abcd";
}

/// An emulator that knows the API key [`emulated::API_KEY`].
pub(crate) async fn emulator() -> fcm_emulator::Emulator {
    fcm_emulator::Emulator::builder()
        .api_key(emulated::API_KEY)
        .start()
        .await
        .unwrap()
}

/// A core for the emulator, retrying within 1–5 ms, with a 10 s timeout.
pub(crate) fn emulator_core(emulator: &fcm_emulator::Emulator) -> pullkin::PullkinCore {
    core_builder(emulator)
        .retry(fast_retry())
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A listener for the emulator's MCS server listening to `credentials` as `app`, and
/// its stream.
pub(crate) fn listen(
    emulator: &fcm_emulator::Emulator,
    credentials: &pullkin::AppCredentials,
) -> (
    Pullkin,
    std::pin::Pin<Box<impl Stream<Item = Incoming> + use<>>>,
) {
    let pullkin = Pullkin::builder()
        .config(listener_config(emulator))
        .tls(emulator.client_tls_config())
        .build()
        .unwrap();
    pullkin.add_app("app", credentials, []).unwrap();
    let stream = Box::pin(pullkin.listen("app").unwrap());
    (pullkin, stream)
}
