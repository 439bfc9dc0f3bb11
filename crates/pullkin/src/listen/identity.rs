//! Credential upkeep before each connection attempt of a listener built with a
//! [`PullkinCore`]: check in, refresh the Firebase auth token, register anew when Google
//! declared the identity dead; store and announce renewed credentials.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use webpush_ece::ReceiverKeys;

use crate::PullkinError;
use crate::error::ConnectionError;
use crate::event::Event;
use crate::registration::{AppCredentials, PullkinCore};
use crate::store::Store;

/// The device identity to log in with.
#[derive(Clone)]
pub(crate) struct Identity {
    pub android_id: u64,
    pub security_token: u64,
    /// New Web Push keys, when the credentials were renewed with other keys.
    pub keys: Option<Arc<ReceiverKeys>>,
}

/// The current credentials of every app of a listener. Shared: the map's entries stay
/// small (thousands of apps may be held).
pub(crate) type CredentialsMap = Arc<Mutex<HashMap<String, Arc<AppCredentials>>>>;

/// What the upkeep of every app of a listener shares.
pub(crate) struct Upkeep {
    pub core: Arc<PullkinCore>,
    pub credentials: CredentialsMap,
    pub store: Arc<dyn Store>,
    pub events: broadcast::Sender<Event>,
    /// Bounds the renewals (check-ins, token refreshes) in flight across the apps: a
    /// listener starting thousands of apps makes a few HTTPS connections at a time, not
    /// one per app, and keeps only those few in the client's pool afterwards.
    pub renewals: tokio::sync::Semaphore,
}

impl Upkeep {
    /// Renews the credentials of `app` if they need it; the identity to log in with.
    pub(crate) async fn prepare(&self, app: &str) -> Result<Identity, ConnectionError> {
        let current = lock(&self.credentials)
            .get(app)
            .cloned()
            .ok_or_else(|| PullkinError::UnknownApp(app.to_owned()))?;
        let renewal = {
            // Never closed: the semaphore lives as long as `self`.
            let _permit = self.renewals.acquire().await;
            self.core.renew(&current).await?
        };
        let credentials = renewal.credentials;
        let mut keys = None;
        if renewal.changed {
            self.store.save_credentials(app, &credentials).await?;
            keys = Some(Arc::new(
                credentials
                    .keys
                    .receiver_keys()
                    .map_err(PullkinError::Credentials)?,
            ));
            let identity = Identity {
                android_id: credentials.gcm.android_id,
                security_token: credentials.gcm.security_token.expose(),
                keys,
            };
            lock(&self.credentials).insert(app.to_owned(), Arc::new(credentials));
            let _ = self.events.send(Event::CredentialsChanged {
                app: app.to_owned(),
            });
            return Ok(identity);
        }
        Ok(Identity {
            android_id: credentials.gcm.android_id,
            security_token: credentials.gcm.security_token.expose(),
            keys,
        })
    }
}

/// Every critical section is a single map operation: a poisoned lock holds sound data.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
