//! PostgreSQL for the fleet soak and benchmarks: a scratch database of their own (a
//! random name on the server of `PULLKIN_TEST_DATABASE_URL`, dropped at the end), or a
//! throwaway server of their own (`initdb` + `pg_ctl` in a temporary directory, which
//! the soak may stop and start again), and a fleet key file.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// The scratch database and the connections are the tests' (`pullkin-test-support`'s
/// `postgres` feature).
pub(crate) use pullkin_test_support::postgres::{ScratchDatabase, connect, server_url, shown};

/// `url` with one more query parameter.
pub(crate) fn with_param(url: &str, key: &str, value: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{key}={value}")
}

/// A PostgreSQL server of this process's own, in a temporary directory: it can be
/// stopped and started again (the soak's "database restart"), and is stopped when
/// dropped.
pub(crate) struct OwnServer {
    pub(crate) port: u16,
    /// `postgres://postgres@127.0.0.1:PORT/postgres`.
    pub(crate) url: String,
    control: Control,
    _dir: tempfile::TempDir,
}

/// What stops and starts an [`OwnServer`] (cheap to clone, for a blocking thread).
#[derive(Clone)]
pub(crate) struct Control {
    port: u16,
    pg_ctl: PathBuf,
    data: PathBuf,
    log: PathBuf,
    as_postgres: bool,
}

/// The newest installed PostgreSQL's `bin` directory (Debian's layout).
pub(crate) fn postgres_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| entry.ok().map(|e| e.path().join("bin")))
        .filter(|bin| bin.join("initdb").is_file() && bin.join("pg_ctl").is_file())
        .collect();
    found.sort_by_key(|bin| {
        bin.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

fn running_as_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// `program args`, as the `postgres` user when `as_postgres` (initdb refuses root).
fn as_user(program: &Path, args: &[&str], as_postgres: bool) -> Command {
    if as_postgres {
        let mut command = Command::new("runuser");
        command
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args);
        command
    } else {
        let mut command = Command::new(program);
        command.args(args);
        command
    }
}

impl OwnServer {
    /// `initdb` and `pg_ctl start` on a free port (trust authentication, loopback only,
    /// durability settings as installed).
    pub(crate) fn start() -> Result<Self> {
        let bin = postgres_bin().ok_or(
            "no PostgreSQL binaries (initdb, pg_ctl) under /usr/lib/postgresql: install \
             Debian's postgresql package, or run without --postgres own",
        )?;
        let as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("pullkin-fleet-pg-")
            .tempdir()
            .map_err(|e| e.to_string())?;
        if as_postgres {
            let status = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(dir.path())
                .status();
            if !status.is_ok_and(|s| s.success()) {
                return Err("cannot hand the PostgreSQL directory to the postgres user".into());
            }
        }
        let data = dir.path().join("data");
        let log = dir.path().join("server.log");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .map_err(|e| format!("no free port: {e}"))?;
        let data_s = data.to_string_lossy().into_owned();
        let initdb = as_user(
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
            as_postgres,
        )
        .output()
        .map_err(|e| format!("cannot run initdb: {e}"))?;
        if !initdb.status.success() {
            return Err(format!(
                "initdb failed: {}",
                String::from_utf8_lossy(&initdb.stderr).trim()
            ));
        }
        let server = Self {
            port,
            url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            control: Control {
                port,
                pg_ctl: bin.join("pg_ctl"),
                data,
                log,
                as_postgres,
            },
            _dir: dir,
        };
        server.control.start_again()?;
        Ok(server)
    }

    /// The way to stop and start it from another thread.
    pub(crate) fn control(&self) -> Control {
        self.control.clone()
    }
}

impl Control {
    /// `pg_ctl start` (after [`OwnServer::stop`]); waits until it accepts connections.
    pub(crate) fn start_again(&self) -> Result {
        let data = self.data.to_string_lossy();
        let log = self.log.to_string_lossy();
        let socket_dir = self
            .data
            .parent()
            .map_or_else(|| ".".into(), |d| d.to_string_lossy().into_owned());
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {socket_dir} -c max_connections=200",
            self.port
        );
        let out = as_user(
            &self.pg_ctl,
            &["-D", &data, "-o", &options, "-l", &log, "-w", "start"],
            self.as_postgres,
        )
        .output()
        .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl start failed: {}; log: {}",
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail()
            ))
        }
    }

    /// `pg_ctl stop -m fast`: every connection is cut, the server is down until
    /// [`OwnServer::start_again`].
    pub(crate) fn stop(&self) -> Result {
        let data = self.data.to_string_lossy();
        let out = as_user(
            &self.pg_ctl,
            &["-D", &data, "-m", "fast", "-w", "stop"],
            self.as_postgres,
        )
        .output()
        .map_err(|e| format!("cannot run pg_ctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!(
                "pg_ctl stop failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        let _ = self.control.stop();
    }
}

/// Writes a fresh random fleet key (64 hex characters, mode 0600) to `path`.
pub(crate) fn write_key_file(path: &Path) -> Result<pullkin_fleet::FleetKey> {
    let key = pullkin_fleet::FleetKey::generate();
    pullkin::write_private_file(path, key.to_hex().as_bytes())
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(key)
}
