//! [`PullkinCoreBuilder`]: the settings of a [`PullkinCore`]. The HTTP options (roots,
//! TLS, timeout, proxy) are those of fcm-http's [`ClientBuilder`], kept in one and
//! forwarded to it, not declared a second time.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fcm_http::{Client, ClientBuilder, Endpoints, HttpClient, Proxy, RetryPolicy};
use gcm_checkin::ChromeBuild;
use rustls::ClientConfig;

use super::{DEFAULT_REFRESH_MARGIN, PullkinCore};
use crate::PullkinError;

/// Configures a [`PullkinCore`]: endpoints, trusted roots, HTTP client, retries.
#[must_use]
pub struct PullkinCoreBuilder {
    endpoints: Endpoints,
    /// The HTTP options: roots, TLS configuration, timeout, proxy.
    client: ClientBuilder,
    /// The first unusable root bundle, reported by [`build`](Self::build).
    client_error: Option<fcm_http::Error>,
    http: Option<Arc<dyn HttpClient>>,
    retry: RetryPolicy,
    chrome: ChromeBuild,
    refresh_margin: Duration,
    /// Kept here too: the listener reaches the MCS server through it.
    proxy: Option<Proxy>,
}

impl fmt::Debug for PullkinCoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullkinCoreBuilder")
            .field("endpoints", &self.endpoints)
            .field("client", &self.client)
            .field("custom_http_client", &self.http.is_some())
            .field("retry", &self.retry)
            .field("proxy", &self.proxy)
            .field("chrome", &self.chrome)
            .field("refresh_margin", &self.refresh_margin)
            .finish_non_exhaustive()
    }
}

/// How long the core's HTTPS client keeps an idle connection.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(2);

impl Default for PullkinCoreBuilder {
    fn default() -> Self {
        Self {
            endpoints: Endpoints::google(),
            // Google is called in bursts (a registration's few requests, the check-ins
            // of many apps starting together) and then not for hours: a pooled
            // connection idle for a few seconds will not be used again soon, and each
            // holds its TLS state (a listener of thousands of apps kept
            // `concurrent_handshakes` of them for 90 s).
            client: Client::builder().pool_idle_timeout(POOL_IDLE_TIMEOUT),
            client_error: None,
            http: None,
            retry: RetryPolicy::default(),
            chrome: ChromeBuild::default(),
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            proxy: None,
        }
    }
}

impl PullkinCoreBuilder {
    /// Where Google's endpoints are (default: Google; an emulator's in tests, see
    /// [`Endpoints::at`]).
    pub fn endpoints(mut self, endpoints: Endpoints) -> Self {
        self.endpoints = endpoints;
        self
    }

    /// Trusts the certificates of a PEM bundle as roots too (e.g. a local emulator's CA),
    /// for HTTPS and for the MCS connection that reuses [`PullkinCore::tls_config`].
    /// A bundle without a certificate makes [`build`](Self::build) fail.
    pub fn add_root_certificates_pem(mut self, pem: &[u8]) -> Self {
        match self.client.clone().add_root_certificates_pem(pem) {
            Ok(client) => self.client = client,
            Err(error) => {
                self.client_error.get_or_insert(error);
            }
        }
        self
    }

    /// Whether to trust the Mozilla roots of `webpki-roots` (default `true`). Turn it off
    /// to trust only the certificates added with
    /// [`add_root_certificates_pem`](Self::add_root_certificates_pem).
    pub fn webpki_roots(mut self, enabled: bool) -> Self {
        self.client = self.client.webpki_roots(enabled);
        self
    }

    /// Uses this rustls configuration as it is (the root settings above are then
    /// ignored). It should announce no ALPN protocol.
    pub fn tls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.client = self.client.tls_config(config);
        self
    }

    /// Sends the HTTP requests through this client instead of the built-in one (a proxy,
    /// a test double). [`PullkinCore::tls_config`] is still built from the root settings.
    pub fn http_client(mut self, client: Arc<dyn HttpClient>) -> Self {
        self.http = Some(client);
        self
    }

    /// Sends the HTTP requests through this HTTP proxy (`CONNECT`; TLS stays end to end),
    /// or directly with `None` (the default). A listener built with
    /// [`PullkinBuilder::core`](crate::PullkinBuilder::core) reaches the MCS server
    /// through it too, unless its own configuration names one. A custom
    /// [`http_client`](Self::http_client) makes its own requests its own way; the MCS
    /// connection still takes this proxy.
    pub fn proxy(mut self, proxy: Option<Proxy>) -> Self {
        self.client = self.client.proxy(proxy.clone());
        self.proxy = proxy;
        self
    }

    /// How each HTTP step retries transient failures (default: 5 attempts, 1 s doubling
    /// up to 30 s, with jitter). The attempt counts of
    /// [`RegisterParams::retries`](crate::RegisterParams::retries) and
    /// [`FcmRegisterParams::retries`](crate::FcmRegisterParams::retries) override this
    /// policy's for their calls.
    pub fn retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The Chrome build check-ins describe (default: a recent stable Chrome on Linux).
    pub fn chrome_build(mut self, chrome: ChromeBuild) -> Self {
        self.chrome = chrome;
        self
    }

    /// The timeout of each HTTP exchange of the built-in client (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.client = self.client.timeout(timeout);
        self
    }

    /// How long before its expiry [`PullkinCore::renew`] refreshes the Firebase auth
    /// token (default [`DEFAULT_REFRESH_MARGIN`]).
    pub fn installation_refresh_margin(mut self, margin: Duration) -> Self {
        self.refresh_margin = margin;
        self
    }

    /// Builds the core. Fails when a root certificate bundle is unusable.
    pub fn build(self) -> Result<PullkinCore, PullkinError> {
        if let Some(error) = self.client_error {
            return Err(PullkinError::Http(error));
        }
        let tls = self.client.build_tls_config()?;
        let http: Arc<dyn HttpClient> = match self.http {
            Some(http) => http,
            None => Arc::new(self.client.tls_config(Arc::clone(&tls)).build()?),
        };
        Ok(PullkinCore {
            http,
            tls,
            endpoints: self.endpoints,
            retry: self.retry,
            chrome: self.chrome,
            refresh_margin: self.refresh_margin,
            proxy: self.proxy,
        })
    }
}
