//! Checking registration parameters before any request: [`RegisterParams::check`] and
//! [`ParamsError`], whose messages say on one line what is wrong and where the right
//! value is found (docs/protocol.md §7.1, "Configuration").

use fcm_http::Endpoints;

use super::RegisterParams;

/// What is wrong with [`RegisterParams`] (or a stored [`FirebaseConfig`](crate::FirebaseConfig)),
/// found before any request is sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// No sender id, or one that is not a number.
    #[error(
        "the sender id {sender_id:?} is not a project number: take the number in the app id \
         (1:<number>:android:<hex>), or project_number in google-services.json; several are \
         joined by ','"
    )]
    SenderId {
        /// The sender id as given.
        sender_id: String,
    },
    /// The app id's project number is not among the sender ids.
    #[error(
        "the sender id {sender_id} is not the project number {project_number} of the app id \
         {app_id}: use --sender-id {project_number} (or add it: {sender_id},{project_number}), \
         or the app id of project {sender_id}"
    )]
    SenderNotInAppId {
        /// The sender id(s) as given.
        sender_id: String,
        /// The app id.
        app_id: String,
        /// The project number in the app id.
        project_number: String,
    },
    /// The app id is not `1:<project number>:<platform>:<hex>`.
    #[error(
        "the app id {app_id:?} is not a Firebase app id: it looks like \
         1:<project number>:android:<hex> (mobilesdk_app_id in google-services.json) or \
         1:<project number>:web:<hex> (appId of the web config)"
    )]
    AppId {
        /// The app id as given.
        app_id: String,
    },
    /// The API key is not a Firebase API key. The key itself is not repeated.
    #[error(
        "the API key is not a Firebase API key: {reason} (current_key in google-services.json, \
         apiKey in the web config)"
    )]
    ApiKey {
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The project id is not a Firebase project id.
    #[error(
        "the project id {project_id:?} is not a Firebase project id: {reason} (project_id in \
         google-services.json, projectId in the web config; not the project number)"
    )]
    ProjectId {
        /// The project id as given.
        project_id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

impl RegisterParams {
    /// Checks the parameters' shapes, as the registration calls do before any request:
    ///
    /// - every sender id is a number, and the project number in the app id is one of them;
    /// - the app id is `1:<project number>:<android|web|ios>:<hex>` (when given: the
    ///   Python `pullkin` library's `gcm_register` works without);
    /// - the API key is made of letters, digits, `-` and `_`; the project id of lowercase
    ///   letters, digits and `-` (`.` and `:` in old domain-scoped ids), starting with a
    ///   letter.
    ///
    /// Against Google's endpoints (those of [`Endpoints::google`]), Google's own formats
    /// are checked too: an API key is `AIza` and 35 more characters, a project id has 6 to
    /// 30 characters and does not end with `-`. An emulator or a test double is free to
    /// accept other values, so these two are not checked against other endpoints.
    pub fn check(&self, endpoints: &Endpoints) -> Result<(), ParamsError> {
        let google = is_google(endpoints);
        let senders = self.sender_ids();
        if senders.is_empty() || senders.iter().any(|id| !is_number(id)) {
            return Err(ParamsError::SenderId {
                sender_id: self.sender_id.clone(),
            });
        }
        if !self.app_id.is_empty() {
            let project_number =
                app_id_project_number(&self.app_id).ok_or_else(|| ParamsError::AppId {
                    app_id: self.app_id.clone(),
                })?;
            if !senders.contains(&project_number) {
                return Err(ParamsError::SenderNotInAppId {
                    sender_id: self.sender_id.clone(),
                    app_id: self.app_id.clone(),
                    project_number: project_number.to_owned(),
                });
            }
        }
        if let Some(api_key) = &self.api_key {
            check_api_key(api_key, google)?;
        }
        if let Some(project_id) = &self.project_id {
            check_project_id(project_id, google).map_err(|reason| ParamsError::ProjectId {
                project_id: project_id.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

/// Whether `endpoints` are Google's Firebase endpoints (where API keys and project ids
/// have Google's formats).
fn is_google(endpoints: &Endpoints) -> bool {
    let google = Endpoints::google();
    endpoints.installations.host_str() == google.installations.host_str()
        || endpoints.fcm_registrations.host_str() == google.fcm_registrations.host_str()
}

fn is_number(text: &str) -> bool {
    !text.is_empty() && text.len() <= 20 && text.bytes().all(|b| b.is_ascii_digit())
}

/// The project number of an app id `1:<number>:<platform>:<hex>`, if it has that shape.
fn app_id_project_number(app_id: &str) -> Option<&str> {
    let mut parts = app_id.split(':');
    let (version, number, platform, hash) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let well_formed = parts.next().is_none()
        && version == "1"
        && is_number(number)
        && matches!(platform, "android" | "web" | "ios")
        && !hash.is_empty()
        && hash.bytes().all(|b| b.is_ascii_hexdigit());
    well_formed.then_some(number)
}

fn check_api_key(key: &str, google: bool) -> Result<(), ParamsError> {
    let reason = if key.is_empty() {
        Some("it is empty")
    } else if !key
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        Some("it may hold only letters, digits, '-' and '_' (a space or a quote copied with it?)")
    } else if google && !(key.starts_with("AIza") && key.len() == 39) {
        Some("it is AIza followed by 35 letters, digits, '-' or '_'")
    } else {
        None
    };
    reason.map_or(Ok(()), |reason| Err(ParamsError::ApiKey { reason }))
}

fn check_project_id(id: &str, google: bool) -> Result<(), &'static str> {
    // An old domain-scoped id, `example.com:my-project`, is checked by its last part.
    let (domain, name) = id.rsplit_once(':').unwrap_or(("", id));
    if name.is_empty() {
        return Err("it is empty");
    }
    let name_ok = name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    let domain_ok = domain
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.');
    if !name_ok || !domain_ok {
        return Err("it may hold only lowercase letters, digits and '-'");
    }
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        return Err("it starts with a lowercase letter");
    }
    if google && (!(6..=30).contains(&name.len()) || name.ends_with('-')) {
        return Err("it has 6 to 30 characters and does not end with '-'");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AIzaSyA-1234567890abcdefghijklmnopqrstu";

    fn android(sender: &str, app_id: &str) -> RegisterParams {
        RegisterParams::android(sender, app_id, KEY, "my-project")
    }

    fn local() -> Endpoints {
        Endpoints::at("https://127.0.0.1:4443").unwrap_or_else(|_| Endpoints::google())
    }

    #[test]
    fn good_parameters_pass_everywhere() {
        assert_eq!(KEY.len(), 39);
        for params in [
            android("123456789012", "1:123456789012:android:0a1b2c3d4e5f"),
            android("998877,123456789012", "1:123456789012:android:0a1b"),
            RegisterParams::web("42", "1:42:web:ab", KEY, "example.com:my-project"),
            RegisterParams::new("42", ""),
        ] {
            assert_eq!(params.check(&Endpoints::google()), Ok(()), "{params:?}");
            assert_eq!(params.check(&local()), Ok(()), "{params:?}");
        }
    }

    #[test]
    fn a_sender_id_must_be_the_number_in_the_app_id() {
        let error = android("123456789013", "1:123456789012:android:0a1b")
            .check(&local())
            .unwrap_err();
        assert_eq!(
            error,
            ParamsError::SenderNotInAppId {
                sender_id: "123456789013".into(),
                app_id: "1:123456789012:android:0a1b".into(),
                project_number: "123456789012".into(),
            }
        );
        let message = error.to_string();
        assert!(message.contains("--sender-id 123456789012"), "{message}");
        assert!(!message.contains('\n'), "{message}");
        for sender in ["", ",", "my-project", "12a", "-1"] {
            assert!(
                matches!(
                    android(sender, "1:1:android:0").check(&local()),
                    Err(ParamsError::SenderId { .. })
                ),
                "{sender:?}"
            );
        }
    }

    #[test]
    fn malformed_app_ids_are_named() {
        for app_id in [
            "123456789012",
            "1:123456789012",
            "1:123456789012:android",
            "1:123456789012:android:",
            "1:123456789012:android:xyz",
            "2:123456789012:android:0a",
            "1:123456789012:linux:0a",
            "1:123456789012:android:0a:extra",
            "1:my-project:web:0a",
        ] {
            let error = android("123456789012", app_id).check(&local()).unwrap_err();
            assert_eq!(
                error,
                ParamsError::AppId {
                    app_id: app_id.into()
                },
                "{app_id}"
            );
        }
    }

    #[test]
    fn api_keys_have_googles_shape_against_google() {
        let with_key =
            |key: &str| RegisterParams::android("1", "1:1:android:0a", key, "my-project");
        // Short keys pass against an emulator, not against Google.
        assert_eq!(with_key("AIza-test").check(&local()), Ok(()));
        let error = with_key("AIza-test")
            .check(&Endpoints::google())
            .unwrap_err();
        assert!(matches!(error, ParamsError::ApiKey { .. }), "{error:?}");
        assert!(error.to_string().contains("AIza followed by 35"), "{error}");
        assert!(!error.to_string().contains("AIza-test"), "{error}");
        let wrong_prefix = format!("BIza{}", &KEY[4..]);
        assert!(with_key(&wrong_prefix).check(&Endpoints::google()).is_err());
        // Everywhere: nothing empty, no stray characters.
        for bad in ["", "AIza key", "\"AIzaSy\"", "AIza\n"] {
            assert!(
                matches!(
                    with_key(bad).check(&local()),
                    Err(ParamsError::ApiKey { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn project_ids_have_googles_shape_against_google() {
        let with_project = |id: &str| RegisterParams::android("1", "1:1:android:0a", KEY, id);
        assert_eq!(with_project("e2e").check(&local()), Ok(()));
        assert!(with_project("e2e").check(&Endpoints::google()).is_err());
        assert!(
            with_project("my-project-")
                .check(&Endpoints::google())
                .is_err()
        );
        for bad in ["", "My-Project", "1project", "my_project", "123456789012"] {
            let error = with_project(bad).check(&local()).unwrap_err();
            assert!(
                matches!(error, ParamsError::ProjectId { .. }),
                "{bad:?}: {error:?}"
            );
        }
    }
}
