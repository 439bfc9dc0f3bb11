//! A database of its own for one test or run, on a real PostgreSQL: created with a
//! unique name on the server of `PULLKIN_TEST_DATABASE_URL` (default [`DEFAULT_SERVER_URL`],
//! what `cargo xtask ci` provides), dropped when done.
//!
//! [`ScratchDatabase::try_create`] and [`ScratchDatabase::try_drop`] fail with a message
//! (for the soak and benchmarks); a database not dropped by then is dropped when the value
//! is, on a thread and runtime of its own (`Drop` cannot await, and the test's runtime may
//! be shutting down).

use tokio_postgres::NoTls;

/// Where the tests find PostgreSQL unless `PULLKIN_TEST_DATABASE_URL` says otherwise.
pub const DEFAULT_SERVER_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// The server of `PULLKIN_TEST_DATABASE_URL`, else [`DEFAULT_SERVER_URL`].
#[must_use]
pub fn server_url() -> String {
    std::env::var("PULLKIN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_SERVER_URL.to_owned())
}

/// `url` with its database name replaced by `name` (its query kept).
#[must_use]
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// `url` without its password, for messages.
#[must_use]
pub fn shown(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let user = &url[scheme + 3..at];
            let user = user.split_once(':').map_or(user, |(user, _)| user);
            format!("{}{user}{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// A plain connection (outside any pool), driven on a task of its own.
///
/// # Errors
///
/// When it cannot connect (the message names the server, without its password).
pub async fn connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL at {}: {e}", shown(url)))?;
    tokio::spawn(connection);
    Ok(client)
}

/// Runs `sql` on the database at `url`, from code without a runtime (on a thread and
/// runtime of its own).
///
/// # Errors
///
/// When it cannot connect or a statement fails.
pub fn execute_blocking(url: &str, sql: &str) -> Result<(), String> {
    let (url, sql) = (url.to_owned(), sql.to_owned());
    on_own_runtime(async move {
        let client = connect(&url).await?;
        client
            .batch_execute(&sql)
            .await
            .map_err(|e| format!("on {}: {e}", shown(&url)))
    })
}

/// A database created for one test or run, dropped by [`ScratchDatabase::try_drop`] or,
/// failing that, when dropped.
#[derive(Debug)]
pub struct ScratchDatabase {
    /// Its name: the prefix given and random hex.
    pub name: String,
    /// Its URL: the server's with the database name replaced.
    pub url: String,
    /// The server's URL (its database is where `CREATE` and `DROP DATABASE` run).
    server: String,
    dropped: bool,
}

impl ScratchDatabase {
    /// A new, empty database on `server`, named `prefix` and random hex.
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or the database cannot be created.
    pub async fn try_create(server: &str, prefix: &str) -> Result<Self, String> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = connect(server).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|e| {
                format!(
                    "cannot create database {name} on {} (set PULLKIN_TEST_DATABASE_URL): {e}",
                    shown(server)
                )
            })?;
        Ok(Self {
            url: with_database(server, &name),
            name,
            server: server.to_owned(),
            dropped: false,
        })
    }

    /// [`ScratchDatabase::try_create`] on [`server_url`], from code without a runtime
    /// (on a thread and runtime of its own).
    ///
    /// # Panics
    ///
    /// When it cannot be created, with the message.
    #[must_use]
    pub fn create_blocking(prefix: &str) -> Self {
        let prefix = prefix.to_owned();
        on_own_runtime(async move { Self::try_create(&server_url(), &prefix).await })
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Drops the database now (closing whatever is still connected to it).
    ///
    /// # Errors
    ///
    /// When the server cannot be reached or the statement fails.
    pub async fn try_drop(&mut self) -> Result<(), String> {
        let admin = connect(&self.server).await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .await
            .map_err(|e| format!("cannot drop database {}: {e}", self.name))?;
        self.dropped = true;
        Ok(())
    }
}

impl Drop for ScratchDatabase {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        let mut rest = Self {
            name: std::mem::take(&mut self.name),
            url: std::mem::take(&mut self.url),
            server: std::mem::take(&mut self.server),
            dropped: true,
        };
        let name = rest.name.clone();
        if let Err(error) = on_own_runtime(async move { rest.try_drop().await }) {
            eprintln!("could not drop the scratch database {name}: {error}");
        }
    }
}

/// Runs `work` to its end on a current-thread runtime on a thread of its own (callable
/// from inside another runtime, and from `Drop`).
fn on_own_runtime<T: Send + 'static>(
    work: impl std::future::Future<Output = Result<T, String>> + Send + 'static,
) -> Result<T, String> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("a runtime: {e}"))?
            .block_on(work)
    })
    .join()
    .unwrap_or_else(|_| Err("the thread panicked".to_owned()))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_database_name_is_replaced_and_the_query_kept() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x"),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(with_database("postgres://u@h", "x"), "postgres://u@h/x");
        assert_eq!(shown("postgres://u:secret@h/db"), "postgres://u@h/db");
        assert_eq!(shown("postgres://h/db"), "postgres://h/db");
    }

    #[tokio::test]
    async fn a_scratch_database_is_there_until_dropped() {
        let server = server_url();
        let mut scratch = ScratchDatabase::try_create(&server, "pullkin_support_test")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let client = connect(&scratch.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        client
            .batch_execute("CREATE TABLE t (x int)")
            .await
            .unwrap();
        drop(client);
        let exists = |name: String| async move {
            let admin = connect(&server_url())
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            admin
                .query_opt("SELECT 1 FROM pg_database WHERE datname = $1", &[&name])
                .await
                .unwrap()
                .is_some()
        };
        assert!(exists(scratch.name.clone()).await);
        scratch.try_drop().await.unwrap_or_else(|e| panic!("{e}"));
        assert!(!exists(scratch.name.clone()).await);
        // One left to `Drop` is dropped too.
        let left = ScratchDatabase::create_blocking("pullkin_support_test");
        let name = left.name.clone();
        assert!(exists(name.clone()).await);
        drop(left);
        assert!(!exists(name).await);
    }
}
