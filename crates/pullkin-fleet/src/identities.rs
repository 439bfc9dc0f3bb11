//! Identities: adding (credentials sealed with the fleet key), removing, listing,
//! disabling, opening, and re-encrypting them all under a new key.

use std::time::SystemTime;

use pullkin::{AppCredentials, Persona};
use zeroize::Zeroizing;

use crate::crypto::FleetKey;
use crate::db::Database;
use crate::error::{FleetError, db};

/// An identity as listed: everything but its credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct IdentitySummary {
    /// The id (the associated data of its sealed credentials).
    pub id: i64,
    /// The unique name; also the app name in the listener and in each JSON line.
    pub name: String,
    /// `android` or `web`.
    pub persona: String,
    /// The sender id, when the credentials say.
    pub sender_id: Option<String>,
    /// The app id (Firebase's, else the GCM app id).
    pub app_id: Option<String>,
    /// The fingerprint of the key that sealed the credentials ([`FleetKey::id`]).
    pub key_id: String,
    /// When it was added.
    pub created_at: SystemTime,
    /// Disabled identities are not claimed by any worker.
    pub disabled: bool,
}

/// The persona column for a set of credentials.
fn persona(credentials: &AppCredentials) -> &'static str {
    match credentials.config.as_ref().map(|c| &c.persona) {
        Some(Persona::Web { .. }) => "web",
        Some(Persona::Android { .. }) => "android",
        _ if credentials.gcm.app_id == "org.chromium.linux" => "web",
        _ => "android",
    }
}

/// The credentials as sealed JSON for identity `id`: (ciphertext, nonce).
pub(crate) fn seal_credentials(
    key: &FleetKey,
    id: i64,
    credentials: &AppCredentials,
) -> Result<(Vec<u8>, Vec<u8>), FleetError> {
    let json = Zeroizing::new(
        serde_json::to_vec(credentials).map_err(|e| FleetError::Credentials(e.to_string()))?,
    );
    key.seal(id, &json)
}

/// Opens what [`seal_credentials`] sealed.
pub(crate) fn open_credentials(
    key: &FleetKey,
    id: i64,
    ciphertext: &[u8],
    nonce: &[u8],
) -> Result<AppCredentials, FleetError> {
    let json = key.open(id, ciphertext, nonce)?;
    let text = std::str::from_utf8(&json)
        .map_err(|_| FleetError::Credentials(format!("identity {id}: not UTF-8")))?;
    AppCredentials::from_json(text)
        .map_err(|e| FleetError::Credentials(format!("identity {id}: {e}")))
}

/// Adds an identity named `name` (unique) with its credentials sealed under `key`;
/// returns its id. Its lease row is created free, at epoch 0.
pub async fn add_identity(
    database: &Database,
    key: &FleetKey,
    name: &str,
    credentials: &AppCredentials,
) -> Result<i64, FleetError> {
    let mut client = database.client().await?;
    let transaction = client.transaction().await.map_err(db)?;
    let exists = transaction
        .query_opt("SELECT 1 FROM pullkin.identities WHERE name = $1", &[&name])
        .await
        .map_err(db)?;
    if exists.is_some() {
        return Err(FleetError::IdentityExists(name.to_owned()));
    }
    // The id comes first: it is the associated data of the sealed credentials.
    let id: i64 = transaction
        .query_one("SELECT nextval('pullkin.identities_id_seq')", &[])
        .await
        .map_err(db)?
        .get(0);
    let (sealed, nonce) = seal_credentials(key, id, credentials)?;
    let config = credentials.config.as_ref();
    let sender_id = config.map(|c| c.sender_id.clone());
    let app_id = config
        .map(|c| c.app_id.clone())
        .unwrap_or_else(|| credentials.gcm.app_id.clone());
    let inserted = transaction
        .execute(
            "INSERT INTO pullkin.identities
                 (id, name, persona, sender_id, app_id, credentials, nonce, key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (name) DO NOTHING",
            &[
                &id,
                &name,
                &persona(credentials),
                &sender_id,
                &app_id,
                &sealed,
                &nonce,
                &key.id(),
            ],
        )
        .await
        .map_err(db)?;
    if inserted == 0 {
        return Err(FleetError::IdentityExists(name.to_owned()));
    }
    transaction
        .execute(
            "INSERT INTO pullkin.leases (identity_id) VALUES ($1)",
            &[&id],
        )
        .await
        .map_err(db)?;
    transaction.commit().await.map_err(db)?;
    Ok(id)
}

/// Removes an identity, its lease, acknowledgement and connection state. Its stored
/// notifications stay (consumers may not have read them). A worker holding it finds
/// its lease gone at its next write or renewal and stops it. Returns whether it existed.
pub async fn remove_identity(database: &Database, name: &str) -> Result<bool, FleetError> {
    let client = database.client().await?;
    let removed = client
        .execute("DELETE FROM pullkin.identities WHERE name = $1", &[&name])
        .await
        .map_err(db)?;
    Ok(removed > 0)
}

/// Disables (no worker claims it; its holder lets it go) or enables an identity.
/// Returns whether it exists.
pub async fn set_disabled(
    database: &Database,
    name: &str,
    disabled: bool,
) -> Result<bool, FleetError> {
    let client = database.client().await?;
    let changed = client
        .execute(
            "UPDATE pullkin.identities SET disabled = $2 WHERE name = $1",
            &[&name, &disabled],
        )
        .await
        .map_err(db)?;
    Ok(changed > 0)
}

/// Every identity, by id.
pub async fn list_identities(database: &Database) -> Result<Vec<IdentitySummary>, FleetError> {
    let client = database.client().await?;
    let rows = client
        .query(
            "SELECT id, name, persona, sender_id, app_id, key_id, created_at, disabled
             FROM pullkin.identities ORDER BY id",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(rows
        .iter()
        .map(|row| IdentitySummary {
            id: row.get(0),
            name: row.get(1),
            persona: row.get(2),
            sender_id: row.get(3),
            app_id: row.get(4),
            key_id: row.get(5),
            created_at: row.get(6),
            disabled: row.get(7),
        })
        .collect())
}

/// An identity's credentials, opened with `key`.
pub async fn load_credentials(
    database: &Database,
    key: &FleetKey,
    name: &str,
) -> Result<AppCredentials, FleetError> {
    let client = database.client().await?;
    let row = client
        .query_opt(
            "SELECT id, credentials, nonce FROM pullkin.identities WHERE name = $1",
            &[&name],
        )
        .await
        .map_err(db)?
        .ok_or_else(|| FleetError::UnknownIdentity(name.to_owned()))?;
    let id: i64 = row.get(0);
    open_credentials(key, id, row.get(1), row.get(2))
}

/// Re-encrypts every identity's credentials from `old` to `new`, in one transaction:
/// either every row is under the new key afterwards or none is. Rows already under
/// `new` are left as they are (so running it twice is harmless); a row that neither
/// key opens fails the whole rotation with [`FleetError::BadKey`]. Returns how many rows
/// were re-encrypted.
///
/// Workers claim only identities sealed with their own key: restart them with the new
/// key file afterwards (the ones still running keep what they hold).
pub async fn rotate_key(
    database: &Database,
    old: &FleetKey,
    new: &FleetKey,
) -> Result<u64, FleetError> {
    let mut client = database.client().await?;
    let transaction = client.transaction().await.map_err(db)?;
    let rows = transaction
        .query(
            "SELECT id, credentials, nonce FROM pullkin.identities ORDER BY id FOR UPDATE",
            &[],
        )
        .await
        .map_err(db)?;
    let new_id = new.id();
    let mut rotated = 0;
    for row in &rows {
        let id: i64 = row.get(0);
        let sealed: &[u8] = row.get(1);
        let nonce: &[u8] = row.get(2);
        let plain = match old.open(id, sealed, nonce) {
            Ok(plain) => plain,
            Err(error) => {
                if new.open(id, sealed, nonce).is_ok() {
                    continue;
                }
                return Err(error);
            }
        };
        let (sealed, nonce) = new.seal(id, &plain)?;
        transaction
            .execute(
                "UPDATE pullkin.identities SET credentials = $2, nonce = $3, key_id = $4
                 WHERE id = $1",
                &[&id, &sealed, &nonce, &new_id],
            )
            .await
            .map_err(db)?;
        rotated += 1;
    }
    transaction.commit().await.map_err(db)?;
    Ok(rotated)
}
