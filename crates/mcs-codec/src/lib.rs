#![doc = include_str!("../README.md")]
#![forbid(unsafe_code)]

pub mod codec;
mod error;
mod message;

pub use codec::{Builder, DEFAULT_MAX_FRAME_LENGTH, McsCodec, Role};
pub use error::McsError;
pub use message::{McsMessage, Tag};

/// The protobuf types of the MCS protocol (package `mcs_proto`), generated from
/// `proto/mcs.proto` by `cargo xtask codegen`.
#[allow(missing_docs, clippy::all, unreachable_pub)]
pub mod proto {
    include!("generated/mcs_proto.rs");
}

/// The protocol version byte the client sends before its first frame (and the version a
/// server of this crate announces).
pub const MCS_VERSION: u8 = 41;

/// An older server version byte that is still accepted.
pub const MCS_VERSION_LEGACY: u8 = 38;

/// IQ extension id of a `SelectiveAck` (acknowledges the persistent ids it names).
pub const SELECTIVE_ACK_EXTENSION: i32 = 12;

/// IQ extension id of a `StreamAck` (acknowledges every stream id up to the frame's
/// `last_stream_id_received`).
pub const STREAM_ACK_EXTENSION: i32 = 13;

/// Whether a peer's version byte is one this crate speaks with: `>= 41`, or the legacy 38.
#[must_use]
pub fn is_supported_version(version: u8) -> bool {
    version >= MCS_VERSION || version == MCS_VERSION_LEGACY
}
