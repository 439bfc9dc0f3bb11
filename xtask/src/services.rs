//! What the tests need besides cargo: the `nats-server` binary (the sink tests start
//! their own servers from it, so that they can stop and restart them). Found where
//! Debian installs it, or on `PATH`; installed from Debian's `nats-server` package when
//! missing and this runs as root with apt; otherwise `ci` stops with one line saying
//! what to install.

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
