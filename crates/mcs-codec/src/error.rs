use thiserror::Error;

/// Everything that can go wrong while framing MCS messages.
///
/// A decoder that returned an error has lost its place in the byte stream: the connection
/// is to be dropped (and, for a client, re-established), never read further.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum McsError {
    /// Reading from or writing to the transport failed.
    #[error("MCS transport I/O failed: {0}")]
    Io(#[from] std::io::Error),

    /// The peer announced a protocol version this codec does not speak.
    #[error("unsupported MCS protocol version {version} (expected >= 41 or 38)")]
    UnsupportedVersion {
        /// The version byte the peer sent.
        version: u8,
    },

    /// A frame's size field is longer than 5 bytes or does not fit in 32 bits.
    #[error("MCS frame size varint is longer than 5 bytes or overflows 32 bits")]
    SizeOverflow,

    /// A frame (received or to be sent) is larger than the configured maximum.
    #[error("MCS frame of {size} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// The frame's protobuf size in bytes.
        size: u64,
        /// The configured maximum.
        max: usize,
    },

    /// The protobuf body of a frame could not be decoded.
    #[error("cannot decode the protobuf body of an MCS frame with tag {tag}: {source}")]
    Decode {
        /// The frame's tag.
        tag: u8,
        /// What prost reported.
        #[source]
        source: prost::DecodeError,
    },

    /// The stream ended inside a frame (or before the version byte was complete).
    #[error("MCS stream ended inside a frame: {buffered} bytes buffered")]
    Truncated {
        /// How many bytes of the incomplete frame had arrived.
        buffered: usize,
    },
}
