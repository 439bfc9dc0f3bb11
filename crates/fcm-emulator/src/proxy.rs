//! An HTTP `CONNECT` proxy on 127.0.0.1, for testing clients that reach Google through
//! one: it opens the tunnels it is asked for (optionally only with the right
//! `Proxy-Authorization`) and records their targets.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// The longest request head the proxy reads.
const MAX_HEAD: usize = 8 * 1024;

/// A running `CONNECT` proxy; it stops accepting when dropped (tunnels already open last
/// until either side closes).
#[derive(Debug)]
pub struct ConnectProxy {
    addr: SocketAddr,
    tunnels: Arc<Mutex<Vec<String>>>,
    refused: Arc<Mutex<u64>>,
    task: JoinHandle<()>,
}

impl ConnectProxy {
    /// Starts a proxy that opens every tunnel asked for.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_with_authorization(None).await
    }

    /// Starts a proxy that opens a tunnel only for requests whose `Proxy-Authorization`
    /// header is exactly `expected` (e.g. `Basic dXNlcjpwYXNz`), answering 407 otherwise.
    pub async fn start_with_authorization(expected: Option<String>) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let tunnels = Arc::new(Mutex::new(Vec::new()));
        let refused = Arc::new(Mutex::new(0));
        let (log, refusals) = (Arc::clone(&tunnels), Arc::clone(&refused));
        let expected = Arc::new(expected);
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (log, refusals, expected) = (
                    Arc::clone(&log),
                    Arc::clone(&refusals),
                    Arc::clone(&expected),
                );
                tokio::spawn(async move {
                    serve(client, expected.as_deref(), &log, &refusals).await;
                });
            }
        });
        Ok(Self {
            addr,
            tunnels,
            refused,
            task,
        })
    }

    /// The proxy's URL, `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The targets (`host:port`) of the tunnels opened so far, in order.
    pub fn tunnels(&self) -> Vec<String> {
        lock(&self.tunnels).clone()
    }

    /// How many requests were refused for want of the right authorization.
    pub fn refused(&self) -> u64 {
        *lock(&self.refused)
    }
}

impl Drop for ConnectProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One client: reads its `CONNECT`, opens the tunnel (recorded in `tunnels` before the
/// client hears of it), then copies both ways until either side closes.
async fn serve(
    mut client: TcpStream,
    expected: Option<&str>,
    tunnels: &Mutex<Vec<String>>,
    refused: &Mutex<u64>,
) {
    let mut head = Vec::new();
    let mut chunk = [0_u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match client.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => head.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
        if head.len() > MAX_HEAD {
            let _ = client
                .write_all(b"HTTP/1.1 431 Request Header Fields Too Large\r\n\r\n")
                .await;
            return;
        }
    }
    let text = String::from_utf8_lossy(&head);
    let mut lines = text.split("\r\n");
    let request_line = lines.next().unwrap_or_default();
    let mut words = request_line.split(' ');
    let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
        let _ = client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\n\r\n")
            .await;
        return;
    };
    let target = target.to_owned();
    if let Some(expected) = expected {
        let given = lines.find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("proxy-authorization")
                .then(|| value.trim().to_owned())
        });
        if given.as_deref() != Some(expected) {
            // Counted before the client hears of it.
            *lock(refused) += 1;
            let _ = client
                .write_all(
                    b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                      Proxy-Authenticate: Basic realm=\"test\"\r\n\r\n",
                )
                .await;
            return;
        }
    }
    let Ok(mut upstream) = TcpStream::connect(target.as_str()).await else {
        let _ = client.write_all(b"HTTP/1.1 502 Bad Gateway\r\n\r\n").await;
        return;
    };
    lock(tunnels).push(target);
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
    }
}
