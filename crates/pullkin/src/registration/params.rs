//! What a registration registers: [`RegisterParams`] and [`FcmRegisterParams`].

use std::fmt;

use fcm_install::FirebaseApp;
use gcm_checkin::{DEFAULT_ANDROID_CERT, DEFAULT_WEB_BUNDLE};

use super::{DEFAULT_APP_NAME, DEFAULT_RETRIES, FirebaseConfig, Persona, firebase_app};

/// What [`PullkinCore::register`](crate::PullkinCore::register) and [`PullkinCore::gcm_register`](crate::PullkinCore::gcm_register) register: the
/// sender, the Firebase app and the persona, with the defaults of the Python `pullkin` library.
///
/// The sender id is the Firebase project number. An Android registration may be for
/// several senders: give their ids joined by `,` (`"123456789012,998877665544"`), as
/// register3 takes them (docs/protocol.md §7.1); [`sender_ids`](Self::sender_ids) lists
/// them. [`check`](Self::check) says what is wrong with malformed parameters; the
/// registration calls run it before any request.
///
/// ```
/// use pullkin::{Persona, RegisterParams};
/// // The Android persona, as package `com.example.app`:
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
    pub(super) sender_id: String,
    pub(super) app_id: String,
    pub(super) api_key: Option<String>,
    pub(super) project_id: Option<String>,
    pub(super) persona: Persona,
    pub(super) vapid_key: Option<String>,
    pub(super) retries: u32,
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
    /// The Python `pullkin` library's `gcm_register(sender_id, app_id)`: the Android persona as package
    /// [`DEFAULT_APP_NAME`] with the default certificate, no Firebase project (so no
    /// installation: add [`api_key`](Self::api_key) and [`project_id`](Self::project_id)
    /// for one, as [`register`](crate::PullkinCore::register) needs).
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

    /// The Python `pullkin` library's `register(sender_id, app_id, api_key, firebase_project_id)`: the
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
    ///
    /// A web-persona config whose sender id is not a number (files imported before the
    /// sender id was the project number held the VAPID key there; register3 of the web
    /// persona does not send it) takes the project number of its app id instead.
    pub fn from_config(config: &FirebaseConfig) -> Self {
        let numeric =
            |id: &str| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit() || b == b',');
        let sender_id = match &config.persona {
            Persona::Web { .. } if !numeric(&config.sender_id) => config
                .app_id
                .split(':')
                .nth(1)
                .map_or_else(|| config.sender_id.clone(), str::to_owned),
            _ => config.sender_id.clone(),
        };
        Self {
            sender_id,
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

    /// The Android package to register as (`app_name` of the Python `pullkin` library). Android persona only:
    /// on the web persona it changes nothing.
    pub fn app_name(mut self, package: impl Into<String>) -> Self {
        if let Persona::Android { package: p, .. } = &mut self.persona {
            *p = package.into();
        }
        self
    }

    /// The SHA-1 of the app's signing certificate, hex (`android_cert` of the Python `pullkin` library).
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

    /// The sender id, as given (several joined by `,`).
    #[must_use]
    pub fn sender_id(&self) -> &str {
        &self.sender_id
    }

    /// The sender ids, split at `,`, without empty parts and repeats, in their order.
    #[must_use]
    pub fn sender_ids(&self) -> Vec<&str> {
        split_senders(&self.sender_id)
    }

    /// The sender ids as register3 sends them: [`sender_ids`](Self::sender_ids) joined by `,`.
    pub(super) fn senders_field(&self) -> String {
        self.sender_ids().join(",")
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
            sender_id: self.senders_field(),
            app_id: self.app_id.clone(),
            api_key: api_key.clone(),
            project_id: project_id.clone(),
            persona: self.persona.clone(),
            vapid_key: self.vapid_key.clone(),
            topics: std::collections::BTreeSet::new(),
        })
    }

    pub(super) fn firebase_app(&self) -> Option<FirebaseApp> {
        self.config().map(|config| firebase_app(&config))
    }

    pub(super) fn fcm_params(&self) -> Option<FcmRegisterParams> {
        let (api_key, project_id) = (self.api_key.as_ref()?, self.project_id.as_ref()?);
        let mut params =
            FcmRegisterParams::new(api_key.clone(), project_id.clone()).retries(self.retries);
        params.vapid_key.clone_from(&self.vapid_key);
        Some(params)
    }
}

/// `ids` split at `,`, trimmed, without empty parts and repeats, in their order.
pub(super) fn split_senders(ids: &str) -> Vec<&str> {
    let mut seen = Vec::new();
    for id in ids.split(',').map(str::trim).filter(|id| !id.is_empty()) {
        if !seen.contains(&id) {
            seen.push(id);
        }
    }
    seen
}

/// What [`PullkinCore::fcm_register`](crate::PullkinCore::fcm_register) needs besides the GCM token and the installation.
///
/// ```
/// let params = pullkin::FcmRegisterParams::new("AIza…", "my-project").retries(3);
/// # let _ = params;
/// ```
#[derive(Clone, PartialEq, Eq)]
#[must_use]
pub struct FcmRegisterParams {
    pub(super) api_key: String,
    pub(super) project_id: String,
    pub(super) vapid_key: Option<String>,
    pub(super) retries: u32,
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
