//! Test helpers: a raw MCS client over TLS and an HTTPS client, both trusting the
//! emulator's CA.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::time::Duration;

use bytes::Bytes;
use fcm_emulator::proto::{
    DataMessageStanza, Extension, HeartbeatPing, IqStanza, LoginRequest, LoginResponse,
    SelectiveAck, Setting, iq_stanza::IqType,
};
use fcm_emulator::{DeviceCredentials, Emulator, FcmRegistration};
use fcm_http::HttpClient as _;
use futures_util::{SinkExt, StreamExt};
use mcs_codec::{McsCodec, McsError, McsMessage, SELECTIVE_ACK_EXTENSION, STREAM_ACK_EXTENSION};
use prost::Message as _;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;
use webpush_ece::{Payload, ReceiverKeys, decrypt_message};

pub const STEP: Duration = Duration::from_secs(5);

/// Asserts that `condition` on the emulator's state comes to hold within [`STEP`].
pub async fn eventually(emu: &Emulator, condition: impl FnMut(&Emulator) -> bool) {
    assert!(
        emu.wait_until(STEP, condition).await,
        "the emulator's state did not reach the condition within {STEP:?}"
    );
}

/// A LoginRequest as Chromium sends it.
pub fn login_request(creds: DeviceCredentials, received: &[String]) -> LoginRequest {
    LoginRequest {
        id: "chrome-140.0.7339.16".into(),
        domain: "mcs.android.com".into(),
        user: creds.android_id.to_string(),
        resource: creds.android_id.to_string(),
        auth_token: creds.security_token.to_string(),
        device_id: Some(format!("android-{:x}", creds.android_id)),
        setting: vec![Setting {
            name: "new_vc".into(),
            value: "1".into(),
        }],
        received_persistent_id: received.to_vec(),
        adaptive_heartbeat: Some(false),
        use_rmq2: Some(true),
        auth_service: Some(2),
        network_type: Some(1),
        ..Default::default()
    }
}

pub struct McsClient {
    pub framed: Framed<TlsStream<TcpStream>, McsCodec>,
    /// Frames received (1 after the LoginResponse).
    pub stream_id_in: i32,
}

impl McsClient {
    pub async fn connect(emu: &Emulator) -> Self {
        let tcp = TcpStream::connect(emu.mcs_addr()).await.unwrap();
        let connector = TlsConnector::from(emu.client_tls_config());
        let tls = connector
            .connect(ServerName::try_from("localhost").unwrap(), tcp)
            .await
            .unwrap();
        Self {
            framed: Framed::new(tls, McsCodec::client()),
            stream_id_in: 0,
        }
    }

    /// Connects, logs in and returns the LoginResponse (success or not).
    pub async fn login(
        emu: &Emulator,
        creds: DeviceCredentials,
        received: &[String],
    ) -> (Self, LoginResponse) {
        let mut client = Self::connect(emu).await;
        client
            .send(McsMessage::from(login_request(creds, received)))
            .await;
        match client.recv().await {
            Some(Ok(McsMessage::LoginResponse(r))) => (client, r),
            other => panic!("expected a LoginResponse, got {other:?}"),
        }
    }

    /// Connects and sends a LoginRequest without waiting for the answer.
    pub async fn send_login(emu: &Emulator, creds: DeviceCredentials) -> Self {
        let mut client = Self::connect(emu).await;
        client
            .send(McsMessage::from(login_request(creds, &[])))
            .await;
        client
    }

    /// Logs in and asserts success.
    pub async fn logged_in(emu: &Emulator, creds: DeviceCredentials) -> Self {
        let (client, response) = Self::login(emu, creds, &[]).await;
        assert!(response.error.is_none(), "{response:?}");
        client
    }

    pub async fn send(&mut self, mut message: McsMessage) {
        message.set_last_stream_id_received(self.stream_id_in);
        self.framed.send(message).await.unwrap();
    }

    /// The next frame, panicking after [`STEP`].
    pub async fn recv(&mut self) -> Option<Result<McsMessage, McsError>> {
        tokio::time::timeout(STEP, self.recv_inner())
            .await
            .expect("timed out waiting for a frame")
    }

    /// The next frame, or `Err(())` when nothing arrives within `wait`.
    pub async fn recv_within(
        &mut self,
        wait: Duration,
    ) -> Result<Option<Result<McsMessage, McsError>>, ()> {
        tokio::time::timeout(wait, self.recv_inner())
            .await
            .map_err(|_| ())
    }

    async fn recv_inner(&mut self) -> Option<Result<McsMessage, McsError>> {
        let next = self.framed.next().await;
        if let Some(Ok(_)) = next {
            self.stream_id_in += 1;
        }
        next
    }

    /// Asserts that nothing arrives within `wait`.
    pub async fn expect_silence(&mut self, wait: Duration) {
        if let Ok(frame) = self.recv_within(wait).await {
            panic!("expected silence for {wait:?}, got {frame:?}");
        }
    }

    pub async fn expect_data(&mut self) -> DataMessageStanza {
        match self.recv().await {
            Some(Ok(McsMessage::DataMessageStanza(d))) => d,
            other => panic!("expected a DataMessageStanza, got {other:?}"),
        }
    }

    /// The next `n` frames, each a DataMessageStanza.
    pub async fn expect_data_n(&mut self, n: usize) -> Vec<DataMessageStanza> {
        let mut stanzas = Vec::with_capacity(n);
        for _ in 0..n {
            stanzas.push(self.expect_data().await);
        }
        stanzas
    }

    /// Asserts the connection ends (EOF or an error) within [`STEP`] of each frame;
    /// returns the frames seen before the end.
    pub async fn expect_end(&mut self) -> Vec<McsMessage> {
        let mut seen = Vec::new();
        loop {
            match self.recv().await {
                None | Some(Err(_)) => return seen,
                Some(Ok(m)) => seen.push(m),
            }
        }
    }

    /// Asserts the server sends `Close` and nothing else, then ends the connection.
    pub async fn expect_close(&mut self) {
        let seen = self.expect_end().await;
        assert!(
            matches!(seen.as_slice(), [McsMessage::Close(_)]),
            "{seen:?}"
        );
    }

    /// Sends a HeartbeatPing.
    pub async fn ping(&mut self) {
        self.send(McsMessage::from(HeartbeatPing::default())).await;
    }

    /// Sends an IqStanza of type `set` carrying an extension.
    async fn send_extension(&mut self, id: i32, data: Bytes) {
        let iq = IqStanza {
            r#type: IqType::Set as i32,
            id: String::new(),
            extension: Some(Extension { id, data }),
            ..Default::default()
        };
        self.send(McsMessage::from(iq)).await;
    }

    pub async fn stream_ack(&mut self) {
        self.send_extension(STREAM_ACK_EXTENSION, Bytes::new())
            .await;
    }

    pub async fn selective_ack(&mut self, ids: &[String]) {
        let data = SelectiveAck { id: ids.to_vec() }.encode_to_vec();
        self.send_extension(SELECTIVE_ACK_EXTENSION, Bytes::from(data))
            .await;
    }
}

/// An HTTPS client trusting only the emulator's CA.
pub fn http_client(emu: &Emulator) -> fcm_http::Client {
    http_client_via(emu, None)
}

/// An HTTPS client trusting only the emulator's CA, through an HTTP proxy when given
/// one (`http://[user:pass@]host:port`).
pub fn http_client_via(emu: &Emulator, proxy: Option<&str>) -> fcm_http::Client {
    fcm_http::Client::builder()
        .webpki_roots(false)
        .add_root_certificates_pem(emu.ca_cert_pem().as_bytes())
        .unwrap()
        .timeout(STEP)
        .proxy(proxy.map(|url| fcm_http::Proxy::parse(url).unwrap()))
        .build()
        .unwrap()
}

/// Requests to the emulator's HTTP APIs, by path under its base URL.
pub struct Api {
    pub client: fcm_http::Client,
    base: String,
}

impl Api {
    pub fn new(emu: &Emulator) -> Self {
        Self {
            client: http_client(emu),
            base: emu.base_url().as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// Sends a request to `path` under the base URL.
    pub async fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<Bytes> {
        let mut builder = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        for (name, value) in headers {
            builder = builder.header(*name, *value);
        }
        self.client
            .send(builder.body(body.into()).unwrap())
            .await
            .unwrap()
    }

    pub async fn post(
        &self,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> http::Response<Bytes> {
        self.request("POST", path, headers, body).await
    }
}

pub fn body_text(response: &http::Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

pub fn body_json(response: &http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", body_text(response)))
}

/// Decrypts a stanza's payload with the receiver's keys (`NotEncrypted` for plain
/// `app_data`).
pub fn decrypt(keys: &ReceiverKeys, stanza: &DataMessageStanza) -> Payload {
    let pairs = stanza
        .app_data
        .iter()
        .map(|a| (a.key.as_str(), a.value.as_str()));
    decrypt_message(keys, pairs, stanza.raw_data.as_deref().unwrap_or_default()).unwrap()
}

/// The plaintext of an encrypted stanza.
pub fn decrypted(keys: &ReceiverKeys, stanza: &DataMessageStanza) -> Vec<u8> {
    match decrypt(keys, stanza) {
        Payload::Decrypted { plaintext, .. } => plaintext,
        other => panic!("not encrypted: {other:?}"),
    }
}

/// The JSON plaintext of an encrypted stanza (what `messages:send` encrypts).
pub fn decrypted_json(keys: &ReceiverKeys, stanza: &DataMessageStanza) -> serde_json::Value {
    serde_json::from_slice(&decrypted(keys, stanza)).unwrap()
}

pub fn app_data<'a>(stanza: &'a DataMessageStanza, key: &str) -> Option<&'a str> {
    stanza
        .app_data
        .iter()
        .find(|a| a.key == key)
        .map(|a| a.value.as_str())
}

/// A device with an Android-persona GCM registration; returns its token.
pub fn android_device(emu: &Emulator) -> (DeviceCredentials, String) {
    let creds = emu.create_device();
    let gcm = emu
        .register_gcm(creds.android_id, "com.example.app", Some("1234"), "1234")
        .unwrap();
    (creds, gcm.token)
}

/// A device with an Android-persona GCM registration, logged in over MCS; returns its
/// credentials, its token and the client.
pub async fn android_client(emu: &Emulator) -> (DeviceCredentials, String, McsClient) {
    let (creds, token) = android_device(emu);
    let client = McsClient::logged_in(emu, creds).await;
    (creds, token, client)
}

/// An emulator that knows the API key `AIzaTestKey`, and an [`Api`] for it.
pub async fn keyed_emulator() -> (Emulator, Api) {
    let emu = Emulator::builder()
        .api_key("AIzaTestKey")
        .start()
        .await
        .unwrap();
    let api = Api::new(&emu);
    (emu, api)
}

/// An emulator that accepts Web Push requests without VAPID, and an [`Api`] for it.
pub async fn unsigned_webpush_emulator() -> (Emulator, Api) {
    let emu = Emulator::builder()
        .accept_unsigned_webpush(true)
        .start()
        .await
        .unwrap();
    let api = Api::new(&emu);
    (emu, api)
}

/// A new device subscribed to Web Push with `keys` and Chrome's default key (no
/// application server key).
pub fn subscribe_web(emu: &Emulator, keys: &ReceiverKeys) -> (DeviceCredentials, FcmRegistration) {
    let creds = emu.create_device();
    let fcm = emu
        .subscribe_web(
            creds.android_id,
            &keys.public_key_base64(),
            keys.auth_secret_base64().as_str(),
        )
        .unwrap();
    (creds, fcm)
}

/// Posts a register3 form for a device; returns the body (always HTTP 200).
pub async fn register3(api: &Api, creds: DeviceCredentials, form: &[(&str, &str)]) -> String {
    let auth = format!("AidLogin {}:{}", creds.android_id, creds.security_token);
    let body = url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form)
        .finish();
    let response = api
        .post(
            "/c2dm/register3",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("authorization", &auth),
            ],
            body,
        )
        .await;
    assert_eq!(response.status(), 200);
    body_text(&response)
}
