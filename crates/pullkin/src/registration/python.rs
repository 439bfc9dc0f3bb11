//! Reading the credential files of the Python `pullkin` and `firebase-messaging`
//! libraries, so that their users move over without registering again, and completing
//! the Firebase config they lack ([`ImportConfig`]) so that renewal and re-registration
//! work afterwards.

use std::collections::BTreeSet;
use std::fmt;
use std::time::{Duration, SystemTime};

use gcm_checkin::{DEFAULT_ANDROID_CERT, DEFAULT_WEB_BUNDLE};

use fcm_install::{AuthToken, FcmRegistration, FcmToken, Installation, RefreshToken};
use gcm_checkin::{GcmToken, SecurityToken};
use serde_json::Value;

use super::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, CredentialsError,
    DEFAULT_APP_NAME, FirebaseConfig, Persona,
};
use fcm_http::Secret;

/// A Unix time before which a `created_at` cannot be one (2001-09-09): such a value is a
/// monotonic clock reading (seconds since boot), as `firebase-messaging` stores.
const EARLIEST_UNIX_CREATED_AT: f64 = 1_000_000_000.0;

/// The Firebase config an import supplies where the file lacks it (the files of
/// `firebase-messaging` keep only the project id, the VAPID key and the bundle; those of
/// the Python `pullkin` none). Values given here replace the file's.
///
/// ```
/// let supplied = pullkin::ImportConfig::new()
///     .app_id("1:123456789012:web:0a1b2c3d")
///     .api_key("AIzaSy…")
///     .project_id("my-project");
/// # let _ = supplied;
/// ```
#[derive(Clone, Default, PartialEq, Eq)]
#[must_use]
pub struct ImportConfig {
    app_id: Option<String>,
    api_key: Option<String>,
    project_id: Option<String>,
    app_name: Option<String>,
    android_cert: Option<String>,
}

impl fmt::Debug for ImportConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImportConfig")
            .field("app_id", &self.app_id)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("project_id", &self.project_id)
            .field("app_name", &self.app_name)
            .field("android_cert", &self.android_cert)
            .finish()
    }
}

impl ImportConfig {
    /// Nothing supplied: the file's own config, if complete.
    pub fn new() -> Self {
        Self::default()
    }

    /// The Firebase app id (`1:<project number>:android:<hex>` or `…:web:…`); the sender
    /// id is its project number unless the file names one.
    pub fn app_id(mut self, app_id: impl Into<String>) -> Self {
        self.app_id = Some(app_id.into());
        self
    }

    /// The Firebase API key.
    pub fn api_key(mut self, api_key: impl Into<String>) -> Self {
        self.api_key = Some(api_key.into());
        self
    }

    /// The Firebase project id.
    pub fn project_id(mut self, project_id: impl Into<String>) -> Self {
        self.project_id = Some(project_id.into());
        self
    }

    /// The Android package the device was registered as (Android persona; default
    /// [`DEFAULT_APP_NAME`], as the Python `pullkin` library registers).
    pub fn app_name(mut self, package: impl Into<String>) -> Self {
        self.app_name = Some(package.into());
        self
    }

    /// The SHA-1 of the Android app's signing certificate, hex (Android persona;
    /// default [`DEFAULT_ANDROID_CERT`]).
    pub fn android_cert(mut self, cert_sha1_hex: impl Into<String>) -> Self {
        self.android_cert = Some(cert_sha1_hex.into().to_ascii_lowercase());
        self
    }

    fn is_empty(&self) -> bool {
        self == &Self::default()
    }
}

/// What a file's `config` section says, each part optional.
#[derive(Default)]
struct FileConfig {
    app_id: Option<String>,
    api_key: Option<String>,
    project_id: Option<String>,
    sender_id: Option<String>,
    vapid_key: Option<String>,
    bundle: Option<String>,
}

impl FileConfig {
    fn read(value: &Value) -> Self {
        let Some(config) = value.get("config") else {
            return Self::default();
        };
        let field = |k: &str| {
            config
                .get(k)
                .and_then(Value::as_str)
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Self {
            app_id: field("app_id"),
            api_key: field("api_key"),
            project_id: field("project_id"),
            // firebase-messaging's FcmRegisterConfig calls it messaging_sender_id.
            sender_id: field("messaging_sender_id")
                .or_else(|| field("sender_id"))
                .filter(|id| id.bytes().all(|b| b.is_ascii_digit())),
            vapid_key: field("vapid_key"),
            bundle: field("bundle_id"),
        }
    }
}

impl AppCredentials {
    /// Reads credentials JSON of any shape [`from_json`](Self::from_json) reads and
    /// completes their Firebase config with `supplied` (its values win over the file's).
    /// The persona is the file's: web for `firebase-messaging` files and register3
    /// subtypes `wp:<bundle>#…`, Android otherwise; the sender id is the file's, else the
    /// project number of the app id.
    ///
    /// The config is set when the app id, API key and project id are all known; when
    /// something was supplied and one is still missing, the import fails with
    /// [`CredentialsError::IncompleteConfig`] naming what is missing. Without a config
    /// the device can listen, but neither refresh its Firebase auth token nor register
    /// again. With nothing supplied ([`ImportConfig::new`]) it reads what
    /// [`from_json`](Self::from_json) reads.
    pub fn import(json: &str, supplied: &ImportConfig) -> Result<Self, CredentialsError> {
        let value: Value = serde_json::from_str(json)?;
        let file = FileConfig::read(&value);
        let mut credentials = Self::from_value(value)?;
        credentials.complete_config(file, supplied)?;
        Ok(credentials)
    }

    fn complete_config(
        &mut self,
        file: FileConfig,
        supplied: &ImportConfig,
    ) -> Result<(), CredentialsError> {
        if supplied.is_empty() {
            return Ok(());
        }
        let stored = self.config.take();
        let pick =
            |given: &Option<String>, from_file: Option<String>, from_stored: Option<&String>| {
                given.clone().or(from_file).or_else(|| from_stored.cloned())
            };
        let app_id = pick(
            &supplied.app_id,
            file.app_id,
            stored.as_ref().map(|c| &c.app_id),
        );
        let api_key = pick(
            &supplied.api_key,
            file.api_key,
            stored.as_ref().map(|c| &c.api_key),
        );
        let project_id = pick(
            &supplied.project_id,
            file.project_id,
            stored.as_ref().map(|c| &c.project_id),
        );
        let missing: Vec<&'static str> = [
            ("app id", app_id.is_none()),
            ("API key", api_key.is_none()),
            ("project id", project_id.is_none()),
        ]
        .into_iter()
        .filter_map(|(name, absent)| absent.then_some(name))
        .collect();
        let (Some(app_id), Some(api_key), Some(project_id)) = (app_id, api_key, project_id) else {
            self.config = stored;
            return Err(CredentialsError::IncompleteConfig { missing });
        };
        let number = app_id.split(':').nth(1).unwrap_or_default().to_owned();
        let sender_id = match (&file.sender_id, &stored) {
            (Some(id), _) => id.clone(),
            (None, Some(config)) if supplied.app_id.is_none() => config.sender_id.clone(),
            _ => number,
        };
        let web_bundle = self
            .gcm
            .app_id
            .strip_prefix("wp:")
            .and_then(|subtype| subtype.split('#').next())
            .map(str::to_owned);
        let persona = match (&stored, file.bundle.or(web_bundle)) {
            (Some(config), _) if supplied.app_name.is_none() && supplied.android_cert.is_none() => {
                config.persona.clone()
            }
            (_, Some(bundle)) => Persona::Web { bundle },
            _ => Persona::Android {
                package: supplied
                    .app_name
                    .clone()
                    .unwrap_or_else(|| DEFAULT_APP_NAME.to_owned()),
                cert: supplied
                    .android_cert
                    .clone()
                    .unwrap_or_else(|| DEFAULT_ANDROID_CERT.to_owned()),
            },
        };
        self.config = Some(FirebaseConfig {
            sender_id,
            app_id,
            api_key,
            project_id,
            persona,
            vapid_key: file
                .vapid_key
                .or_else(|| stored.as_ref().and_then(|c| c.vapid_key.clone())),
            topics: stored.map(|c| c.topics).unwrap_or_default(),
        });
        Ok(())
    }
}

impl AppCredentials {
    /// Reads the credentials JSON of the Python `pullkin` (`gcm`, `fcm`, `keys`) or of
    /// `firebase-messaging` (`gcm`, `fcm.registration`, `fcm.installation`, `keys`,
    /// `config`). Numbers may be strings; tokens may sit at several known places.
    pub fn from_python_json(json: &str) -> Result<Self, CredentialsError> {
        Self::from_python_value(&serde_json::from_str(json)?)
    }

    pub(super) fn from_python_value(value: &Value) -> Result<Self, CredentialsError> {
        let gcm = value
            .get("gcm")
            .ok_or_else(|| CredentialsError::Shape("no `gcm` section".into()))?;
        let keys = value
            .get("keys")
            .ok_or_else(|| CredentialsError::Shape("no `keys` section".into()))?;
        // snake_case since pullkin 1.0 and firebase-messaging 0.2; camelCase before (and
        // in push_receiver).
        let android_id = number(gcm, "android_id").or_else(|_| number(gcm, "androidId"))?;
        let security_token =
            number(gcm, "security_token").or_else(|_| number(gcm, "securityToken"))?;
        let token = text(gcm, "token")?;
        let app_id = gcm
            .get("app_id")
            .or_else(|| gcm.get("appId"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let keys = AppCredentialsKeys {
            private: Secret::new(text(keys, "private")?),
            public: text(keys, "public")?,
            secret: Secret::new(text(keys, "secret")?),
        };
        let fcm = value.get("fcm");
        // firebase-messaging: fcm.registration.{name, token}; pullkin: fcm.token / fcm.name.
        let registration_value = fcm.map(|f| f.get("registration").unwrap_or(f));
        let registration = registration_value.and_then(|r| {
            let token = r.get("token").and_then(Value::as_str)?;
            let name = r.get("name").and_then(Value::as_str).unwrap_or_default();
            Some(FcmRegistration::new(name, FcmToken::new(token)))
        });
        let fcm_error = fcm
            .and_then(|f| f.get("error"))
            .filter(|e| !e.is_null())
            .map(|e| match e {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            });
        let installation_value = fcm
            .and_then(|f| f.get("installation"))
            .or_else(|| gcm.get("installation"))
            .filter(|i| !i.is_null());
        let installation = installation_value.and_then(python_installation);
        let mut credentials = Self {
            gcm: AppCredentialsGcm {
                token: GcmToken::new(token),
                app_id,
                android_id,
                security_token: SecurityToken::new(security_token),
                installation,
            },
            fcm: AppCredentialsFcm {
                registration,
                error: fcm_error,
            },
            keys,
            config: None,
        };
        // Make sure the keys are usable now rather than at the first message.
        credentials.keys.receiver_keys()?;
        // A file whose config is complete needs nothing supplied.
        let file = FileConfig::read(value);
        if let (Some(app_id), Some(api_key), Some(project_id)) =
            (&file.app_id, &file.api_key, &file.project_id)
        {
            credentials.config = Some(FirebaseConfig {
                sender_id: file
                    .sender_id
                    .clone()
                    .unwrap_or_else(|| app_id.split(':').nth(1).unwrap_or_default().to_owned()),
                app_id: app_id.clone(),
                api_key: api_key.clone(),
                project_id: project_id.clone(),
                persona: Persona::Web {
                    bundle: file
                        .bundle
                        .clone()
                        .unwrap_or_else(|| DEFAULT_WEB_BUNDLE.to_owned()),
                },
                vapid_key: file.vapid_key.clone(),
                topics: BTreeSet::new(),
            });
        }
        Ok(credentials)
    }
}

fn number(section: &Value, key: &str) -> Result<u64, CredentialsError> {
    match section.get(key) {
        Some(Value::Number(n)) => n.as_u64(),
        Some(Value::String(s)) => s.trim().parse().ok(),
        _ => None,
    }
    .ok_or_else(|| CredentialsError::Shape(format!("`{key}` is missing or not a number")))
}

fn text(section: &Value, key: &str) -> Result<String, CredentialsError> {
    section
        .get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| CredentialsError::Shape(format!("`{key}` is missing or not a string")))
}

/// A Firebase installation as the Python libraries store it: `fid`, `refresh_token`,
/// `token`/`auth_token`, `expires_in` (seconds) and `created_at`, or the Python `pullkin`
/// library's `auth_token_expires_in`.
///
/// `created_at` is Unix seconds when it can be one; `firebase-messaging` stores a
/// monotonic clock reading (seconds since its machine booted), which says nothing of the
/// token's age. A token of unknown age (that, no `created_at`, or one in the future) gets
/// the expiry `UNIX_EPOCH`, which [`AuthToken`] reads as due: the first renewal refreshes
/// it, as it should a token that may be a week old.
fn python_installation(value: &Value) -> Option<Installation> {
    let fid = value.get("fid")?.as_str()?.to_owned();
    let refresh = value.get("refresh_token")?.as_str()?.to_owned();
    let token = value
        .get("token")
        .or_else(|| value.get("auth_token"))
        .and_then(Value::as_str)?
        .to_owned();
    let seconds = |k: &str| {
        value.get(k).and_then(|v| match v {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => s.trim_end_matches('s').parse().ok(),
            _ => None,
        })
    };
    let expires_in = seconds("expires_in")
        .or_else(|| seconds("auth_token_expires_in"))
        .unwrap_or(0.0);
    // Whole seconds, as stored (`expires_at_unix`), so that a re-read file is equal.
    // `try_from` because a file may hold "inf" or 1e300, which must not panic.
    let whole = |s: f64| {
        Duration::try_from_secs_f64(s.max(0.0))
            .ok()
            .map(|d| d.as_secs())
    };
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    // Unix seconds only between 2001 and now (a minute of clock skew allowed); anything
    // else is a monotonic reading or nonsense, and the token's age is unknown.
    let created = seconds("created_at")
        .filter(|&at| (EARLIEST_UNIX_CREATED_AT..=now + 60.0).contains(&at))
        .and_then(whole);
    if created.is_none() {
        tracing::info!(
            fid = %fid,
            "the stored auth token's age is unknown (no Unix created_at): it is due for a refresh"
        );
    }
    let expires_at = created
        .zip(whole(expires_in))
        .and_then(|(created, lifetime)| created.checked_add(lifetime))
        .and_then(|secs| SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs)))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let name = value
        .get("name")
        .and_then(Value::as_str)
        .map_or_else(|| format!("installations/{fid}"), str::to_owned);
    Some(Installation::new(
        name,
        fid,
        RefreshToken::new(refresh),
        AuthToken::new(token, expires_at),
    ))
}
