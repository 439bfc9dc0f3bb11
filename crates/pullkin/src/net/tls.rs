//! TLS over TCP on rustls' unbuffered API, with buffers that belong to the connection.
//!
//! rustls' buffered connection keeps a 4 KiB record buffer, filled with zeros once and
//! kept for the connection's whole life. Thousands of idle push connections add that up,
//! so this stream owns its buffers instead and gives them back whenever they are empty:
//! an idle connection holds rustls' protocol state and nothing else.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Buf, BytesMut};
use rustls::ClientConfig;
use rustls::client::UnbufferedClientConnection;
use rustls::pki_types::ServerName;
use rustls::unbuffered::{ConnectionState, EncodeError, EncryptError, InsufficientSizeError};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_util::io::poll_read_buf;

/// Room asked for before each read from the socket (a TLS record is at most ~16.6 KiB).
const READ_CHUNK: usize = 16 * 1024;

/// Encrypted bytes waiting to be sent past which a write waits for the socket.
const MAX_PENDING_OUT: usize = 64 * 1024;

/// The send buffer keeps this much room once emptied (acknowledgements and pings are
/// small); more is given back.
const KEEP_OUT: usize = 1024;

/// What rustls needs next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Next {
    /// Handshake done, nothing buffered left to process: more input, or data to send.
    Traffic,
    /// The handshake waits for the peer.
    Input,
    /// Both sides closed: nothing more can be sent.
    Closed,
}

/// A client TLS stream over TCP.
pub(crate) struct TlsStream {
    tcp: TcpStream,
    conn: UnbufferedClientConnection,
    /// TLS bytes received and not yet processed.
    incoming: BytesMut,
    /// Decrypted application data not yet read.
    plaintext: BytesMut,
    /// TLS bytes to send: `outgoing[sent..]`.
    outgoing: Vec<u8>,
    sent: usize,
    /// The peer sent close_notify, or ended the TCP stream between records.
    eof: bool,
    /// A close_notify is wanted / was queued.
    closing: bool,
    close_queued: bool,
}

fn tls_error(error: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, error)
}

impl TlsStream {
    /// Runs the handshake as the client of `name` on `tcp`.
    pub(crate) async fn connect(
        config: Arc<ClientConfig>,
        name: ServerName<'static>,
        tcp: TcpStream,
    ) -> io::Result<Self> {
        let conn = UnbufferedClientConnection::new(config, name).map_err(tls_error)?;
        let mut stream = Self {
            tcp,
            conn,
            incoming: BytesMut::new(),
            plaintext: BytesMut::new(),
            outgoing: Vec::new(),
            sent: 0,
            eof: false,
            closing: false,
            close_queued: false,
        };
        loop {
            let next = stream.process(None, None)?;
            std::future::poll_fn(|cx| stream.poll_send(cx)).await?;
            match next {
                Next::Traffic if !stream.eof => return Ok(stream),
                Next::Input => {
                    let read = std::future::poll_fn(|cx| stream.poll_fill(cx)).await?;
                    if read == 0 {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "the server closed the connection during the TLS handshake",
                        ));
                    }
                }
                Next::Traffic | Next::Closed => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the TLS session during the handshake",
                    ));
                }
            }
        }
    }

    /// Lets rustls process what was received (decrypted data goes to `plaintext`,
    /// records to send to `outgoing`) until it needs input or may send; encrypts `data`
    /// then, if given. Returns what is needed next.
    ///
    /// Decrypted data goes straight into `read` while it has room and nothing is staged
    /// before it (one copy less on the hot path); the rest is staged in `plaintext`.
    fn process(
        &mut self,
        mut data: Option<&[u8]>,
        mut read: Option<&mut ReadBuf<'_>>,
    ) -> io::Result<Next> {
        loop {
            let status = self.conn.process_tls_records(&mut self.incoming[..]);
            let mut discard = status.discard;
            let mut next = None;
            match status.state.map_err(tls_error)? {
                ConnectionState::ReadTraffic(mut traffic) => {
                    while let Some(record) = traffic.next_record() {
                        let record = record.map_err(tls_error)?;
                        discard += record.discard;
                        let mut payload = record.payload;
                        if let Some(out) = read.as_deref_mut()
                            && self.plaintext.is_empty()
                        {
                            let direct = out.remaining().min(payload.len());
                            out.put_slice(&payload[..direct]);
                            payload = &payload[direct..];
                        }
                        self.plaintext.extend_from_slice(payload);
                    }
                }
                ConnectionState::EncodeTlsData(mut encode) => {
                    let start = self.outgoing.len();
                    loop {
                        match encode.encode(&mut self.outgoing[start..]) {
                            Ok(written) => {
                                self.outgoing.truncate(start + written);
                                break;
                            }
                            Err(EncodeError::InsufficientSize(InsufficientSizeError {
                                required_size,
                            })) => self.outgoing.resize(start + required_size, 0),
                            Err(error) => return Err(io::Error::other(error)),
                        }
                    }
                }
                // What is in `outgoing` is sent before any later byte and before waiting
                // for the peer: it counts as transmitted here.
                ConnectionState::TransmitTlsData(transmit) => transmit.done(),
                ConnectionState::BlockedHandshake => next = Some(Next::Input),
                // Edge-triggered: sending stays possible.
                ConnectionState::PeerClosed => self.eof = true,
                ConnectionState::Closed => {
                    self.eof = true;
                    next = Some(Next::Closed);
                }
                ConnectionState::WriteTraffic(mut traffic) => {
                    if let Some(bytes) = data.take() {
                        append_encrypted(&mut self.outgoing, bytes.len(), |out| {
                            traffic.encrypt(bytes, out)
                        })?;
                    }
                    if self.closing && !self.close_queued {
                        self.close_queued = true;
                        append_encrypted(&mut self.outgoing, 0, |out| {
                            traffic.queue_close_notify(out)
                        })?;
                    }
                    next = Some(Next::Traffic);
                }
                _ => return Err(io::Error::other("unexpected TLS state for a client")),
            }
            self.incoming.advance(discard);
            if let Some(next) = next {
                return Ok(next);
            }
        }
    }

    /// Sends what is in `outgoing`.
    fn poll_send(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.outgoing.len() {
            let written =
                ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.outgoing[self.sent..]))?;
            if written == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += written;
        }
        self.outgoing.clear();
        if self.outgoing.capacity() > KEEP_OUT {
            self.outgoing = Vec::new();
        }
        self.sent = 0;
        Poll::Ready(Ok(()))
    }

    /// Reads from the socket into `incoming`; `Ok(0)` at the end of the stream.
    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        if self.incoming.capacity() - self.incoming.len() < READ_CHUNK / 4 {
            self.incoming.reserve(READ_CHUNK);
        }
        let read = poll_read_buf(Pin::new(&mut self.tcp), cx, &mut self.incoming);
        if read.is_pending() {
            // Waiting for the peer: hold no room that nothing occupies (a busy connection
            // rarely gets here; an idle one waits here).
            if self.incoming.is_empty() {
                self.incoming = BytesMut::new();
            }
            if self.plaintext.is_empty() {
                self.plaintext = BytesMut::new();
            }
        }
        read
    }
}

/// Lets `write` put TLS records at the end of `out` (`hint`: bytes of data to encrypt),
/// growing it as rustls asks.
fn append_encrypted(
    out: &mut Vec<u8>,
    hint: usize,
    mut write: impl FnMut(&mut [u8]) -> Result<usize, EncryptError>,
) -> io::Result<()> {
    let start = out.len();
    // Every record (up to 16 KiB of data) adds a header and a tag.
    out.resize(start + hint + 64 * (hint / 16_384 + 1), 0);
    loop {
        match write(&mut out[start..]) {
            Ok(written) => {
                out.truncate(start + written);
                return Ok(());
            }
            Err(EncryptError::InsufficientSize(InsufficientSizeError { required_size })) => {
                out.resize(start + required_size, 0);
            }
            Err(error) => {
                out.truncate(start);
                return Err(io::Error::other(error));
            }
        }
    }
}

impl AsyncRead for TlsStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            if !this.plaintext.is_empty() {
                let n = this.plaintext.len().min(buf.remaining());
                buf.put_slice(&this.plaintext[..n]);
                this.plaintext.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                return Poll::Ready(Ok(()));
            }
            // Records rustls wants sent (alerts, key updates) go out before waiting for
            // the peer; a full socket does not stop the reading.
            if let Poll::Ready(Err(error)) = this.poll_send(cx) {
                return Poll::Ready(Err(error));
            }
            let filled = buf.filled().len();
            this.process(None, Some(buf))?;
            if buf.filled().len() > filled {
                return Poll::Ready(Ok(()));
            }
            if !this.plaintext.is_empty() || this.eof {
                continue;
            }
            if ready!(this.poll_fill(cx))? == 0 {
                if !this.incoming.is_empty() {
                    return Poll::Ready(Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the connection ended inside a TLS record",
                    )));
                }
                this.eof = true;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        if this.outgoing.len() - this.sent >= MAX_PENDING_OUT {
            ready!(this.poll_send(cx))?;
        }
        match this.process(Some(data), None)? {
            Next::Traffic => Poll::Ready(Ok(data.len())),
            Next::Input => Poll::Ready(Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "the TLS handshake is not complete",
            ))),
            Next::Closed => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.closing {
            this.closing = true;
            this.process(None, None)?;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    use std::future::Future;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

    /// A TLS server for one connection, handled by `handle`; returns its port and CA.
    async fn serve<F, Fut>(handle: F) -> (u16, String)
    where
        F: FnOnce(ServerStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send,
    {
        let (config, ca) = fcm_emulator::local_server_tls(&["localhost".to_owned()]).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            if let Ok(tls) = tokio_rustls::TlsAcceptor::from(config).accept(tcp).await {
                handle(tls).await;
            }
        });
        (port, ca)
    }

    fn client_config(ca_pem: &str, tls12_only: bool) -> Arc<ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(cert.unwrap()).unwrap();
        }
        let versions: &[&rustls::SupportedProtocolVersion] = if tls12_only {
            &[&rustls::version::TLS12]
        } else {
            rustls::ALL_VERSIONS
        };
        Arc::new(
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_protocol_versions(versions)
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    async fn connect(port: u16, config: Arc<ClientConfig>) -> io::Result<TlsStream> {
        let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
        let name = ServerName::try_from("localhost").unwrap();
        TlsStream::connect(config, name, tcp).await
    }

    #[tokio::test]
    async fn echoes_large_writes_with_tls13_and_tls12_and_holds_no_buffer_when_idle() {
        for tls12_only in [false, true] {
            let (port, ca) = serve(|mut tls| async move {
                let mut buf = vec![0; 70_000];
                loop {
                    let n = tls.read(&mut buf).await.unwrap();
                    if n == 0 {
                        break;
                    }
                    tls.write_all(&buf[..n]).await.unwrap();
                    tls.flush().await.unwrap();
                }
                tls.shutdown().await.unwrap();
            })
            .await;
            let mut client = connect(port, client_config(&ca, tls12_only)).await.unwrap();
            let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            client.write_all(&data).await.unwrap();
            client.flush().await.unwrap();
            let mut back = vec![0; data.len()];
            client.read_exact(&mut back).await.unwrap();
            assert!(
                back == data,
                "the echo matches (TLS 1.2 only: {tls12_only})"
            );
            assert_eq!(
                client.outgoing.capacity(),
                0,
                "a big send buffer is given back"
            );
            // Waiting for more with nothing buffered holds no receive buffer.
            let waited = tokio::time::timeout(
                std::time::Duration::from_millis(50),
                client.read(&mut [0; 16]),
            )
            .await;
            assert!(waited.is_err(), "nothing more was sent");
            assert_eq!(client.incoming.capacity(), 0);
            assert_eq!(client.plaintext.capacity(), 0);
            // close_notify both ways, then the end of the stream.
            client.shutdown().await.unwrap();
            let mut rest = Vec::new();
            client.read_to_end(&mut rest).await.unwrap();
            assert!(rest.is_empty());
        }
    }

    #[tokio::test]
    async fn a_cut_between_records_is_the_end_and_inside_a_record_an_error() {
        let (port, ca) = serve(|mut tls| async move {
            tls.write_all(b"hello").await.unwrap();
            tls.flush().await.unwrap();
            // The TCP stream ends without close_notify.
            let (tcp, _) = tls.into_inner();
            drop(tcp);
        })
        .await;
        let mut client = connect(port, client_config(&ca, false)).await.unwrap();
        let mut got = Vec::new();
        client.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, b"hello");

        let (port, ca) = serve(|tls| async move {
            let (mut tcp, _) = tls.into_inner();
            // An application-data record header announcing 64 bytes, then only 10.
            tcp.write_all(&[0x17, 0x03, 0x03, 0x00, 0x40])
                .await
                .unwrap();
            tcp.write_all(&[0; 10]).await.unwrap();
            drop(tcp);
        })
        .await;
        let mut client = connect(port, client_config(&ca, false)).await.unwrap();
        let error = client.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof, "{error}");
    }

    #[tokio::test]
    async fn garbage_and_untrusted_certificates_are_errors() {
        let (port, ca) = serve(|tls| async move {
            let (mut tcp, _) = tls.into_inner();
            tcp.write_all(&[0x42; 64]).await.unwrap();
            let _ = tcp.read(&mut [0; 64]).await;
        })
        .await;
        let mut client = connect(port, client_config(&ca, false)).await.unwrap();
        let error = client.read_to_end(&mut Vec::new()).await.unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");

        let (port, _) = serve(|_| async {}).await;
        let (_, other_ca) = fcm_emulator::local_server_tls(&["localhost".to_owned()]).unwrap();
        let error = match connect(port, client_config(&other_ca, false)).await {
            Ok(_) => panic!("a certificate from another CA was accepted"),
            Err(error) => error,
        };
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
        assert!(error.to_string().contains("certificate"), "{error}");
    }
}
