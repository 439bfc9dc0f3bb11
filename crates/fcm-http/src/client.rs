//! The [`HttpClient`] trait and [`Client`], its hyper + rustls implementation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use rustls::{ClientConfig, RootCertStore};

use crate::Error;
use crate::proxy::{Dialer, Proxy, ProxyEnv};

/// A boxed, sendable future, the return type of [`HttpClient::send`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The default per-request timeout of [`Client`].
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The default connect timeout of [`Client`].
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The default cap on response bodies of [`Client`]: 1 MiB, far above any answer of
/// the registration endpoints.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 1 << 20;

/// A per-request timeout override: put it in the request's extensions and
/// [`Client`] uses it instead of its configured timeout.
///
/// ```
/// # use std::time::Duration;
/// let mut request = http::Request::new(bytes::Bytes::new());
/// request.extensions_mut().insert(fcm_http::RequestTimeout(Duration::from_secs(5)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RequestTimeout(pub Duration);

/// Something that can exchange one buffered HTTP request for one buffered response.
///
/// The protocol crates only use this trait, so a caller may plug in another client (a
/// test double, a proxying client, …). Implementations must:
/// - return `Ok` for a response with *any* status (statuses are the parsers' business);
/// - enforce a timeout over the whole exchange, honouring [`RequestTimeout`] when the
///   request carries one, and report it as [`Error::Timeout`];
/// - read the whole body, reporting failures as the transport variants of [`Error`].
pub trait HttpClient: Send + Sync {
    /// Sends `request` and returns the complete response.
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, Error>>;
}

impl<T: HttpClient + ?Sized> HttpClient for &T {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, Error>> {
        (**self).send(request)
    }
}

impl<T: HttpClient + ?Sized> HttpClient for Arc<T> {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, Error>> {
        (**self).send(request)
    }
}

impl<T: HttpClient + ?Sized> HttpClient for Box<T> {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, Error>> {
        (**self).send(request)
    }
}

/// The default [`HttpClient`]: hyper 1 (HTTP/1.1, pooled connections) over rustls with
/// the `ring` provider, trusting the webpki roots plus any root certificate the caller
/// adds. Certificates are always verified; there is no switch to turn that off.
///
/// The rustls [`ClientConfig`] is built once and shared by every connection (and by
/// clones of the `Client`, which are cheap); [`Client::tls_config`] hands it out so that
/// other TLS connections (e.g. the MCS socket) can share it too.
#[derive(Clone)]
pub struct Client {
    inner: HyperClient<HttpsConnector<Dialer>, Full<Bytes>>,
    tls: Arc<ClientConfig>,
    timeout: Duration,
    max_response_bytes: usize,
    https_only: bool,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("timeout", &self.timeout)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("https_only", &self.https_only)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// A client with the default settings (webpki roots, 30 s timeout).
    pub fn new() -> Result<Self, Error> {
        Self::builder().build()
    }

    /// A builder to configure roots, timeouts and limits.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The shared rustls configuration (no ALPN protocols set).
    pub fn tls_config(&self) -> &Arc<ClientConfig> {
        &self.tls
    }

    /// The timeout applied to each request that carries no [`RequestTimeout`].
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    async fn exchange(
        &self,
        request: Request<Full<Bytes>>,
        host: &str,
    ) -> Result<Response<Bytes>, Error> {
        let response = self
            .inner
            .request(request)
            .await
            .map_err(|e| classify(e, host))?;
        let (parts, body) = response.into_parts();
        let body = Limited::new(body, self.max_response_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.downcast_ref::<LengthLimitError>().is_some() {
                    Error::BodyTooLarge {
                        limit: self.max_response_bytes,
                    }
                } else {
                    Error::Transport {
                        host: host.to_owned(),
                        source: e,
                    }
                }
            })?
            .to_bytes();
        Ok(Response::from_parts(parts, body))
    }
}

impl HttpClient for Client {
    fn send(&self, request: Request<Bytes>) -> BoxFuture<'_, Result<Response<Bytes>, Error>> {
        Box::pin(async move {
            let timeout = request
                .extensions()
                .get::<RequestTimeout>()
                .map_or(self.timeout, |t| t.0);
            let uri = request.uri();
            let host = uri.host().unwrap_or_default().to_owned();
            match uri.scheme_str() {
                Some("https") => {}
                Some("http") if !self.https_only => {}
                _ => {
                    return Err(Error::InvalidRequest(format!(
                        "unsupported URL scheme {:?}{}",
                        uri.scheme_str().unwrap_or_default(),
                        if self.https_only {
                            " (this client is https-only)"
                        } else {
                            ""
                        }
                    )));
                }
            }
            // Host only: paths and queries may hold tokens (e.g. a registration's name).
            tracing::debug!(method = %request.method(), %host, "sending request");
            let (parts, body) = request.into_parts();
            let request = Request::from_parts(parts, Full::new(body));
            match tokio::time::timeout(timeout, self.exchange(request, &host)).await {
                Ok(result) => {
                    if let Ok(response) = &result {
                        tracing::debug!(status = %response.status(), %host, "response");
                    }
                    result
                }
                Err(_elapsed) => Err(Error::Timeout {
                    host,
                    after: timeout,
                }),
            }
        })
    }
}

/// Sorts a hyper-util error into connect / TLS / transport.
fn classify(error: hyper_util::client::legacy::Error, host: &str) -> Error {
    if let Some(tls) = find_rustls_error(&error) {
        return Error::Tls {
            host: host.to_owned(),
            source: tls,
        };
    }
    let host = host.to_owned();
    if error.is_connect() {
        Error::Connect {
            host,
            source: Box::new(error),
        }
    } else {
        Error::Transport {
            host,
            source: Box::new(error),
        }
    }
}

/// Walks an error's causes, looking inside `io::Error`s too (their `source()` skips the
/// wrapped error), for the rustls error of a failed handshake.
fn find_rustls_error(error: &(dyn std::error::Error + 'static)) -> Option<rustls::Error> {
    let mut pending: Vec<&(dyn std::error::Error + 'static)> = vec![error];
    // Bounded: error chains are short; the cap guards against pathological cycles.
    let mut budget = 32;
    while let Some(current) = pending.pop() {
        budget -= 1;
        if budget == 0 {
            break;
        }
        if let Some(tls) = current.downcast_ref::<rustls::Error>() {
            return Some(tls.clone());
        }
        if let Some(io) = current.downcast_ref::<std::io::Error>()
            && let Some(inner) = io.get_ref()
        {
            pending.push(inner);
        }
        if let Some(source) = current.source() {
            pending.push(source);
        }
    }
    None
}

/// Configures a [`Client`].
#[derive(Clone, Debug)]
pub struct ClientBuilder {
    extra_roots: Vec<CertificateDer<'static>>,
    webpki_roots: bool,
    tls_config: Option<Arc<ClientConfig>>,
    timeout: Duration,
    connect_timeout: Duration,
    max_response_bytes: usize,
    https_only: bool,
    pool_idle_timeout: Duration,
    proxy: Option<Proxy>,
    proxy_env: Option<ProxyEnv>,
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            extra_roots: Vec::new(),
            webpki_roots: true,
            tls_config: None,
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            https_only: false,
            pool_idle_timeout: Duration::from_secs(90),
            proxy: None,
            proxy_env: None,
        }
    }
}

impl ClientBuilder {
    /// Trusts the certificates of a PEM bundle (every `CERTIFICATE` section) as roots,
    /// e.g. the CA of a local emulator. Fails when it holds no certificate.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Result<Self, Error> {
        let mut found = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| Error::Config(format!("root certificate PEM: {e}")))?;
            self.extra_roots.push(cert);
            found += 1;
        }
        if found == 0 {
            return Err(Error::Config(
                "no CERTIFICATE section in the root certificate PEM".into(),
            ));
        }
        Ok(self)
    }

    /// Trusts one DER-encoded certificate as a root.
    pub fn add_root_certificate_der(mut self, der: impl Into<Vec<u8>>) -> Self {
        self.extra_roots.push(CertificateDer::from(der.into()));
        self
    }

    /// Whether to trust the Mozilla roots of `webpki-roots` (default `true`). Turn it off
    /// to trust only the certificates added with `add_root_certificate*`.
    pub fn webpki_roots(mut self, enabled: bool) -> Self {
        self.webpki_roots = enabled;
        self
    }

    /// Uses this rustls configuration as it is, shared, instead of building one (the
    /// root settings above are then ignored). It should have no ALPN protocols, or
    /// `http/1.1` only.
    pub fn tls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// The timeout of each whole exchange (connect, request, full response body);
    /// default [`DEFAULT_TIMEOUT`]. A [`RequestTimeout`] extension overrides it.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The TCP connect timeout; default [`DEFAULT_CONNECT_TIMEOUT`].
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The largest response body accepted; default [`DEFAULT_MAX_RESPONSE_BYTES`].
    pub fn max_response_bytes(mut self, limit: usize) -> Self {
        self.max_response_bytes = limit;
        self
    }

    /// Refuse plain `http://` URLs (default `false`: local fakes speak plain HTTP).
    pub fn https_only(mut self, https_only: bool) -> Self {
        self.https_only = https_only;
        self
    }

    /// The proxy of every request: `Some(proxy)` sends each `https://` request through
    /// this HTTP proxy (a `CONNECT` tunnel per connection; TLS stays end to end),
    /// `Some(Proxy::none())` sends them directly, and `None` (the default) lets the
    /// environment choose per host: `HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY` and
    /// `NO_PROXY` (see [`ProxyEnv`] and [`Proxy::select`]; loopback hosts are always
    /// reached directly then). Plain `http://` requests that would go through a proxy
    /// fail with a transport error instead of being sent.
    pub fn proxy(mut self, proxy: Option<Proxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// Where the proxy variables come from when [`proxy`](Self::proxy) is `None`
    /// (default: the process's environment, read once by [`build`](Self::build)).
    pub fn proxy_env(mut self, env: ProxyEnv) -> Self {
        self.proxy_env = Some(env);
        self
    }

    /// How long an idle pooled connection is kept; default 90 s.
    pub fn pool_idle_timeout(mut self, timeout: Duration) -> Self {
        self.pool_idle_timeout = timeout;
        self
    }

    /// Builds the rustls configuration this builder describes (ring provider, safe
    /// default protocol versions, no client authentication).
    pub fn build_tls_config(&self) -> Result<Arc<ClientConfig>, Error> {
        if let Some(config) = &self.tls_config {
            return Ok(Arc::clone(config));
        }
        let mut roots = RootCertStore::empty();
        if self.webpki_roots {
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        }
        for cert in &self.extra_roots {
            roots
                .add(cert.clone())
                .map_err(|e| Error::Config(format!("root certificate: {e}")))?;
        }
        if roots.is_empty() {
            return Err(Error::Config("no trusted root certificate".into()));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::Config(format!("TLS protocol versions: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(config))
    }

    /// Builds the client. Needs no runtime; sending needs a tokio runtime with timers.
    pub fn build(self) -> Result<Client, Error> {
        let tls = self.build_tls_config()?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_connect_timeout(Some(self.connect_timeout));
        http.set_happy_eyeballs_timeout(Some(Duration::from_millis(250)));
        http.set_nodelay(true);
        // An explicit setting leaves the environment unread.
        let env = match (&self.proxy, self.proxy_env) {
            (Some(_), _) => ProxyEnv::empty(),
            (None, Some(env)) => env,
            (None, None) => ProxyEnv::from_env(),
        };
        let dialer = Dialer {
            http,
            proxy: self.proxy.map(Arc::new),
            env,
            connect_timeout: self.connect_timeout,
        };
        let https = HttpsConnector::from((dialer, Arc::clone(&tls)));
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(self.pool_idle_timeout)
            .build(https);
        Ok(Client {
            inner,
            tls,
            timeout: self.timeout,
            max_response_bytes: self.max_response_bytes,
            https_only: self.https_only,
        })
    }
}
