//! The seam between the management API's HTTP/1.1 layer and its handlers
//! (`docs/management.md`): a parsed [`Request`], the [`Response`] a
//! [`Handler`] gives, the error body every refusal carries, and the limits
//! on what a client may send.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::Serialize;

/// Longest request head (request line and headers) accepted: 431 past it.
pub const MAX_HEAD: usize = 8 * 1024;
/// Most headers in one request: 431 past it.
pub const MAX_HEADERS: usize = 32;
/// Longest request body accepted: 413 past it.
pub const MAX_BODY: usize = 64 * 1024;
/// How long a client has to send a whole request once it began one: 408
/// (and the connection closed) past it.
pub const REQUEST_TIMEOUT_NS: u64 = 10_000_000_000;

/// One complete request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// `GET`, `POST`, ... as sent.
    pub method: String,
    /// The target's path, without the query (not percent-decoded).
    pub path: String,
    /// What follows `?` in the target (empty without one).
    pub query: String,
    /// The headers: names in lower case, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// The first header called `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// What a handler answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Headers besides `Content-Type`, `Content-Length` and `Connection`.
    pub headers: Vec<(String, String)>,
    /// The body's type (`application/json`, or `text/event-stream`).
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
    /// `Some(after)`: an event stream. After the head, the connection
    /// stays open and carries [`Handler::events`] after `after`, then each
    /// new one as it happens, until the client leaves.
    pub events_after: Option<u64>,
}

impl Response {
    /// A JSON answer.
    pub fn json(status: u16, body: Vec<u8>) -> Response {
        Response {
            status,
            headers: Vec::new(),
            content_type: "application/json",
            body,
            events_after: None,
        }
    }

    /// An answer without a body (204, ...).
    pub fn empty(status: u16) -> Response {
        Response::json(status, Vec::new())
    }

    /// An event stream from the events after `after`.
    pub fn events(after: u64) -> Response {
        Response {
            status: 200,
            headers: Vec::new(),
            content_type: "text/event-stream",
            body: Vec::new(),
            events_after: Some(after),
        }
    }

    /// The same with one more header.
    pub fn with_header(mut self, name: &str, value: impl ToString) -> Response {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// What answers requests: the management API (`services::mgmt::api`).
pub trait Handler {
    /// Answers one complete request.
    fn handle(&mut self, request: &Request, now_ns: u64) -> Response;

    /// For an open event stream: appends to `out` the stream text of the
    /// events with a sequence number above `after`, oldest first, no more
    /// than `max` bytes in all (at least one event if any is waiting and
    /// `out` is empty), and returns the number of the last one appended
    /// (`after` if none was).
    fn events(&mut self, after: u64, out: &mut Vec<u8>, max: usize) -> u64;

    /// A request the HTTP layer refused before it reached
    /// [`Handler::handle`] (malformed, too large, too slow), with the
    /// status it got: counted in the node's API statistics.
    fn refused_input(&mut self, status: u16);
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    error: ErrorDetail<'a>,
}

#[derive(Serialize)]
struct ErrorDetail<'a> {
    code: &'a str,
    message: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<&'a str>,
}

/// The error body every refusal carries:
/// `{"error":{"code":CODE,"message":MESSAGE}}` (and `"state"` for a
/// conflict with a VM's state).
pub fn error_body(code: &str, message: &str, state: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&ErrorBody {
        error: ErrorDetail {
            code,
            message,
            state,
        },
    })
    .unwrap_or_default()
}

/// A refusal with [`error_body`].
pub fn error_response(status: u16, code: &str, message: &str) -> Response {
    Response::json(status, error_body(code, message, None))
}

/// The reason phrase of `status`.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        _ => "",
    }
}
