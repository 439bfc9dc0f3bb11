//! The base URLs of Google's registration endpoints, overridable for fakes and emulators.

use url::Url;

use crate::Error;

/// Google's check-in endpoint.
pub const GOOGLE_CHECKIN: &str = "https://android.clients.google.com/checkin";
/// Google's GCM `register3` endpoint.
pub const GOOGLE_REGISTER3: &str = "https://android.clients.google.com/c2dm/register3";
/// The base of the Firebase Installations API (v1).
pub const GOOGLE_INSTALLATIONS: &str = "https://firebaseinstallations.googleapis.com/v1";
/// The base of the FCM registrations API (v1).
pub const GOOGLE_FCM_REGISTRATIONS: &str = "https://fcmregistrations.googleapis.com/v1";
/// The FCM send endpoint a web-push subscription names (`<this>/<gcm token>`).
pub const GOOGLE_FCM_SEND: &str = "https://fcm.googleapis.com/fcm/send";

/// Where each registration endpoint lives. [`Endpoints::default`] is Google;
/// [`Endpoints::at`] puts all of them under one base URL, the way a local emulator
/// serves Google's paths; each field may also be set on its own.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Endpoints {
    /// Check-in (`POST`, protobuf).
    pub checkin: Url,
    /// GCM register3 (`POST`, form).
    pub register3: Url,
    /// Firebase Installations base; `/projects/<project>/installations` is appended.
    pub installations: Url,
    /// FCM registrations base; `/projects/<project>/registrations` is appended.
    pub fcm_registrations: Url,
    /// The FCM send endpoint named in web-push subscriptions; `/<gcm token>` is appended.
    pub fcm_send: Url,
}

impl Endpoints {
    /// Google's production endpoints.
    pub fn google() -> Self {
        Self {
            checkin: fixed(GOOGLE_CHECKIN),
            register3: fixed(GOOGLE_REGISTER3),
            installations: fixed(GOOGLE_INSTALLATIONS),
            fcm_registrations: fixed(GOOGLE_FCM_REGISTRATIONS),
            fcm_send: fixed(GOOGLE_FCM_SEND),
        }
    }

    /// Every endpoint under one base URL with Google's paths: `<base>/checkin`,
    /// `<base>/c2dm/register3`, `<base>/v1` (installations and registrations) and
    /// `<base>/fcm/send`.
    ///
    /// ```
    /// let e = fcm_http::Endpoints::at("https://127.0.0.1:4443").unwrap();
    /// assert_eq!(e.register3.as_str(), "https://127.0.0.1:4443/c2dm/register3");
    /// assert_eq!(e.installations.as_str(), "https://127.0.0.1:4443/v1");
    /// ```
    pub fn at(base: &str) -> Result<Self, Error> {
        let base = Url::parse(base)
            .map_err(|e| Error::InvalidRequest(format!("base URL {base:?}: {e}")))?;
        Ok(Self {
            checkin: join(&base, &["checkin"])?,
            register3: join(&base, &["c2dm", "register3"])?,
            installations: join(&base, &["v1"])?,
            fcm_registrations: join(&base, &["v1"])?,
            fcm_send: join(&base, &["fcm", "send"])?,
        })
    }
}

impl Default for Endpoints {
    fn default() -> Self {
        Self::google()
    }
}

/// Parses one of the constant URLs above.
#[allow(clippy::expect_used)]
fn fixed(url: &'static str) -> Url {
    // Proven invariant: only called with the `GOOGLE_*` constants, which are valid
    // absolute URLs (the `google_urls_parse` test parses each of them).
    Url::parse(url).expect("constant endpoint URL parses")
}

/// `base` with `segments` appended as percent-encoded path segments (a trailing `/` of
/// the base is dropped first). Query and fragment of the base are kept.
///
/// ```
/// let base = url::Url::parse("https://example.com/v1/").unwrap();
/// let url = fcm_http::join(&base, &["projects", "a b", "installations"]).unwrap();
/// assert_eq!(url.as_str(), "https://example.com/v1/projects/a%20b/installations");
/// ```
pub fn join(base: &Url, segments: &[&str]) -> Result<Url, Error> {
    let mut url = base.clone();
    {
        let mut path = url
            .path_segments_mut()
            .map_err(|()| Error::InvalidRequest(format!("{base} cannot be a base URL")))?;
        path.pop_if_empty();
        for segment in segments {
            if segment.is_empty() || *segment == "." || *segment == ".." {
                return Err(Error::InvalidRequest(format!(
                    "empty or relative path segment {segment:?}"
                )));
            }
            path.push(segment);
        }
    }
    Ok(url)
}

/// Converts a URL into an [`http::Uri`].
pub fn to_uri(url: &Url) -> Result<http::Uri, Error> {
    url.as_str()
        .parse()
        .map_err(|e| Error::InvalidRequest(format!("{url}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_urls_parse() {
        for u in [
            GOOGLE_CHECKIN,
            GOOGLE_REGISTER3,
            GOOGLE_INSTALLATIONS,
            GOOGLE_FCM_REGISTRATIONS,
            GOOGLE_FCM_SEND,
        ] {
            assert_eq!(Url::parse(u).unwrap().as_str(), u);
        }
        let g = Endpoints::default();
        assert_eq!(g.checkin.as_str(), GOOGLE_CHECKIN);
        assert_eq!(g.fcm_send.as_str(), GOOGLE_FCM_SEND);
    }

    #[test]
    fn at_puts_everything_under_one_base() {
        let e = Endpoints::at("http://127.0.0.1:8080/").unwrap();
        assert_eq!(e.checkin.as_str(), "http://127.0.0.1:8080/checkin");
        assert_eq!(e.fcm_registrations.as_str(), "http://127.0.0.1:8080/v1");
        assert_eq!(e.fcm_send.as_str(), "http://127.0.0.1:8080/fcm/send");
        assert!(Endpoints::at("not a url").is_err());
    }

    #[test]
    fn join_rejects_relative_segments() {
        let base = Url::parse("https://h/v1").unwrap();
        assert!(join(&base, &[".."]).is_err());
        assert!(join(&base, &[""]).is_err());
        let u = join(&base, &["projects", "p/q", "a:b"]).unwrap();
        assert_eq!(u.path(), "/v1/projects/p%2Fq/a:b");
    }
}
