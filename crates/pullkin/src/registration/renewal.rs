//! Keeping credentials alive: [`PullkinCore::renew`] and [`Renewal`].

use std::time::{Duration, SystemTime};

use fcm_http::http::StatusCode;
use gcm_checkin::{CheckinResponse, CheckinSettings};

use super::{AppCredentials, PullkinCore, RegisterParams, firebase_app};
use crate::PullkinError;

/// The outcome of [`PullkinCore::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Renewal {
    /// The credentials to use from now on (the stored ones when nothing changed).
    pub credentials: AppCredentials,
    /// Whether they differ from the stored ones: store them, and when the FCM token
    /// changed, pass it to the senders.
    pub changed: bool,
    /// Whether the device identity changed (new `android_id`, `security_token` and GCM
    /// token): the MCS connection must log in with the new identity, and messages acked
    /// under the old one are gone.
    pub identity_changed: bool,
    /// The stored topics the new registration could not be subscribed to again (each
    /// failure is logged). They are no longer among the credentials' topics: call
    /// [`PullkinCore::subscribe_topic`] for them later. Empty when nothing was
    /// re-registered.
    pub topics_failed: Vec<String>,
    /// The settings of the check-in this call made (docs/protocol.md §2.1), among them
    /// the re-check-in interval the server set; `None` when it made none (a token sync,
    /// a change of senders). A listener checks in again after
    /// [`CheckinSettings::checkin_interval`] when the server set one (docs/protocol.md
    /// §7.2).
    pub checkin: Option<CheckinSettings>,
}

impl PullkinCore {
    /// Refreshes the Firebase auth token of `credentials` when it expires within
    /// `margin`; returns whether it did (then store the credentials). Credentials without
    /// an installation need nothing; an installation to refresh needs
    /// [`AppCredentials::config`] (else [`PullkinError::Config`]).
    pub async fn refresh_installation(
        &self,
        credentials: &mut AppCredentials,
        margin: Duration,
    ) -> Result<bool, PullkinError> {
        let Some(installation) = credentials.gcm.installation.as_mut() else {
            return Ok(false);
        };
        if !installation
            .auth_token
            .expires_within(SystemTime::now(), margin)
        {
            return Ok(false);
        }
        let config = credentials.config.as_ref().ok_or_else(|| {
            PullkinError::Config(
                "the Firebase auth token needs refreshing but the credentials hold no Firebase \
                 config"
                    .into(),
            )
        })?;
        let app = firebase_app(config);
        let token = fcm_install::refresh_auth_token(
            &*self.http,
            &self.endpoints,
            &app,
            &installation.fid,
            &installation.refresh_token,
            &self.retry,
        )
        .await?;
        installation.auth_token = token;
        tracing::info!(fid = %installation.fid, "Firebase auth token refreshed");
        Ok(true)
    }

    /// Keeps stored credentials alive; call it at start-up and now and then (e.g.
    /// daily, or before each reconnect).
    ///
    /// - Checks the stored device in again. When Google refuses it (the identity is dead)
    ///   or hands out another one, registers anew from [`AppCredentials::config`]
    ///   (a [`PullkinError::Config`] when there is none) — `identity_changed`.
    /// - Refreshes the Firebase auth token when it expires within the margin (see
    ///   [`PullkinCoreBuilder::installation_refresh_margin`](crate::PullkinCoreBuilder::installation_refresh_margin)); when Google no longer
    ///   knows the installation, makes a new one and registers the same keys with FCM
    ///   again (a new FCM token).
    /// - Retries an FCM registration that had failed, with the same keys.
    ///
    /// `changed` says whether to store the result and tell the application.
    pub async fn renew(&self, credentials: &AppCredentials) -> Result<Renewal, PullkinError> {
        let stored = credentials.gcm.checkin();
        let settings = match self.gcm_check_in(Some(&stored)).await {
            Ok(answer) if answer.credentials == stored => answer.settings,
            Ok(answer) => {
                tracing::warn!(
                    old = stored.android_id,
                    new = answer.credentials.android_id,
                    "the check-in answered another device identity; registering again"
                );
                return self.reregister(credentials, Some(answer)).await;
            }
            Err(PullkinError::Checkin(error)) if error.is_dead_credentials() => {
                tracing::warn!(%error, "the stored device identity is dead; registering again");
                return self.reregister(credentials, None).await;
            }
            Err(error) => return Err(error),
        };

        let mut renewed = credentials.clone();
        let mut changed = false;
        let Some(config) = credentials.config.clone() else {
            tracing::debug!("no Firebase config: the installation and FCM are left as they are");
            return Ok(Renewal {
                credentials: renewed,
                changed,
                identity_changed: false,
                topics_failed: Vec::new(),
                checkin: Some(settings),
            });
        };
        let params = RegisterParams::from_config(&config);
        match self
            .refresh_installation(&mut renewed, self.refresh_margin)
            .await
        {
            Ok(refreshed) => {
                changed |= refreshed;
                if !renewed.fcm.is_success() {
                    let missing = renewed.gcm.installation.is_none();
                    changed |= self.repair_fcm(&mut renewed, &params, missing).await?;
                }
            }
            Err(PullkinError::Install(error)) if installation_is_gone(&error) => {
                tracing::warn!(%error, "the Firebase installation is gone; making a new one");
                changed |= self.repair_fcm(&mut renewed, &params, true).await?;
            }
            Err(error) => return Err(error),
        }
        Ok(Renewal {
            credentials: renewed,
            changed,
            identity_changed: false,
            topics_failed: Vec::new(),
            checkin: Some(settings),
        })
    }

    /// Registers the stored keys with FCM again, on a new installation when
    /// `new_installation` (the old one is gone, and the FCM token with it); returns
    /// whether the credentials changed.
    async fn repair_fcm(
        &self,
        credentials: &mut AppCredentials,
        params: &RegisterParams,
        new_installation: bool,
    ) -> Result<bool, PullkinError> {
        let (Some(app), Some(fcm_params)) = (params.firebase_app(), params.fcm_params()) else {
            return Ok(false);
        };
        let keys = credentials.keys.receiver_keys()?;
        let mut changed = false;
        let installation = match &credentials.gcm.installation {
            Some(installation) if !new_installation => installation.clone(),
            _ => {
                let made = self
                    .create_installation(&app, &self.retry_for(params.retries))
                    .await?;
                credentials.gcm.installation = Some(made.clone());
                changed = true;
                made
            }
        };
        let fcm = self
            .fcm_register_keys(&credentials.gcm.token, &installation, &fcm_params, &keys)
            .await;
        if fcm.is_success() || new_installation {
            // A failure after a new installation still replaces the old registration,
            // which died with the old installation.
            credentials.fcm = fcm;
            changed = true;
        }
        Ok(changed)
    }

    /// Registers anew from the stored config: on the device of `checkin` when a check-in
    /// already handed out a new identity, else on a fresh check-in; subscribes the new
    /// registration to the stored topics again.
    pub(super) async fn reregister(
        &self,
        credentials: &AppCredentials,
        checkin: Option<CheckinResponse>,
    ) -> Result<Renewal, PullkinError> {
        let mut config = credentials.config.clone().ok_or_else(|| {
            PullkinError::Config(
                "the stored device identity is dead and the credentials hold no Firebase config \
                 to register again with"
                    .into(),
            )
        })?;
        let params = RegisterParams::from_config(&config);
        params.check(&self.endpoints)?;
        let (gcm, settings) = match checkin {
            Some(checkin) => (
                self.register_device(&params, checkin.credentials).await?,
                checkin.settings,
            ),
            None => self.register_new_device(&params).await?,
        };
        let topics = std::mem::take(&mut config.topics);
        let mut renewed = self.complete(gcm, config, &params).await?;
        tracing::info!(
            android_id = renewed.gcm.android_id,
            fcm_success = renewed.fcm.is_success(),
            "registered again"
        );
        let topics_failed = self.resubscribe(&mut renewed, topics).await;
        Ok(Renewal {
            credentials: renewed,
            changed: true,
            identity_changed: true,
            topics_failed,
            checkin: Some(settings),
        })
    }
}

/// Whether a refresh failed because Google no longer knows the installation (or its
/// refresh token): a new installation is needed, retrying cannot help.
pub(super) fn installation_is_gone(error: &fcm_install::Error) -> bool {
    error.is_unauthenticated() || error.status() == Some(StatusCode::NOT_FOUND)
}
