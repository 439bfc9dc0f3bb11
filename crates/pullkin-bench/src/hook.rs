//! A local HTTPS webhook receiver (hyper's HTTP/1.1 server over tokio-rustls, a
//! certificate from a fresh local CA) for the sink soak and benchmarks. It runs on a
//! thread and runtime of its own, answers 200 unless told to fail, and can record every
//! request's `Idempotency-Key` and body.
//!
//! Faults it can be told to inject: an outage (every request answered 503 until a
//! deadline), hangs (a request held without an answer, then its connection closed), and
//! closes after taking (the request counted as taken, then its connection closed without
//! an answer: the sender must POST it again, with the same key).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming as Body;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Result;

/// What became of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    /// 200: taken.
    Taken,
    /// 503 (an outage).
    Unavailable,
    /// Held without an answer, then the connection was closed.
    Hung,
    /// Taken, then the connection was closed before the answer.
    TakenThenClosed,
}

impl Answer {
    /// Whether the receiver has the message after this request.
    pub(crate) fn took(self) -> bool {
        matches!(self, Self::Taken | Self::TakenThenClosed)
    }
}

/// One request, as recorded.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) key: Option<String>,
    /// The body, parsed (`Null` when it is not JSON).
    pub(crate) json: Value,
    pub(crate) answer: Answer,
}

#[derive(Default)]
struct Control {
    record: bool,
    /// Every request is answered 503 until then.
    outage_until: Mutex<Option<Instant>>,
    /// How many of the next requests hang, and for how long.
    hang_next: AtomicUsize,
    hang_for: Mutex<Duration>,
    /// How many of the next requests are taken and then closed without an answer.
    close_next: AtomicUsize,
    requests: Mutex<Vec<Recorded>>,
    taken: AtomicUsize,
    received: AtomicUsize,
    connections: AtomicUsize,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes one from `counter` if it is above zero.
fn take_one(counter: &AtomicUsize) -> bool {
    counter
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// A running receiver (it stops with the process).
pub(crate) struct Hook {
    pub(crate) addr: SocketAddr,
    /// The CA that signed its certificate.
    pub(crate) ca_pem: String,
    control: Arc<Control>,
}

impl Hook {
    /// Starts a receiver on 127.0.0.1; with `record`, it keeps every request.
    pub(crate) fn start(record: bool) -> Result<Self> {
        let names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        let (tls, ca_pem) = fcm_emulator::local_server_tls(&names).map_err(|e| e.to_string())?;
        let acceptor = TlsAcceptor::from(tls);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let control = Arc::new(Control {
            record,
            ..Control::default()
        });
        let shared = Arc::clone(&control);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the receiver's runtime: {e}"))?;
        std::thread::Builder::new()
            .name("bench-hook".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = match TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(e) => {
                            eprintln!("webhook receiver: {e}");
                            return;
                        }
                    };
                    loop {
                        let Ok((tcp, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = tcp.set_nodelay(true);
                        shared.connections.fetch_add(1, Ordering::Relaxed);
                        let acceptor = acceptor.clone();
                        let control = Arc::clone(&shared);
                        tokio::spawn(async move {
                            let Ok(tls) = acceptor.accept(tcp).await else {
                                return;
                            };
                            let service =
                                service_fn(move |request| handle(Arc::clone(&control), request));
                            let _ = http1::Builder::new()
                                .serve_connection(TokioIo::new(tls), service)
                                .await;
                        });
                    }
                });
            })
            .map_err(|e| format!("cannot start the receiver's thread: {e}"))?;
        Ok(Self {
            addr,
            ca_pem,
            control,
        })
    }

    /// `https://127.0.0.1:PORT/hook`.
    pub(crate) fn url(&self) -> String {
        format!("https://127.0.0.1:{}/hook", self.addr.port())
    }

    /// Every request is answered 503 for `span` from now.
    pub(crate) fn outage(&self, span: Duration) {
        *lock(&self.control.outage_until) = Some(Instant::now() + span);
    }

    /// The next `count` requests are held for `span`, then their connections closed.
    pub(crate) fn hang_next(&self, count: usize, span: Duration) {
        *lock(&self.control.hang_for) = span;
        self.control.hang_next.fetch_add(count, Ordering::SeqCst);
    }

    /// The next `count` requests are taken, then their connections closed unanswered.
    pub(crate) fn close_next(&self, count: usize) {
        self.control.close_next.fetch_add(count, Ordering::SeqCst);
    }

    /// Every request so far (when recording).
    pub(crate) fn requests(&self) -> Vec<Recorded> {
        lock(&self.control.requests).clone()
    }

    /// Requests answered 200 (or taken before a close) so far.
    pub(crate) fn taken(&self) -> usize {
        self.control.taken.load(Ordering::Relaxed)
    }

    /// Requests received so far.
    pub(crate) fn received(&self) -> usize {
        self.control.received.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub(crate) fn connections(&self) -> usize {
        self.control.connections.load(Ordering::Relaxed)
    }
}

async fn handle(
    control: Arc<Control>,
    request: Request<Body>,
) -> std::result::Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = request.into_parts();
    let body = body
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    control.received.fetch_add(1, Ordering::Relaxed);
    let outage = lock(&control.outage_until).is_some_and(|until| Instant::now() < until);
    let answer = if outage {
        Answer::Unavailable
    } else if take_one(&control.hang_next) {
        Answer::Hung
    } else if take_one(&control.close_next) {
        Answer::TakenThenClosed
    } else {
        Answer::Taken
    };
    if answer.took() {
        control.taken.fetch_add(1, Ordering::Relaxed);
    }
    if control.record {
        let key = parts
            .headers
            .get("idempotency-key")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        lock(&control.requests).push(Recorded { key, json, answer });
    }
    let respond = |status: u16, text: &'static str| {
        Response::builder()
            .status(status)
            .body(Full::new(Bytes::from_static(text.as_bytes())))
            .map_err(std::io::Error::other)
    };
    match answer {
        Answer::Taken => respond(200, "{\"ok\":true}"),
        Answer::Unavailable => respond(503, "down for the soak\n"),
        Answer::Hung => {
            let span = *lock(&control.hang_for);
            tokio::time::sleep(span).await;
            // A service error makes hyper drop the connection without answering.
            Err(std::io::Error::other("hung up"))
        }
        Answer::TakenThenClosed => Err(std::io::Error::other("closed after taking")),
    }
}
