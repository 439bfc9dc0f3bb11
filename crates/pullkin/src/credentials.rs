//! The credentials of a registered app: what `register` produces and the listener needs.
//!
//! They serialize to JSON (`serde`). Secrets — the security token, tokens, the private
//! key and the auth secret — are redacted in `Debug` output. Files written by the Python
//! `pullkin` and `firebase-messaging` libraries can be read with
//! [`AppCredentials::from_python_json`].

use std::time::{Duration, SystemTime};

use fcm_install::{AuthToken, FcmRegistration, FcmToken, Installation, RefreshToken};
use gcm_checkin::{CheckinCredentials, GcmToken, SecurityToken};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use webpush_ece::ReceiverKeys;

use crate::secret::Secret;

/// Errors about credentials.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CredentialsError {
    /// The JSON is not credentials of any known shape.
    #[error("not a credentials document: {0}")]
    Shape(String),
    /// A key in the credentials cannot be used.
    #[error("the stored keys are unusable: {0}")]
    Keys(#[from] webpush_ece::Error),
    /// The JSON itself is malformed.
    #[error("malformed credentials JSON: {0}")]
    Json(#[from] serde_json::Error),
}

/// How the device was registered (the seed's personas).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Persona {
    /// An Android app: register3 with the app's package and sender id.
    Android {
        /// The app's package name.
        package: String,
        /// The SHA-1 of the app's signing certificate, hex.
        cert: String,
    },
    /// Chrome: register3 as `org.chromium.linux` with a web-push subtype.
    Web {
        /// The bundle id in the subtype (`wp:<bundle>#<uuid>`).
        bundle: String,
    },
}

/// What the registration was made with, kept for re-registration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirebaseConfig {
    /// The sender id (project number), or the VAPID key of a web sender.
    pub sender_id: String,
    /// The Firebase app id.
    pub app_id: String,
    /// The Firebase API key.
    pub api_key: String,
    /// The Firebase project id.
    pub project_id: String,
    /// The registration persona.
    pub persona: Persona,
    /// The sender's VAPID public key, when not Chrome's default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vapid_key: Option<String>,
}

/// The GCM half: the checked-in device and its GCM token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCredentialsGcm {
    /// The GCM registration token.
    pub token: GcmToken,
    /// The app id register3 was called with.
    pub app_id: String,
    /// The device id.
    pub android_id: u64,
    /// The device secret.
    pub security_token: SecurityToken,
    /// The Firebase installation, when one was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installation: Option<Installation>,
}

impl AppCredentialsGcm {
    /// The device identity for check-in and MCS login.
    #[must_use]
    pub fn checkin(&self) -> CheckinCredentials {
        CheckinCredentials::new(self.android_id, self.security_token.expose())
    }
}

/// The FCM half: the registration, or why it failed (as the seed reports it).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppCredentialsFcm {
    /// The FCM registration, when it succeeded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registration: Option<FcmRegistration>,
    /// Why the FCM registration failed, when it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl AppCredentialsFcm {
    /// Whether the FCM registration succeeded.
    #[must_use]
    pub fn is_success(&self) -> bool {
        self.registration.is_some() && self.error.is_none()
    }

    /// The FCM token senders push to, when registered.
    #[must_use]
    pub fn token(&self) -> Option<&str> {
        self.registration.as_ref().map(|r| r.token.as_str())
    }
}

/// The Web Push keys, base64url: PKCS#8 DER private key, raw uncompressed public key,
/// 16-byte auth secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCredentialsKeys {
    /// The private key, base64url of PKCS#8 DER.
    pub private: Secret<String>,
    /// The public key, base64url of the uncompressed point.
    pub public: String,
    /// The auth secret, base64url.
    pub secret: Secret<String>,
}

impl AppCredentialsKeys {
    /// Stores a key set.
    pub fn from_keys(keys: &ReceiverKeys) -> Result<Self, CredentialsError> {
        Ok(Self {
            private: Secret::new(keys.private_key_pkcs8_base64()?.to_string()),
            public: keys.public_key_base64(),
            secret: Secret::new(keys.auth_secret_base64().to_string()),
        })
    }

    /// Parses the keys (once per listener, not per message); checks that the public key
    /// matches the private one.
    pub fn receiver_keys(&self) -> Result<ReceiverKeys, CredentialsError> {
        let keys = ReceiverKeys::from_base64(self.private.expose(), self.secret.expose())?;
        // Compare in one base64 alphabet: url-safe, unpadded.
        let stored: String = self
            .public
            .trim()
            .trim_end_matches('=')
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                other => other,
            })
            .collect();
        if stored != keys.public_key_base64() {
            return Err(CredentialsError::Shape(
                "the stored public key does not belong to the stored private key".into(),
            ));
        }
        Ok(keys)
    }
}

/// Everything a registered app needs to listen (the seed's `AppCredentials`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppCredentials {
    /// The GCM half.
    pub gcm: AppCredentialsGcm,
    /// The FCM half.
    #[serde(default)]
    pub fcm: AppCredentialsFcm,
    /// The Web Push keys.
    pub keys: AppCredentialsKeys,
    /// What the registration was made with, when known (credentials imported from other
    /// libraries may lack it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<FirebaseConfig>,
}

impl AppCredentials {
    /// Parses credentials JSON: this crate's own format, or the files of the Python
    /// `pullkin` and `firebase-messaging`.
    pub fn from_json(json: &str) -> Result<Self, CredentialsError> {
        let value: Value = serde_json::from_str(json)?;
        Self::from_value(value)
    }

    /// Like [`AppCredentials::from_json`], from parsed JSON.
    pub fn from_value(value: Value) -> Result<Self, CredentialsError> {
        if value
            .pointer("/gcm/security_token")
            .is_some_and(Value::is_u64)
            && value.pointer("/keys/private").is_some()
            && let Ok(native) = serde_json::from_value::<Self>(value.clone())
        {
            // Make sure the keys are usable now rather than at the first message.
            native.keys.receiver_keys()?;
            return Ok(native);
        }
        Self::from_python_value(&value)
    }

    /// Reads the credentials JSON of the Python `pullkin` (`gcm`, `fcm`, `keys`) or of
    /// `firebase-messaging` (`gcm`, `fcm.registration`, `fcm.installation`, `keys`,
    /// `config`). Numbers may be strings; tokens may sit at several known places.
    pub fn from_python_json(json: &str) -> Result<Self, CredentialsError> {
        Self::from_python_value(&serde_json::from_str(json)?)
    }

    fn from_python_value(value: &Value) -> Result<Self, CredentialsError> {
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
        if let Some(config) = value.get("config") {
            let field = |k: &str| config.get(k).and_then(Value::as_str).map(str::to_owned);
            if let (Some(project_id), Some(app_id), Some(api_key)) =
                (field("project_id"), field("app_id"), field("api_key"))
            {
                credentials.config = Some(FirebaseConfig {
                    sender_id: field("vapid_key")
                        .or_else(|| field("sender_id"))
                        .unwrap_or_default(),
                    app_id,
                    api_key,
                    project_id,
                    persona: Persona::Web {
                        bundle: field("bundle_id")
                            .unwrap_or_else(|| "receiver.push.com".to_owned()),
                    },
                    vapid_key: field("vapid_key"),
                });
            }
        }
        Ok(credentials)
    }

    /// The credentials as pretty JSON in this crate's format.
    pub fn to_json(&self) -> Result<String, CredentialsError> {
        Ok(serde_json::to_string_pretty(self)?)
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
/// `token`/`auth_token`, `expires_in` (seconds) and `created_at` (Unix seconds), or the
/// seed's `auth_token_expires_in`.
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
    let created = seconds("created_at").and_then(whole).unwrap_or(0);
    let expires_at = whole(expires_in)
        .and_then(|lifetime| created.checked_add(lifetime))
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
