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
    DataMessageStanza, Extension, IqStanza, LoginRequest, LoginResponse, SelectiveAck, Setting,
    iq_stanza::IqType,
};
use fcm_emulator::{DeviceCredentials, Emulator};
use fcm_http::HttpClient as _;
use futures_util::{SinkExt, StreamExt};
use mcs_codec::{McsCodec, McsError, McsMessage, SELECTIVE_ACK_EXTENSION, STREAM_ACK_EXTENSION};
use prost::Message as _;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::Framed;

pub const STEP: Duration = Duration::from_secs(5);

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

    pub async fn expect_data(&mut self) -> DataMessageStanza {
        match self.recv().await {
            Some(Ok(McsMessage::DataMessageStanza(d))) => d,
            other => panic!("expected a DataMessageStanza, got {other:?}"),
        }
    }

    /// Asserts the connection ends (EOF or an error) within [`STEP`], skipping frames
    /// of the kinds `allowed` lets through; returns the frames seen.
    pub async fn expect_end(&mut self) -> Vec<McsMessage> {
        let mut seen = Vec::new();
        loop {
            match self.recv().await {
                None | Some(Err(_)) => return seen,
                Some(Ok(m)) => seen.push(m),
            }
        }
    }

    pub async fn stream_ack(&mut self) {
        let iq = IqStanza {
            r#type: IqType::Set as i32,
            id: String::new(),
            extension: Some(Extension {
                id: STREAM_ACK_EXTENSION,
                data: Bytes::new(),
            }),
            ..Default::default()
        };
        self.send(McsMessage::from(iq)).await;
    }

    pub async fn selective_ack(&mut self, ids: &[String]) {
        let data = SelectiveAck { id: ids.to_vec() }.encode_to_vec();
        let iq = IqStanza {
            r#type: IqType::Set as i32,
            id: String::new(),
            extension: Some(Extension {
                id: SELECTIVE_ACK_EXTENSION,
                data: Bytes::from(data),
            }),
            ..Default::default()
        };
        self.send(McsMessage::from(iq)).await;
    }
}

/// An HTTPS client trusting only the emulator's CA.
pub fn http_client(emu: &Emulator) -> fcm_http::Client {
    fcm_http::Client::builder()
        .webpki_roots(false)
        .add_root_certificates_pem(emu.ca_cert_pem().as_bytes())
        .unwrap()
        .timeout(STEP)
        .build()
        .unwrap()
}

/// Sends a request to `path` under the emulator's base URL.
pub async fn request(
    client: &fcm_http::Client,
    emu: &Emulator,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> http::Response<Bytes> {
    let mut builder = http::Request::builder().method(method).uri(format!(
        "{}{}",
        emu.base_url().as_str().trim_end_matches('/'),
        path
    ));
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    client
        .send(builder.body(body.into()).unwrap())
        .await
        .unwrap()
}

pub fn body_text(response: &http::Response<Bytes>) -> String {
    String::from_utf8_lossy(response.body()).into_owned()
}

pub fn body_json(response: &http::Response<Bytes>) -> serde_json::Value {
    serde_json::from_slice(response.body())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", body_text(response)))
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
