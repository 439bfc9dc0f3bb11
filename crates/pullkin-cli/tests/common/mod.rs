//! What the subprocess tests of the `pullkin` binary share.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

const BIN: &str = env!("CARGO_BIN_EXE_pullkin");
/// The longest any single wait may take; each normally takes milliseconds.
pub(crate) const WAIT: Duration = Duration::from_secs(20);

/// The binary with none of the caller's `PULLKIN_*` settings (nor a service manager's
/// `NOTIFY_SOCKET`).
pub(crate) fn pullkin() -> Command {
    let mut command = Command::new(BIN);
    for var in [
        "PULLKIN_ENDPOINTS",
        "PULLKIN_MCS",
        "PULLKIN_CA",
        "PULLKIN_STATE_DIR",
        "PULLKIN_API_KEY",
        "PULLKIN_ACCESS_TOKEN",
        "PULLKIN_PROXY",
        "PULLKIN_LOG_FORMAT",
        "PULLKIN_DATABASE_URL",
        "PULLKIN_FLEET_KEY_FILE",
        "NOTIFY_SOCKET",
        "RUST_LOG",
    ] {
        command.env_remove(var);
    }
    command.stdin(Stdio::null());
    command
}

/// Runs the binary to completion.
pub(crate) fn run(args: &[&str]) -> Output {
    pullkin().args(args).output().unwrap()
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// A file's permission bits.
#[cfg(unix)]
pub(crate) fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}
