//! The one TLS accept loop both servers run, and the shutdown signal their connections
//! watch.
//!
//! Depends on no other module of the crate: the servers hand it what differs (a name
//! for the logs, the handshake timeout, a span, the per-connection handler).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::ServerConfig;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{Instrument, Span, debug, warn};

/// A server's TLS connection, as its handler receives it.
pub(crate) type Tls = TlsStream<TcpStream>;

/// Resolves once shutdown is signalled (or the handle is gone).
pub(crate) async fn shutdown_signal(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// What differs between the servers' accept loops.
pub(crate) struct Listener {
    /// The server's name in the logs (`"HTTP accept failed"`).
    pub(crate) name: &'static str,
    /// Whether accepted sockets get `TCP_NODELAY`.
    pub(crate) nodelay: bool,
    /// How long a client may take to complete the TLS handshake.
    pub(crate) handshake_timeout: Duration,
    /// The span each connection's task runs in.
    pub(crate) span: fn(SocketAddr) -> Span,
}

/// A bound listener with what its connections need from the handle: the server's TLS
/// configuration, the shutdown signal, and the sender every task holds a clone of so the
/// handle knows when all have ended.
pub(crate) struct Bound {
    pub(crate) listener: TcpListener,
    pub(crate) tls: Arc<ServerConfig>,
    pub(crate) shutdown: watch::Receiver<bool>,
    pub(crate) done: mpsc::Sender<()>,
}

impl Bound {
    /// Accepts connections until shutdown; each gets a task of its own (in the listener's
    /// span) that completes the TLS handshake and hands the stream to `handle`.
    pub(crate) async fn serve<H, F>(self, settings: Listener, handle: H)
    where
        H: Fn(Tls, watch::Receiver<bool>) -> F + Clone + Send + 'static,
        F: Future<Output = ()> + Send + 'static,
    {
        let Self {
            listener,
            tls,
            mut shutdown,
            done,
        } = self;
        let acceptor = TlsAcceptor::from(tls);
        loop {
            tokio::select! {
                () = shutdown_signal(&mut shutdown) => break,
                accepted = listener.accept() => match accepted {
                    Ok((tcp, peer)) => {
                        if settings.nodelay {
                            let _ = tcp.set_nodelay(true);
                        }
                        let connection = handshake(
                            acceptor.clone(),
                            tcp,
                            settings.handshake_timeout,
                            shutdown.clone(),
                        );
                        let done = done.clone();
                        let handle = handle.clone();
                        // The handshake runs in the task, so the accept loop never waits
                        // on a client.
                        let task = async move {
                            if let Some((tls, shutdown)) = connection.await {
                                handle(tls, shutdown).await;
                            }
                            drop(done);
                        };
                        tokio::spawn(task.instrument((settings.span)(peer)));
                    }
                    Err(e) => {
                        warn!("{} accept failed: {e}", settings.name);
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                },
            }
        }
        drop(done);
    }
}

/// The TLS handshake, given up at shutdown or after `timeout`.
async fn handshake(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    timeout: Duration,
    mut shutdown: watch::Receiver<bool>,
) -> Option<(Tls, watch::Receiver<bool>)> {
    tokio::select! {
        () = shutdown_signal(&mut shutdown) => None,
        tls = tokio::time::timeout(timeout, acceptor.accept(tcp)) => match tls {
            Ok(Ok(tls)) => Some((tls, shutdown)),
            Ok(Err(e)) => {
                debug!("TLS handshake failed: {e}");
                None
            }
            Err(_) => {
                debug!("TLS handshake timed out");
                None
            }
        },
    }
}
