//! One HTTP/1.1 connection of the management API (`docs/management.md`,
//! "HTTP"): a state machine fed the bytes a client sent and the time, that
//! parses requests with `httparse`, hands the complete ones to a
//! [`Handler`] and keeps the bytes to send back. It knows nothing of
//! sockets: [`super::server::ApiServer`] moves the bytes between it and a
//! TCP socket.
//!
//! # Invariants
//! - The input held is at most [`MAX_INPUT`] bytes: one request head of at
//!   most [`MAX_HEAD`] and a body of at most [`MAX_BODY`].
//! - The output held is at most [`MAX_OUTPUT`] bytes plus one answer (or,
//!   on an event stream, one event): while more waits to be sent, the
//!   connection takes no input and answers no request (back-pressure), so
//!   a client that never reads cannot grow the node's memory.
//! - Every answer begins with a status line; every refusal carries
//!   [`http::error_body`] and is reported to [`Handler::refused_input`].
//! - No state lasts forever: a request has [`REQUEST_TIMEOUT_NS`] from its
//!   first byte, an idle keep-alive connection [`IDLE_TIMEOUT_NS`], output
//!   that does not move [`WRITE_TIMEOUT_NS`].

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write;

use super::http::{
    self, Handler, MAX_BODY, MAX_HEAD, MAX_HEADERS, REQUEST_TIMEOUT_NS, Request, Response,
    error_response,
};

/// Most input held: one request head and its body.
pub const MAX_INPUT: usize = MAX_HEAD + MAX_BODY;
/// Output waiting to be sent past which the connection takes no input and
/// refills no event stream.
pub const MAX_OUTPUT: usize = 64 * 1024;
/// How long a keep-alive connection may sit without a request before it is
/// closed (quietly: the client may simply open a new one).
pub const IDLE_TIMEOUT_NS: u64 = 60_000_000_000;
/// How long output may wait without the client taking any of it before
/// the connection is dropped.
pub const WRITE_TIMEOUT_NS: u64 = 60_000_000_000;
/// Silence on an event stream after which a comment line is sent.
pub const KEEPALIVE_NS: u64 = 15_000_000_000;
/// The comment an event stream carries after [`KEEPALIVE_NS`] of silence.
pub const KEEPALIVE_COMMENT: &[u8] = b": keepalive\n\n";

/// What the connection is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// Reading requests and answering them.
    Requests,
    /// Carrying an event stream: `after` is the last event's sequence
    /// number written, `last_write_ns` when the stream last had bytes.
    Stream { after: u64, last_write_ns: u64 },
    /// Takes no more requests: sends what it has, then is finished.
    Closing,
    /// Dropped (the client took nothing for [`WRITE_TIMEOUT_NS`]).
    Aborted,
}

/// What the input holds.
enum Parsed {
    /// Not a whole request yet.
    Incomplete,
    /// A whole head asking for `100 Continue` before its body.
    Continue,
    /// A request to refuse with this status, error code and message; the
    /// connection closes after the answer.
    Refuse(u16, &'static str, String),
    /// A whole request of this many bytes; `close` if the client asked for
    /// the connection to close after it.
    Complete {
        request: Request,
        len: usize,
        close: bool,
        head_only: bool,
    },
}

/// One client's connection.
#[derive(Debug)]
pub struct Connection {
    input: Vec<u8>,
    output: Vec<u8>,
    /// Bytes of `output` already sent.
    out_start: usize,
    mode: Mode,
    /// When the first byte of the request in `input` came.
    request_since: u64,
    /// When the connection last answered or was created.
    idle_since: u64,
    /// When the output last moved (or began to wait).
    progress_ns: u64,
    /// Output was sent since the last [`Connection::poll`].
    moved: bool,
    /// `100 Continue` went out for the request in `input`.
    continued: bool,
    /// The client will send nothing more.
    input_ended: bool,
    /// Requests answered (refusals included).
    answered: u64,
}

impl Connection {
    /// A connection opened at `now_ns`.
    pub fn new(now_ns: u64) -> Connection {
        Connection {
            input: Vec::new(),
            output: Vec::new(),
            out_start: 0,
            mode: Mode::Requests,
            request_since: now_ns,
            idle_since: now_ns,
            progress_ns: now_ns,
            moved: false,
            continued: false,
            input_ended: false,
            answered: 0,
        }
    }

    /// Takes bytes the client sent: answers every request they complete
    /// (through `handler`) while the output has room. Returns how many
    /// bytes it took; the rest are to be offered again later (none are
    /// taken while the output is over [`MAX_OUTPUT`]). Once the connection
    /// takes no more requests (closing, or an event stream) it takes and
    /// drops everything.
    pub fn receive(&mut self, bytes: &[u8], now_ns: u64, handler: &mut dyn Handler) -> usize {
        if self.mode != Mode::Requests || self.input_ended {
            return bytes.len();
        }
        let mut taken = 0;
        loop {
            if self.pending() >= MAX_OUTPUT {
                break;
            }
            let n = (MAX_INPUT - self.input.len()).min(bytes.len() - taken);
            if n > 0 {
                if self.input.is_empty() {
                    self.request_since = now_ns;
                }
                self.input.extend_from_slice(&bytes[taken..taken + n]);
                taken += n;
            }
            let held = self.input.len();
            self.process(now_ns, handler);
            if self.mode != Mode::Requests {
                return bytes.len();
            }
            if taken == bytes.len() || (n == 0 && self.input.len() == held) {
                break;
            }
        }
        taken
    }

    /// The bytes waiting to be sent.
    pub fn outgoing(&self) -> &[u8] {
        &self.output[self.out_start..]
    }

    /// `n` bytes of [`Connection::outgoing`] were sent.
    pub fn sent(&mut self, n: usize) {
        let n = n.min(self.pending());
        if n == 0 {
            return;
        }
        self.moved = true;
        self.out_start += n;
        if self.out_start == self.output.len() {
            self.output.clear();
            self.out_start = 0;
        } else if self.out_start >= 4096 && self.out_start * 2 >= self.output.len() {
            self.output.drain(..self.out_start);
            self.out_start = 0;
        }
    }

    /// The client will send nothing more (it closed its half): the
    /// requests already complete are answered, then the connection closes.
    pub fn end_of_input(&mut self) {
        self.input_ended = true;
        if let Mode::Stream { .. } = self.mode {
            self.mode = Mode::Closing;
        }
    }

    /// Does what time and room call for: answers pipelined requests that
    /// waited for output room, refuses a request not complete in time
    /// (408), closes an idle connection, refills an event stream from
    /// `handler` and sends its keep-alive comments, drops a connection
    /// whose output has not moved in [`WRITE_TIMEOUT_NS`].
    pub fn poll(&mut self, now_ns: u64, handler: &mut dyn Handler) {
        if self.moved {
            self.moved = false;
            self.progress_ns = now_ns;
            self.idle_since = now_ns;
        }
        match self.mode {
            Mode::Requests => {
                self.process(now_ns, handler);
                if self.mode == Mode::Requests {
                    if !self.input.is_empty()
                        && self.pending() < MAX_OUTPUT
                        && now_ns >= self.request_since.saturating_add(REQUEST_TIMEOUT_NS)
                    {
                        self.refuse(
                            408,
                            "timeout",
                            format!(
                                "the request was not complete within {} s",
                                REQUEST_TIMEOUT_NS / 1_000_000_000
                            ),
                            now_ns,
                            handler,
                        );
                    } else if self.input.is_empty()
                        && self.pending() == 0
                        && now_ns >= self.idle_since.saturating_add(IDLE_TIMEOUT_NS)
                    {
                        self.mode = Mode::Closing;
                    }
                }
            }
            Mode::Stream { .. } => {
                self.refill(now_ns, handler);
                if let Mode::Stream {
                    after,
                    last_write_ns,
                } = self.mode
                    && self.pending() < MAX_OUTPUT
                    && now_ns >= last_write_ns.saturating_add(KEEPALIVE_NS)
                {
                    self.mode = Mode::Stream {
                        after,
                        last_write_ns: now_ns,
                    };
                    self.push(KEEPALIVE_COMMENT, now_ns);
                }
            }
            Mode::Closing | Mode::Aborted => {}
        }
        if self.pending() > 0 && now_ns >= self.progress_ns.saturating_add(WRITE_TIMEOUT_NS) {
            self.mode = Mode::Aborted;
            self.output.clear();
            self.out_start = 0;
        }
    }

    /// Whether the connection takes no more requests.
    pub fn closing(&self) -> bool {
        matches!(self.mode, Mode::Closing | Mode::Aborted)
    }

    /// Whether the connection is done: everything was handed over (close
    /// the socket gracefully) or it was [`aborted`](Connection::aborted).
    pub fn finished(&self) -> bool {
        match self.mode {
            Mode::Closing => self.pending() == 0,
            Mode::Aborted => true,
            _ => false,
        }
    }

    /// Whether the connection was dropped with output unsent (reset the
    /// socket rather than close it).
    pub fn aborted(&self) -> bool {
        self.mode == Mode::Aborted
    }

    /// Whether the connection carries an event stream.
    pub fn streaming(&self) -> bool {
        matches!(self.mode, Mode::Stream { .. })
    }

    /// Requests answered so far (refusals included).
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Bytes of input held (a request not yet complete, or pipelined ones
    /// waiting for output room).
    pub fn input_held(&self) -> usize {
        self.input.len()
    }

    /// When [`Connection::poll`] next has something to do by the clock
    /// (a timeout, a keep-alive comment), if anything.
    pub fn next_deadline(&self) -> Option<u64> {
        let pending = self.pending();
        let write = (pending > 0).then(|| self.progress_ns.saturating_add(WRITE_TIMEOUT_NS));
        let other = match self.mode {
            Mode::Requests if !self.input.is_empty() && pending < MAX_OUTPUT => {
                Some(self.request_since.saturating_add(REQUEST_TIMEOUT_NS))
            }
            Mode::Requests if self.input.is_empty() && pending == 0 => {
                Some(self.idle_since.saturating_add(IDLE_TIMEOUT_NS))
            }
            Mode::Stream { last_write_ns, .. } if pending < MAX_OUTPUT => {
                Some(last_write_ns.saturating_add(KEEPALIVE_NS))
            }
            _ => None,
        };
        match (write, other) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn pending(&self) -> usize {
        self.output.len() - self.out_start
    }

    fn push(&mut self, bytes: &[u8], now_ns: u64) {
        if self.pending() == 0 {
            self.progress_ns = now_ns;
        }
        self.output.extend_from_slice(bytes);
    }

    /// Answers the whole requests in the input while the output has room.
    fn process(&mut self, now_ns: u64, handler: &mut dyn Handler) {
        while self.mode == Mode::Requests && !self.input.is_empty() && self.pending() < MAX_OUTPUT {
            match self.parse() {
                Parsed::Incomplete => break,
                Parsed::Continue => {
                    self.continued = true;
                    self.push(b"HTTP/1.1 100 Continue\r\n\r\n", now_ns);
                    break;
                }
                Parsed::Refuse(status, code, message) => {
                    self.refuse(status, code, message, now_ns, handler);
                }
                Parsed::Complete {
                    request,
                    len,
                    close,
                    head_only,
                } => {
                    self.input.drain(..len);
                    self.continued = false;
                    self.request_since = now_ns;
                    let response = handler.handle(&request, now_ns);
                    self.respond(response, close, head_only, now_ns, handler);
                }
            }
        }
        if self.input_ended && self.mode == Mode::Requests && self.pending() < MAX_OUTPUT {
            // What is left can never become a request.
            self.input.clear();
            self.mode = Mode::Closing;
        }
    }

    /// What the input begins with.
    fn parse(&self) -> Parsed {
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut head = httparse::Request::new(&mut headers);
        let head_len = match head.parse(&self.input) {
            Ok(httparse::Status::Partial) if self.input.len() > MAX_HEAD => {
                return too_large_head();
            }
            Ok(httparse::Status::Partial) => return Parsed::Incomplete,
            Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => return too_large_head(),
            Ok(httparse::Status::Complete(n)) => n,
            Err(httparse::Error::TooManyHeaders) => {
                return Parsed::Refuse(
                    431,
                    "headers_too_large",
                    format!("more than {MAX_HEADERS} headers"),
                );
            }
            Err(e) => {
                return Parsed::Refuse(400, "bad_request", format!("malformed request: {e}"));
            }
        };
        let (Some(method), Some(target), Some(version)) = (head.method, head.path, head.version)
        else {
            return Parsed::Refuse(400, "bad_request", "malformed request line".into());
        };
        let mut length: Option<usize> = None;
        let mut close = version == 0;
        let mut expect_continue = false;
        for h in head.headers.iter() {
            let name = h.name;
            if name.eq_ignore_ascii_case("content-length") {
                let Some(n) = content_length(h.value) else {
                    return Parsed::Refuse(400, "bad_request", "malformed Content-Length".into());
                };
                if length.is_some_and(|l| l != n) {
                    return Parsed::Refuse(
                        400,
                        "bad_request",
                        "conflicting Content-Length headers".into(),
                    );
                }
                length = Some(n);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                return Parsed::Refuse(
                    501,
                    "not_implemented",
                    "Transfer-Encoding is not supported: send the body with a Content-Length"
                        .into(),
                );
            } else if name.eq_ignore_ascii_case("connection") {
                for token in h.value.split(|&b| b == b',') {
                    let token = token.trim_ascii();
                    if token.eq_ignore_ascii_case(b"close") {
                        close = true;
                    } else if token.eq_ignore_ascii_case(b"keep-alive") && version == 0 {
                        close = false;
                    }
                }
            } else if name.eq_ignore_ascii_case("expect") {
                expect_continue = h.value.trim_ascii().eq_ignore_ascii_case(b"100-continue");
            }
        }
        let length = match length {
            Some(n) if n > MAX_BODY => {
                return Parsed::Refuse(
                    413,
                    "payload_too_large",
                    format!("the body is longer than {MAX_BODY} bytes"),
                );
            }
            Some(n) => n,
            None if matches!(method, "POST" | "PUT" | "PATCH") => {
                return Parsed::Refuse(
                    411,
                    "length_required",
                    format!("{method} needs a Content-Length"),
                );
            }
            None => 0,
        };
        let len = head_len + length;
        if self.input.len() < len {
            if expect_continue && !self.continued && self.input.len() == head_len {
                return Parsed::Continue;
            }
            return Parsed::Incomplete;
        }
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        let request = Request {
            method: method.into(),
            path: path.into(),
            query: query.into(),
            headers: head
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), h.value.to_vec()))
                .collect(),
            body: self.input[head_len..len].to_vec(),
        };
        Parsed::Complete {
            request,
            len,
            close,
            head_only: method == "HEAD",
        }
    }

    /// Refuses the request in the input and closes.
    fn refuse(
        &mut self,
        status: u16,
        code: &str,
        message: String,
        now_ns: u64,
        handler: &mut dyn Handler,
    ) {
        handler.refused_input(status);
        self.input.clear();
        self.respond(
            error_response(status, code, &message),
            true,
            false,
            now_ns,
            handler,
        );
    }

    /// Writes `response`; `close` ends the connection after it,
    /// `head_only` leaves out its body (an answer to HEAD).
    fn respond(
        &mut self,
        response: Response,
        close: bool,
        head_only: bool,
        now_ns: u64,
        handler: &mut dyn Handler,
    ) {
        self.answered += 1;
        self.idle_since = now_ns;
        let status = if (200..=599).contains(&response.status) {
            response.status
        } else {
            500
        };
        let stream = response.events_after;
        let bodiless = status == 204 || status == 304;
        let mut head = String::new();
        let _ = write!(head, "HTTP/1.1 {status} {}\r\n", http::reason(status));
        if !bodiless {
            let _ = write!(head, "Content-Type: {}\r\n", response.content_type);
        }
        if stream.is_some() {
            head.push_str("Cache-Control: no-cache\r\n");
        } else if !bodiless {
            let _ = write!(head, "Content-Length: {}\r\n", response.body.len());
        }
        for (name, value) in &response.headers {
            let reserved = [
                "content-type",
                "content-length",
                "connection",
                "transfer-encoding",
            ]
            .iter()
            .any(|r| name.eq_ignore_ascii_case(r));
            let token = !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
            let text = value
                .bytes()
                .all(|b| b == b'\t' || (b >= b' ' && b != 0x7f));
            if reserved || !token || !text {
                // Not this layer's to send, or it would break the head.
                continue;
            }
            let _ = write!(head, "{name}: {value}\r\n");
        }
        // A stream ends only when the connection does.
        let close = close || stream.is_some();
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        self.push(head.as_bytes(), now_ns);
        if !head_only && !bodiless {
            self.push(&response.body, now_ns);
        }
        self.mode = match stream {
            Some(after) if !head_only => Mode::Stream {
                after,
                last_write_ns: now_ns,
            },
            _ if close => Mode::Closing,
            _ => Mode::Requests,
        };
        if self.closing() || self.streaming() {
            self.input.clear();
        }
        self.refill(now_ns, handler);
    }

    /// Appends the events waiting for the stream while the output has room.
    fn refill(&mut self, now_ns: u64, handler: &mut dyn Handler) {
        while let Mode::Stream { after, .. } = self.mode {
            let room = MAX_OUTPUT.saturating_sub(self.pending());
            if room == 0 {
                break;
            }
            let mut chunk = Vec::new();
            let last = handler.events(after, &mut chunk, room);
            if chunk.is_empty() {
                break;
            }
            self.push(&chunk, now_ns);
            self.mode = Mode::Stream {
                after: last.max(after),
                last_write_ns: now_ns,
            };
            if last <= after {
                break;
            }
        }
    }
}

fn too_large_head() -> Parsed {
    Parsed::Refuse(
        431,
        "headers_too_large",
        format!("the request head is longer than {MAX_HEAD} bytes"),
    )
}

/// A `Content-Length` value: decimal digits only.
fn content_length(value: &[u8]) -> Option<usize> {
    let value = value.trim_ascii();
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    core::str::from_utf8(value).ok()?.parse().ok()
}

#[cfg(test)]
mod tests;
