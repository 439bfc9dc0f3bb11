//! The credentials of a registered app: what `register` produces and the listener needs.
//!
//! They serialize to JSON (`serde`). Secrets — the security token, tokens, the private
//! key and the auth secret — are redacted in `Debug` output. Files written by the Python
//! `pullkin` and `firebase-messaging` libraries can be read with
//! [`AppCredentials::from_python_json`].

use std::collections::BTreeSet;

use fcm_install::{FcmRegistration, Installation};
use gcm_checkin::{CheckinCredentials, GcmToken, SecurityToken};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use webpush_ece::ReceiverKeys;

use fcm_http::Secret;

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
    /// An import was given part of the Firebase config, and the file does not hold the
    /// rest.
    #[error(
        "the Firebase config is incomplete: the {} missing (give them too: --app-id, \
         --api-key, --project-id)",
        missing.join(", ")
    )]
    IncompleteConfig {
        /// What is missing: `"app id"`, `"API key"`, `"project id"`.
        missing: Vec<&'static str>,
    },
}

/// How the device was registered (the Python `pullkin` library's personas).
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

/// What the registration was made with, kept for re-registration, and the topics it is
/// subscribed to, kept to subscribe a new identity again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirebaseConfig {
    /// The sender id (the project number); several joined by `,` when the Android
    /// registration is for several senders (docs/protocol.md §7.1).
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
    /// The topics the Android registration is subscribed to (names without the
    /// `/topics/` prefix), as [`PullkinCore::subscribe_topic`](crate::PullkinCore::subscribe_topic)
    /// and [`PullkinCore::unsubscribe_topic`](crate::PullkinCore::unsubscribe_topic)
    /// left them; a new identity is subscribed to them again. Absent from files written
    /// before topics existed (read as none).
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub topics: BTreeSet<String>,
}

impl FirebaseConfig {
    /// The sender ids of [`sender_id`](Self::sender_id), split at `,`, without empty
    /// parts and repeats, in their order.
    pub fn sender_ids(&self) -> Vec<&str> {
        super::params::split_senders(&self.sender_id)
    }
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

/// The FCM half: the registration, or why it failed (as the Python `pullkin` library reports it).
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

/// Everything a registered app needs to listen (`AppCredentials` of the Python `pullkin` library).
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

    /// The topics the registration is subscribed to (see [`FirebaseConfig::topics`]);
    /// none without a config.
    pub fn topics(&self) -> impl Iterator<Item = &str> {
        self.config
            .iter()
            .flat_map(|config| config.topics.iter().map(String::as_str))
    }

    /// The credentials as pretty JSON in this crate's format.
    pub fn to_json(&self) -> Result<String, CredentialsError> {
        Ok(serde_json::to_string_pretty(self)?)
    }
}
