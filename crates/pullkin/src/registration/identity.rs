//! What a device does when Google resets or re-syncs its identity, and when its senders
//! change (docs/protocol.md §7.1): [`PullkinCore::reset_identity`],
//! [`PullkinCore::sync_token`] and [`PullkinCore::set_senders`].

use super::params::split_senders;

/// The `from` of an Instance ID control message over MCS (docs/protocol.md §7.1).
pub const IID_FROM: &str = "google.com/iid";

/// An Instance ID control message a data message may carry over MCS: `from` =
/// [`IID_FROM`] and `app_data` `CMD=<command>` (docs/protocol.md §7.1). What to do with
/// each: [`Reset`](Self::Reset) and [`ResetAll`](Self::ResetAll) →
/// [`PullkinCore::reset_identity`], [`Sync`](Self::Sync) → [`PullkinCore::sync_token`].
/// A listener built with a core ([`PullkinBuilder::core`](crate::PullkinBuilder::core))
/// answers them itself and does not hand them to the application; without a core they
/// are delivered as any message, for the application to answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IidCommand {
    /// `RST`: this identity of the app was reset.
    Reset,
    /// `RST_FULL`: every identity of the app was reset.
    ResetAll,
    /// `SYNC`: fetch the token again.
    Sync,
}

impl IidCommand {
    /// The command a message from `from` with these `app_data` pairs carries, if it is
    /// an Instance ID control message with a known command.
    ///
    /// ```
    /// use pullkin::IidCommand;
    /// let data = [("CMD", "RST_FULL")];
    /// assert_eq!(IidCommand::from_app_data("google.com/iid", data), Some(IidCommand::ResetAll));
    /// assert_eq!(IidCommand::from_app_data("1234567890", data), None);
    /// ```
    pub fn from_app_data<'a>(
        from: &str,
        app_data: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Option<Self> {
        if from != IID_FROM {
            return None;
        }
        app_data
            .into_iter()
            .find(|(key, _)| *key == "CMD")
            .and_then(|(_, command)| match command {
                "RST" => Some(Self::Reset),
                "RST_FULL" => Some(Self::ResetAll),
                "SYNC" => Some(Self::Sync),
                _ => None,
            })
    }
}
use super::{AppCredentials, Persona, PullkinCore, RegisterParams, Renewal, android_registration};
use crate::PullkinError;
use gcm_checkin::RegisterRequest;

impl PullkinCore {
    /// Makes a new identity for credentials Google reset: the answer to
    /// [`PullkinError::IdentityReset`] (register3 `Error=RST`) and to the IID control
    /// messages `RST` and `RST_FULL` over MCS (docs/protocol.md §7.1). A fresh check-in,
    /// register3, Firebase installation, keys and FCM registration, from the stored
    /// config, and the stored topics subscribed again; the result has
    /// `identity_changed` (log in again with it) and `topics_failed`.
    ///
    /// Needs [`AppCredentials::config`] (else [`PullkinError::Config`], before any
    /// request).
    pub async fn reset_identity(
        &self,
        credentials: &AppCredentials,
    ) -> Result<Renewal, PullkinError> {
        tracing::warn!(
            android_id = credentials.gcm.android_id,
            "the identity was reset; making a new one"
        );
        self.reregister(credentials, None).await
    }

    /// Fetches the token again on the same identity: the answer to the IID control
    /// message `SYNC` over MCS (docs/protocol.md §7.1). register3 runs again with the
    /// stored config, installation and device; when it hands out another token, the
    /// keys are registered with FCM for it (the old FCM registration deleted) and the
    /// stored topics are subscribed again. `changed` says whether to store the result
    /// (and pass the new FCM token to the senders); the identity stays.
    ///
    /// Needs [`AppCredentials::config`] (else [`PullkinError::Config`]); `Error=RST` is
    /// [`PullkinError::IdentityReset`].
    pub async fn sync_token(&self, credentials: &AppCredentials) -> Result<Renewal, PullkinError> {
        let config = credentials.config.as_ref().ok_or_else(|| {
            PullkinError::Config(
                "syncing the token needs the Firebase config the credentials lack: import \
                 them again with --app-id, --api-key and --project-id"
                    .into(),
            )
        })?;
        let params = RegisterParams::from_config(config);
        self.register_again(credentials, &params).await
    }

    /// Registers Android-persona credentials for another set of senders (their ids, the
    /// app's own project number among them), as Chromium does whenever the set changes
    /// (docs/protocol.md §7.1): register3 runs again on the same identity with the ids
    /// joined by `,`, and a new token is registered with FCM and subscribed to the
    /// stored topics. The same set in another order changes nothing (no request).
    ///
    /// Checked before any request: the ids ([`PullkinError::InvalidParams`]), the
    /// persona and the stored config ([`PullkinError::Config`]).
    pub async fn set_senders(
        &self,
        credentials: &AppCredentials,
        sender_ids: &[&str],
    ) -> Result<Renewal, PullkinError> {
        let config = credentials.config.as_ref().ok_or_else(|| {
            PullkinError::Config(
                "changing the senders needs the Firebase config the credentials lack: import \
                 them again with --app-id, --api-key and --project-id"
                    .into(),
            )
        })?;
        if !matches!(config.persona, Persona::Android { .. }) {
            return Err(PullkinError::Config(
                "several senders are for Android-persona registrations; a web-persona one \
                 receives from one VAPID key"
                    .into(),
            ));
        }
        let wanted = split_senders_all(sender_ids);
        let mut stored = config.sender_ids();
        let mut sorted = wanted.clone();
        stored.sort_unstable();
        sorted.sort_unstable();
        if stored == sorted {
            return Ok(unchanged(credentials));
        }
        let mut config = config.clone();
        config.sender_id = wanted.join(",");
        let params = RegisterParams::from_config(&config);
        params.check(&self.endpoints)?;
        let mut updated = credentials.clone();
        updated.config = Some(config);
        let mut renewal = self.register_again(&updated, &params).await?;
        renewal.changed = true;
        Ok(renewal)
    }

    /// register3 again for `params` on the stored device and installation; when the token
    /// changes, FCM again with the same keys and the topics again.
    async fn register_again(
        &self,
        credentials: &AppCredentials,
        params: &RegisterParams,
    ) -> Result<Renewal, PullkinError> {
        params.check(&self.endpoints)?;
        let mut renewed = credentials.clone();
        let mut changed = self
            .refresh_installation(&mut renewed, self.refresh_margin)
            .await?;
        let device = renewed.gcm.checkin();
        let request = match &params.persona {
            Persona::Android { package, cert } => RegisterRequest::android(
                device,
                android_registration(
                    params.senders_field(),
                    &params.app_id,
                    package,
                    cert,
                    renewed.gcm.installation.as_ref(),
                ),
            ),
            Persona::Web { .. } => RegisterRequest::web(
                device,
                gcm_checkin::WebRegistration::new()
                    .with_subtype(renewed.gcm.app_id.as_str())
                    .with_sender(
                        params
                            .vapid_key
                            .as_deref()
                            .unwrap_or(gcm_checkin::CHROME_VAPID_KEY),
                    ),
            ),
        };
        let token = self
            .register3(&request, &self.retry_for(params.retries))
            .await?;
        if token == renewed.gcm.token {
            tracing::debug!("register3 answered the same token");
            return Ok(Renewal {
                credentials: renewed,
                changed,
                identity_changed: false,
                topics_failed: Vec::new(),
                checkin: None,
            });
        }
        tracing::info!("register3 answered a new token");
        renewed.gcm.token = token;
        changed = true;
        if let (Some(installation), Some(fcm_params)) =
            (renewed.gcm.installation.clone(), params.fcm_params())
        {
            let keys = renewed.keys.receiver_keys()?;
            let fcm = self
                .fcm_register_keys(&renewed.gcm.token, &installation, &fcm_params, &keys)
                .await;
            self.delete_old_registration(credentials, fcm.token()).await;
            renewed.fcm = fcm;
        }
        let topics = renewed
            .config
            .as_mut()
            .map(|config| std::mem::take(&mut config.topics))
            .unwrap_or_default();
        let topics_failed = self.resubscribe(&mut renewed, topics).await;
        Ok(Renewal {
            credentials: renewed,
            changed,
            identity_changed: false,
            topics_failed,
            checkin: None,
        })
    }
}

/// Every id of `ids` (each may itself hold several joined by `,`), without repeats.
fn split_senders_all(ids: &[&str]) -> Vec<String> {
    let mut all: Vec<String> = Vec::new();
    for id in ids.iter().flat_map(|ids| split_senders(ids)) {
        if !all.iter().any(|seen| seen == id) {
            all.push(id.to_owned());
        }
    }
    all
}

/// The renewal of credentials that did not change.
fn unchanged(credentials: &AppCredentials) -> Renewal {
    Renewal {
        credentials: credentials.clone(),
        changed: false,
        identity_changed: false,
        topics_failed: Vec::new(),
        checkin: None,
    }
}
