//! Benchmarks of the sinks: the library pipeline as in `throughput`, but each message
//! handed to a sink with [`Pullkin::forward`] (and so acknowledged only once the sink took
//! it) instead of to a handler.
//!
//! ```text
//! pullkin-bench sink-throughput --sink nats|webhook [--messages N] [--window W]
//! pullkin-bench sink-latency [--rate R] [--messages N]
//! ```
//!
//! - `sink-throughput --sink nats`: plain payloads at line rate from the bench peer into
//!   a [`NatsSink`] of a `nats-server -js` the bench starts (`NATS_SERVER`, file-stored
//!   stream, every PubAck awaited), store on; messages/s from the login to the last
//!   PubAck.
//! - `sink-throughput --sink webhook`: the same into a [`WebhookSink`] POSTing to a local
//!   HTTPS receiver on a thread of its own (keep-alive connections, window 16 unless
//!   `--window`); messages/s from the login to the last 2xx.
//! - `sink-latency`: the paced peer (each frame stamped with its send time) into a
//!   [`NatsSink`] wrapped by a sink that notes, for each message, when the inner
//!   `deliver` returned (its PubAck came): p50/p99/max from the frame leaving the peer to
//!   the sink confirming it.

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use pullkin::{DirStore, ForwardConfig, Outcome, Pullkin, Sink, SinkFuture, SinkMessage, Store};
use pullkin_sink::{NatsConfig, NatsSink, WebhookConfig, WebhookSink};
use serde_json::json;
use tokio::sync::Notify;
use webpush_ece::ReceiverKeys;

use crate::hook::Hook;
use crate::natsd::{self, NatsServer};
use crate::peer::{Payload, Peer};
use crate::{Result, cpu_seconds, credentials, listener, listener_config, tls_for};

/// The bench's stream and its subjects.
const STREAM: &str = "BENCH";
const TEMPLATE: &str = "bench.{app}";

/// Wraps the measured sink: counts what it took, and with an epoch notes each message's
/// latency (the inner `deliver` returning, minus the send time in its data key `t`).
struct Measured {
    inner: Arc<dyn Sink>,
    taken: AtomicUsize,
    rejected: AtomicUsize,
    wanted: usize,
    done: Notify,
    latency: Option<(Instant, Mutex<Vec<u128>>)>,
}

impl fmt::Debug for Measured {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Measured")
            .field("inner", &self.inner)
            .field("taken", &self.taken)
            .finish_non_exhaustive()
    }
}

impl Measured {
    fn new(inner: Arc<dyn Sink>, wanted: usize, epoch: Option<Instant>) -> Self {
        Self {
            inner,
            taken: AtomicUsize::new(0),
            rejected: AtomicUsize::new(0),
            wanted,
            done: Notify::new(),
            latency: epoch.map(|e| (e, Mutex::new(Vec::with_capacity(wanted)))),
        }
    }

    /// Waits until the sink took every wanted message.
    async fn wait(&self, within: Duration) -> Result {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let notified = self.done.notified();
            let taken = self.taken.load(Ordering::Relaxed);
            if taken >= self.wanted {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(format!(
                    "only {taken} of {} messages were taken by the sink",
                    self.wanted
                ));
            }
        }
    }
}

impl Sink for Measured {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn deliver<'a>(&'a self, batch: &'a [SinkMessage]) -> SinkFuture<'a, Vec<Outcome>> {
        Box::pin(async move {
            let outcomes = self.inner.deliver(batch).await?;
            if let Some((epoch, samples)) = &self.latency {
                let now = epoch.elapsed().as_micros();
                let mut samples = samples.lock().unwrap_or_else(PoisonError::into_inner);
                for incoming in batch {
                    let sent: u128 = incoming.line["data"]["t"]
                        .as_str()
                        .and_then(|t| t.parse().ok())
                        .unwrap_or(now);
                    samples.push(now.saturating_sub(sent));
                }
            }
            let taken = outcomes.iter().filter(|o| **o == Outcome::Taken).count();
            self.rejected
                .fetch_add(outcomes.len() - taken, Ordering::Relaxed);
            if self.taken.fetch_add(taken, Ordering::Relaxed) + taken >= self.wanted {
                self.done.notify_one();
            }
            Ok(outcomes)
        })
    }
}

/// A NATS sink of `server`, creating the bench's stream (file storage).
async fn nats_sink(server: &NatsServer) -> Result<NatsSink> {
    NatsSink::connect(
        &server.url(TEMPLATE),
        NatsConfig::default().with_stream(STREAM),
    )
    .await
    .map_err(|e| e.to_string())
}

/// Runs the listener for one app of `peer`, forwarding into `sink`.
async fn forwarding(
    peer: &Peer,
    keys: &ReceiverKeys,
    store: Arc<dyn Store>,
    sink: Arc<Measured>,
) -> Result<(Arc<Pullkin>, tokio::task::JoinHandle<()>)> {
    let pullkin = listener(
        listener_config(peer.addr),
        tls_for(&peer.ca_pem)?,
        Some(store),
    )?;
    pullkin
        .add_app("bench", &credentials(4545, keys)?, [])
        .map_err(|e| e.to_string())?;
    let pullkin = Arc::new(pullkin);
    let forward = {
        let pullkin = Arc::clone(&pullkin);
        tokio::spawn(async move {
            if let Err(e) = pullkin
                .forward(&["bench"], sink, ForwardConfig::default())
                .await
            {
                eprintln!("pullkin-bench: forward: {e}");
            }
        })
    };
    Ok((pullkin, forward))
}

/// Messages per second through the pipeline into a sink, store on.
pub(crate) async fn throughput(sink: &str, messages: usize, window: usize) -> Result {
    let keys = ReceiverKeys::generate();
    // The sink's side first: a server of its own (nats), or a receiver on a thread.
    let mut nats = None;
    let mut hook = None;
    let inner: Arc<dyn Sink> = match sink {
        "nats" => {
            let server = NatsServer::try_start().await?;
            let sink = nats_sink(&server).await?;
            nats = Some(server);
            Arc::new(sink)
        }
        "webhook" => {
            let receiver = Hook::start(false)?;
            let mut config = WebhookConfig::default();
            config.root_certificates_pem = vec![receiver.ca_pem.clone().into_bytes()];
            config.webpki_roots = false;
            config.window = window;
            let sink = WebhookSink::new(&receiver.url(), config).map_err(|e| e.to_string())?;
            hook = Some(receiver);
            Arc::new(sink)
        }
        other => return Err(format!("--sink {other}: nats or webhook")),
    };
    let measured = Arc::new(Measured::new(inner, messages, None));
    let peer = Peer::start(Payload::Plain, messages, &keys).await?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let store: Arc<dyn Store> = Arc::new(DirStore::open(dir.path()).map_err(|e| e.to_string())?);
    let (pullkin, forward) =
        forwarding(&peer, &keys, Arc::clone(&store), Arc::clone(&measured)).await?;
    let started = peer.logged_in().await?;
    let cpu_before = cpu_seconds()?;
    measured.wait(Duration::from_secs(120)).await?;
    let elapsed = started.elapsed();
    let cpu = cpu_seconds()? - cpu_before;
    pullkin.shutdown().await;
    let _ = forward.await;
    let mut report = json!({
        "bench": "sink-throughput",
        "sink": sink,
        "payload": "plain",
        "messages": messages,
        "seconds": elapsed.as_secs_f64(),
        "messages_per_second": (messages as f64 / elapsed.as_secs_f64()).round(),
        "rejected": measured.rejected.load(Ordering::Relaxed),
        "store_writes": peer.acks_received(),
        // This process only (the nats-server is another).
        "cpu_cores_busy": (cpu / elapsed.as_secs_f64() * 100.0).round() / 100.0,
    });
    if let Some(server) = &nats {
        let client = server.try_client().await?;
        report["stream_messages"] = json!(natsd::stream_count(&client, STREAM).await);
    }
    if let Some(receiver) = &hook {
        report["window"] = json!(window);
        report["requests"] = json!(receiver.received());
        report["connections"] = json!(receiver.connections());
    }
    println!("{report}");
    Ok(())
}

/// Latency from a frame leaving the peer to the NATS sink confirming it (its PubAck),
/// at a fixed offered rate.
pub(crate) async fn latency(rate: u32, messages: usize) -> Result {
    let keys = ReceiverKeys::generate();
    let server = NatsServer::try_start().await?;
    let sink = nats_sink(&server).await?;
    let peer = Peer::start_paced(messages, rate).await?;
    let measured = Arc::new(Measured::new(Arc::new(sink), messages, Some(peer.epoch)));
    let (pullkin, forward) = forwarding(
        &peer,
        &keys,
        Arc::new(pullkin::MemoryStore::default()),
        Arc::clone(&measured),
    )
    .await?;
    measured
        .wait(Duration::from_secs(
            60 + (messages as u64) / u64::from(rate.max(1)),
        ))
        .await?;
    pullkin.shutdown().await;
    let _ = forward.await;
    let mut samples = measured
        .latency
        .as_ref()
        .map(|(_, s)| s.lock().unwrap_or_else(PoisonError::into_inner).clone())
        .unwrap_or_default();
    samples.sort_unstable();
    let pct = |p: f64| {
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples.get(index).copied().unwrap_or(0)
    };
    println!(
        "{}",
        json!({
            "bench": "sink-latency",
            "sink": "nats",
            "offered_per_second": rate,
            "messages": messages,
            "p50_us": pct(0.50),
            "p90_us": pct(0.90),
            "p99_us": pct(0.99),
            "max_us": pct(1.0),
        })
    );
    Ok(())
}
