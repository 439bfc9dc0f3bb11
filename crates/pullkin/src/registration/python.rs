//! Reading the credential files of the Python `pullkin` and `firebase-messaging`
//! libraries, so that their users move over without registering again.

use std::time::{Duration, SystemTime};

use fcm_install::{AuthToken, FcmRegistration, FcmToken, Installation, RefreshToken};
use gcm_checkin::{GcmToken, SecurityToken};
use serde_json::Value;

use super::{
    AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys, CredentialsError,
    FirebaseConfig, Persona,
};
use fcm_http::Secret;

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
/// Python `pullkin` library's `auth_token_expires_in`.
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
