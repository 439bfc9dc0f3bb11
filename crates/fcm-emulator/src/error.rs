use thiserror::Error;

/// Everything the emulator's library API can report.
///
/// Client input arriving over the network never produces one of these: the emulator
/// answers it the way Google would (an HTTP error, a failed login, a closed connection)
/// and logs it.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// Binding a listening socket or another I/O operation failed.
    #[error("emulator I/O failed: {0}")]
    Io(#[from] std::io::Error),

    /// Generating the CA or server certificate failed.
    #[error("cannot generate the emulator's TLS certificates: {0}")]
    Certificate(#[from] rcgen::Error),

    /// Building the TLS configuration failed.
    #[error("cannot build the emulator's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),

    /// Encrypting a message for a web registration failed.
    #[error("cannot encrypt the message: {0}")]
    Encrypt(#[from] webpush_ece::Error),

    /// No device has this Android id.
    #[error("no device with android_id {0}")]
    UnknownDevice(u64),

    /// No GCM or FCM registration has this token.
    #[error("no registration with token {0:?}")]
    UnknownToken(String),

    /// A message or request the library API was given is not valid.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A send API condition that does not parse (docs/protocol.md §7.5).
    #[error("invalid condition: {0}")]
    Condition(#[from] crate::topics::ConditionError),

    /// The emulator has been shut down.
    #[error("the emulator has been shut down")]
    ShutDown,
}
