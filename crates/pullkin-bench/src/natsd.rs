//! A real `nats-server` with JetStream for the sink soak and benchmarks: on 127.0.0.1, a
//! free port and a store directory of its own, which it keeps across a kill and a
//! restart; killed when dropped. The binary is `NATS_SERVER`, or where Debian installs
//! it.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use serde_json::Value;
use tokio::process::{Child, Command};

use crate::Result;

/// Where Debian's package installs the server.
const DEFAULT_BINARY: &str = "/usr/sbin/nats-server";
/// How long the server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// A running `nats-server -js`.
pub(crate) struct NatsServer {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
}

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free local port: {e}"))
}

impl NatsServer {
    /// Starts a server with JetStream on a free port.
    pub(crate) async fn start() -> Result<Self> {
        let binary = std::env::var_os("NATS_SERVER")
            .map_or_else(|| PathBuf::from(DEFAULT_BINARY), PathBuf::from);
        if !binary.is_file() {
            return Err(format!(
                "no nats-server at {} (install Debian's nats-server package, or set \
                 NATS_SERVER to its path)",
                binary.display()
            ));
        }
        let mut server = Self {
            binary,
            child: None,
            port: 0,
            dir: tempfile::tempdir().map_err(|e| e.to_string())?,
        };
        // The port was free a moment ago; something else may take it meanwhile.
        for _ in 0..5 {
            server.port = free_port()?;
            if server.spawn().await? {
                return Ok(server);
            }
        }
        Err(format!("nats-server did not start: {}", server.log_tail()))
    }

    /// Starts the process on this server's port and store; whether it accepts connections
    /// within [`READY_WITHIN`].
    async fn spawn(&mut self) -> Result<bool> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .map_err(|e| format!("the server's log: {e}"))?;
        let log_err = log.try_clone().map_err(|e| e.to_string())?;
        let mut child = Command::new(&self.binary)
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(false);
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                self.child = Some(child);
                return Ok(true);
            }
            if Instant::now() >= deadline {
                let _ = child.kill().await;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The end of the server's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }

    /// `nats://127.0.0.1:PORT/<template>`.
    pub(crate) fn url(&self, template: &str) -> String {
        format!("nats://127.0.0.1:{}/{template}", self.port)
    }

    /// A client of the server (it reconnects whenever the server restarts).
    pub(crate) async fn client(&self) -> Result<async_nats::Client> {
        async_nats::connect(format!("127.0.0.1:{}", self.port))
            .await
            .map_err(|e| format!("connecting to nats-server: {e}"))
    }

    /// SIGKILLs the server (a crash) and waits for it to end.
    pub(crate) async fn kill(&mut self) -> Result {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .map_err(|e| format!("killing nats-server: {e}"))?;
        }
        Ok(())
    }

    /// Starts the server again on the same port and store directory.
    pub(crate) async fn start_again(&mut self) -> Result {
        self.kill().await?;
        if self.spawn().await? {
            Ok(())
        } else {
            Err(format!(
                "nats-server did not start again on port {}: {}",
                self.port,
                self.log_tail()
            ))
        }
    }
}

/// Creates the stream `name` (file storage) for `subjects`, dropping repeated
/// `Nats-Msg-Id`s within `window`.
pub(crate) async fn create_stream(
    client: &async_nats::Client,
    name: &str,
    subjects: &str,
    window: Duration,
) -> Result {
    jetstream::new(client.clone())
        .create_stream(stream::Config {
            name: name.to_owned(),
            subjects: vec![subjects.to_owned()],
            duplicate_window: window,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map(drop)
        .map_err(|e| format!("creating the stream {name}: {e}"))
}

/// How many messages the stream holds; `None` when the server does not answer.
pub(crate) async fn stream_count(client: &async_nats::Client, name: &str) -> Option<u64> {
    let mut stream = jetstream::new(client.clone()).get_stream(name).await.ok()?;
    Some(stream.info().await.ok()?.state.messages)
}

/// The stream's last sequence number; `None` when the server does not answer.
pub(crate) async fn last_sequence(client: &async_nats::Client, name: &str) -> Option<u64> {
    let mut stream = jetstream::new(client.clone()).get_stream(name).await.ok()?;
    Some(stream.info().await.ok()?.state.last_sequence)
}

/// A message as the stream holds it.
pub(crate) struct Stored {
    pub(crate) sequence: u64,
    pub(crate) subject: String,
    pub(crate) msg_id: Option<String>,
    /// The payload, parsed (`Null` when it is not JSON).
    pub(crate) json: Value,
}

/// Every message of the stream, read from the start with a pull consumer.
pub(crate) async fn read_stream(client: &async_nats::Client, name: &str) -> Result<Vec<Stored>> {
    let error = |what: &str, e: &dyn std::fmt::Display| format!("reading {name}: {what}: {e}");
    let mut stream = jetstream::new(client.clone())
        .get_stream(name)
        .await
        .map_err(|e| error("the stream", &e))?;
    let held = stream
        .info()
        .await
        .map_err(|e| error("its info", &e))?
        .state
        .messages;
    let consumer = stream
        .create_consumer(pull::Config {
            deliver_policy: jetstream::consumer::DeliverPolicy::All,
            ack_policy: jetstream::consumer::AckPolicy::None,
            ..Default::default()
        })
        .await
        .map_err(|e| error("a consumer", &e))?;
    let mut messages = consumer
        .messages()
        .await
        .map_err(|e| error("the messages", &e))?;
    let mut out = Vec::new();
    while (out.len() as u64) < held {
        let message = tokio::time::timeout(Duration::from_secs(20), messages.next())
            .await
            .map_err(|_| format!("reading {name}: only {} of {held} messages came", out.len()))?
            .ok_or_else(|| format!("reading {name}: the consumer ended"))?
            .map_err(|e| error("a message", &e))?;
        let sequence = message
            .info()
            .map_err(|e| error("a message's info", &e))?
            .stream_sequence;
        out.push(Stored {
            sequence,
            subject: message.subject.to_string(),
            msg_id: message
                .headers
                .as_ref()
                .and_then(|h| h.get("Nats-Msg-Id"))
                .map(|v| v.as_str().to_owned()),
            json: serde_json::from_slice(&message.payload).unwrap_or(Value::Null),
        });
    }
    Ok(out)
}
