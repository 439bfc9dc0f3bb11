//! The service manager's readiness protocol (systemd's `sd_notify`): one datagram of
//! `KEY=VALUE` lines to the Unix socket named by `NOTIFY_SOCKET`, when that is set (as
//! under `Type=notify`). `listen` sends `READY=1`, `STATUS=…`, `RELOADING=1` and
//! `STOPPING=1` through it; `crates/pullkin-cli/README.md` says when.
//!
//! Written here (about thirty lines, on `std::os::unix::net::UnixDatagram`) rather than
//! taken from the `sd-notify` crate: its 0.5 release connects to `NOTIFY_SOCKET` as a path,
//! so an abstract socket name (`@…`, which systemd-nspawn, containers and older systemd use)
//! does not work with it, and it brings `libc` for features this command does not use.
//! `MONOTONIC_USEC=` (needed only by `Type=notify-reload`) is not sent: reading
//! `CLOCK_MONOTONIC` takes `unsafe` or a dependency, and the unit in `contrib/` uses
//! `Type=notify` with `ExecReload=`, under which systemd does not ask for it.
//!
//! A missing variable means no service manager is listening: nothing is sent. A name that
//! cannot be used or a failed send is logged at debug level and otherwise ignored: the
//! notifications are a courtesy to the service manager, never a reason to stop.

use std::ffi::OsString;

/// Where the notifications go, if anywhere.
#[derive(Debug, Default)]
pub(crate) struct Notifier {
    #[cfg(unix)]
    target: Option<(
        std::os::unix::net::UnixDatagram,
        std::os::unix::net::SocketAddr,
    )>,
}

impl Notifier {
    /// The notifier of `NOTIFY_SOCKET`, or one that sends nothing when it is unset or
    /// unusable.
    pub(crate) fn from_env() -> Self {
        match std::env::var_os("NOTIFY_SOCKET") {
            Some(name) if !name.is_empty() => Self::to(name),
            _ => Self::default(),
        }
    }

    /// A notifier sending to this socket name: a path, or `@name` for an abstract one.
    #[cfg(unix)]
    pub(crate) fn to(name: OsString) -> Self {
        use std::os::unix::net::UnixDatagram;
        let target = address(&name).and_then(|addr| Ok((UnixDatagram::unbound()?, addr)));
        match target {
            Ok(target) => Self {
                target: Some(target),
            },
            Err(error) => {
                tracing::debug!("NOTIFY_SOCKET={name:?} cannot be used: {error}");
                Self::default()
            }
        }
    }

    #[cfg(not(unix))]
    pub(crate) fn to(_name: OsString) -> Self {
        Self::default()
    }

    /// Whether anything listens (`NOTIFY_SOCKET` was set and usable).
    pub(crate) fn is_active(&self) -> bool {
        #[cfg(unix)]
        {
            self.target.is_some()
        }
        #[cfg(not(unix))]
        {
            false
        }
    }

    /// Sends these `KEY=VALUE` lines, as one datagram.
    pub(crate) fn send(&self, lines: &[&str]) {
        #[cfg(unix)]
        if let Some((socket, addr)) = &self.target {
            let message = lines.join("\n");
            match socket.send_to_addr(message.as_bytes(), addr) {
                Ok(_) => tracing::debug!("sd_notify: {}", message.replace('\n', ", ")),
                Err(error) => tracing::debug!("sd_notify of {message:?} failed: {error}"),
            }
        }
        #[cfg(not(unix))]
        let _ = lines;
    }
}

/// The socket address of a `NOTIFY_SOCKET` value: a path (absolute), or an abstract name
/// after `@` (Linux).
#[cfg(unix)]
fn address(name: &std::ffi::OsStr) -> std::io::Result<std::os::unix::net::SocketAddr> {
    use std::io::{Error, ErrorKind};
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::SocketAddr;
    let bytes = name.as_bytes();
    if let Some(abstract_name) = bytes.strip_prefix(b"@") {
        #[cfg(any(target_os = "linux", target_os = "android"))]
        {
            #[cfg(target_os = "android")]
            use std::os::android::net::SocketAddrExt;
            #[cfg(target_os = "linux")]
            use std::os::linux::net::SocketAddrExt;
            return SocketAddr::from_abstract_name(abstract_name);
        }
        #[cfg(not(any(target_os = "linux", target_os = "android")))]
        {
            let _ = abstract_name;
            return Err(Error::new(
                ErrorKind::Unsupported,
                "abstract socket names exist on Linux only",
            ));
        }
    }
    if bytes.starts_with(b"/") {
        SocketAddr::from_pathname(name)
    } else {
        // e.g. `vsock:…`, which systemd also knows; not needed on a host.
        Err(Error::new(
            ErrorKind::InvalidInput,
            "neither an absolute path nor an @abstract name",
        ))
    }
}

#[cfg(all(test, unix))]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::net::UnixDatagram;
    use std::time::Duration;

    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buffer = [0u8; 512];
        let n = socket.recv(&mut buffer).unwrap();
        String::from_utf8(buffer[..n].to_vec()).unwrap()
    }

    #[test]
    fn a_path_socket_gets_one_datagram_of_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let notifier = Notifier::to(path.clone().into_os_string());
        assert!(notifier.is_active());
        notifier.send(&["READY=1", "STATUS=1/1 connected"]);
        assert_eq!(receive(&socket), "READY=1\nSTATUS=1/1 connected");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn an_at_sign_names_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::SocketAddr;
        let name = format!("pullkin-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        let notifier = Notifier::to(format!("@{name}").into());
        assert!(notifier.is_active());
        notifier.send(&["STOPPING=1"]);
        assert_eq!(receive(&socket), "STOPPING=1");
        // The name is the bytes after `@`, not a file called `@…`.
        assert_eq!(
            address(std::ffi::OsStr::new(&format!("@{name}")))
                .unwrap()
                .as_abstract_name(),
            Some(name.as_bytes())
        );
        assert!(!std::path::Path::new(&format!("@{name}")).exists());
    }

    #[test]
    fn no_socket_or_a_bad_name_sends_nothing_and_never_fails() {
        let notifier = Notifier::to("relative/notify.sock".into());
        assert!(!notifier.is_active());
        notifier.send(&["READY=1"]);
        // A path where nobody listens: the send fails quietly.
        let dir = tempfile::tempdir().unwrap();
        let gone = Notifier::to(dir.path().join("gone.sock").into_os_string());
        assert!(gone.is_active());
        gone.send(&["READY=1"]);
    }
}
