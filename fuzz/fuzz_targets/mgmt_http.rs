//! Fuzz target: arbitrary bytes as a client of the management API's HTTP
//! layer (`services::mgmt::conn::Connection`), arriving in chunks while
//! time moves and the client reads all, part or none of the answers, with
//! a trivial handler (an answer whose size follows the path, an event
//! stream at `/events`).
//! Invariants: no panic; what the connection sends parses as HTTP answers,
//! the first beginning with a valid status line; the input and output held
//! stay within their bounds; a finished connection sends nothing more.
#![no_main]

use libfuzzer_sys::fuzz_target;
use root_partition::services::mgmt::conn::{Connection, MAX_INPUT, MAX_OUTPUT};
use root_partition::services::mgmt::http::{Handler, Request, Response};

/// Largest answer the handler gives, head included.
const MAX_ANSWER: usize = 4096 + 512;

#[derive(Default)]
struct Trivial {
    /// Events made so far (one per request handled).
    events: u64,
    /// A HEAD was answered (its head has a length without a body).
    head: bool,
}

impl Handler for Trivial {
    fn handle(&mut self, request: &Request, _now_ns: u64) -> Response {
        self.events += 1;
        self.head |= request.method == "HEAD";
        if request.path == "/events" {
            return Response::events(request.query.len() as u64);
        }
        let size = (request.path.len() * 37) % 4096;
        Response::json(200, vec![b'x'; size]).with_header("X-Path-Length", request.path.len())
    }

    fn events(&mut self, after: u64, out: &mut Vec<u8>, max: usize) -> u64 {
        let mut last = after;
        while last < self.events {
            let text = format!("id: {}\ndata: {{}}\n\n", last + 1);
            if !out.is_empty() && out.len() + text.len() > max {
                break;
            }
            out.extend_from_slice(text.as_bytes());
            last += 1;
        }
        last
    }

    fn refused_input(&mut self, _status: u16) {}
}

/// Checks that `sent` is a sequence of HTTP answers (the last may be cut
/// short; an event stream takes the rest).
fn check_transcript(mut sent: &[u8], saw_head: bool) {
    if sent.len() >= 13 {
        let line = &sent[..13];
        assert!(line.starts_with(b"HTTP/1.1 "), "{line:?}");
        assert!(line[9..12].iter().all(u8::is_ascii_digit) && line[12] == b' ');
    }
    if saw_head {
        return;
    }
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        match r.parse(sent).expect("an HTTP answer") {
            httparse::Status::Partial => return,
            httparse::Status::Complete(n) => {
                let code = r.code.unwrap();
                assert!((100..=599).contains(&code));
                let header = |name: &str| {
                    r.headers
                        .iter()
                        .find(|h| h.name.eq_ignore_ascii_case(name))
                        .map(|h| h.value)
                };
                if header("content-type") == Some(b"text/event-stream") {
                    return;
                }
                let length = match header("content-length") {
                    Some(v) => core::str::from_utf8(v).unwrap().parse().unwrap(),
                    None => {
                        assert!(matches!(code, 100 | 204), "no length on {code}");
                        0
                    }
                };
                if sent.len() < n + length {
                    return;
                }
                sent = &sent[n + length..];
            }
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let mut handler = Trivial::default();
    let mut now: u64 = 0;
    let mut c = Connection::new(now);
    let mut sent = Vec::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let (len, flags) = (rest[0] as usize + 1, rest[1]);
        rest = &rest[2..];
        let chunk = &rest[..len.min(rest.len())];
        rest = &rest[chunk.len()..];
        now += [0, 1_000_000, 3_000_000_000, 16_000_000_000][(flags & 3) as usize];
        let finished = c.finished();
        let took = c.receive(chunk, now, &mut handler);
        assert!(took <= chunk.len());
        if flags & 16 != 0 {
            c.end_of_input();
        }
        c.poll(now, &mut handler);
        if finished {
            assert!(c.outgoing().is_empty(), "output after the end");
        }
        assert!(c.input_held() <= MAX_INPUT);
        assert!(c.outgoing().len() <= MAX_OUTPUT + MAX_ANSWER);
        // What was due has been done: the next deadline is ahead.
        if let Some(deadline) = c.next_deadline() {
            assert!(deadline > now, "deadline {deadline} not after {now}");
        }
        // The client reads everything, half, or nothing.
        let read = match flags & 12 {
            0 | 4 => c.outgoing().len(),
            8 => c.outgoing().len() / 2,
            _ => 0,
        };
        sent.extend_from_slice(&c.outgoing()[..read]);
        c.sent(read);
    }
    check_transcript(&sent, handler.head);
});
