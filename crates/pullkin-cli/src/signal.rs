//! Waiting for the signals that ask a long-running command to stop, or `listen` to check
//! its connections.

#[cfg(unix)]
use crate::error::Context;
use crate::error::Result;

/// Watches the signals from now on (so that none arriving early is missed), returning a
/// future that resolves when one arrives.
pub(crate) fn watch() -> Result<impl std::future::Future<Output = &'static str>> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate()).context("watching SIGTERM")?;
        let mut int = signal(SignalKind::interrupt()).context("watching SIGINT")?;
        Ok(async move {
            tokio::select! {
                _ = term.recv() => "SIGTERM",
                _ = int.recv() => "SIGINT",
            }
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            let _ = tokio::signal::ctrl_c().await;
            "Ctrl-C"
        })
    }
}

/// SIGUSR1, the request to check every connection now (after a network change: e.g. from a
/// NetworkManager dispatcher script, `pkill -USR1 -x pullkin`). Never arrives elsewhere.
pub(crate) struct ProbeRequests {
    #[cfg(unix)]
    usr1: tokio::signal::unix::Signal,
}

impl ProbeRequests {
    /// Watches SIGUSR1 from now on (it no longer ends the process).
    pub(crate) fn watch() -> Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            let usr1 = signal(SignalKind::user_defined1()).context("watching SIGUSR1")?;
            Ok(Self { usr1 })
        }
        #[cfg(not(unix))]
        {
            Ok(Self {})
        }
    }

    /// The next request.
    pub(crate) async fn recv(&mut self) {
        #[cfg(unix)]
        {
            if self.usr1.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        #[cfg(not(unix))]
        {
            std::future::pending::<()>().await;
        }
    }
}
