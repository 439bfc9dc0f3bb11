//! Registration: [`PullkinCore`], the seed's `PullkinCore` in Rust idiom.
//!
//! A registration runs the pipeline of PROTOCOL.md §1: a check-in gives the device its
//! `android_id` and `security_token`, register3 gives it a GCM token, a Firebase
//! installation gives it a FID and an auth token, and the FCM registration binds fresh
//! Web Push keys to an FCM token, the address senders push to. [`PullkinCore::register`]
//! runs all of it and returns the [`AppCredentials`] the listener needs; the steps are
//! available one by one as well ([`PullkinCore::gcm_check_in`],
//! [`PullkinCore::gcm_register`], [`PullkinCore::fcm_installation`],
//! [`PullkinCore::fcm_register`]).
//!
//! Credentials age: the Firebase auth token lives seven days, and Google may forget a
//! device. [`PullkinCore::renew`] checks the stored identity in again, refreshes the auth
//! token before it expires and registers anew when the identity is dead, telling the
//! caller when the credentials changed so that it can store them and pass the new FCM
//! token to its senders.
//!
//! ```no_run
//! # async fn demo() -> Result<(), pullkin::PullkinError> {
//! use pullkin::{PullkinCore, RegisterParams};
//!
//! let core = PullkinCore::new()?;
//! let params = RegisterParams::android("123456789012", "1:123456789012:android:0a1b2c3d", "AIzaSy…", "my-project")
//!     .app_name("com.example.app");
//! let credentials = core.register(&params).await?;
//! if let Some(token) = credentials.fcm.token() {
//!     // hand `token` to the sender
//! #   let _ = token;
//! }
//! # Ok(()) }
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fcm_http::http::StatusCode;
use fcm_http::{Client, Endpoints, HttpClient, Proxy, RetryPolicy};
use fcm_install::{FirebaseApp, Installation, WebPushSubscription};
use gcm_checkin::{
    AndroidRegistration, CHROME_APP, CHROME_VAPID_KEY, CheckinCredentials, CheckinRequest,
    CheckinResponse, ChromeBuild, DEFAULT_ANDROID_CERT, DEFAULT_WEB_BUNDLE, GcmToken,
    InstallationAuth, RegisterRequest, WebRegistration,
};
use rustls::ClientConfig;
use webpush_ece::ReceiverKeys;

use crate::PullkinError;
use crate::credentials::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, FirebaseConfig,
    Persona,
};

/// The package the Android persona registers as unless told otherwise (the seed's
/// `app_name` default).
pub const DEFAULT_APP_NAME: &str = CHROME_APP;

/// How many attempts each registration step makes by default (the seed's `retries`).
pub const DEFAULT_RETRIES: u32 = 5;

/// How long before its expiry [`PullkinCore::renew`] refreshes the Firebase auth token
/// by default: one day of its seven.
pub const DEFAULT_REFRESH_MARGIN: Duration = Duration::from_secs(24 * 60 * 60);

/// Registers devices with Google (check-in, GCM, Firebase Installations, FCM) and keeps
/// their credentials alive. Cheap to clone; every clone shares one HTTP client.
///
/// Nothing blocks: every call is `async` and waits between retries with
/// `tokio::time::sleep`, so a tokio runtime with timers must drive it.
#[derive(Clone)]
pub struct PullkinCore {
    http: Arc<dyn HttpClient>,
    tls: Arc<ClientConfig>,
    endpoints: Endpoints,
    retry: RetryPolicy,
    chrome: ChromeBuild,
    refresh_margin: Duration,
    proxy: Option<Proxy>,
}

impl fmt::Debug for PullkinCore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullkinCore")
            .field("endpoints", &self.endpoints)
            .field("retry", &self.retry)
            .field("proxy", &self.proxy)
            .field("chrome", &self.chrome)
            .field("refresh_margin", &self.refresh_margin)
            .finish_non_exhaustive()
    }
}

/// Configures a [`PullkinCore`]: endpoints, trusted roots, HTTP client, retries.
#[must_use]
pub struct PullkinCoreBuilder {
    endpoints: Endpoints,
    root_pems: Vec<Vec<u8>>,
    webpki_roots: bool,
    tls_config: Option<Arc<ClientConfig>>,
    http: Option<Arc<dyn HttpClient>>,
    retry: RetryPolicy,
    chrome: ChromeBuild,
    timeout: Option<Duration>,
    refresh_margin: Duration,
    proxy: Option<Proxy>,
}

impl fmt::Debug for PullkinCoreBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PullkinCoreBuilder")
            .field("endpoints", &self.endpoints)
            .field("extra_roots", &self.root_pems.len())
            .field("webpki_roots", &self.webpki_roots)
            .field("custom_tls_config", &self.tls_config.is_some())
            .field("custom_http_client", &self.http.is_some())
            .field("retry", &self.retry)
            .field("proxy", &self.proxy)
            .field("chrome", &self.chrome)
            .field("timeout", &self.timeout)
            .field("refresh_margin", &self.refresh_margin)
            .finish()
    }
}

impl Default for PullkinCoreBuilder {
    fn default() -> Self {
        Self {
            endpoints: Endpoints::google(),
            root_pems: Vec::new(),
            webpki_roots: true,
            tls_config: None,
            http: None,
            retry: RetryPolicy::default(),
            chrome: ChromeBuild::default(),
            timeout: None,
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
        self.root_pems.push(pem.to_vec());
        self
    }

    /// Whether to trust the Mozilla roots of `webpki-roots` (default `true`). Turn it off
    /// to trust only the certificates added with
    /// [`add_root_certificates_pem`](Self::add_root_certificates_pem).
    pub fn webpki_roots(mut self, enabled: bool) -> Self {
        self.webpki_roots = enabled;
        self
    }

    /// Uses this rustls configuration as it is (the root settings above are then
    /// ignored). It should announce no ALPN protocol.
    pub fn tls_config(mut self, config: Arc<ClientConfig>) -> Self {
        self.tls_config = Some(config);
        self
    }

    /// Sends the HTTP requests through this client instead of the built-in one (a proxy,
    /// a test double). [`PullkinCore::tls_config`] is still built from the root settings.
    pub fn http_client(mut self, client: Arc<dyn HttpClient>) -> Self {
        self.http = Some(client);
        self
    }

    /// Sends the HTTP requests through this HTTP proxy (`CONNECT`; TLS stays end to end),
    /// or directly with `None` (the default). A listener made with [`Pullkin::with_core`](crate::Pullkin::with_core)
    /// reaches the MCS server through it too, unless its own configuration names one.
    /// A custom [`http_client`](Self::http_client) makes its own requests its own way;
    /// the MCS connection of `with_core` still takes this proxy.
    pub fn proxy(mut self, proxy: Option<Proxy>) -> Self {
        self.proxy = proxy;
        self
    }

    /// How each HTTP step retries transient failures (default: 5 attempts, 1 s doubling
    /// up to 30 s, with jitter). The attempt counts of [`RegisterParams::retries`] and
    /// [`FcmRegisterParams::retries`] override this policy's for their calls.
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
        self.timeout = Some(timeout);
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
        let mut client = Client::builder()
            .webpki_roots(self.webpki_roots)
            .proxy(self.proxy.clone());
        for pem in &self.root_pems {
            client = client.add_root_certificates_pem(pem)?;
        }
        if let Some(config) = self.tls_config {
            client = client.tls_config(config);
        }
        if let Some(timeout) = self.timeout {
            client = client.timeout(timeout);
        }
        let tls = client.build_tls_config()?;
        let http: Arc<dyn HttpClient> = match self.http {
            Some(http) => http,
            None => Arc::new(client.tls_config(Arc::clone(&tls)).build()?),
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

/// What [`PullkinCore::register`] and [`PullkinCore::gcm_register`] register: the
/// sender, the Firebase app and the persona, with the seed's defaults.
///
/// ```
/// use pullkin::{Persona, RegisterParams};
/// // The seed's Android persona, as package `com.example.app`:
/// let android = RegisterParams::android("1234", "1:1234:android:ab", "AIza…", "my-project")
///     .app_name("com.example.app");
/// // Chrome, receiving Web Push for a sender's VAPID key:
/// let web = RegisterParams::web("1234", "1:1234:web:cd", "AIza…", "my-project")
///     .vapid_key("BEl62iUYgUivxIkv69yViEuiBIa-Ib9-SkvMeAtA3LFgDzkrxZJjSgSnfckjBJuBkr3qBUYIHBQFLXYp5Nksh8U");
/// assert!(matches!(web.config().unwrap().persona, Persona::Web { .. }));
/// assert_eq!(android.sender_id(), "1234");
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct RegisterParams {
    sender_id: String,
    app_id: String,
    api_key: Option<String>,
    project_id: Option<String>,
    persona: Persona,
    vapid_key: Option<String>,
    retries: u32,
}

impl fmt::Debug for RegisterParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RegisterParams")
            .field("sender_id", &self.sender_id)
            .field("app_id", &self.app_id)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("project_id", &self.project_id)
            .field("persona", &self.persona)
            .field("vapid_key", &self.vapid_key)
            .field("retries", &self.retries)
            .finish()
    }
}

impl RegisterParams {
    /// The seed's `gcm_register(sender_id, app_id)`: the Android persona as package
    /// [`DEFAULT_APP_NAME`] with the default certificate, no Firebase project (so no
    /// installation: add [`api_key`](Self::api_key) and [`project_id`](Self::project_id)
    /// for one, as [`register`](PullkinCore::register) needs).
    pub fn new(sender_id: impl Into<String>, app_id: impl Into<String>) -> Self {
        Self {
            sender_id: sender_id.into(),
            app_id: app_id.into(),
            api_key: None,
            project_id: None,
            persona: Persona::Android {
                package: DEFAULT_APP_NAME.to_owned(),
                cert: DEFAULT_ANDROID_CERT.to_owned(),
            },
            vapid_key: None,
            retries: DEFAULT_RETRIES,
        }
    }

    /// The seed's `register(sender_id, app_id, api_key, firebase_project_id)`: the
    /// Android persona (package [`DEFAULT_APP_NAME`] until [`app_name`](Self::app_name)
    /// says otherwise, certificate [`DEFAULT_ANDROID_CERT`]).
    pub fn android(
        sender_id: impl Into<String>,
        app_id: impl Into<String>,
        api_key: impl Into<String>,
        project_id: impl Into<String>,
    ) -> Self {
        Self::new(sender_id, app_id)
            .api_key(api_key)
            .project_id(project_id)
    }

    /// The Chrome / web-push persona (bundle [`DEFAULT_WEB_BUNDLE`], Chrome's VAPID key
    /// until [`vapid_key`](Self::vapid_key) says otherwise). `sender_id` is the
    /// project number, kept for reference; register3 names the VAPID key as sender.
    pub fn web(
        sender_id: impl Into<String>,
        app_id: impl Into<String>,
        api_key: impl Into<String>,
        project_id: impl Into<String>,
    ) -> Self {
        Self::android(sender_id, app_id, api_key, project_id).persona(Persona::Web {
            bundle: DEFAULT_WEB_BUNDLE.to_owned(),
        })
    }

    /// The parameters a registration was made with, to register again.
    pub fn from_config(config: &FirebaseConfig) -> Self {
        Self {
            sender_id: config.sender_id.clone(),
            app_id: config.app_id.clone(),
            api_key: Some(config.api_key.clone()),
            project_id: Some(config.project_id.clone()),
            persona: config.persona.clone(),
            vapid_key: config.vapid_key.clone(),
            retries: DEFAULT_RETRIES,
        }
    }

    /// The Firebase API key (`AIza…`).
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// The Firebase project id.
    pub fn project_id(mut self, project_id: impl Into<String>) -> Self {
        self.project_id = Some(project_id.into());
        self
    }

    /// The persona, whole.
    pub fn persona(mut self, persona: Persona) -> Self {
        self.persona = persona;
        self
    }

    /// The Android package to register as (the seed's `app_name`). Android persona only:
    /// on the web persona it changes nothing.
    pub fn app_name(mut self, package: impl Into<String>) -> Self {
        if let Persona::Android { package: p, .. } = &mut self.persona {
            *p = package.into();
        }
        self
    }

    /// The SHA-1 of the app's signing certificate, hex (the seed's `android_cert`).
    /// Android persona only: on the web persona it changes nothing.
    pub fn android_cert(mut self, cert_sha1_hex: impl Into<String>) -> Self {
        if let Persona::Android { cert, .. } = &mut self.persona {
            *cert = cert_sha1_hex.into().to_ascii_lowercase();
        }
        self
    }

    /// The bundle in the web persona's subtype (`wp:<bundle>#<uuid>`). Web persona only:
    /// on the Android persona it changes nothing.
    pub fn bundle(mut self, bundle: impl Into<String>) -> Self {
        if let Persona::Web { bundle: b } = &mut self.persona {
            *b = bundle.into();
        }
        self
    }

    /// The sender's VAPID public key (base64url), for the web persona's register3 and
    /// for the FCM registration (`applicationPubKey`); without it, Chrome's own key.
    pub fn vapid_key(mut self, vapid_public_key: impl Into<String>) -> Self {
        self.vapid_key = Some(vapid_public_key.into());
        self
    }

    /// How many attempts each step makes (default [`DEFAULT_RETRIES`], at least 1).
    pub fn retries(mut self, attempts: u32) -> Self {
        self.retries = attempts.max(1);
        self
    }

    /// The sender id.
    #[must_use]
    pub fn sender_id(&self) -> &str {
        &self.sender_id
    }

    /// The Firebase app id.
    #[must_use]
    pub fn app_id(&self) -> &str {
        &self.app_id
    }

    /// The Firebase configuration these parameters describe, when the API key and the
    /// project id are both set.
    #[must_use]
    pub fn config(&self) -> Option<FirebaseConfig> {
        let (api_key, project_id) = (self.api_key.as_ref()?, self.project_id.as_ref()?);
        Some(FirebaseConfig {
            sender_id: self.sender_id.clone(),
            app_id: self.app_id.clone(),
            api_key: api_key.clone(),
            project_id: project_id.clone(),
            persona: self.persona.clone(),
            vapid_key: self.vapid_key.clone(),
        })
    }

    fn firebase_app(&self) -> Option<FirebaseApp> {
        self.config().map(|config| firebase_app(&config))
    }

    fn fcm_params(&self) -> Option<FcmRegisterParams> {
        let (api_key, project_id) = (self.api_key.as_ref()?, self.project_id.as_ref()?);
        let mut params =
            FcmRegisterParams::new(api_key.clone(), project_id.clone()).retries(self.retries);
        params.vapid_key.clone_from(&self.vapid_key);
        Some(params)
    }
}

/// What [`PullkinCore::fcm_register`] needs besides the GCM token and the installation.
///
/// ```
/// let params = pullkin::FcmRegisterParams::new("AIza…", "my-project").retries(3);
/// # let _ = params;
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct FcmRegisterParams {
    api_key: String,
    project_id: String,
    vapid_key: Option<String>,
    retries: u32,
}

impl fmt::Debug for FcmRegisterParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FcmRegisterParams")
            .field("api_key", &"<redacted>")
            .field("project_id", &self.project_id)
            .field("vapid_key", &self.vapid_key)
            .field("retries", &self.retries)
            .finish()
    }
}

impl FcmRegisterParams {
    /// The Firebase API key and project id, Chrome's VAPID key, [`DEFAULT_RETRIES`]
    /// attempts.
    pub fn new(api_key: impl Into<String>, project_id: impl Into<String>) -> Self {
        Self {
            api_key: api_key.into(),
            project_id: project_id.into(),
            vapid_key: None,
            retries: DEFAULT_RETRIES,
        }
    }

    /// The sender's VAPID public key (sent as `applicationPubKey`); Chrome's own key is
    /// never sent, as Google refuses it there.
    pub fn vapid_key(mut self, vapid_public_key: impl Into<String>) -> Self {
        self.vapid_key = Some(vapid_public_key.into());
        self
    }

    /// How many attempts to make (default [`DEFAULT_RETRIES`], at least 1).
    pub fn retries(mut self, attempts: u32) -> Self {
        self.retries = attempts.max(1);
        self
    }
}

/// The outcome of [`PullkinCore::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renewal {
    /// The credentials to use from now on (the stored ones when nothing changed).
    pub credentials: AppCredentials,
    /// Whether they differ from the stored ones: store them, and when the FCM token
    /// changed, pass it to the senders.
    pub changed: bool,
    /// Whether the device identity changed (new `android_id`, `security_token` and GCM
    /// token): the MCS connection must log in with the new identity, and messages acked
    /// under the old one are gone.
    pub identity_changed: bool,
}

impl PullkinCore {
    /// A core for Google's endpoints with the default settings (webpki roots, 5
    /// attempts per step).
    pub fn new() -> Result<Self, PullkinError> {
        Self::builder().build()
    }

    /// A builder for endpoints, roots, HTTP client and retries.
    pub fn builder() -> PullkinCoreBuilder {
        PullkinCoreBuilder::default()
    }

    /// The HTTP proxy of this core's requests, if any (see
    /// [`PullkinCoreBuilder::proxy`]).
    #[must_use]
    pub fn proxy(&self) -> Option<&Proxy> {
        self.proxy.as_ref()
    }

    /// The rustls configuration of the HTTP client (the webpki roots and the added ones),
    /// for the MCS connection to share.
    #[must_use]
    pub fn tls_config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.tls)
    }

    /// The endpoints this core talks to.
    #[must_use]
    pub fn endpoints(&self) -> &Endpoints {
        &self.endpoints
    }

    /// The HTTP client this core sends through.
    #[must_use]
    pub fn http_client(&self) -> Arc<dyn HttpClient> {
        Arc::clone(&self.http)
    }

    /// Checks in: as a new device without `credentials`, else as the stored device (the
    /// seed's `gcm_check_in`). A refused re-check-in is a [`gcm_checkin::Error`] for
    /// which `is_dead_credentials()` holds: register again.
    pub async fn gcm_check_in(
        &self,
        credentials: Option<&CheckinCredentials>,
    ) -> Result<CheckinResponse, PullkinError> {
        let request = match credentials {
            Some(credentials) => CheckinRequest::recheck(*credentials),
            None => CheckinRequest::new_device(),
        }
        .with_chrome_build(self.chrome.clone());
        Ok(gcm_checkin::check_in(&*self.http, &self.endpoints, &request, &self.retry).await?)
    }

    /// Checks in as a new device and registers it with register3 (the seed's
    /// `gcm_register`); with an API key and a project id in `params`, a Firebase
    /// installation is made first (and, for the Android persona, named in register3).
    /// Transient failures — `PHONE_REGISTRATION_ERROR` among them — are retried with
    /// backoff, up to [`RegisterParams::retries`] attempts.
    ///
    /// The returned `app_id` is the Firebase app id for the Android persona and the
    /// register3 subtype (`wp:<bundle>#<uuid>`) for the web persona, as
    /// `firebase-messaging` stores it.
    pub async fn gcm_register(
        &self,
        params: &RegisterParams,
    ) -> Result<AppCredentialsGcm, PullkinError> {
        let device = self.gcm_check_in(None).await?.credentials;
        tracing::debug!(android_id = device.android_id, "checked in as a new device");
        self.register_device(params, device).await
    }

    /// Creates a Firebase installation with a fresh FID (the seed's `fcm_installation`;
    /// [`FirebaseApp::android`] takes the seed's `app_id`, `api_key`, `android_cert`,
    /// `app_package` and `firebase_project_id`).
    pub async fn fcm_installation(&self, app: &FirebaseApp) -> Result<Installation, PullkinError> {
        self.create_installation(app, &self.retry).await
    }

    /// Generates Web Push keys and registers them, with the GCM token's push endpoint,
    /// with FCM (the seed's `fcm_register`). As in the seed, a refused registration is
    /// not an error of this call: it is reported in [`AppCredentialsFcm::error`] (check
    /// [`AppCredentialsFcm::is_success`]); the error is only for keys that could not be
    /// made.
    pub async fn fcm_register(
        &self,
        gcm_token: &GcmToken,
        installation: &Installation,
        params: &FcmRegisterParams,
    ) -> Result<(AppCredentialsKeys, AppCredentialsFcm), PullkinError> {
        let keys = ReceiverKeys::generate();
        let stored = AppCredentialsKeys::from_keys(&keys)?;
        let fcm = self
            .fcm_register_keys(gcm_token, installation, params, &keys)
            .await;
        Ok((stored, fcm))
    }

    /// Registers everything (the seed's `register`): check-in, Firebase installation,
    /// register3, keys and FCM registration. The credentials carry the
    /// [`FirebaseConfig`] they were made with, so that [`renew`](Self::renew) can
    /// register again. An FCM refusal does not fail the call: see
    /// [`AppCredentialsFcm::error`].
    ///
    /// Fails with [`PullkinError::Config`] when `params` lack the API key or the project
    /// id, and with the step's error when check-in, installation or register3 fail.
    pub async fn register(&self, params: &RegisterParams) -> Result<AppCredentials, PullkinError> {
        let config = params.config().ok_or_else(|| {
            PullkinError::Config(
                "register needs the Firebase API key and project id (gcm_register works without)"
                    .into(),
            )
        })?;
        let gcm = self.gcm_register(params).await?;
        self.complete(gcm, config, params).await
    }

    /// Refreshes the Firebase auth token of `credentials` when it expires within
    /// `margin`; returns whether it did (then store the credentials). Credentials without
    /// an installation need nothing; an installation to refresh needs
    /// [`AppCredentials::config`] (else [`PullkinError::Config`]).
    pub async fn refresh_installation(
        &self,
        credentials: &mut AppCredentials,
        margin: Duration,
    ) -> Result<bool, PullkinError> {
        let Some(installation) = credentials.gcm.installation.as_mut() else {
            return Ok(false);
        };
        if !installation
            .auth_token
            .expires_within(SystemTime::now(), margin)
        {
            return Ok(false);
        }
        let config = credentials.config.as_ref().ok_or_else(|| {
            PullkinError::Config(
                "the Firebase auth token needs refreshing but the credentials hold no Firebase \
                 config"
                    .into(),
            )
        })?;
        let app = firebase_app(config);
        let token = fcm_install::refresh_auth_token(
            &*self.http,
            &self.endpoints,
            &app,
            &installation.fid,
            &installation.refresh_token,
            &self.retry,
        )
        .await?;
        installation.auth_token = token;
        tracing::info!(fid = %installation.fid, "Firebase auth token refreshed");
        Ok(true)
    }

    /// Keeps stored credentials alive; call it at start-up and now and then (e.g.
    /// daily, or before each reconnect).
    ///
    /// - Checks the stored device in again. When Google refuses it (the identity is dead)
    ///   or hands out another one, registers anew from [`AppCredentials::config`]
    ///   (a [`PullkinError::Config`] when there is none) — `identity_changed`.
    /// - Refreshes the Firebase auth token when it expires within the margin (see
    ///   [`PullkinCoreBuilder::installation_refresh_margin`]); when Google no longer
    ///   knows the installation, makes a new one and registers the same keys with FCM
    ///   again (a new FCM token).
    /// - Retries an FCM registration that had failed, with the same keys.
    ///
    /// `changed` says whether to store the result and tell the application.
    pub async fn renew(&self, credentials: &AppCredentials) -> Result<Renewal, PullkinError> {
        let stored = credentials.gcm.checkin();
        match self.gcm_check_in(Some(&stored)).await {
            Ok(answer) if answer.credentials == stored => {}
            Ok(answer) => {
                tracing::warn!(
                    old = stored.android_id,
                    new = answer.credentials.android_id,
                    "the check-in answered another device identity; registering again"
                );
                return self.reregister(credentials, Some(answer.credentials)).await;
            }
            Err(PullkinError::Checkin(error)) if error.is_dead_credentials() => {
                tracing::warn!(%error, "the stored device identity is dead; registering again");
                return self.reregister(credentials, None).await;
            }
            Err(error) => return Err(error),
        }

        let mut renewed = credentials.clone();
        let mut changed = false;
        let Some(config) = credentials.config.clone() else {
            tracing::debug!("no Firebase config: the installation and FCM are left as they are");
            return Ok(Renewal {
                credentials: renewed,
                changed,
                identity_changed: false,
            });
        };
        let params = RegisterParams::from_config(&config);
        match self
            .refresh_installation(&mut renewed, self.refresh_margin)
            .await
        {
            Ok(refreshed) => {
                changed |= refreshed;
                if !renewed.fcm.is_success() {
                    let missing = renewed.gcm.installation.is_none();
                    changed |= self.repair_fcm(&mut renewed, &params, missing).await?;
                }
            }
            Err(PullkinError::Install(error)) if installation_is_gone(&error) => {
                tracing::warn!(%error, "the Firebase installation is gone; making a new one");
                changed |= self.repair_fcm(&mut renewed, &params, true).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(Renewal {
            credentials: renewed,
            changed,
            identity_changed: false,
        })
    }

    /// Registers the stored keys with FCM again, on a new installation when
    /// `new_installation` (the old one is gone, and the FCM token with it); returns
    /// whether the credentials changed.
    async fn repair_fcm(
        &self,
        credentials: &mut AppCredentials,
        params: &RegisterParams,
        new_installation: bool,
    ) -> Result<bool, PullkinError> {
        let (Some(app), Some(fcm_params)) = (params.firebase_app(), params.fcm_params()) else {
            return Ok(false);
        };
        let keys = credentials.keys.receiver_keys()?;
        let mut changed = false;
        let installation = match &credentials.gcm.installation {
            Some(installation) if !new_installation => installation.clone(),
            _ => {
                let made = self
                    .create_installation(&app, &self.retry_for(params.retries))
                    .await?;
                credentials.gcm.installation = Some(made.clone());
                changed = true;
                made
            }
        };
        let fcm = self
            .fcm_register_keys(&credentials.gcm.token, &installation, &fcm_params, &keys)
            .await;
        if fcm.is_success() || new_installation {
            // A failure after a new installation still replaces the old registration,
            // which died with the old installation.
            credentials.fcm = fcm;
            changed = true;
        }
        Ok(changed)
    }

    /// Registers anew from the stored config: on `device` when the check-in already
    /// handed out a new identity, else on a fresh check-in.
    async fn reregister(
        &self,
        credentials: &AppCredentials,
        device: Option<CheckinCredentials>,
    ) -> Result<Renewal, PullkinError> {
        let config = credentials.config.clone().ok_or_else(|| {
            PullkinError::Config(
                "the stored device identity is dead and the credentials hold no Firebase config \
                 to register again with"
                    .into(),
            )
        })?;
        let params = RegisterParams::from_config(&config);
        let gcm = match device {
            Some(device) => self.register_device(&params, device).await?,
            None => self.gcm_register(&params).await?,
        };
        let credentials = self.complete(gcm, config, &params).await?;
        tracing::info!(
            android_id = credentials.gcm.android_id,
            fcm_success = credentials.fcm.is_success(),
            "registered again"
        );
        Ok(Renewal {
            credentials,
            changed: true,
            identity_changed: true,
        })
    }

    /// Installation (when `params` allow) and register3 for a checked-in device.
    async fn register_device(
        &self,
        params: &RegisterParams,
        device: CheckinCredentials,
    ) -> Result<AppCredentialsGcm, PullkinError> {
        let retry = self.retry_for(params.retries);
        let installation = match params.firebase_app() {
            Some(app) => Some(self.create_installation(&app, &retry).await?),
            None => {
                tracing::info!("no Firebase API key and project id: no Firebase installation");
                None
            }
        };
        let (request, app_id) = match &params.persona {
            Persona::Android { package, cert } => {
                let mut android =
                    AndroidRegistration::new(params.sender_id.as_str(), package.as_str())
                        .with_cert(cert.as_str());
                if !params.app_id.is_empty() {
                    android = android.with_gmp_app_id(params.app_id.as_str());
                }
                if let Some(installation) = &installation {
                    android = android.with_installation(InstallationAuth::new(
                        installation.fid.as_str(),
                        installation.auth_token.token(),
                    ));
                }
                (
                    RegisterRequest::android(device, android),
                    params.app_id.clone(),
                )
            }
            Persona::Web { bundle } => {
                let web = WebRegistration::with_bundle(bundle)
                    .with_sender(params.vapid_key.as_deref().unwrap_or(CHROME_VAPID_KEY));
                let subtype = web.subtype.clone();
                (RegisterRequest::web(device, web), subtype)
            }
        };
        let token = gcm_checkin::register(&*self.http, &self.endpoints, &request, &retry).await?;
        tracing::info!(android_id = device.android_id, "registered with GCM");
        Ok(AppCredentialsGcm {
            token,
            app_id,
            android_id: device.android_id,
            security_token: device.security_token,
            installation,
        })
    }

    /// Keys and FCM registration on top of a GCM registration.
    async fn complete(
        &self,
        mut gcm: AppCredentialsGcm,
        config: FirebaseConfig,
        params: &RegisterParams,
    ) -> Result<AppCredentials, PullkinError> {
        let (Some(app), Some(fcm_params)) = (params.firebase_app(), params.fcm_params()) else {
            return Err(PullkinError::Config(
                "the FCM registration needs the Firebase API key and project id".into(),
            ));
        };
        let installation = match gcm.installation.clone() {
            Some(installation) => installation,
            None => {
                let made = self
                    .create_installation(&app, &self.retry_for(params.retries))
                    .await?;
                gcm.installation = Some(made.clone());
                made
            }
        };
        let (keys, fcm) = self
            .fcm_register(&gcm.token, &installation, &fcm_params)
            .await?;
        Ok(AppCredentials {
            gcm,
            fcm,
            keys,
            config: Some(config),
        })
    }

    async fn create_installation(
        &self,
        app: &FirebaseApp,
        retry: &RetryPolicy,
    ) -> Result<Installation, PullkinError> {
        let fid = fcm_install::generate_fid();
        let installation =
            fcm_install::create_installation(&*self.http, &self.endpoints, app, &fid, retry)
                .await?;
        tracing::info!(fid = %installation.fid, "Firebase installation created");
        Ok(installation)
    }

    /// The FCM registration of `keys`; a failure is reported in the result.
    async fn fcm_register_keys(
        &self,
        gcm_token: &GcmToken,
        installation: &Installation,
        params: &FcmRegisterParams,
        keys: &ReceiverKeys,
    ) -> AppCredentialsFcm {
        let failed = |error: String| {
            tracing::warn!(%error, "the FCM registration failed");
            AppCredentialsFcm {
                registration: None,
                error: Some(error),
            }
        };
        let endpoint = match fcm_install::fcm_send_endpoint(&self.endpoints, gcm_token.as_str()) {
            Ok(endpoint) => endpoint,
            Err(error) => return failed(error.to_string()),
        };
        let mut subscription = WebPushSubscription::new(
            endpoint,
            keys.public_key_base64(),
            keys.auth_secret_base64().as_str(),
        );
        if let Some(vapid_key) = params
            .vapid_key
            .as_deref()
            .filter(|key| *key != CHROME_VAPID_KEY)
        {
            subscription = subscription.with_application_pub_key(vapid_key);
        }
        // The registrations API reads only the project id and the API key of the app.
        let app = FirebaseApp::web(
            params.project_id.as_str(),
            params.api_key.as_str(),
            String::new(),
        );
        match fcm_install::create_registration(
            &*self.http,
            &self.endpoints,
            &app,
            installation.auth_token.token(),
            &subscription,
            &self.retry_for(params.retries),
        )
        .await
        {
            Ok(registration) => {
                tracing::info!("registered with FCM");
                AppCredentialsFcm {
                    registration: Some(registration),
                    error: None,
                }
            }
            Err(error) => failed(error.to_string()),
        }
    }

    fn retry_for(&self, attempts: u32) -> RetryPolicy {
        self.retry.clone().with_max_attempts(attempts)
    }
}

/// The Firebase app of a stored configuration.
fn firebase_app(config: &FirebaseConfig) -> FirebaseApp {
    match &config.persona {
        Persona::Android { package, cert } => FirebaseApp::android(
            config.project_id.as_str(),
            config.api_key.as_str(),
            config.app_id.as_str(),
            package.as_str(),
            cert.as_str(),
        ),
        Persona::Web { .. } => FirebaseApp::web(
            config.project_id.as_str(),
            config.api_key.as_str(),
            config.app_id.as_str(),
        ),
    }
}

/// Whether a refresh failed because Google no longer knows the installation (or its
/// refresh token): a new installation is needed, retrying cannot help.
fn installation_is_gone(error: &fcm_install::Error) -> bool {
    error.is_unauthenticated() || error.status() == Some(StatusCode::NOT_FOUND)
}
