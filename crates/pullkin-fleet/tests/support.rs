//! What the tests share: a database of their own per test (created on a real
//! PostgreSQL, dropped at the end), keys, and credentials.

use std::time::Duration;

use pullkin::{AppCredentials, AppCredentialsFcm, AppCredentialsGcm, AppCredentialsKeys};
use pullkin_fleet::{Database, FleetKey, migrate};
use pullkin_test_support::postgres::{ScratchDatabase, connect, server_url};

/// How long a test waits for something that should happen soon.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// A database created for one test and dropped when this is dropped.
pub(crate) struct TestDb {
    pub(crate) db: Database,
    /// Its name and URL; dropped (with the database) after `db`'s pool.
    pub(crate) scratch: ScratchDatabase,
}

impl TestDb {
    /// A fresh, empty database (no schema).
    pub(crate) async fn empty() -> TestDb {
        let scratch = ScratchDatabase::try_create(&server_url(), "pullkin_test")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let db = Database::connect(&scratch.url).unwrap();
        TestDb { db, scratch }
    }

    /// A fresh database with the schema.
    pub(crate) async fn migrated() -> TestDb {
        let test = Self::empty().await;
        migrate(&test.db).await.unwrap();
        test
    }

    /// A plain client on the test database, for the tests' own statements.
    pub(crate) async fn client(&self) -> tokio_postgres::Client {
        connect(&self.scratch.url)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }
}

/// A key for tests.
pub(crate) fn key() -> FleetKey {
    FleetKey::generate()
}

/// Credentials that parse (fresh keys, made-up device), for tests without an emulator.
pub(crate) fn credentials(android_id: u64) -> AppCredentials {
    let keys = webpush_ece::ReceiverKeys::generate();
    AppCredentials {
        gcm: AppCredentialsGcm {
            token: gcm_checkin::GcmToken::new(format!("gcm-token-{android_id}")),
            app_id: "org.chromium.linux".into(),
            android_id,
            security_token: gcm_checkin::SecurityToken::new(0x5ec7_e7ab_c0de_0000 + android_id),
            installation: None,
        },
        fcm: AppCredentialsFcm::default(),
        keys: AppCredentialsKeys::from_keys(&keys).unwrap(),
        config: None,
    }
}

/// Waits until `check` holds, polling.
pub(crate) async fn eventually<F, Fut>(what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A TCP proxy in front of the test server that can be taken down (every connection
/// cut, new ones refused) and brought back: the database going away, for real.
pub(crate) struct Proxy {
    pub(crate) port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl Proxy {
    pub(crate) async fn start() -> Proxy {
        use std::sync::atomic::Ordering;
        let config: tokio_postgres::Config = server_url().parse().unwrap();
        let host = match &config.get_hosts()[0] {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            #[allow(unreachable_patterns)]
            _ => "127.0.0.1".to_owned(),
        };
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let target = format!("{host}:{port}");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let local = listener.local_addr().unwrap().port();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let accept = {
            let down = down.clone();
            let connections = connections.clone();
            tokio::spawn(async move {
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        return;
                    };
                    if down.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let target = target.clone();
                    let task = tokio::spawn(async move {
                        if let Ok(mut outbound) = tokio::net::TcpStream::connect(&target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        Proxy {
            port: local,
            down,
            connections,
            accept,
        }
    }

    /// The URL of `test`'s database through the proxy.
    pub(crate) fn url(&self, test: &TestDb) -> String {
        let config: tokio_postgres::Config = server_url().parse().unwrap();
        let user = config.get_user().unwrap_or("postgres");
        format!(
            "postgres://{user}@127.0.0.1:{}/{}",
            self.port, test.scratch.name
        )
    }

    /// Cuts every connection and refuses new ones.
    pub(crate) fn take_down(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// Accepts connections again.
    pub(crate) fn bring_up(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.take_down();
    }
}
