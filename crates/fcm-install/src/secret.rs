//! Token types whose `Debug` output is redacted, and the FIS auth token with its expiry;
//! each holds its token in an [`fcm_http::Secret`], which redacts it and wipes it on drop.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fcm_http::Secret;
use serde::{Deserialize, Serialize};

macro_rules! secret_string {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        // `Debug` shows `Name(<redacted>)`: the redaction is `Secret`'s, as is the zeroize
        // on drop.
        #[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Secret<String>);

        impl $name {
            /// Wraps a token string.
            pub fn new(token: impl Into<String>) -> Self {
                Self(Secret::new(token.into()))
            }

            /// The token; handle with care.
            pub fn as_str(&self) -> &str {
                self.0.expose()
            }
        }
    };
}

secret_string!(
    /// A Firebase installation's refresh token (`refreshToken`), used to obtain new auth
    /// tokens. Redacted in `Debug`.
    RefreshToken
);
secret_string!(
    /// An FCM registration token, the address senders push to. Redacted in `Debug`.
    FcmToken
);

/// A Firebase installation auth token (a JWT) and when it expires (7 days after issue at
/// Google). Redacted in `Debug`; serialised with its expiry as Unix seconds.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthToken {
    token: Secret<String>,
    #[serde(rename = "expires_at_unix", with = "unix_seconds")]
    expires_at: SystemTime,
}

impl AuthToken {
    /// A token that expires at `expires_at`.
    pub fn new(token: impl Into<String>, expires_at: SystemTime) -> Self {
        Self {
            token: Secret::new(token.into()),
            expires_at,
        }
    }

    /// The token (the value of `x-goog-firebase-installations-auth`); handle with care.
    pub fn token(&self) -> &str {
        self.token.expose()
    }

    /// When the token expires.
    pub fn expires_at(&self) -> SystemTime {
        self.expires_at
    }

    /// When the token expires, in seconds since the Unix epoch (0 if before it).
    pub fn expires_at_unix(&self) -> u64 {
        self.expires_at
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Whether the token has expired at `now`.
    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.expires_at
    }

    /// Whether the token expires within `margin` of `now`: refresh it early then
    /// (e.g. with a margin of an hour).
    pub fn expires_within(&self, now: SystemTime, margin: Duration) -> bool {
        now.checked_add(margin)
            .is_none_or(|deadline| deadline >= self.expires_at)
    }
}

impl fmt::Debug for AuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AuthToken")
            .field("token", &self.token)
            .field("expires_at_unix", &self.expires_at_unix())
            .finish()
    }
}

mod unix_seconds {
    use std::time::{Duration, SystemTime, UNIX_EPOCH};

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(time: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let secs = u64::deserialize(d)?;
        UNIX_EPOCH
            .checked_add(Duration::from_secs(secs))
            .ok_or_else(|| serde::de::Error::custom("expiry out of range"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_redacted() {
        let t = AuthToken::new("eyJhbGciOi.secret", UNIX_EPOCH + Duration::from_secs(100));
        let shown = format!("{t:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("100"));
        assert!(!format!("{:?}", RefreshToken::new("2_secret")).contains("secret"));
        assert!(!format!("{:?}", FcmToken::new("fcm_secret")).contains("secret"));
        assert_eq!(
            shown,
            "AuthToken { token: <redacted>, expires_at_unix: 100 }"
        );
        assert_eq!(
            format!("{:?}", RefreshToken::new("2_secret")),
            "RefreshToken(<redacted>)"
        );
        assert_eq!(format!("{:?}", FcmToken::new("f")), "FcmToken(<redacted>)");
    }

    #[test]
    fn expiry_helpers() {
        let at = UNIX_EPOCH + Duration::from_secs(1_000);
        let t = AuthToken::new("x", at);
        assert_eq!(t.expires_at_unix(), 1_000);
        assert!(!t.is_expired(UNIX_EPOCH + Duration::from_secs(999)));
        assert!(t.is_expired(at));
        assert!(t.expires_within(
            UNIX_EPOCH + Duration::from_secs(900),
            Duration::from_secs(100)
        ));
        assert!(!t.expires_within(
            UNIX_EPOCH + Duration::from_secs(899),
            Duration::from_secs(100)
        ));
    }

    #[test]
    fn serde_round_trip() {
        let t = AuthToken::new("tok", UNIX_EPOCH + Duration::from_secs(1_700_000_000));
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, r#"{"token":"tok","expires_at_unix":1700000000}"#);
        assert_eq!(serde_json::from_str::<AuthToken>(&json).unwrap(), t);
        let r = RefreshToken::new("2_r");
        let json = serde_json::to_string(&r).unwrap();
        assert_eq!(json, r#""2_r""#);
        assert_eq!(serde_json::from_str::<RefreshToken>(&json).unwrap(), r);
        let f: FcmToken = serde_json::from_str(r#""fcm""#).unwrap();
        assert_eq!(f.as_str(), "fcm");
    }
}
