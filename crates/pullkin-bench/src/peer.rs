//! Bench-only MCS servers on `mcs-codec`: a line-rate writer of pre-encoded frames, a
//! paced writer for latency, and an idle server for many connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use mcs_codec::proto::{AppData, DataMessageStanza, HeartbeatAck, LoginResponse};
use mcs_codec::{McsCodec, McsMessage, Role};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::{Decoder, Encoder, Framed, FramedRead};
use webpush_ece::{EncryptOptions, ReceiverKeys};

use crate::Result;

/// What the data messages carry.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Payload {
    Plain,
    AesGcm,
    Aes128Gcm,
}

impl Payload {
    pub(crate) fn parse(name: &str) -> Result<Self> {
        match name {
            "plain" => Ok(Self::Plain),
            "aesgcm" => Ok(Self::AesGcm),
            "aes128gcm" => Ok(Self::Aes128Gcm),
            other => Err(format!("unknown payload {other:?}")),
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Plain => "plain",
            Self::AesGcm => "aesgcm",
            Self::Aes128Gcm => "aes128gcm",
        }
    }
}

fn app_data(pairs: &[(&str, String)]) -> Vec<AppData> {
    pairs
        .iter()
        .map(|(k, v)| AppData {
            key: (*k).to_owned(),
            value: v.clone(),
        })
        .collect()
}

/// A realistic data message of ~300–500 bytes.
pub(crate) fn stanza(i: usize, payload: &(Vec<AppData>, Option<Bytes>)) -> DataMessageStanza {
    let mut app_data = payload.0.clone();
    if payload.1.is_none() {
        app_data.push(AppData {
            key: "n".into(),
            value: i.to_string(),
        });
    }
    DataMessageStanza {
        id: Some(format!("bench-{i}")),
        from: "1234567890".into(),
        category: "org.chromium.linux".into(),
        persistent_id: Some(format!("0:17001234{i:08}%7031b2e6f9fd7ecd")),
        app_data,
        sent: Some(1_700_123_456_789),
        ttl: Some(2_419_200),
        raw_data: payload.1.clone(),
        ..Default::default()
    }
}

/// The per-message parts that stay the same: app data and (encrypted) raw data.
pub(crate) fn template(
    payload: Payload,
    keys: &ReceiverKeys,
) -> Result<(Vec<AppData>, Option<Bytes>)> {
    let body = json!({
        "data": {"kind": payload.name(), "text": "x".repeat(160)},
        "from": "1234567890",
        "priority": "normal",
        "fcmMessageId": "0f0e0d0c-0b0a-0908-0706-050403020100",
        "notification": {"title": "Bench", "body": "A message of the benchmark"},
    })
    .to_string();
    let subscription = keys.subscription_keys();
    match payload {
        Payload::Plain => Ok((
            app_data(&[
                ("google.message_id", "0:1700123456%7031b2e6".into()),
                ("gcm.notification.title", "Bench".into()),
                ("gcm.notification.body", "A message of the benchmark".into()),
                ("text", "x".repeat(160)),
            ]),
            None,
        )),
        Payload::AesGcm => {
            let message = webpush_ece::aesgcm::encrypt(
                &subscription,
                body.as_bytes(),
                &EncryptOptions::new(),
            )
            .map_err(|e| e.to_string())?;
            Ok((
                app_data(&[
                    ("crypto-key", message.crypto_key_header()),
                    ("encryption", message.encryption_header()),
                    ("subtype", "wp:receiver.push.com#bench".into()),
                ]),
                Some(Bytes::from(message.ciphertext)),
            ))
        }
        Payload::Aes128Gcm => {
            let ciphertext = webpush_ece::aes128gcm::encrypt(
                &subscription,
                body.as_bytes(),
                &EncryptOptions::new(),
            )
            .map_err(|e| e.to_string())?;
            Ok((
                app_data(&[
                    ("content-encoding", "aes128gcm".into()),
                    ("subtype", "wp:receiver.push.com#bench".into()),
                ]),
                Some(Bytes::from(ciphertext)),
            ))
        }
    }
}

pub(crate) fn bare_codec() -> McsCodec {
    McsCodec::builder()
        .role(Role::Server)
        .version_exchange(false)
        .new_codec()
}

/// A running bench peer.
pub(crate) struct Peer {
    pub(crate) addr: SocketAddr,
    pub(crate) ca_pem: String,
    /// The clock the paced peer stamps frames with.
    pub(crate) epoch: Instant,
    login: watch::Receiver<Option<Instant>>,
    acks: Arc<AtomicUsize>,
}

pub(crate) fn bind() -> Result<(std::net::TcpListener, TlsAcceptor, String)> {
    let (config, ca_pem) =
        fcm_emulator::local_server_tls(&["localhost".to_owned()]).map_err(|e| e.to_string())?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    Ok((listener, TlsAcceptor::from(config), ca_pem))
}

/// Runs a peer on a thread and runtime of its own, so that it does not share the
/// measured client's runtime workers (as a real server would not).
pub(crate) fn serve<F, Fut>(listener: std::net::TcpListener, serve: F) -> Result
where
    F: FnOnce(TcpListener) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the peer's runtime: {e}"))?;
    std::thread::Builder::new()
        .name("bench-peer".into())
        .spawn(move || {
            runtime.block_on(async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener).await,
                    Err(e) => eprintln!("bench peer: {e}"),
                }
            });
        })
        .map_err(|e| format!("cannot start the peer's thread: {e}"))?;
    Ok(())
}

pub(crate) type ServerConnection = Framed<tokio_rustls::server::TlsStream<TcpStream>, McsCodec>;

/// Accepts the TLS connection and answers the login.
async fn login(listener: &TcpListener, acceptor: &TlsAcceptor) -> Result<ServerConnection> {
    let (tcp, _) = listener.accept().await.map_err(|e| e.to_string())?;
    login_on(tcp, acceptor).await
}

/// Answers the login on an accepted connection.
pub(crate) async fn login_on(tcp: TcpStream, acceptor: &TlsAcceptor) -> Result<ServerConnection> {
    let _ = tcp.set_nodelay(true);
    let tls = acceptor.accept(tcp).await.map_err(|e| e.to_string())?;
    let mut framed = Framed::new(tls, McsCodec::server());
    loop {
        match framed.next().await {
            Some(Ok(McsMessage::LoginRequest(_))) => break,
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("the client left before logging in".into()),
        }
    }
    framed
        .send(McsMessage::from(LoginResponse {
            id: "bench".into(),
            last_stream_id_received: Some(1),
            ..Default::default()
        }))
        .await
        .map_err(|e| e.to_string())?;
    Ok(framed)
}

/// Counts the client's frames (the LoginRequest was its first) and StreamAcks (each
/// preceded by one group-committed store write).
pub(crate) async fn count_acks<R: tokio::io::AsyncRead + Unpin>(
    reader: R,
    buffered: BytesMut,
    acks: Arc<AtomicUsize>,
    client_frames: Arc<AtomicUsize>,
) {
    let count = |message: &McsMessage| {
        client_frames.fetch_add(1, Ordering::Relaxed);
        if matches!(message, McsMessage::IqStanza(_)) {
            acks.fetch_add(1, Ordering::Relaxed);
        }
    };
    let mut codec = bare_codec();
    let mut buffered = buffered;
    while let Ok(Some(message)) = codec.decode(&mut buffered) {
        count(&message);
    }
    let mut frames = FramedRead::new(reader, bare_codec());
    while let Some(Ok(message)) = frames.next().await {
        count(&message);
    }
}

/// The writing half of a served connection.
pub(crate) type PeerWriter = tokio::io::WriteHalf<tokio_rustls::server::TlsStream<TcpStream>>;

/// Frames that tell the client which of its frames arrived, as Google's next frame would:
/// they confirm the client's acknowledgements.
#[derive(Default)]
pub(crate) struct Confirmations {
    /// The client frames confirmed so far (its LoginRequest is confirmed by the login).
    confirmed: usize,
}

impl Confirmations {
    /// A confirmation, when the client sent frames since the last one.
    pub(crate) fn due(&mut self, client_frames: &AtomicUsize) -> Option<Bytes> {
        let seen = client_frames.load(Ordering::Relaxed);
        if seen <= self.confirmed.max(1) {
            return None;
        }
        let mut wire = BytesMut::new();
        let last = i32::try_from(seen).ok()?;
        bare_codec()
            .encode(
                McsMessage::from(HeartbeatAck {
                    last_stream_id_received: Some(last),
                    ..Default::default()
                }),
                &mut wire,
            )
            .ok()?;
        self.confirmed = seen;
        Some(wire.freeze())
    }
}

impl Peer {
    /// A peer that writes `messages` pre-encoded frames at line rate after the login.
    pub(crate) async fn start(
        payload: Payload,
        messages: usize,
        keys: &ReceiverKeys,
    ) -> Result<Self> {
        let template = template(payload, keys)?;
        // Batches of whole frames, about 64 KiB each.
        let mut batches = Vec::new();
        let mut wire = BytesMut::new();
        let mut codec = bare_codec();
        for i in 0..messages {
            codec
                .encode(McsMessage::from(stanza(i, &template)), &mut wire)
                .map_err(|e| e.to_string())?;
            if wire.len() >= 64 * 1024 {
                batches.push(wire.split().freeze());
            }
        }
        batches.push(wire.freeze());
        Self::serve_one(
            Instant::now(),
            move |mut writer, client_frames| async move {
                let mut confirmations = Confirmations::default();
                for batch in &batches {
                    if writer.write_all(batch).await.is_err() {
                        return;
                    }
                    if let Some(frame) = confirmations.due(&client_frames)
                        && writer.write_all(&frame).await.is_err()
                    {
                        return;
                    }
                }
                let _ = writer.flush().await;
            },
        )
    }

    /// A peer that writes plain frames at `rate` per second, each stamped with the
    /// microseconds since [`Peer::epoch`] in its data key `t`.
    pub(crate) async fn start_paced(messages: usize, rate: u32) -> Result<Self> {
        let epoch = Instant::now();
        Self::serve_one(epoch, move |mut writer, client_frames| async move {
            let mut confirmations = Confirmations::default();
            let template = (Vec::new(), None);
            let mut codec = bare_codec();
            let mut ticker = tokio::time::interval(Duration::from_millis(1));
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let started = Instant::now();
            let mut sent = 0usize;
            while sent < messages {
                ticker.tick().await;
                let due =
                    ((started.elapsed().as_secs_f64() * f64::from(rate)) as usize).min(messages);
                let mut wire = BytesMut::new();
                while sent < due {
                    let mut message = stanza(sent, &template);
                    message.app_data.push(AppData {
                        key: "t".into(),
                        value: epoch.elapsed().as_micros().to_string(),
                    });
                    if codec.encode(McsMessage::from(message), &mut wire).is_err() {
                        return;
                    }
                    sent += 1;
                }
                if let Some(frame) = confirmations.due(&client_frames) {
                    wire.extend_from_slice(&frame);
                }
                if !wire.is_empty() && writer.write_all(&wire).await.is_err() {
                    return;
                }
            }
        })
    }

    /// Serves one client on a thread of its own: accepts and logs it in, counts its
    /// frames and acknowledgements, then hands the writing half and the frame count to
    /// `write`. The connection stays open afterwards, until the client leaves.
    fn serve_one<F, Fut>(epoch: Instant, write: F) -> Result<Self>
    where
        F: FnOnce(PeerWriter, Arc<AtomicUsize>) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (listener, acceptor, ca_pem) = bind()?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let (login_tx, login_rx) = watch::channel(None);
        let acks = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&acks);
        serve(listener, move |listener| async move {
            let framed = match login(&listener, &acceptor).await {
                Ok(framed) => framed,
                Err(e) => {
                    eprintln!("bench peer: {e}");
                    return;
                }
            };
            let parts = framed.into_parts();
            let (reader, writer) = tokio::io::split(parts.io);
            let client_frames = Arc::new(AtomicUsize::new(1));
            tokio::spawn(count_acks(
                reader,
                parts.read_buf,
                counter,
                Arc::clone(&client_frames),
            ));
            let _ = login_tx.send(Some(Instant::now()));
            write(writer, client_frames).await;
            std::future::pending::<()>().await;
        })?;
        Ok(Self {
            addr,
            ca_pem,
            epoch,
            login: login_rx,
            acks,
        })
    }

    /// Waits for the login; returns when it was answered.
    pub(crate) async fn logged_in(&self) -> Result<Instant> {
        let mut login = self.login.clone();
        let at = tokio::time::timeout(Duration::from_secs(30), login.wait_for(Option::is_some))
            .await
            .map_err(|_| "the client never logged in".to_owned())?
            .map_err(|e| e.to_string())?;
        (*at).ok_or_else(|| "no login".to_owned())
    }

    /// StreamAcks received so far.
    pub(crate) fn acks_received(&self) -> usize {
        self.acks.load(Ordering::Relaxed)
    }
}

/// Serves any number of logins and answers pings; prints `{"port", "ca_pem"}` first.
pub(crate) async fn idle_server(port: u16) -> Result {
    rlimit::increase_nofile_limit(65_536).map_err(|e| e.to_string())?;
    let (config, ca_pem) =
        fcm_emulator::local_server_tls(&["localhost".to_owned()]).map_err(|e| e.to_string())?;
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .map_err(|e| e.to_string())?;
    let port = listener.local_addr().map_err(|e| e.to_string())?.port();
    println!("{}", json!({"port": port, "ca_pem": ca_pem}));
    let acceptor = TlsAcceptor::from(config);
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let mut framed = Framed::new(tls, McsCodec::server());
            while let Some(Ok(message)) = framed.next().await {
                let answer = match message {
                    McsMessage::LoginRequest(_) => McsMessage::from(LoginResponse {
                        id: "idle".into(),
                        last_stream_id_received: Some(1),
                        ..Default::default()
                    }),
                    McsMessage::HeartbeatPing(_) => McsMessage::from(HeartbeatAck::default()),
                    _ => continue,
                };
                if framed.send(answer).await.is_err() {
                    return;
                }
            }
        });
    }
}

/// Reads the idle server's first line: its port and CA.
pub(crate) async fn read_idle_server_banner(
    child: &mut tokio::process::Child,
) -> Result<(u16, String)> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .await
        .map_err(|e| e.to_string())?;
    let banner: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
    let port = banner["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .ok_or("no port in the banner")?;
    let ca = banner["ca_pem"].as_str().ok_or("no CA in the banner")?;
    Ok((port, ca.to_owned()))
}
