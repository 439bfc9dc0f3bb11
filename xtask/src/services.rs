//! What the tests need besides cargo:
//!
//! - the `nats-server` binary (the sink tests start their own servers from it, so that
//!   they can stop and restart them): found where Debian installs it, or on `PATH`;
//!   installed from Debian's `nats-server` package when missing and this runs as root
//!   with apt;
//! - a PostgreSQL server for the fleet tests: the one at `PULLKIN_TEST_DATABASE_URL`
//!   (default 127.0.0.1:5432) when it answers, else a throwaway one started from the
//!   installed binaries under `target/`.
//!
//! Otherwise `ci` stops with one line saying what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Result;

/// Where Debian's package puts it.
const NATS_SERVER: &str = "/usr/sbin/nats-server";

/// The `nats-server` to run, installing it when possible; the path is given to the tests
/// as `NATS_SERVER`.
pub(crate) fn nats_server() -> Result<PathBuf> {
    if let Some(found) = find_nats_server() {
        return Ok(found);
    }
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    if root && Path::new("/usr/bin/apt-get").exists() {
        println!("$ apt-get install nats-server (the sink tests need it)");
        let installed = |args: &[&str]| {
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive")
                .status()
                .is_ok_and(|s| s.success())
        };
        if !installed(&["install", "-y", "-q", "nats-server"]) {
            let _ = installed(&["update", "-q"]);
            let _ = installed(&["install", "-y", "-q", "nats-server"]);
        }
        if let Some(found) = find_nats_server() {
            return Ok(found);
        }
    }
    Err(
        "the NATS sink tests need nats-server: install Debian's nats-server package (or set \
         NATS_SERVER to a nats-server binary)"
            .to_owned(),
    )
}

fn find_nats_server() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("NATS_SERVER").map(PathBuf::from) {
        return path.is_file().then_some(path);
    }
    if Path::new(NATS_SERVER).is_file() {
        return Some(PathBuf::from(NATS_SERVER));
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nats-server"))
            .find(|path| path.is_file())
    })
}

/// Where the fleet tests find PostgreSQL unless told otherwise.
const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A PostgreSQL server `ci` started itself; stopped when dropped.
pub(crate) struct Postgres {
    /// The URL the tests get as `PULLKIN_TEST_DATABASE_URL`.
    pub url: String,
    /// The throwaway server's data directory and `pg_ctl`, when `ci` started one.
    started: Option<(PathBuf, PathBuf, bool)>,
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some((pg_ctl, data, as_postgres)) = &self.started {
            let data = data.to_string_lossy();
            let args = ["-D", &*data, "stop", "-m", "fast"];
            let _ = as_user(pg_ctl, &args, *as_postgres).status();
        }
    }
}

/// The PostgreSQL the fleet tests use: the one at `PULLKIN_TEST_DATABASE_URL` (default
/// 127.0.0.1:5432) when it answers; otherwise a throwaway server started from the
/// installed binaries (`initdb`, `pg_ctl`) under `target/`, as the `postgres` user when
/// this runs as root; otherwise an error saying what to install.
pub(crate) fn postgres(target: &Path) -> Result<Postgres> {
    let url =
        std::env::var("PULLKIN_TEST_DATABASE_URL").unwrap_or_else(|_| DEFAULT_DATABASE_URL.into());
    postgres_at(url, target)
}

/// [`postgres`] for this URL.
fn postgres_at(url: String, target: &Path) -> Result<Postgres> {
    if let Some(addr) = host_port(&url)
        && std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)).is_ok()
    {
        return Ok(Postgres { url, started: None });
    }
    let Some(bin) = postgres_bin() else {
        return Err(format!(
            "the fleet tests need PostgreSQL: nothing answers at {url} and no initdb/pg_ctl is \
             installed (Debian: apt-get install postgresql)"
        ));
    };
    let root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0");
    let dir = target.join("pg-ci");
    let data = dir.join("data");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    if root {
        // initdb refuses to run as root: the data directory belongs to `postgres`.
        let status = Command::new("chown")
            .args(["-R", "postgres:postgres"])
            .arg(&dir)
            .status();
        if !status.is_ok_and(|s| s.success()) {
            return Err(
                "cannot hand the throwaway PostgreSQL directory to the postgres user".into(),
            );
        }
    }
    let port = free_port()?;
    let data_s = data.to_string_lossy().into_owned();
    let log = dir.join("server.log").to_string_lossy().into_owned();
    let initdb = bin.join("initdb");
    let pg_ctl = bin.join("pg_ctl");
    println!("$ initdb + pg_ctl start on 127.0.0.1:{port} (no PostgreSQL answered at {url})");
    let ok = |mut command: Command| command.status().is_ok_and(|s| s.success());
    if !ok(as_user(
        &initdb,
        &[
            "-D",
            &data_s,
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ],
        root,
    )) {
        return Err(format!("initdb failed in {}", dir.display()));
    }
    let options = format!(
        "-p {port} -c listen_addresses=127.0.0.1 -k {}",
        dir.display()
    );
    if !ok(as_user(
        &pg_ctl,
        &["-D", &data_s, "-o", &options, "-l", &log, "-w", "start"],
        root,
    )) {
        return Err(format!("pg_ctl start failed; see {log}"));
    }
    let server = Postgres {
        url: format!("postgres://postgres@127.0.0.1:{port}/test"),
        started: Some((pg_ctl, data, root)),
    };
    let createdb = bin.join("createdb");
    let port_s = port.to_string();
    if !ok(as_user(
        &createdb,
        &["-h", "127.0.0.1", "-p", &port_s, "-U", "postgres", "test"],
        root,
    )) {
        return Err("createdb test failed on the throwaway PostgreSQL".into());
    }
    Ok(server)
}

/// `host:port` of a `postgres://user@host:port/db` URL.
fn host_port(url: &str) -> Option<std::net::SocketAddr> {
    use std::net::ToSocketAddrs;
    let rest = url.split_once("://")?.1;
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    let authority = rest.split(['/', '?']).next()?;
    let authority = if authority.contains(':') {
        authority.to_owned()
    } else {
        format!("{authority}:5432")
    };
    authority.to_socket_addrs().ok()?.next()
}

/// The newest installed PostgreSQL's `bin` directory.
fn postgres_bin() -> Option<PathBuf> {
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

fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port for PostgreSQL: {e}"))
}

/// `program args`, as the `postgres` user when `as_postgres`.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_name_their_server() {
        let addr = host_port("postgres://postgres@127.0.0.1:5433/test").unwrap();
        assert_eq!(addr.port(), 5433);
        assert_eq!(
            host_port("postgres://u:p@127.0.0.1/db?sslmode=require")
                .unwrap()
                .port(),
            5432
        );
        assert!(host_port("not a url").is_none());
    }

    #[test]
    fn a_throwaway_postgres_starts_when_none_answers_and_stops_when_dropped() {
        if postgres_bin().is_none() {
            // `postgres` then fails with its one-line message, checked here instead.
            let error = postgres_at(
                "postgres://postgres@127.0.0.1:1/test".into(),
                Path::new("."),
            );
            assert!(error.err().unwrap().contains("apt-get install postgresql"));
            return;
        }
        let dir = std::env::temp_dir().join(format!("xtask-pg-{}", std::process::id()));
        let server = postgres_at("postgres://postgres@127.0.0.1:1/test".into(), &dir).unwrap();
        let addr = host_port(&server.url).unwrap();
        assert_ne!(addr.port(), 1, "a server of its own");
        assert!(std::net::TcpStream::connect(addr).is_ok(), "it answers");
        drop(server);
        assert!(std::net::TcpStream::connect(addr).is_err(), "stopped");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
