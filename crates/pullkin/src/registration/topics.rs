//! Topics and unregistering (docs/protocol.md §7.1): [`PullkinCore::subscribe_topic`],
//! [`PullkinCore::unsubscribe_topic`] and [`PullkinCore::unregister`], register3 requests
//! of the Android persona, followed for unregistering by the deletes of the FCM
//! registration and of the Firebase installation.

use fcm_http::http::StatusCode;
use gcm_checkin::{
    CHROME_VAPID_KEY, RegisterRequest, TOPIC_PREFIX, WebRegistration, is_valid_topic_name,
};

use super::renewal::installation_is_gone;
use super::{
    AppCredentials, FirebaseConfig, Persona, PullkinCore, android_registration, firebase_app,
};
use crate::PullkinError;

/// Why a topic request cannot be made; found before any request.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TopicError {
    /// The name is not `[a-zA-Z0-9-_.~%]{1,900}` (after an optional `/topics/`).
    #[error(
        "{topic:?} is not a topic name: 1 to 900 of the letters, digits and - _ . ~ % \
         (e.g. news or weather.eu-west)"
    )]
    InvalidName {
        /// The name as given.
        topic: String,
    },
    /// The credentials are of the web persona, for which topics are a server-side
    /// operation.
    #[error(
        "a web-persona (Chrome) registration subscribes to topics on the server side: the \
         sender's server subscribes its FCM token (Firebase Admin SDK \
         subscribeToTopic(tokens, topic)); pullkin subscribes Android-persona registrations"
    )]
    WebPersona,
}

/// What [`PullkinCore::unregister`] deleted besides the register3 token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Unregistration {
    /// Whether an FCM registration was deleted (`false`: there was none, or Google no
    /// longer knew it).
    pub fcm_registration_deleted: bool,
    /// Whether a Firebase installation was deleted (`false`: there was none, or Google no
    /// longer knew it).
    pub installation_deleted: bool,
}

/// `topic` without a `/topics/` prefix, if it is a valid name.
fn topic_name(topic: &str) -> Result<&str, TopicError> {
    let name = topic.strip_prefix(TOPIC_PREFIX).unwrap_or(topic);
    if is_valid_topic_name(name) {
        Ok(name)
    } else {
        Err(TopicError::InvalidName {
            topic: topic.to_owned(),
        })
    }
}

/// The stored config of Android-persona credentials, for a topic request.
fn android_config(credentials: &AppCredentials) -> Result<&FirebaseConfig, PullkinError> {
    let config = credentials.config.as_ref().ok_or_else(|| {
        PullkinError::Config(
            "topic requests need the Firebase config the credentials lack: import them again \
             with --app-id, --api-key and --project-id"
                .into(),
        )
    })?;
    match config.persona {
        Persona::Android { .. } => Ok(config),
        Persona::Web { .. } => Err(TopicError::WebPersona.into()),
    }
}

impl PullkinCore {
    /// Subscribes Android-persona credentials to `topic` (a name, or `/topics/<name>`)
    /// with register3 (docs/protocol.md §7.1) and adds it to their stored topics
    /// ([`AppCredentials::topics`]); store the credentials afterwards. Messages sent to
    /// the topic then arrive with `from` = `/topics/<name>`.
    ///
    /// Checked before any request: the name ([`TopicError::InvalidName`]), the persona
    /// ([`TopicError::WebPersona`]), the stored config ([`PullkinError::Config`]).
    /// `TOO_MANY_SUBSCRIBERS` and the other transient answers are retried with backoff;
    /// `Error=RST` is [`PullkinError::IdentityReset`]. The Firebase auth token sent along
    /// is refreshed first when it is due, which changes the credentials even when the
    /// subscription then fails.
    pub async fn subscribe_topic(
        &self,
        credentials: &mut AppCredentials,
        topic: &str,
    ) -> Result<(), PullkinError> {
        let name = topic_name(topic)?.to_owned();
        let request = self.topic_request(credentials, &name).await?;
        self.register3(&request, &self.retry).await?;
        tracing::info!(topic = %name, "subscribed to the topic");
        if let Some(config) = credentials.config.as_mut() {
            config.topics.insert(name);
        }
        Ok(())
    }

    /// Unsubscribes Android-persona credentials from `topic` (the subscription request
    /// with `delete=1`, docs/protocol.md §7.1) and removes it from their stored topics;
    /// store the credentials afterwards. The request is sent whether or not the topic was
    /// stored. Errors as for [`subscribe_topic`](Self::subscribe_topic).
    pub async fn unsubscribe_topic(
        &self,
        credentials: &mut AppCredentials,
        topic: &str,
    ) -> Result<(), PullkinError> {
        let name = topic_name(topic)?.to_owned();
        let request = self.topic_request(credentials, &name).await?.deleting();
        self.register3_delete(&request, &self.retry).await?;
        tracing::info!(topic = %name, "unsubscribed from the topic");
        if let Some(config) = credentials.config.as_mut() {
            config.topics.remove(&name);
        }
        Ok(())
    }

    /// The subscription request of `name` for `credentials`, after refreshing a due
    /// Firebase auth token.
    async fn topic_request(
        &self,
        credentials: &mut AppCredentials,
        name: &str,
    ) -> Result<RegisterRequest, PullkinError> {
        android_config(credentials)?;
        self.refresh_installation(credentials, self.refresh_margin)
            .await?;
        let config = android_config(credentials)?;
        let Persona::Android { package, cert } = &config.persona else {
            return Err(TopicError::WebPersona.into());
        };
        let android = android_registration(
            config.sender_ids().join(","),
            &config.app_id,
            package,
            cert,
            credentials.gcm.installation.as_ref(),
        )
        .for_topic(&credentials.gcm.token, name);
        Ok(RegisterRequest::android(credentials.gcm.checkin(), android))
    }

    /// Subscribes `credentials` (already holding the new identity) to each of `topics`;
    /// returns those that failed, each failure logged.
    pub(super) async fn resubscribe(
        &self,
        credentials: &mut AppCredentials,
        topics: impl IntoIterator<Item = String>,
    ) -> Vec<String> {
        let mut failed = Vec::new();
        for topic in topics {
            if let Err(error) = self.subscribe_topic(credentials, &topic).await {
                tracing::warn!(%topic, %error, "could not subscribe the new identity to the topic again");
                failed.push(topic);
            }
        }
        failed
    }

    /// Unregisters the device (docs/protocol.md §7.1): register3 deletes its token
    /// (`delete=1`, `scope=*`, `sender=<sender ids>`, answered `deleted=<app>`), then
    /// the FCM registration and the Firebase installation are deleted where they exist
    /// (the auth token refreshed first when due). Senders can no longer reach it; the
    /// credentials are useless afterwards: remove the file.
    ///
    /// Needs [`AppCredentials::config`] (else [`PullkinError::Config`]). What Google no
    /// longer knows (HTTP 404) counts as deleted already.
    pub async fn unregister(
        &self,
        credentials: &AppCredentials,
    ) -> Result<Unregistration, PullkinError> {
        let config = credentials.config.as_ref().ok_or_else(|| {
            PullkinError::Config(
                "unregistering needs the Firebase config the credentials lack: import them \
                 again with --app-id, --api-key and --project-id"
                    .into(),
            )
        })?;
        let device = credentials.gcm.checkin();
        let request = match &config.persona {
            Persona::Android { package, cert } => RegisterRequest::android(
                device,
                android_registration(
                    config.sender_ids().join(","),
                    &config.app_id,
                    package,
                    cert,
                    credentials.gcm.installation.as_ref(),
                ),
            ),
            Persona::Web { .. } => RegisterRequest::web(
                device,
                WebRegistration::new()
                    .with_subtype(credentials.gcm.app_id.as_str())
                    .with_sender(config.vapid_key.as_deref().unwrap_or(CHROME_VAPID_KEY)),
            ),
        }
        .deleting();
        let deleted = self.register3_delete(&request, &self.retry).await?;
        tracing::info!(%deleted, "register3 deleted the token");

        let mut outcome = Unregistration {
            fcm_registration_deleted: false,
            installation_deleted: false,
        };
        let mut credentials = credentials.clone();
        if credentials.gcm.installation.is_none() {
            return Ok(outcome);
        }
        match self
            .refresh_installation(&mut credentials, self.refresh_margin)
            .await
        {
            Ok(_) => {}
            // Google no longer knows the installation: nothing of it is left to delete.
            Err(PullkinError::Install(error)) if installation_is_gone(&error) => {
                tracing::info!(%error, "the Firebase installation is gone already");
                return Ok(outcome);
            }
            Err(error) => return Err(error),
        }
        let app = firebase_app(config);
        let Some(installation) = credentials.gcm.installation.as_ref() else {
            return Ok(outcome);
        };
        if let Some(registration) = &credentials.fcm.registration
            && !registration.name.is_empty()
        {
            outcome.fcm_registration_deleted = gone_is_done(
                fcm_install::delete_registration(
                    &*self.http,
                    &self.endpoints,
                    &app,
                    installation.auth_token.token(),
                    &registration.name,
                    &self.retry,
                )
                .await,
            )?;
        }
        outcome.installation_deleted = gone_is_done(
            fcm_install::delete_installation(
                &*self.http,
                &self.endpoints,
                &app,
                &installation.fid,
                &installation.refresh_token,
                &self.retry,
            )
            .await,
        )?;
        tracing::info!(
            fcm_registration = outcome.fcm_registration_deleted,
            installation = outcome.installation_deleted,
            "unregistered"
        );
        Ok(outcome)
    }

    /// Deletes the FCM registration of `credentials` once they hold another one, ignoring
    /// failures (an old registration only costs Google a dead endpoint).
    pub(super) async fn delete_old_registration(
        &self,
        old: &AppCredentials,
        new_token: Option<&str>,
    ) {
        let (Some(config), Some(installation), Some(registration)) = (
            old.config.as_ref(),
            old.gcm.installation.as_ref(),
            old.fcm.registration.as_ref(),
        ) else {
            return;
        };
        if registration.name.is_empty() || new_token == Some(registration.token.as_str()) {
            return;
        }
        if let Err(error) = fcm_install::delete_registration(
            &*self.http,
            &self.endpoints,
            &firebase_app(config),
            installation.auth_token.token(),
            &registration.name,
            &self.retry,
        )
        .await
        {
            tracing::debug!(%error, "the old FCM registration could not be deleted");
        }
    }
}

/// `Ok(true)` for a delete that succeeded, `Ok(false)` for one of something Google no
/// longer knows (HTTP 404).
fn gone_is_done(result: Result<(), fcm_install::Error>) -> Result<bool, PullkinError> {
    match result {
        Ok(()) => Ok(true),
        Err(error) if error.status() == Some(StatusCode::NOT_FOUND) => Ok(false),
        Err(error) => Err(error.into()),
    }
}
