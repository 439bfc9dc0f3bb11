//! A real `nats-server` with JetStream for one test: its own port and store directory,
//! killed when dropped.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where the server is installed (`NATS_SERVER` overrides it).
const BINARY: &str = "/usr/sbin/nats-server";
/// How long a server may take to accept connections.
const READY_WITHIN: Duration = Duration::from_secs(15);

/// A running `nats-server -js`, on 127.0.0.1.
pub(crate) struct NatsServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
}

/// The server binary; fails the test, saying why, when it is not installed.
fn binary() -> PathBuf {
    let path = std::env::var_os("NATS_SERVER").map_or_else(|| PathBuf::from(BINARY), PathBuf::from);
    assert!(
        path.is_file(),
        "the NATS sink tests need a real nats-server: none at {} (install nats-server, \
         or set NATS_SERVER to its path)",
        path.display()
    );
    path
}

/// A port nothing listens on right now.
pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free local port")
        .port()
}

impl NatsServer {
    /// A server with JetStream and the default settings.
    pub(crate) async fn start() -> Self {
        Self::start_with("").await
    }

    /// A server with JetStream and these lines of configuration file (e.g.
    /// `max_payload: 4096`).
    pub(crate) async fn start_with(config: &str) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let config = (!config.is_empty()).then(|| {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, config).expect("writing the server's configuration");
            path
        });
        let mut server = Self {
            child: None,
            port: 0,
            dir,
            config,
        };
        // The port was free a moment ago; another test may take it meanwhile.
        for _ in 0..5 {
            server.port = free_port();
            if server.spawn().await {
                return server;
            }
        }
        panic!("nats-server did not start: {}", server.log_tail());
    }

    /// Starts the process on this server's port and directory; whether it accepts
    /// connections within [`READY_WITHIN`].
    async fn spawn(&mut self) -> bool {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("opening the server's log");
        let mut command = Command::new(binary());
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.dir.path().join("store"));
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("the server's log"))
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .expect("starting nats-server");
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                self.child = Some(child);
                return true;
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill().await;
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The end of the server's log, for failure messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The server's port.
    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT/<template>`.
    pub(crate) fn url(&self, template: &str) -> String {
        format!("nats://127.0.0.1:{}/{template}", self.port)
    }

    /// A client of the server (reconnecting whenever it restarts).
    pub(crate) async fn client(&self) -> async_nats::Client {
        async_nats::connect(format!("127.0.0.1:{}", self.port))
            .await
            .expect("connecting to the test's nats-server")
    }

    /// Kills the process (SIGKILL, as a crash) and waits for it to end.
    pub(crate) async fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().await.expect("killing nats-server");
        }
    }

    /// Starts the server again on the same port and store directory.
    pub(crate) async fn restart(&mut self) {
        self.kill().await;
        assert!(
            self.spawn().await,
            "nats-server did not start again on port {}: {}",
            self.port,
            self.log_tail()
        );
    }
}
