//! One error type for the command line: a message and the error that caused it, shown as
//! one line (`error: reading creds.json: malformed credentials JSON: …`), and its kind,
//! which is the exit status (see [`ErrorKind`] and `pullkin --help`).

use std::error::Error as StdError;
use std::fmt;

/// What kind of failure ended a command; each has its own exit status, so that a service
/// manager (systemd's `RestartPreventExitStatus=`) or a script can tell a failure worth
/// retrying from one that needs an operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    /// Anything else at run time: the network, a refused request, every listener stopped.
    /// Exit status 1; trying again later may work.
    Failure,
    /// The arguments do not fit together (clap's own usage errors exit the same way).
    /// Exit status 2.
    Usage,
    /// Stored state that cannot be used: a corrupt or foreign state file. Exit status 65
    /// (`EX_DATAERR`): starting again reads the same file.
    Data,
    /// The configuration cannot work: a flag value, an unreadable or invalid credentials or
    /// CA file, an unusable state directory. Exit status 78 (`EX_CONFIG`).
    Config,
}

impl ErrorKind {
    /// The exit status of a command that failed this way.
    pub(crate) fn exit_code(self) -> u8 {
        match self {
            ErrorKind::Failure => 1,
            ErrorKind::Usage => 2,
            ErrorKind::Data => 65,
            ErrorKind::Config => 78,
        }
    }
}

/// The exit statuses, for `pullkin --help` (the crate README has the same table).
pub(crate) const EXIT_STATUS_HELP: &str = "Exit status:
  0   success; also a clean stop on SIGINT/SIGTERM (state stored) and `listen --count` done
  1   a failure at run time: network, a refused request, every listener stopped, the
      fleet's database out of reach
  2   usage: an unknown flag, a missing or malformed argument, flags that do not fit together
  65  unusable stored state (EX_DATAERR): a corrupt or foreign file in the state directory
  78  configuration (EX_CONFIG): a bad flag value, an unreadable or invalid credentials or
      CA file, an unusable state directory; for `fleet`: no key, a bad or wrong key, a
      schema of another version (run `pullkin fleet migrate`)";

/// A failed command: what was being done, why it failed, and what kind of failure it is.
#[derive(Debug)]
pub(crate) struct CliError {
    message: String,
    source: Option<Box<dyn StdError + Send + Sync + 'static>>,
    kind: ErrorKind,
}

/// The result of a command.
pub(crate) type Result<T, E = CliError> = std::result::Result<T, E>;

impl CliError {
    /// An error with no underlying cause.
    pub(crate) fn msg(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            source: None,
            kind: ErrorKind::Failure,
        }
    }

    /// A usage error with no underlying cause.
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::msg(message).kind(ErrorKind::Usage)
    }

    /// A configuration error with no underlying cause.
    pub(crate) fn config(message: impl Into<String>) -> Self {
        Self::msg(message).kind(ErrorKind::Config)
    }

    /// The same error, of another kind.
    pub(crate) fn kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    /// The exit status of this failure.
    pub(crate) fn exit_code(&self) -> u8 {
        self.kind.exit_code()
    }

    /// The whole cause chain as one line, each cause after a `: `. A cause whose text
    /// its parent already shows (`#[error("…: {0}")]` plus `#[source]`) is not repeated.
    pub(crate) fn chain(&self) -> String {
        let mut line = self.message.clone();
        let mut next: Option<&(dyn StdError + 'static)> = self.source.as_deref().map(|e| e as _);
        while let Some(error) = next {
            let text = error.to_string();
            if !text.is_empty() && !line.ends_with(&text) {
                line.push_str(": ");
                line.push_str(&text);
            }
            next = error.source();
        }
        line
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl StdError for CliError {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source.as_deref().map(|e| e as _)
    }
}

/// Adds what was being done to an error.
pub(crate) trait Context<T> {
    /// Wraps the error with `message`.
    fn context(self, message: impl Into<String>) -> Result<T>;
    /// Wraps the error with a lazily built message.
    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E: StdError + Send + Sync + 'static> Context<T> for std::result::Result<T, E> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.map_err(|e| CliError {
            message: message.into(),
            source: Some(Box::new(e)),
            kind: ErrorKind::Failure,
        })
    }

    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| CliError {
            message: message().into(),
            source: Some(Box::new(e)),
            kind: ErrorKind::Failure,
        })
    }
}

/// Sets the kind of a failed command's error.
pub(crate) trait Kind<T> {
    /// A configuration error (exit status 78), whatever it was.
    fn config_error(self) -> Result<T>;
    /// An error of this kind.
    fn error_kind(self, kind: ErrorKind) -> Result<T>;
}

impl<T> Kind<T> for Result<T> {
    fn config_error(self) -> Result<T> {
        self.error_kind(ErrorKind::Config)
    }

    fn error_kind(self, kind: ErrorKind) -> Result<T> {
        self.map_err(|e| e.kind(kind))
    }
}

impl<T> Context<T> for Option<T> {
    fn context(self, message: impl Into<String>) -> Result<T> {
        self.ok_or_else(|| CliError::msg(message))
    }

    fn with_context<M: Into<String>>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.ok_or_else(|| CliError::msg(message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Leaf;
    impl fmt::Display for Leaf {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("leaf")
        }
    }
    impl StdError for Leaf {}

    #[derive(Debug)]
    struct Repeats(Leaf);
    impl fmt::Display for Repeats {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "middle: {}", self.0)
        }
    }
    impl StdError for Repeats {
        fn source(&self) -> Option<&(dyn StdError + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn chain_is_one_line_without_repeats() {
        let error = Err::<(), _>(Repeats(Leaf)).context("top").unwrap_err();
        assert_eq!(error.chain(), "top: middle: leaf");
        let error = Err::<(), _>(Leaf).context("top").unwrap_err();
        assert_eq!(error.chain(), "top: leaf");
        assert_eq!(CliError::msg("alone").chain(), "alone");
    }

    #[test]
    fn kinds_are_distinct_exit_statuses() {
        assert_eq!(CliError::msg("x").exit_code(), 1);
        assert_eq!(CliError::usage("x").exit_code(), 2);
        assert_eq!(CliError::msg("x").kind(ErrorKind::Data).exit_code(), 65);
        assert_eq!(CliError::config("x").exit_code(), 78);
        let wrapped = Err::<(), _>(Leaf)
            .context("top")
            .config_error()
            .unwrap_err();
        assert_eq!(
            (wrapped.exit_code(), wrapped.chain().as_str()),
            (78, "top: leaf")
        );
        for kind in [
            ErrorKind::Failure,
            ErrorKind::Usage,
            ErrorKind::Data,
            ErrorKind::Config,
        ] {
            let code = kind.exit_code().to_string();
            assert!(EXIT_STATUS_HELP.contains(&format!("  {code} ")), "{code}");
        }
    }
}
