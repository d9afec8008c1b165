//! Errors of the Socket.IO packet codec.

/// Why a Socket.IO packet could not be decoded (or arguments could not be
/// serialized / deserialized).
///
/// Every decoding error means the peer violated the protocol; the caller is
/// expected to close the Engine.IO connection ("parse error"). After an error
/// the [`Decoder`](super::Decoder) is back in its idle state.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// Empty message, or the first character is not `0`..=`6`.
    #[error("unknown packet type")]
    UnknownType,
    /// BINARY_EVENT / BINARY_ACK without a valid `<digits>-` attachment count.
    #[error("illegal attachments")]
    InvalidAttachments,
    /// The attachment count is larger than the decoder's bound.
    #[error("too many attachments")]
    TooManyAttachments,
    /// The namespace is not valid UTF-8.
    #[error("invalid namespace")]
    InvalidNamespace,
    /// The ack id does not fit in a `u64`, or an ACK has none.
    #[error("invalid ack id")]
    InvalidAckId,
    /// The payload is not valid JSON (including invalid UTF-8 or nesting deeper
    /// than [`MAX_DEPTH`](super::MAX_DEPTH)) or has the wrong shape for the
    /// packet type (or is missing where one is required).
    #[error("invalid payload")]
    InvalidPayload,
    /// An EVENT uses one of [`RESERVED_EVENTS`](super::RESERVED_EVENTS).
    #[error("reserved event name {0:?}")]
    ReservedEvent(&'static str),
    /// A text message arrived while binary attachments were expected.
    #[error("got plaintext data when reconstructing a packet")]
    UnexpectedText,
    /// A binary message arrived while no packet was waiting for attachments.
    #[error("got binary data when not reconstructing a packet")]
    UnexpectedBinary,
    /// A `{"_placeholder":true,"num":N}` object refers to no attachment.
    #[error("illegal attachments: invalid placeholder")]
    IllegalPlaceholder,
    /// A msgpack packet is not well-formed msgpack (truncated, trailing
    /// bytes, invalid UTF-8, an unknown extension type…).
    #[error("invalid msgpack")]
    InvalidMsgpack,
    /// A text message reached a msgpack decoder (or a binary one the text
    /// decoder while no packet waited for attachments: see
    /// [`UnexpectedBinary`](Self::UnexpectedBinary)).
    #[error("got a text message with the msgpack parser")]
    TextWithMsgpack,
    /// serde_json failed while serializing or deserializing arguments.
    #[error("json error: {0}")]
    Json(#[from] serde_json::Error),
}
