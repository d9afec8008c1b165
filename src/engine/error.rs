//! Engine.IO request errors: Node's codes, messages and HTTP statuses.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::response::{IntoResponse, Response};
use http::{header, StatusCode};

/// Why a request was refused, with Node's `{"code":N,"message":"…"}` numbering.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("Transport unknown")]
    /// Code 0: an unknown `transport`.
    UnknownTransport,
    #[error("Session ID unknown")]
    /// Code 1: an unknown or expired `sid`.
    UnknownSid,
    #[error("Bad handshake method")]
    /// Code 2: a handshake that is not a GET.
    BadHandshakeMethod,
    #[error("Bad request")]
    /// Code 3: a malformed request.
    BadRequest,
    /// Refused by `allowRequest`, with its message.
    #[error("{0}")]
    Forbidden(String),
    #[error("Unsupported protocol version")]
    /// Code 5: an `EIO` other than 4 (or 3, with `allow_eio3`).
    UnsupportedProtocolVersion,
}

impl RequestError {
    /// How many codes there are.
    pub const COUNT: usize = 6;

    /// Node's numeric code.
    pub fn code(&self) -> u8 {
        match self {
            RequestError::UnknownTransport => 0,
            RequestError::UnknownSid => 1,
            RequestError::BadHandshakeMethod => 2,
            RequestError::BadRequest => 3,
            RequestError::Forbidden(_) => 4,
            RequestError::UnsupportedProtocolVersion => 5,
        }
    }

    /// The HTTP status it is answered with.
    pub fn status(&self) -> StatusCode {
        match self {
            RequestError::Forbidden(_) => StatusCode::FORBIDDEN,
            _ => StatusCode::BAD_REQUEST,
        }
    }

    /// The JSON body Node sends.
    pub fn body(&self) -> String {
        let message = serde_json::to_string(&self.to_string()).unwrap_or_else(|_| "\"\"".into());
        format!("{{\"code\":{},\"message\":{message}}}", self.code())
    }
}

impl IntoResponse for RequestError {
    fn into_response(self) -> Response {
        (
            self.status(),
            [(header::CONTENT_TYPE, "application/json")],
            self.body(),
        )
            .into_response()
    }
}

/// Rejected requests counted by Engine.IO error code (for the metrics endpoint).
#[derive(Debug, Default)]
pub struct ErrorCounters([AtomicU64; RequestError::COUNT]);

impl ErrorCounters {
    /// Counts one refusal.
    pub fn record(&self, error: &RequestError) {
        self.0[error.code() as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts indexed by code.
    pub fn snapshot(&self) -> [u64; RequestError::COUNT] {
        std::array::from_fn(|i| self.0[i].load(Ordering::Relaxed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_match_node() {
        let table = [
            (
                RequestError::UnknownTransport,
                400,
                r#"{"code":0,"message":"Transport unknown"}"#,
            ),
            (
                RequestError::UnknownSid,
                400,
                r#"{"code":1,"message":"Session ID unknown"}"#,
            ),
            (
                RequestError::BadHandshakeMethod,
                400,
                r#"{"code":2,"message":"Bad handshake method"}"#,
            ),
            (
                RequestError::BadRequest,
                400,
                r#"{"code":3,"message":"Bad request"}"#,
            ),
            (
                RequestError::Forbidden("no \"x\"".into()),
                403,
                r#"{"code":4,"message":"no \"x\""}"#,
            ),
            (
                RequestError::UnsupportedProtocolVersion,
                400,
                r#"{"code":5,"message":"Unsupported protocol version"}"#,
            ),
        ];
        for (err, status, body) in table {
            assert_eq!(err.status().as_u16(), status);
            assert_eq!(err.body(), body);
        }
    }

    #[test]
    fn counts_by_code() {
        let c = ErrorCounters::default();
        c.record(&RequestError::UnknownSid);
        c.record(&RequestError::UnknownSid);
        c.record(&RequestError::Forbidden(String::new()));
        assert_eq!(c.snapshot(), [0, 2, 0, 0, 1, 0]);
    }
}
