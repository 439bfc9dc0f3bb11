//! Registration: [`PullkinCore`], the `PullkinCore` of the Python `pullkin` library in Rust idiom.
//!
//! A registration runs the pipeline of docs/protocol.md §1: a check-in gives the device its
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
//! The Android persona also does what an app does with its registration
//! (docs/protocol.md §7.1): [`PullkinCore::subscribe_topic`] and
//! [`PullkinCore::unsubscribe_topic`] (the topics are kept in the credentials),
//! [`PullkinCore::unregister`], several senders on one registration
//! ([`RegisterParams`] takes their ids joined by `,`, [`PullkinCore::set_senders`]
//! registers again when the set changes).
//!
//! **Identity resets.** Google may declare an identity invalid: register3 answers
//! `Error=RST`, which every call here reports as [`PullkinError::IdentityReset`], and
//! the MCS connection may carry the IID control messages `RST`, `RST_FULL` and `SYNC`
//! (docs/protocol.md §7.1; [`IidCommand::from_app_data`] recognises them). The answers
//! are: for `Error=RST`, `RST` and `RST_FULL`,
//! [`PullkinCore::reset_identity`] (a new device identity, registered from the stored
//! config, subscribed to the stored topics again); for `SYNC`,
//! [`PullkinCore::sync_token`] (register3 again on the same identity). Both return a
//! [`Renewal`]: store its credentials when `changed`, log the connection in again when
//! `identity_changed`, hand a new FCM token to the senders, and retry the topics in
//! `topics_failed` later. Messages received before the reset stay received: the
//! listener's store is not touched here.
//!
//! What lives here: this file (the core and its pipeline), `builder` (its settings),
//! `params` (what to register), `check` (the parameters' shapes), `renewal` (`renew`),
//! `identity` (resets, token sync, senders), `topics` (topics and unregistering),
//! `credentials` (what a registration produces) and `python` (reading the Python
//! libraries' files). It uses the protocol crates (`gcm-checkin`, `fcm-install`,
//! `fcm-http`, `webpush-ece`) and nothing of this crate but the error type; `listen`
//! uses it for credential upkeep.
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

mod builder;
mod check;
mod credentials;
mod identity;
mod params;
mod python;
mod renewal;
mod topics;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use fcm_http::{Endpoints, HttpClient, Proxy, RetryPolicy};
use fcm_install::{FirebaseApp, Installation, WebPushSubscription};
use gcm_checkin::{
    AndroidRegistration, CHROME_APP, CHROME_VAPID_KEY, CheckinCredentials, CheckinRequest,
    CheckinResponse, ChromeBuild, GcmToken, InstallationAuth, RegisterRequest, WebRegistration,
};
use rustls::ClientConfig;
use webpush_ece::ReceiverKeys;

use crate::PullkinError;

pub use builder::PullkinCoreBuilder;
pub use check::ParamsError;
pub use credentials::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, CredentialsError,
    FirebaseConfig, Persona,
};
pub use identity::{IID_FROM, IidCommand};
pub use params::{FcmRegisterParams, RegisterParams};
pub use python::ImportConfig;
pub use renewal::Renewal;
pub use topics::{TopicError, Unregistration};

/// The package the Android persona registers as unless told otherwise (the default `app_name`
/// of the Python `pullkin` library).
pub const DEFAULT_APP_NAME: &str = CHROME_APP;

/// How many attempts each registration step makes by default (`retries` of the Python `pullkin` library).
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
    /// Python `pullkin` library's `gcm_check_in`). A refused re-check-in is a [`gcm_checkin::Error`] for
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

    /// Checks in as a new device and registers it with register3 (the Python `pullkin` library's
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
        Ok(self.register_new_device(params).await?.0)
    }

    /// [`gcm_register`](Self::gcm_register), and the settings of its check-in.
    async fn register_new_device(
        &self,
        params: &RegisterParams,
    ) -> Result<(AppCredentialsGcm, gcm_checkin::CheckinSettings), PullkinError> {
        params.check(&self.endpoints)?;
        let checkin = self.gcm_check_in(None).await?;
        let device = checkin.credentials;
        tracing::debug!(android_id = device.android_id, "checked in as a new device");
        Ok((
            self.register_device(params, device).await?,
            checkin.settings,
        ))
    }

    /// Creates a Firebase installation with a fresh FID (`fcm_installation` of the Python `pullkin` library;
    /// [`FirebaseApp::android`] takes `app_id` of the Python `pullkin` library, `api_key`, `android_cert`,
    /// `app_package` and `firebase_project_id`).
    pub async fn fcm_installation(&self, app: &FirebaseApp) -> Result<Installation, PullkinError> {
        self.create_installation(app, &self.retry).await
    }

    /// Generates Web Push keys and registers them, with the GCM token's push endpoint,
    /// with FCM (`fcm_register` of the Python `pullkin` library). As in the Python `pullkin` library, a refused registration is
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

    /// Registers everything (`register` of the Python `pullkin` library): check-in, Firebase installation,
    /// register3, keys and FCM registration. The credentials carry the
    /// [`FirebaseConfig`] they were made with, so that [`renew`](Self::renew) can
    /// register again. An FCM refusal does not fail the call: see
    /// [`AppCredentialsFcm::error`].
    ///
    /// Fails with [`PullkinError::InvalidParams`] when `params` are malformed (see
    /// [`RegisterParams::check`]) and with [`PullkinError::Config`] when they lack the API
    /// key or the project id, both before any request; with the step's error when
    /// check-in, installation or register3 fail.
    pub async fn register(&self, params: &RegisterParams) -> Result<AppCredentials, PullkinError> {
        params.check(&self.endpoints)?;
        let config = params.config().ok_or_else(|| {
            PullkinError::Config(
                "register needs the Firebase API key and project id (gcm_register works without)"
                    .into(),
            )
        })?;
        let gcm = self.gcm_register(params).await?;
        self.complete(gcm, config, params).await
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
                let android = android_registration(
                    params.senders_field(),
                    &params.app_id,
                    package,
                    cert,
                    installation.as_ref(),
                );
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
        let token = self.register3(&request, &retry).await?;
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

    /// register3 for `request`; `Error=RST` is [`PullkinError::IdentityReset`].
    async fn register3(
        &self,
        request: &RegisterRequest,
        retry: &RetryPolicy,
    ) -> Result<GcmToken, PullkinError> {
        gcm_checkin::register(&*self.http, &self.endpoints, request, retry)
            .await
            .map_err(register3_error)
    }

    /// A register3 delete for `request`; `Error=RST` is [`PullkinError::IdentityReset`].
    async fn register3_delete(
        &self,
        request: &RegisterRequest,
        retry: &RetryPolicy,
    ) -> Result<String, PullkinError> {
        gcm_checkin::unregister(&*self.http, &self.endpoints, request, retry)
            .await
            .map_err(register3_error)
    }
}

/// A register3 error as this crate reports it: `Error=RST` apart, so that the caller
/// can make a new identity (docs/protocol.md §7.1).
fn register3_error(error: gcm_checkin::Error) -> PullkinError {
    if error.is_instance_id_reset() {
        PullkinError::IdentityReset(error)
    } else {
        PullkinError::Checkin(error)
    }
}

/// The Android persona's register3 fields for `senders` (joined by `,`), with the app id
/// when known and the installation when there is one (docs/protocol.md §2.2).
fn android_registration(
    senders: String,
    app_id: &str,
    package: &str,
    cert: &str,
    installation: Option<&Installation>,
) -> AndroidRegistration {
    let mut android = AndroidRegistration::new(senders, package).with_cert(cert);
    if !app_id.is_empty() {
        android = android.with_gmp_app_id(app_id);
    }
    if let Some(installation) = installation {
        android = android.with_installation(InstallationAuth::new(
            installation.fid.as_str(),
            installation.auth_token.token(),
        ));
    }
    android
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
