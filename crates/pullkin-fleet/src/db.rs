//! [`Database`]: the connection pool every part of the fleet shares, and dedicated
//! connections for what a pool cannot do (`LISTEN`, session advisory locks).
//!
//! TLS follows the URL's `sslmode`, as `tokio_postgres::Config` parses it: `require`
//! connects over TLS (rustls with the ring provider, the Mozilla roots of
//! `webpki-roots`, or a configuration given to [`DatabaseBuilder::tls`]) and fails when
//! the server does not offer it; `disable`, `prefer` and no `sslmode` at all connect in
//! plain text. (`prefer` is libpq's "TLS if the server offers it, without verifying";
//! a connection that verifies nothing protects nothing, so it is treated as plain.)

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use futures_util::future::poll_fn;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;
use tokio_postgres::config::SslMode;
use tokio_postgres::{AsyncMessage, Client, Config, Connection, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;
use tracing::debug;

use crate::error::{FleetError, db, one_line};

/// The environment variable the command line reads the database URL from.
pub const DATABASE_URL_ENV: &str = "PULLKIN_DATABASE_URL";

/// A PostgreSQL database holding a fleet: a pool of connections (deadpool), and what is
/// needed to open dedicated ones. Cheap to clone; connects lazily, on first use.
#[derive(Clone)]
pub struct Database {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    config: Config,
    tls: Option<MakeRustlsConnect>,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Not the config's Debug: it would print the password.
        f.debug_struct("Database")
            .field("hosts", &self.inner.config.get_hosts())
            .field("dbname", &self.inner.config.get_dbname())
            .field("user", &self.inner.config.get_user())
            .field("tls", &self.inner.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Database`]: the URL, the pool's size, the TLS configuration.
#[derive(Debug)]
#[must_use]
pub struct DatabaseBuilder {
    url: String,
    max_connections: usize,
    tls: Option<Arc<rustls::ClientConfig>>,
    connect_timeout: Duration,
}

impl DatabaseBuilder {
    /// At most this many pooled connections (default 8).
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// The TLS configuration for `sslmode=require` (default: the ring provider and the
    /// Mozilla roots of `webpki-roots`). Give one with the CA of a private server.
    pub fn tls(mut self, tls: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(tls);
        self
    }

    /// The limit on connecting, when the URL gives none (default 10 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The database. Nothing is connected yet; fails only when the URL does not parse
    /// or no TLS configuration can be made.
    pub fn build(self) -> Result<Database, FleetError> {
        let mut config: Config =
            self.url
                .parse()
                .map_err(|e: tokio_postgres::Error| FleetError::BadUrl {
                    reason: one_line(&e),
                })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(self.connect_timeout);
        }
        if config.get_application_name().is_none() {
            config.application_name("pullkin-fleet");
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Require => Some(MakeRustlsConnect::new(match self.tls {
                Some(tls) => Arc::unwrap_or_clone(tls),
                None => default_tls()?,
            })),
            _ => {
                config.ssl_mode(SslMode::Disable);
                None
            }
        };
        let manager_config = ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        };
        let manager = match &tls {
            Some(tls) => {
                deadpool_postgres::Manager::from_config(config.clone(), tls.clone(), manager_config)
            }
            None => deadpool_postgres::Manager::from_config(config.clone(), NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(self.max_connections)
            .runtime(Runtime::Tokio1)
            .create_timeout(Some(self.connect_timeout))
            .wait_timeout(Some(self.connect_timeout * 3))
            .build()
            .map_err(|e| FleetError::BadUrl {
                reason: e.to_string(),
            })?;
        Ok(Database {
            inner: Arc::new(Inner { pool, config, tls }),
        })
    }
}

fn default_tls() -> Result<rustls::ClientConfig, FleetError> {
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| FleetError::Tls(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

impl Database {
    /// The database at `url` (`postgres://user:password@host:port/dbname?sslmode=…`),
    /// with the defaults of [`Database::builder`].
    pub fn connect(url: &str) -> Result<Self, FleetError> {
        Self::builder(url).build()
    }

    /// The database named by `PULLKIN_DATABASE_URL`.
    pub fn from_env() -> Result<Self, FleetError> {
        let url = std::env::var(DATABASE_URL_ENV).map_err(|_| FleetError::BadUrl {
            reason: format!("{DATABASE_URL_ENV} is not set"),
        })?;
        Self::connect(&url)
    }

    /// A builder for the database at `url`.
    pub fn builder(url: &str) -> DatabaseBuilder {
        DatabaseBuilder {
            url: url.to_owned(),
            max_connections: 8,
            tls: None,
            connect_timeout: Duration::from_secs(10),
        }
    }

    /// The pool, for statements of your own.
    #[must_use]
    pub fn pool(&self) -> &Pool {
        &self.inner.pool
    }

    /// Whether connections use TLS (`sslmode=require`).
    #[must_use]
    pub fn uses_tls(&self) -> bool {
        self.inner.tls.is_some()
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<Object, FleetError> {
        self.inner.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Backend(e) => match db(e) {
                FleetError::Database(e) if e.as_db_error().is_none() => FleetError::Unreachable {
                    reason: one_line(&e),
                },
                other => other,
            },
            other => FleetError::Unreachable {
                reason: one_line(&other),
            },
        })
    }

    /// A connection of its own, outside the pool, and the notifications (`NOTIFY`) it
    /// receives. The connection closes when the client is dropped; the receiver ends
    /// when the connection does.
    pub(crate) async fn dedicated(
        &self,
    ) -> Result<
        (
            Client,
            mpsc::UnboundedReceiver<tokio_postgres::Notification>,
        ),
        FleetError,
    > {
        let unreachable = |e: tokio_postgres::Error| match e.as_db_error() {
            Some(_) if !crate::error::server_unavailable(&e) => FleetError::Database(e),
            _ => FleetError::Unreachable {
                reason: one_line(&e),
            },
        };
        let (sender, receiver) = mpsc::unbounded_channel();
        let client = match &self.inner.tls {
            Some(tls) => {
                let (client, connection) = self
                    .inner
                    .config
                    .connect(tls.clone())
                    .await
                    .map_err(unreachable)?;
                tokio::spawn(drive(connection, sender));
                client
            }
            None => {
                let (client, connection) = self
                    .inner
                    .config
                    .connect(NoTls)
                    .await
                    .map_err(unreachable)?;
                tokio::spawn(drive(connection, sender));
                client
            }
        };
        Ok((client, receiver))
    }
}

/// Runs a dedicated connection, forwarding its notifications, until it closes.
async fn drive<S, T>(
    mut connection: Connection<S, T>,
    notifications: mpsc::UnboundedSender<tokio_postgres::Notification>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
    T: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match poll_fn(|cx| connection.poll_message(cx)).await {
            Some(Ok(AsyncMessage::Notification(notification))) => {
                // A receiver that is gone does not stop the connection: the client may
                // still be in use.
                let _ = notifications.send(notification);
            }
            Some(Ok(_)) => {}
            Some(Err(error)) => {
                debug!("dedicated database connection ended: {error}");
                break;
            }
            None => break,
        }
    }
}
