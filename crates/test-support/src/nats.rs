//! A real `nats-server` with JetStream for one test: on 127.0.0.1, a free port and a
//! store directory of its own (kept across [`NatsServer::kill`] and
//! [`NatsServer::restart`]), killed when dropped.
//!
//! The binary is the `NATS_SERVER` environment variable, else [`DEFAULT_BINARY`] (where
//! Debian's `nats-server` package installs it).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::{Child, Command};

/// Where the server is looked for when `NATS_SERVER` is not set.
pub const DEFAULT_BINARY: &str = "/usr/sbin/nats-server";
/// How long a server may take to accept connections.
pub const READY_WITHIN: Duration = Duration::from_secs(15);
/// How many lines [`NatsServer::log_tail`] gives.
const TAIL_LINES: usize = 20;

/// A running `nats-server -js` on 127.0.0.1.
pub struct NatsServer {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    config: Option<PathBuf>,
}

/// The server binary: `NATS_SERVER`, else [`DEFAULT_BINARY`]; an error saying what to
/// install when there is no file there.
///
/// # Errors
///
/// When no file is at that path.
pub fn binary() -> Result<PathBuf, String> {
    let path = std::env::var_os("NATS_SERVER")
        .map_or_else(|| PathBuf::from(DEFAULT_BINARY), PathBuf::from);
    binary_at(path)
}

fn binary_at(path: PathBuf) -> Result<PathBuf, String> {
    if path.is_file() {
        Ok(path)
    } else {
        Err(format!(
            "these tests need a real nats-server: none at {} (install nats-server, e.g. \
             Debian's package, or set NATS_SERVER to its path)",
            path.display()
        ))
    }
}

/// A local port nothing listens on right now.
///
/// # Panics
///
/// If no port can be bound.
pub fn free_port() -> u16 {
    try_free_port().expect("a free local port")
}

fn try_free_port() -> Result<u16, String> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free local port: {e}"))
}

impl NatsServer {
    /// A server with JetStream and the default settings.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::try_start_with`] fails, with its message.
    pub async fn start() -> Self {
        Self::start_with("").await
    }

    /// A server with JetStream and these lines of configuration file (e.g.
    /// `max_payload: 4096`).
    ///
    /// # Panics
    ///
    /// As [`NatsServer::try_start_with`] fails, with its message.
    pub async fn start_with(config: &str) -> Self {
        Self::try_start_with(config)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`NatsServer::start`], failing with a message instead of panicking.
    ///
    /// # Errors
    ///
    /// As [`NatsServer::try_start_with`].
    pub async fn try_start() -> Result<Self, String> {
        Self::try_start_with("").await
    }

    /// [`NatsServer::start_with`], failing with a message instead of panicking.
    ///
    /// # Errors
    ///
    /// When the binary is missing ([`binary`]), the directory or configuration cannot be
    /// written, or the server does not accept connections within [`READY_WITHIN`] on
    /// any of five free ports (the message ends with its log).
    pub async fn try_start_with(config: &str) -> Result<Self, String> {
        let binary = binary()?;
        let dir = tempfile::tempdir().map_err(|e| format!("a temporary directory: {e}"))?;
        let config = if config.is_empty() {
            None
        } else {
            let path = dir.path().join("server.conf");
            std::fs::write(&path, config)
                .map_err(|e| format!("writing the server's configuration: {e}"))?;
            Some(path)
        };
        let mut server = Self {
            binary,
            child: None,
            port: 0,
            dir,
            config,
        };
        // The port was free a moment ago; something else may take it meanwhile.
        for _ in 0..5 {
            server.port = try_free_port()?;
            if server.spawn().await? {
                return Ok(server);
            }
        }
        Err(format!("nats-server did not start: {}", server.log_tail()))
    }

    /// Starts the process on this server's port and directory; whether it accepts
    /// connections within [`READY_WITHIN`].
    async fn spawn(&mut self) -> Result<bool, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .map_err(|e| format!("opening the server's log: {e}"))?;
        let log_err = log
            .try_clone()
            .map_err(|e| format!("the server's log: {e}"))?;
        let mut command = Command::new(&self.binary);
        command
            .args([
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-js",
                "-sd",
            ])
            .arg(self.store_dir());
        if let Some(config) = &self.config {
            command.arg("-c").arg(config);
        }
        let mut child = command
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", self.binary.display()))?;
        let deadline = tokio::time::Instant::now() + READY_WITHIN;
        loop {
            if let Ok(Some(_)) = child.try_wait() {
                return Ok(false);
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", self.port))
                .await
                .is_ok()
            {
                self.child = Some(child);
                return Ok(true);
            }
            if tokio::time::Instant::now() >= deadline {
                let _ = child.kill().await;
                return Ok(false);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The server's log file (its stdout and stderr, across restarts).
    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    /// The JetStream store directory (`-sd`), kept across restarts.
    fn store_dir(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The last lines of the server's log, for failure messages.
    pub fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(TAIL_LINES)..].join("\n")
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `nats://127.0.0.1:PORT/<template>` (a sink URL with its subject template).
    pub fn url(&self, template: &str) -> String {
        format!("nats://127.0.0.1:{}/{template}", self.port)
    }

    /// A client of the server (it reconnects whenever the server restarts).
    ///
    /// # Panics
    ///
    /// If it cannot connect.
    pub async fn client(&self) -> async_nats::Client {
        self.try_client().await.unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`NatsServer::client`], failing with a message instead of panicking.
    ///
    /// # Errors
    ///
    /// If it cannot connect.
    pub async fn try_client(&self) -> Result<async_nats::Client, String> {
        async_nats::connect(format!("127.0.0.1:{}", self.port))
            .await
            .map_err(|e| format!("connecting to nats-server on port {}: {e}", self.port))
    }

    /// Kills the process (SIGKILL, as a crash) and waits for it to end; nothing when it
    /// is not running.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::try_kill`] fails, with its message.
    pub async fn kill(&mut self) {
        self.try_kill().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// [`NatsServer::kill`], failing with a message instead of panicking.
    ///
    /// # Errors
    ///
    /// If the process cannot be killed.
    pub async fn try_kill(&mut self) -> Result<(), String> {
        if let Some(mut child) = self.child.take() {
            child
                .kill()
                .await
                .map_err(|e| format!("killing nats-server: {e}"))?;
        }
        Ok(())
    }

    /// Starts the server again (killing it first if it runs) on the same port and store
    /// directory.
    ///
    /// # Panics
    ///
    /// As [`NatsServer::try_restart`] fails, with its message.
    pub async fn restart(&mut self) {
        self.try_restart().await.unwrap_or_else(|e| panic!("{e}"));
    }

    /// [`NatsServer::restart`], failing with a message instead of panicking.
    ///
    /// # Errors
    ///
    /// When it does not accept connections again within [`READY_WITHIN`] (the message
    /// ends with its log), or cannot be started at all.
    pub async fn try_restart(&mut self) -> Result<(), String> {
        self.try_kill().await?;
        if self.spawn().await? {
            Ok(())
        } else {
            Err(format!(
                "nats-server did not start again on port {}: {}",
                self.port,
                self.log_tail()
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_free_port_can_be_bound() {
        let port = free_port();
        assert_ne!(port, 0);
        assert!(std::net::TcpListener::bind(("127.0.0.1", port)).is_ok());
    }

    #[test]
    fn a_missing_binary_is_one_clear_message() {
        let error = binary_at(PathBuf::from("/nonexistent/nats-server")).unwrap_err();
        assert!(
            error.contains("none at /nonexistent/nats-server"),
            "{error}"
        );
        assert!(error.contains("NATS_SERVER"), "{error}");
        assert!(!error.contains('\n'), "{error}");
    }
}
