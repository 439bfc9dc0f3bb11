//! The identity a check-in yields and the token register3 yields; secrets are redacted
//! from `Debug`.

use std::fmt;

use fcm_http::Secret;
use serde::{Deserialize, Serialize};

/// The secret half of a device identity (`security_token`), used as the MCS password and
/// in `AidLogin` headers. Its `Debug` output is redacted.
///
/// Unlike [`GcmToken`] it does not hold an [`fcm_http::Secret`]: a `Secret` wipes itself
/// on drop, so it cannot be `Copy`, and this token (like [`CheckinCredentials`]) is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SecurityToken(u64);

impl SecurityToken {
    /// Wraps a raw token.
    pub const fn new(token: u64) -> Self {
        Self(token)
    }

    /// The raw token; handle with care.
    pub const fn expose(&self) -> u64 {
        self.0
    }
}

impl fmt::Debug for SecurityToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecurityToken(<redacted>)")
    }
}

/// A checked-in device: `android_id` and `security_token`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CheckinCredentials {
    /// The device id (decimal in `AidLogin` headers and MCS logins).
    pub android_id: u64,
    /// The device secret.
    pub security_token: SecurityToken,
}

impl CheckinCredentials {
    /// Credentials from their raw parts.
    pub const fn new(android_id: u64, security_token: u64) -> Self {
        Self {
            android_id,
            security_token: SecurityToken::new(security_token),
        }
    }

    /// The `Authorization` header value of register3: `AidLogin <id>:<token>`.
    pub fn aid_login(&self) -> String {
        format!(
            "AidLogin {}:{}",
            self.android_id,
            self.security_token.expose()
        )
    }
}

/// A GCM registration token (the `token=` of a register3 answer). Its `Debug` output is
/// redacted (`GcmToken(<redacted>)`): anyone holding it can push to this device. It is
/// held in an [`fcm_http::Secret`], which also wipes it from memory on drop.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct GcmToken(Secret<String>);

impl GcmToken {
    /// Wraps a token string.
    pub fn new(token: impl Into<String>) -> Self {
        Self(Secret::new(token.into()))
    }

    /// The token; handle with care.
    pub fn as_str(&self) -> &str {
        self.0.expose()
    }

    /// The token string, consuming `self` (a copy: the token's own memory is wiped as
    /// `self` drops).
    pub fn into_string(self) -> String {
        self.0.expose().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_from_debug() {
        let c = CheckinCredentials::new(4_000_000_000_000_000_001, 9_876_543_210_123);
        let shown = format!("{c:?}");
        assert!(shown.contains("4000000000000000001"));
        assert!(!shown.contains("9876543210123"), "{shown}");
        let t = GcmToken::new("cXk:APA91bSecret");
        assert!(!format!("{t:?}").contains("APA91b"));
        assert_eq!(format!("{t:?}"), "GcmToken(<redacted>)");
        assert_eq!(serde_json::to_string(&t).unwrap(), r#""cXk:APA91bSecret""#);
        assert_eq!(t.clone().into_string(), "cXk:APA91bSecret");
        assert_eq!(c.aid_login(), "AidLogin 4000000000000000001:9876543210123");
    }
}
