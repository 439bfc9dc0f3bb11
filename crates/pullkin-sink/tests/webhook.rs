//! Tests of the webhook sink, against a real local HTTPS server (tokio + hyper + rustls,
//! a certificate from a fresh local CA) that records every request and can be scripted
//! to fail, and `fcm-emulator` as the FCM side.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fcm_emulator::{Emulator, SendMessage};
use fcm_http::RetryPolicy;
use fcm_http::http::{HeaderMap, Request, Response};
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as HyperBody;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pullkin::{
    Event, ForwardConfig, ListenerConfig, Outcome, Pullkin, Secret, Sink, SinkError, SinkMessage,
};
use pullkin_sink::{Error, FileSink, WebhookConfig, WebhookSink};
use pullkin_test_support::devices::{Device, android_device, wait_acked};
use sha2::Sha256;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

/// How long a test waits for something that should happen.
const WAIT: Duration = Duration::from_secs(30);
/// The app name of the test device: keys are `android:<persistent id>`.
const APP: &str = "android";
/// The webhook's secret in these tests.
const SECRET: &str = "webhook-test-secret";
/// A body containing this is answered 400.
const MARKER: &str = "REJECT-ME";

// ---- the HTTPS server ----

/// What the server does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Answer {
    /// 200.
    Ok,
    /// This status, with this `Retry-After` if any.
    Status(u16, Option<&'static str>),
    /// 400, for a body with [`MARKER`].
    Rejected,
    /// No answer for a minute.
    Hang,
    /// The connection is closed without an answer.
    Close,
}

/// One request the server received, and how it was answered.
#[derive(Debug, Clone)]
struct Recorded {
    method: String,
    path_and_query: String,
    headers: HeaderMap,
    body: Bytes,
    answer: Answer,
}

impl Recorded {
    fn key(&self) -> Option<String> {
        header(&self.headers, "idempotency-key")
    }

    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    /// The `n` data value of the message.
    fn n(&self) -> String {
        self.json()["data"]["n"].as_str().unwrap().to_owned()
    }
}

fn header(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get(name)
        .map(|value| value.to_str().unwrap().to_owned())
}

#[derive(Default)]
struct Control {
    /// While set, the answer to every request.
    failing: Mutex<Option<Answer>>,
    /// Answers for the next requests, before the default ones.
    script: Mutex<VecDeque<Answer>>,
    /// A delay before each answer, in ms.
    delay_ms: AtomicU64,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    connections: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    /// Idempotency keys answered 2xx, recorded before the answer leaves.
    taken: Mutex<HashSet<String>>,
}

/// Counts a request in flight while it lives (a hung one is dropped, not finished).
struct InFlight(Arc<Control>);

impl InFlight {
    fn new(control: &Arc<Control>) -> Self {
        let now = control.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        control.max_in_flight.fetch_max(now, Ordering::SeqCst);
        Self(Arc::clone(control))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The local HTTPS webhook receiver.
struct Hook {
    addr: SocketAddr,
    ca_pem: String,
    control: Arc<Control>,
    task: JoinHandle<()>,
}

impl Drop for Hook {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Hook {
    async fn start() -> Self {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (tls, ca_pem) = fcm_emulator::local_server_tls(&names).unwrap();
        let acceptor = TlsAcceptor::from(tls);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let control = Arc::new(Control::default());
        let shared = Arc::clone(&control);
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let acceptor = acceptor.clone();
                let control = Arc::clone(&shared);
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let service = service_fn(move |request| handle(Arc::clone(&control), request));
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(tls), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            ca_pem,
            control,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}/hook", self.addr.port())
    }

    /// The next `count` requests get `answer`.
    fn script(&self, count: usize, answer: Answer) {
        let mut script = self.control.script.lock().unwrap();
        script.extend(std::iter::repeat_n(answer, count));
    }

    fn requests(&self) -> Vec<Recorded> {
        self.control.requests.lock().unwrap().clone()
    }

    fn taken(&self) -> HashSet<String> {
        self.control.taken.lock().unwrap().clone()
    }

    fn max_in_flight(&self) -> usize {
        self.control.max_in_flight.load(Ordering::SeqCst)
    }

    /// A config trusting this server's CA only, signing with [`SECRET`].
    fn config(&self) -> WebhookConfig {
        let mut config = WebhookConfig::default();
        config.root_certificates_pem = vec![self.ca_pem.clone().into_bytes()];
        config.webpki_roots = false;
        config.secret = Some(Secret::new(SECRET.to_owned()));
        config
    }

    fn sink(&self, config: WebhookConfig) -> WebhookSink {
        WebhookSink::new(&self.url(), config).unwrap()
    }
}

async fn handle(
    control: Arc<Control>,
    request: Request<HyperBody>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let _in_flight = InFlight::new(&control);
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    let delay = control.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let failing = control.failing.lock().unwrap().clone();
    let scripted = failing.or_else(|| control.script.lock().unwrap().pop_front());
    let answer = scripted.unwrap_or_else(|| {
        if body.windows(MARKER.len()).any(|w| w == MARKER.as_bytes()) {
            Answer::Rejected
        } else {
            Answer::Ok
        }
    });
    let recorded = Recorded {
        method: parts.method.to_string(),
        path_and_query: parts
            .uri
            .path_and_query()
            .map(ToString::to_string)
            .unwrap_or_default(),
        headers: parts.headers,
        body,
        answer: answer.clone(),
    };
    let key = recorded.key();
    control.requests.lock().unwrap().push(recorded);
    let respond = |status: u16, body: &'static str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap()
    };
    match answer {
        Answer::Ok => {
            if let Some(key) = key {
                control.taken.lock().unwrap().insert(key);
            }
            Ok(respond(200, "{\"ok\":true}"))
        }
        Answer::Status(status, retry_after) => {
            let mut response = respond(status, "try again later");
            if let Some(wait) = retry_after {
                response
                    .headers_mut()
                    .insert("retry-after", wait.parse().unwrap());
            }
            Ok(response)
        }
        Answer::Rejected => Ok(respond(400, "marker refused\n")),
        Answer::Hang => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(respond(503, "late"))
        }
        // A service error makes hyper drop the connection without answering.
        Answer::Close => Err(std::io::Error::other("closing without an answer")),
    }
}

/// Whether the request's signature is HMAC-SHA256 of its body with [`SECRET`].
fn signature_verifies(request: &Recorded) -> bool {
    let Some(value) = header(&request.headers, "x-pullkin-signature") else {
        return false;
    };
    let Some(hex_mac) = value.strip_prefix("sha256=") else {
        return false;
    };
    let Ok(mac_bytes) = hex::decode(hex_mac) else {
        return false;
    };
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(&request.body);
    mac.verify_slice(&mac_bytes).is_ok()
}

// ---- the FCM side ----

/// An emulator, a device, and a listener that has it as [`APP`] and acknowledges fast.
async fn fcm_side() -> (Emulator, Device, Arc<Pullkin>) {
    let emulator = Emulator::start().await.unwrap();
    let device = android_device(&emulator);
    let mut config = ListenerConfig::default();
    config.mcs_endpoints = vec![pullkin_test_support::emulator::mcs_addr(&emulator)];
    config.reconnect = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100));
    config.ack_delay = Duration::from_millis(10);
    let pullkin = Pullkin::builder()
        .config(config)
        .tls(pullkin_test_support::emulator::tls(&emulator))
        .build()
        .unwrap();
    (emulator, device, Arc::new(pullkin))
}

fn send(emulator: &Emulator, device: &Device, n: &str) -> String {
    emulator
        .send(&device.token, &SendMessage::new().data("n", n))
        .unwrap()
        .persistent_id
}

/// Fast retries, so that failure phases pass quickly.
fn forward_config() -> ForwardConfig {
    let mut config = ForwardConfig::default();
    config.retry = RetryPolicy::default()
        .with_initial_delay(Duration::from_millis(10))
        .with_max_delay(Duration::from_millis(100));
    config
}

fn start_forward(
    pullkin: &Arc<Pullkin>,
    sink: WebhookSink,
    config: ForwardConfig,
) -> JoinHandle<()> {
    let pullkin = Arc::clone(pullkin);
    let sink: Arc<dyn Sink> = Arc::new(sink);
    tokio::spawn(async move {
        pullkin.forward(&[APP], sink, config).await.unwrap();
    })
}

async fn stop(pullkin: &Pullkin, forward: JoinHandle<()>) {
    pullkin.shutdown().await;
    tokio::time::timeout(WAIT, forward)
        .await
        .expect("forward ends with the listener")
        .unwrap();
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The persistent ids the emulator saw acknowledged.
fn acked(emulator: &Emulator, device: &Device) -> Vec<String> {
    emulator
        .device(device.android_id)
        .map(|d| d.acked)
        .unwrap_or_default()
}

/// Requests answered 2xx, by `n`: the idempotency keys each carried.
fn taken_keys_by_n(requests: &[Recorded]) -> BTreeMap<String, BTreeSet<String>> {
    let mut by_n: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in requests {
        if request.answer == Answer::Ok {
            by_n.entry(request.n())
                .or_default()
                .insert(request.key().unwrap());
        }
    }
    by_n
}

/// Every request is a signed JSON POST, keyed `android:<its persistent id>`; every `n`
/// carries one key whichever attempt it was.
fn check_requests(requests: &[Recorded]) {
    let mut keys_by_n: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for request in requests {
        assert_eq!(request.method, "POST");
        assert_eq!(request.path_and_query, "/hook");
        assert_eq!(
            header(&request.headers, "content-type").as_deref(),
            Some("application/json")
        );
        assert!(signature_verifies(request), "signature of {request:?}");
        let json = request.json();
        let key = request.key().expect("an Idempotency-Key");
        assert_eq!(
            key,
            format!("{APP}:{}", json["persistent_id"].as_str().unwrap())
        );
        assert_eq!(json["app"], APP);
        keys_by_n.entry(request.n()).or_default().insert(key);
    }
    for (n, keys) in &keys_by_n {
        assert_eq!(
            keys.len(),
            1,
            "message {n} came with several keys: {keys:?}"
        );
    }
}

// ---- 1. end to end ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn forwards_every_message_end_to_end_signed_and_keyed() {
    const N: usize = 300;
    let hook = Hook::start().await;
    let (emulator, device, pullkin) = fcm_side().await;
    pullkin.add_app(APP, &device.credentials, []).unwrap();
    assert!(
        emulator
            .wait_until(WAIT, |e| e.is_connected(device.android_id))
            .await
    );
    let forward = start_forward(&pullkin, hook.sink(hook.config()), forward_config());

    let started = Instant::now();
    let sent: BTreeSet<String> = (0..N)
        .map(|i| format!("{APP}:{}", send(&emulator, &device, &i.to_string())))
        .collect();
    wait_for("every message taken by the webhook", || {
        hook.taken().len() >= N
    })
    .await;
    let elapsed = started.elapsed();
    wait_acked(&emulator, &device, WAIT).await;
    let rate = N as f64 / elapsed.as_secs_f64();
    eprintln!("webhook end to end: {N} messages in {elapsed:?}: {rate:.0} messages/s");

    let requests = hook.requests();
    check_requests(&requests);
    let taken: BTreeSet<String> = hook.taken().into_iter().collect();
    assert_eq!(taken, sent, "the webhook took exactly the messages sent");
    let by_n = taken_keys_by_n(&requests);
    let expected: BTreeSet<String> = (0..N).map(|i| i.to_string()).collect();
    assert_eq!(by_n.keys().cloned().collect::<BTreeSet<_>>(), expected);
    assert!(hook.max_in_flight() <= 16, "at most the window in flight");
    let connections = hook.control.connections.load(Ordering::SeqCst);
    // The pool may open a connection or two beyond the window when one is freed while
    // another is being dialled; not one per request, though.
    eprintln!("{connections} connections for {} requests", requests.len());
    assert!(
        connections <= 64,
        "pooled keep-alive connections, not one per request: {connections}"
    );
    stop(&pullkin, forward).await;
}

// ---- 2. failing webhooks lose nothing and acknowledge nothing early ----

/// Checks, at one instant, that every message the emulator saw acknowledged had been
/// answered 2xx by the webhook before; returns how many were acknowledged.
fn check_acked_were_taken(emulator: &Emulator, device: &Device, hook: &Hook) -> usize {
    // The emulator first: the webhook's set only grows, so a message acknowledged at
    // this instant must be in the set read after it.
    let acked = acked(emulator, device);
    let taken = hook.taken();
    for id in &acked {
        assert!(
            taken.contains(&format!("{APP}:{id}")),
            "{id} was acknowledged before the webhook answered 2xx for it"
        );
    }
    acked.len()
}

/// Sends `N` messages to a webhook failing with `fault`: every request for a while,
/// then the next `count` requests. Checks that nothing is acknowledged while it fails,
/// that at every sample each acknowledged message had been answered 2xx, and that
/// nothing is lost.
async fn survives(fault: Answer, count: usize, timeout: Duration) {
    const N: usize = 60;
    let hook = Hook::start().await;
    *hook.control.failing.lock().unwrap() = Some(fault.clone());
    let (emulator, device, pullkin) = fcm_side().await;
    let mut events = pullkin.events();
    pullkin.add_app(APP, &device.credentials, []).unwrap();
    let mut config = hook.config();
    config.timeout = timeout;
    config.window = 8;
    let forward = start_forward(&pullkin, hook.sink(config), forward_config());
    for i in 0..N {
        send(&emulator, &device, &i.to_string());
    }

    // Failing: nothing is acknowledged, the messages stay with the emulator.
    wait_for("the first failed requests", || hook.requests().len() >= 2).await;
    let failing_until = Instant::now() + Duration::from_millis(400);
    let mut samples_failing = 0;
    while Instant::now() < failing_until {
        assert_eq!(check_acked_were_taken(&emulator, &device, &hook), 0);
        samples_failing += 1;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let info = emulator.device(device.android_id).unwrap();
    assert_eq!(
        info.pending.len() + info.unacked.len(),
        N,
        "every message still with the emulator while the webhook fails"
    );
    let failed_phase_one = hook.requests().len();

    // Then `count` more failures, then success: sampled all along.
    hook.script(count, fault.clone());
    *hook.control.failing.lock().unwrap() = None;
    let mut samples = 0;
    let deadline = Instant::now() + WAIT;
    while check_acked_were_taken(&emulator, &device, &hook) < N {
        samples += 1;
        assert!(Instant::now() < deadline, "timed out");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    wait_acked(&emulator, &device, WAIT).await;

    let requests = hook.requests();
    let faulty = requests.iter().filter(|r| r.answer == fault).count();
    assert!(
        faulty >= failed_phase_one + count,
        "the webhook failed as told: {faulty}"
    );
    assert!(hook.control.script.lock().unwrap().is_empty());
    check_requests(&requests);
    let by_n = taken_keys_by_n(&requests);
    assert_eq!(by_n.len(), N, "every message reached the webhook");
    let repeats = requests.len() - faulty - N;
    eprintln!(
        "{fault:?}: {} requests, {faulty} failed, {repeats} repeats of taken messages; \
         {samples_failing} samples while failing, {samples} after",
        requests.len()
    );

    // The failures were reported, with the server's wait when it asked for one.
    let mut failures = Vec::new();
    loop {
        match events.try_recv() {
            Ok(Event::SinkFailed { sink, error, .. }) => {
                assert_eq!(sink, hook.url());
                failures.push(error);
            }
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    assert!(!failures.is_empty(), "SinkFailed events");
    if let Answer::Status(_, Some(wait)) = fault {
        let asked = Duration::from_secs(wait.parse().unwrap());
        assert!(failures.iter().all(|e| e.retry_after() == Some(asked)));
    }
    stop(&pullkin, forward).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_503_for_a_while_loses_nothing() {
    survives(Answer::Status(503, Some("1")), 25, Duration::from_secs(10)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hanging_webhook_loses_nothing() {
    survives(Answer::Hang, 6, Duration::from_millis(300)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_webhook_closing_connections_loses_nothing() {
    survives(Answer::Close, 12, Duration::from_secs(10)).await;
}

// ---- 3. a rejected message is reported, parked, and the listener goes on ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_400_is_reported_parked_and_the_listener_goes_on() {
    let hook = Hook::start().await;
    let (emulator, device, pullkin) = fcm_side().await;
    let mut events = pullkin.events();
    pullkin.add_app(APP, &device.credentials, []).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let park_path = dir.path().join("rejected.jsonl");
    let mut config = forward_config();
    config.park = Some(Arc::new(FileSink::new(&park_path)));
    let forward = start_forward(&pullkin, hook.sink(hook.config()), config);

    for i in 0..5 {
        send(&emulator, &device, &i.to_string());
    }
    let rejected_id = send(&emulator, &device, MARKER);
    for i in 5..10 {
        send(&emulator, &device, &i.to_string());
    }
    let (persistent_id, reason) = tokio::time::timeout(WAIT, async {
        loop {
            if let Event::SinkRejected {
                app,
                sink,
                persistent_id,
                reason,
            } = events.recv().await.unwrap()
            {
                assert_eq!(app, APP);
                assert_eq!(sink, hook.url());
                return (persistent_id, reason);
            }
        }
    })
    .await
    .expect("a SinkRejected event");
    assert_eq!(persistent_id.as_deref(), Some(rejected_id.as_str()));
    assert_eq!(reason, "HTTP 400 Bad Request: marker refused");

    // Later messages still arrive.
    for i in 10..20 {
        send(&emulator, &device, &i.to_string());
    }
    wait_for("the later messages", || hook.taken().len() >= 20).await;
    wait_acked(&emulator, &device, WAIT).await;
    let requests = hook.requests();
    check_requests(&requests);
    let by_n = taken_keys_by_n(&requests);
    assert_eq!(by_n.len(), 20);
    assert!(!by_n.contains_key(MARKER));
    let rejections = requests
        .iter()
        .filter(|r| r.answer == Answer::Rejected)
        .count();
    assert_eq!(rejections, 1, "a rejected message is not retried");

    // Parked: one line, with its key.
    let parked = std::fs::read_to_string(&park_path).unwrap();
    let lines: Vec<serde_json::Value> = parked
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 1, "{parked}");
    assert_eq!(lines[0]["key"], format!("{APP}:{rejected_id}"));
    assert_eq!(lines[0]["data"]["n"], MARKER);
    stop(&pullkin, forward).await;
}

// ---- deliver, directly ----

/// Records of [`APP`]'s messages, built directly, to hand batches to `deliver` by hand.
#[derive(Default)]
struct Batches {
    sent: usize,
}

impl Batches {
    fn new() -> Self {
        Self::default()
    }

    /// Records of messages with these `n` values (each with a fresh persistent id).
    fn messages(&mut self, values: &[&str]) -> Vec<SinkMessage> {
        values
            .iter()
            .map(|n| {
                self.sent += 1;
                let id = format!("0:direct-{}", self.sent);
                let line = serde_json::json!({
                    "app": APP,
                    "persistent_id": id,
                    "data": { "n": n },
                });
                SinkMessage::new(APP, Some(format!("{APP}:{id}")), Some(id), line)
            })
            .collect()
    }
}

/// The error of a failed delivery, checked to be one line naming the sink.
fn unavailable(result: Result<Vec<Outcome>, SinkError>, name: &str) -> SinkError {
    let error = result.expect_err("the delivery fails");
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("sink {name}: ")),
        "names the sink: {text}"
    );
    assert!(!text.contains('\n'), "one line: {text}");
    assert!(matches!(error, SinkError::Unavailable { .. }));
    eprintln!("{text}");
    error
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn statuses_map_to_outcomes_and_failures() {
    let hook = Hook::start().await;
    let sink = hook.sink(hook.config());
    let mut batches = Batches::new();
    let name = hook.url();
    assert_eq!(sink.name(), name);

    // Outcomes in the batch's order, a rejection among them.
    let batch = batches.messages(&["a", MARKER, "c"]);
    let outcomes = sink.deliver(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        vec![
            Outcome::Taken,
            Outcome::Rejected("HTTP 400 Bad Request: marker refused".into()),
            Outcome::Taken
        ]
    );

    // 503, 429, 408, 500 fail the batch, with the server's Retry-After.
    let batch = batches.messages(&["d"]);
    for (status, retry_after, expected) in [
        (503, Some("7"), Some(Duration::from_secs(7))),
        (429, Some("2"), Some(Duration::from_secs(2))),
        (408, None, None),
        (500, None, None),
        (302, None, None),
    ] {
        hook.script(1, Answer::Status(status, retry_after));
        let error = unavailable(sink.deliver(&batch).await, &name);
        assert_eq!(error.retry_after(), expected, "{status}");
        assert!(error.to_string().contains(&status.to_string()), "{error}");
    }
    // 404 is for good.
    hook.script(1, Answer::Status(404, None));
    let outcomes = sink.deliver(&batch).await.unwrap();
    assert_eq!(
        outcomes,
        vec![Outcome::Rejected(
            "HTTP 404 Not Found: try again later".into()
        )]
    );

    // A timeout fails the batch too.
    let mut config = hook.config();
    config.timeout = Duration::from_millis(200);
    let impatient = hook.sink(config);
    hook.script(1, Answer::Hang);
    let error = unavailable(impatient.deliver(&batch).await, &name);
    assert!(error.to_string().contains("within"), "{error}");
    // And a connection closed without an answer.
    hook.script(1, Answer::Close);
    unavailable(sink.deliver(&batch).await, &name);
    // Then it is taken, with the same key every time.
    assert_eq!(sink.deliver(&batch).await.unwrap(), vec![Outcome::Taken]);
    let requests = hook.requests();
    let keys: BTreeSet<String> = requests
        .iter()
        .filter(|r| r.n() == "d")
        .map(|r| r.key().unwrap())
        .collect();
    assert_eq!(keys.len(), 1);
    check_requests(&requests);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_window_bounds_requests_in_flight() {
    let hook = Hook::start().await;
    hook.control.delay_ms.store(50, Ordering::SeqCst);
    let mut batches = Batches::new();
    let values: Vec<String> = (0..12).map(|i| i.to_string()).collect();
    let values: Vec<&str> = values.iter().map(String::as_str).collect();

    let mut config = hook.config();
    config.window = 4;
    let sink = hook.sink(config);
    let batch = batches.messages(&values);
    let outcomes = sink.deliver(&batch).await.unwrap();
    assert_eq!(outcomes, vec![Outcome::Taken; 12]);
    let max = hook.max_in_flight();
    assert!((2..=4).contains(&max), "at most 4, and overlapping: {max}");

    // A window of 1: one at a time, in order.
    let hook = Hook::start().await;
    let mut config = hook.config();
    config.window = 1;
    let sink = hook.sink(config);
    let batch = batches.messages(&values);
    assert_eq!(
        sink.deliver(&batch).await.unwrap(),
        vec![Outcome::Taken; 12]
    );
    assert_eq!(hook.max_in_flight(), 1);
    let order: Vec<String> = hook.requests().iter().map(Recorded::n).collect();
    assert_eq!(order, values);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn headers_credentials_and_query_go_out_but_not_into_the_name() {
    let hook = Hook::start().await;
    let mut batches = Batches::new();
    let mut config = hook.config();
    config.secret = None;
    config.headers = vec![("X-Tenant".into(), "blue".into())];
    let url = format!(
        "https://hook%20user:p%40ss@127.0.0.1:{}/hook?token=s3cret",
        hook.addr.port()
    );
    let sink = WebhookSink::new(&url, config).unwrap();
    assert_eq!(sink.name(), hook.url());
    assert!(!format!("{sink:?}").contains("s3cret"));
    let batch = batches.messages(&["x"]);
    assert_eq!(sink.deliver(&batch).await.unwrap(), vec![Outcome::Taken]);
    let request = &hook.requests()[0];
    assert_eq!(request.path_and_query, "/hook?token=s3cret");
    // base64("hook user:p@ss")
    assert_eq!(
        header(&request.headers, "authorization").as_deref(),
        Some("Basic aG9vayB1c2VyOnBAc3M=")
    );
    assert_eq!(
        header(&request.headers, "x-tenant").as_deref(),
        Some("blue")
    );
    assert_eq!(header(&request.headers, "x-pullkin-signature"), None);
    assert!(
        header(&request.headers, "user-agent")
            .unwrap()
            .starts_with("pullkin-sink/")
    );

    // A custom signature header.
    let mut config = hook.config();
    config.signature_header = "X-Hub-Signature-256".into();
    config.headers = vec![("Authorization".into(), "Bearer t0ken".into())];
    let sink = hook.sink(config);
    let batch2 = batches.messages(&["y"]);
    assert_eq!(sink.deliver(&batch2).await.unwrap(), vec![Outcome::Taken]);
    let mut request = hook.requests()[1].clone();
    assert_eq!(
        header(&request.headers, "authorization").as_deref(),
        Some("Bearer t0ken")
    );
    let signature = request.headers.remove("x-hub-signature-256").unwrap();
    request.headers.insert("x-pullkin-signature", signature);
    assert!(signature_verifies(&request));
}

// ---- 4. errors ----

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unreachable_untrusted_and_unresolvable_servers_fail_the_batch_naming_the_sink() {
    let mut batches = Batches::new();
    let batch = batches.messages(&["z"]);

    // A closed port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("https://127.0.0.1:{port}/hook");
    let sink = WebhookSink::new(&url, WebhookConfig::default()).unwrap();
    let error = unavailable(sink.deliver(&batch).await, &url);
    assert!(error.to_string().contains("connect"), "{error}");

    // A server whose certificate no trusted root signed (the webpki roots only).
    let hook = Hook::start().await;
    let sink = WebhookSink::new(&hook.url(), WebhookConfig::default()).unwrap();
    let error = unavailable(sink.deliver(&batch).await, &hook.url());
    assert!(error.to_string().contains("certificate"), "{error}");
    // Trusting another CA does not help.
    let other = Hook::start().await;
    let mut config = WebhookConfig::default();
    config.root_certificates_pem = vec![other.ca_pem.clone().into_bytes()];
    config.webpki_roots = false;
    let sink = WebhookSink::new(&hook.url(), config).unwrap();
    unavailable(sink.deliver(&batch).await, &hook.url());
    assert!(hook.requests().is_empty(), "no request went out untrusted");

    // A host that does not resolve.
    let mut config = WebhookConfig::default();
    config.timeout = Duration::from_secs(5);
    let url = "https://webhook.invalid/hook";
    let sink = WebhookSink::new(url, config).unwrap();
    unavailable(sink.deliver(&batch).await, url);
}

#[test]
fn bad_urls_and_settings_are_config_errors_without_secrets() {
    let config_error = |url: &str, config: WebhookConfig| match WebhookSink::new(url, config) {
        Err(Error::Config { sink, reason }) => {
            let text = format!("sink {sink}: {reason}");
            assert!(!text.contains("hunter2"), "{text}");
            assert!(!text.contains("s3cret"), "{text}");
            assert!(!text.contains('\n'), "{text}");
            text
        }
        other => panic!("{url}: {other:?}"),
    };
    let default = WebhookConfig::default;

    let text = config_error("not a url", default());
    assert!(text.starts_with("sink not a url: not a URL"), "{text}");
    let text = config_error("https://user:hunter2@bad host/hook?token=s3cret", default());
    assert!(text.starts_with("sink https://bad host/hook: "), "{text}");
    let text = config_error(
        "https://user:hunter2@127.0.0.1:99999/hook?token=s3cret",
        default(),
    );
    assert!(
        text.starts_with("sink https://127.0.0.1:99999/hook: "),
        "{text}"
    );
    let text = config_error("ftp://user:hunter2@example.com/hook", default());
    assert!(text.contains("https"), "{text}");
    let text = config_error("http://example.com/hook?token=s3cret", default());
    assert!(
        text.starts_with("sink http://example.com/hook: plain http"),
        "{text}"
    );

    let url = "https://example.com/hook";
    let mut config = default();
    config.window = 0;
    assert!(config_error(url, config).contains("window"));
    let mut config = default();
    config.timeout = Duration::ZERO;
    assert!(config_error(url, config).contains("timeout"));
    let mut config = default();
    config.root_certificates_pem = vec![b"not a certificate".to_vec()];
    config_error(url, config);
    let mut config = default();
    config.signature_header = "bad header".into();
    config_error(url, config);
    for (name, value) in [
        ("Content-Type", "text/plain"),
        ("Idempotency-Key", "x"),
        ("X-Pullkin-Signature", "forged"),
        ("bad name", "x"),
        ("Authorization", "Bearer s3\ncret"),
    ] {
        let mut config = default();
        config.headers = vec![(name.into(), value.into())];
        config_error(url, config);
    }
    let mut config = default();
    config.headers = vec![("Authorization".into(), "Bearer s3cret".into())];
    config_error("https://user:hunter2@example.com/hook", config);

    // Plain http to this host only; the Debug output keeps secrets out.
    let mut config = default();
    config.secret = Some(Secret::new("s3cret".into()));
    config.headers = vec![("Authorization".into(), "Bearer hunter2".into())];
    let debug = format!("{config:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("hunter2"),
        "{debug}"
    );
    let sink = WebhookSink::new("http://localhost:8080/hook", config).unwrap();
    let debug = format!("{sink:?}");
    assert!(
        !debug.contains("s3cret") && !debug.contains("hunter2"),
        "{debug}"
    );
    WebhookSink::new("http://127.0.0.1:8080/hook", default()).unwrap();
    WebhookSink::new("http://[::1]:8080/hook", default()).unwrap();
}
