//! The connection state machine against a small handler: every refusal,
//! keep-alive, pipelining, bytes arriving one at a time, back-pressure,
//! event streams and every timeout.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;

use super::*;

const S: u64 = 1_000_000_000;

/// A handler that answers `{"path":..,"body":N}`, `/big` with 10,000
/// bytes, `/events` with a stream of `events`, `/bad-headers` with headers
/// a head must not carry; it records what it saw.
#[derive(Default)]
struct Test {
    handled: Vec<Request>,
    refused: Vec<u16>,
    /// (sequence number, stream text) of the events.
    events: Vec<(u64, String)>,
}

impl Test {
    fn add_event(&mut self) -> u64 {
        let seq = self.events.len() as u64 + 1;
        self.events.push((
            seq,
            alloc::format!("id: {seq}\nevent: vm\ndata: {{\"seq\":{seq}}}\n\n"),
        ));
        seq
    }
}

impl Handler for Test {
    fn handle(&mut self, request: &Request, _now_ns: u64) -> Response {
        self.handled.push(request.clone());
        match request.path.as_str() {
            "/events" => Response::events(
                request
                    .query
                    .strip_prefix("since=")
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0),
            ),
            "/big" => Response::json(200, vec![b'x'; 10_000]),
            "/gone" => http::error_response(404, "not_found", "no such thing"),
            "/empty" => Response::empty(204),
            "/bad-headers" => Response::json(200, b"{}".to_vec())
                .with_header("X-Good", "yes")
                .with_header("X-Evil", "a\r\nSet-Cookie: x")
                .with_header("Content-Length", "5")
                .with_header("Bad Name", "v"),
            path => Response::json(
                200,
                alloc::format!("{{\"path\":\"{path}\",\"body\":{}}}", request.body.len())
                    .into_bytes(),
            )
            .with_header("X-Request", self.handled.len()),
        }
    }

    fn events(&mut self, after: u64, out: &mut Vec<u8>, max: usize) -> u64 {
        let mut last = after;
        for (seq, text) in self.events.iter().filter(|(s, _)| *s > after) {
            if !out.is_empty() && out.len() + text.len() > max {
                break;
            }
            out.extend_from_slice(text.as_bytes());
            last = *seq;
        }
        last
    }

    fn refused_input(&mut self, status: u16) {
        self.refused.push(status);
    }
}

/// One answer read back from the output.
#[derive(Debug)]
struct Answer {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn error_code(&self) -> String {
        let v: serde_json::Value = serde_json::from_slice(&self.body).unwrap();
        v["error"]["code"].as_str().unwrap().to_string()
    }
}

/// Parses every answer in `bytes` (a head without a length takes the rest
/// as its body); fails the test on anything that is not HTTP.
fn answers(mut bytes: &[u8]) -> Vec<Answer> {
    let mut all = Vec::new();
    while !bytes.is_empty() {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut r = httparse::Response::new(&mut headers);
        let httparse::Status::Complete(n) = r.parse(bytes).expect("an HTTP answer") else {
            panic!("an incomplete head: {:?}", String::from_utf8_lossy(bytes));
        };
        let headers: Vec<(String, String)> = r
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_string(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        let status = r.code.unwrap();
        let length = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .map(|(_, v)| v.parse::<usize>().unwrap());
        let len = match (status, length) {
            (100 | 204, _) => 0,
            (_, Some(l)) => l,
            (_, None) => bytes.len() - n,
        };
        all.push(Answer {
            status,
            headers,
            body: bytes[n..n + len].to_vec(),
        });
        bytes = &bytes[n + len..];
    }
    all
}

/// Takes everything the connection has to send.
fn drain(c: &mut Connection) -> Vec<u8> {
    let out = c.outgoing().to_vec();
    c.sent(out.len());
    out
}

/// Feeds all of `bytes` (failing if the connection holds any back).
fn feed(c: &mut Connection, h: &mut Test, bytes: &[u8], now: u64) {
    assert_eq!(c.receive(bytes, now, h), bytes.len());
}

fn get(path: &str) -> String {
    alloc::format!("GET {path} HTTP/1.1\r\nHost: node\r\nAuthorization: Bearer t\r\n\r\n")
}

/// Sends `request` to a fresh connection: the one answer, the connection
/// and the handler.
fn one(request: &[u8]) -> (Answer, Connection, Test) {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    feed(&mut c, &mut h, request, 0);
    let mut a = answers(&drain(&mut c));
    assert_eq!(a.len(), 1, "{a:?}");
    (a.remove(0), c, h)
}

/// A refusal: the status, its error body's code, `Connection: close`, the
/// handler told and not asked to handle anything, the connection done.
fn assert_refused(request: &[u8], status: u16, code: &str) {
    let (a, c, h) = one(request);
    assert_eq!(a.status, status, "{a:?}");
    assert_eq!(a.error_code(), code);
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    assert_eq!(a.header("Connection"), Some("close"));
    assert_eq!(h.refused, [status]);
    assert!(h.handled.is_empty());
    assert!(c.closing() && c.finished() && !c.aborted());
}

#[test]
fn a_request_is_parsed_and_answered() {
    let (a, c, h) = one(
        b"POST /api/v1/vms?x=1&y=2 HTTP/1.1\r\nHost: n\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{\"a\":1}",
    );
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Content-Type"), Some("application/json"));
    assert_eq!(a.header("X-Request"), Some("1"));
    assert_eq!(a.header("Connection"), None);
    assert_eq!(a.body, br#"{"path":"/api/v1/vms","body":7}"#);
    let r = &h.handled[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/api/v1/vms");
    assert_eq!(r.query, "x=1&y=2");
    assert_eq!(r.header("content-type"), Some(&b"application/json"[..]));
    assert_eq!(r.body, br#"{"a":1}"#);
    assert!(!c.closing());
    assert_eq!(c.answered(), 1);
}

#[test]
fn keep_alive_serves_several_requests_in_turn() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    for i in 1..=5u64 {
        feed(
            &mut c,
            &mut h,
            get(&alloc::format!("/r{i}")).as_bytes(),
            i * S,
        );
        let a = answers(&drain(&mut c));
        assert_eq!(a.len(), 1);
        assert_eq!(a[0].status, 200);
        assert_eq!(a[0].header("X-Request"), Some(i.to_string().as_str()));
        assert!(!c.closing());
        c.poll(i * S, &mut h);
    }
    assert_eq!(h.handled.len(), 5);
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    let mut all = Vec::new();
    for path in ["/a", "/b", "/c"] {
        all.extend_from_slice(get(path).as_bytes());
    }
    all.extend_from_slice(b"POST /d HTTP/1.1\r\nContent-Length: 3\r\n\r\nxyz");
    all.extend_from_slice(get("/e").as_bytes());
    feed(&mut c, &mut h, &all, 0);
    let a = answers(&drain(&mut c));
    let bodies: Vec<&[u8]> = a.iter().map(|a| a.body.as_slice()).collect();
    assert_eq!(
        bodies,
        [
            &br#"{"path":"/a","body":0}"#[..],
            br#"{"path":"/b","body":0}"#,
            br#"{"path":"/c","body":0}"#,
            br#"{"path":"/d","body":3}"#,
            br#"{"path":"/e","body":0}"#,
        ]
    );
}

#[test]
fn bytes_arriving_one_at_a_time_make_the_same_requests() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    let mut all =
        Vec::from(&b"PUT /node/token HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world"[..]);
    all.extend_from_slice(get("/next").as_bytes());
    let mut out = Vec::new();
    for (i, b) in all.iter().enumerate() {
        feed(&mut c, &mut h, &[*b], i as u64 * 1000);
        out.extend(drain(&mut c));
    }
    let a = answers(&out);
    assert_eq!(a.len(), 2);
    assert_eq!(h.handled[0].method, "PUT");
    assert_eq!(h.handled[0].body, b"hello world");
    assert_eq!(h.handled[1].path, "/next");
    assert!(h.refused.is_empty());
}

#[test]
fn connection_close_is_honoured() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    let mut all = Vec::from(&b"GET /a HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n"[..]);
    all.extend_from_slice(get("/never").as_bytes());
    feed(&mut c, &mut h, &all, 0);
    assert!(c.closing() && !c.finished(), "the answer is still to send");
    let a = answers(&drain(&mut c));
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].header("Connection"), Some("close"));
    assert!(c.finished());
    assert_eq!(h.handled.len(), 1, "nothing after the close is handled");
    // Later bytes are dropped, not answered.
    feed(&mut c, &mut h, get("/later").as_bytes(), 1);
    assert!(c.outgoing().is_empty());
}

#[test]
fn http_1_0_closes_after_its_answer() {
    let (a, c, _) = one(b"GET /a HTTP/1.0\r\n\r\n");
    assert_eq!(a.status, 200);
    assert_eq!(a.header("Connection"), Some("close"));
    assert!(c.finished());
}

#[test]
fn a_head_longer_than_max_head_is_431() {
    let long = alloc::format!("GET / HTTP/1.1\r\nX-Long: {}\r\n\r\n", "a".repeat(MAX_HEAD));
    assert_refused(long.as_bytes(), 431, "headers_too_large");
    // Never finished: refused once past the limit, not at its end.
    let endless = alloc::format!("GET / HTTP/1.1\r\nX-Long: {}", "a".repeat(MAX_HEAD + 1));
    assert_refused(endless.as_bytes(), 431, "headers_too_large");
    // Just under the limit is fine.
    let fits = alloc::format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD - 23));
    assert_eq!(fits.len(), MAX_HEAD);
    assert_eq!(one(fits.as_bytes()).0.status, 200);
}

#[test]
fn more_than_max_headers_is_431() {
    let mut r = String::from("GET / HTTP/1.1\r\n");
    for i in 0..MAX_HEADERS {
        r.push_str(&alloc::format!("X-{i}: v\r\n"));
    }
    let fits = alloc::format!("{r}\r\n");
    assert_eq!(one(fits.as_bytes()).0.status, 200);
    let over = alloc::format!("{r}X-Last: v\r\n\r\n");
    assert_refused(over.as_bytes(), 431, "headers_too_large");
}

#[test]
fn a_length_above_max_body_is_413_before_the_body_comes() {
    let head = alloc::format!(
        "POST /api/v1/vms HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        MAX_BODY + 1
    );
    assert_refused(head.as_bytes(), 413, "payload_too_large");
    let fits = alloc::format!(
        "POST /x HTTP/1.1\r\nContent-Length: {MAX_BODY}\r\n\r\n{}",
        "b".repeat(MAX_BODY)
    );
    let (a, _, h) = one(fits.as_bytes());
    assert_eq!(a.status, 200);
    assert_eq!(h.handled[0].body.len(), MAX_BODY);
}

#[test]
fn malformed_requests_are_400() {
    for bad in [
        &b"GARBAGE\r\n\r\n"[..],
        b"GET / HTTP/9.9\r\n\r\n",
        b"GET\t/ HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nNo colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\nBad\x01Name: v\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
        b"POST / HTTP/1.1\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
    ] {
        assert_refused(bad, 400, "bad_request");
    }
    // The same length twice is one length.
    let (a, _, _) = one(b"POST / HTTP/1.1\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nab");
    assert_eq!(a.status, 200);
}

#[test]
fn a_body_without_a_length_is_411() {
    assert_refused(
        b"POST /api/v1/vms HTTP/1.1\r\n\r\n{}",
        411,
        "length_required",
    );
    assert_refused(
        b"PUT /api/v1/node/token HTTP/1.1\r\n\r\n",
        411,
        "length_required",
    );
    // GET and DELETE need none.
    assert_eq!(one(b"DELETE /x HTTP/1.1\r\n\r\n").0.status, 200);
}

#[test]
fn transfer_encoding_is_501() {
    assert_refused(
        b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        501,
        "not_implemented",
    );
    assert_refused(
        b"POST /x HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
        501,
        "not_implemented",
    );
}

#[test]
fn a_request_not_complete_in_time_is_408_even_if_it_trickles() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    let start = 5 * S;
    assert_eq!(c.next_deadline(), Some(IDLE_TIMEOUT_NS));
    // A slow-loris client: one byte a second from `start` on.
    let head = b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    for (i, b) in head.iter().enumerate().take(10) {
        let now = start + i as u64 * S;
        feed(&mut c, &mut h, &[*b], now);
        c.poll(now, &mut h);
        assert!(c.outgoing().is_empty() && !c.closing());
        assert_eq!(c.next_deadline(), Some(start + REQUEST_TIMEOUT_NS));
    }
    c.poll(start + REQUEST_TIMEOUT_NS - 1, &mut h);
    assert!(c.outgoing().is_empty());
    c.poll(start + REQUEST_TIMEOUT_NS, &mut h);
    let a = answers(&drain(&mut c));
    assert_eq!(a[0].status, 408);
    assert_eq!(a[0].error_code(), "timeout");
    assert_eq!(a[0].header("Connection"), Some("close"));
    assert_eq!(h.refused, [408]);
    assert!(c.finished());
}

#[test]
fn the_request_clock_starts_at_each_request_s_first_byte() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    feed(&mut c, &mut h, get("/a").as_bytes(), 0);
    drain(&mut c);
    // The next request begins 30 s later and takes 9 s: not late.
    feed(&mut c, &mut h, b"GET /b HTTP/1.1\r\n", 30 * S);
    c.poll(39 * S, &mut h);
    assert!(c.outgoing().is_empty());
    feed(&mut c, &mut h, b"\r\n", 39 * S);
    assert_eq!(answers(&drain(&mut c))[0].status, 200);
    assert!(h.refused.is_empty());
}

#[test]
fn an_idle_keep_alive_connection_closes_quietly() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    feed(&mut c, &mut h, get("/a").as_bytes(), S);
    drain(&mut c);
    c.poll(S, &mut h);
    assert_eq!(c.next_deadline(), Some(S + IDLE_TIMEOUT_NS));
    c.poll(S + IDLE_TIMEOUT_NS - 1, &mut h);
    assert!(!c.closing());
    c.poll(S + IDLE_TIMEOUT_NS, &mut h);
    assert!(c.closing() && c.finished());
    assert!(c.outgoing().is_empty(), "no answer to a request never sent");
    assert!(h.refused.is_empty());
}

#[test]
fn a_client_that_does_not_read_gets_back_pressure_then_is_dropped() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    let request = get("/big");
    // Many pipelined requests for big answers, never reading any.
    let mut many = Vec::new();
    for _ in 0..100 {
        many.extend_from_slice(request.as_bytes());
    }
    feed(&mut c, &mut h, &many, 0);
    let answered = h.handled.len();
    assert!(c.outgoing().len() >= MAX_OUTPUT);
    assert!(c.outgoing().len() <= MAX_OUTPUT + 10_200);
    // Answered until the output passed its bound, and no further.
    assert!(answered * 10_100 >= MAX_OUTPUT && (answered - 1) * 10_000 < MAX_OUTPUT);
    // More is not taken while the output is over its bound.
    assert_eq!(c.receive(request.as_bytes(), 0, &mut h), 0);
    c.poll(0, &mut h);
    assert_eq!(h.handled.len(), answered);
    // The client reads some: the pipelined requests go on.
    let n = c.outgoing().len() / 2;
    c.sent(n);
    c.poll(S, &mut h);
    assert!(h.handled.len() > answered);
    assert!(c.outgoing().len() <= MAX_OUTPUT + 10_200);
    // Then it reads nothing more: dropped once its output stood still.
    c.poll(S + WRITE_TIMEOUT_NS - 1, &mut h);
    assert!(!c.finished());
    assert_eq!(c.next_deadline(), Some(S + WRITE_TIMEOUT_NS));
    c.poll(S + WRITE_TIMEOUT_NS, &mut h);
    assert!(c.finished() && c.aborted());
    assert!(c.outgoing().is_empty());
}

#[test]
fn a_slow_reader_is_served_to_the_end() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    let mut input = Vec::new();
    for _ in 0..20 {
        input.extend_from_slice(get("/big").as_bytes());
    }
    let mut now = 0;
    let mut offset = 0;
    let mut out = Vec::new();
    while h.handled.len() < 20 || !c.outgoing().is_empty() {
        offset += c.receive(&input[offset..], now, &mut h);
        c.poll(now, &mut h);
        let take = c.outgoing().len().min(1000);
        out.extend_from_slice(&c.outgoing()[..take]);
        c.sent(take);
        now += S;
        assert!(now < 1000 * S, "stalled");
    }
    let a = answers(&out);
    assert_eq!(a.len(), 20);
    assert!(a.iter().all(|a| a.status == 200 && a.body.len() == 10_000));
    assert!(!c.aborted());
}

#[test]
fn an_event_stream_sends_the_waiting_events_then_the_new_ones() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    for _ in 0..3 {
        h.add_event();
    }
    let mut request = get("/events?since=1").into_bytes();
    request.extend_from_slice(get("/after-the-stream").as_bytes());
    feed(&mut c, &mut h, &request, 0);
    assert!(c.streaming() && !c.closing());
    let out = drain(&mut c);
    let a = answers(&out);
    assert_eq!(a.len(), 1);
    assert_eq!(a[0].status, 200);
    assert_eq!(a[0].header("Content-Type"), Some("text/event-stream"));
    assert_eq!(a[0].header("Cache-Control"), Some("no-cache"));
    assert_eq!(a[0].header("Content-Length"), None);
    assert_eq!(a[0].header("Connection"), Some("close"));
    assert_eq!(
        a[0].body,
        b"id: 2\nevent: vm\ndata: {\"seq\":2}\n\nid: 3\nevent: vm\ndata: {\"seq\":3}\n\n"
    );
    // Requests after the stream began are not taken.
    assert_eq!(h.handled.len(), 1);
    feed(&mut c, &mut h, get("/x").as_bytes(), S);
    assert_eq!(h.handled.len(), 1);
    // A new event goes out at the next poll.
    h.add_event();
    c.poll(2 * S, &mut h);
    assert_eq!(drain(&mut c), b"id: 4\nevent: vm\ndata: {\"seq\":4}\n\n");
    c.poll(3 * S, &mut h);
    assert!(c.outgoing().is_empty());
    // Silence: a comment 15 s after the last bytes, then every 15 s.
    assert_eq!(c.next_deadline(), Some(2 * S + KEEPALIVE_NS));
    c.poll(2 * S + KEEPALIVE_NS - 1, &mut h);
    assert!(c.outgoing().is_empty());
    c.poll(2 * S + KEEPALIVE_NS, &mut h);
    assert_eq!(drain(&mut c), KEEPALIVE_COMMENT);
    c.poll(2 * S + 2 * KEEPALIVE_NS, &mut h);
    assert_eq!(drain(&mut c), KEEPALIVE_COMMENT);
    // A stream is not idle: it stays open past the idle timeout.
    for t in 0..10 {
        c.poll(2 * S + (3 + t) * KEEPALIVE_NS, &mut h);
        drain(&mut c);
    }
    assert!(!c.closing());
    // The client leaves.
    c.end_of_input();
    assert!(c.finished());
}

#[test]
fn a_stream_is_refilled_within_the_output_bound() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    for _ in 0..5000 {
        h.add_event();
    }
    feed(&mut c, &mut h, get("/events").as_bytes(), 0);
    let mut out = Vec::new();
    let mut now = 0;
    while !out.ends_with(b"data: {\"seq\":5000}\n\n") {
        assert!(c.outgoing().len() <= MAX_OUTPUT + 64);
        let take = c.outgoing().len().min(7000);
        out.extend_from_slice(&c.outgoing()[..take]);
        c.sent(take);
        now += 1000;
        c.poll(now, &mut h);
        assert!(now < 1_000_000_000, "stalled");
    }
    let body = &answers(&out)[0].body;
    let text = core::str::from_utf8(body).unwrap();
    let ids: Vec<u64> = text
        .lines()
        .filter_map(|l| l.strip_prefix("id: "))
        .map(|n| n.parse().unwrap())
        .collect();
    assert_eq!(
        ids,
        (1..=5000).collect::<Vec<_>>(),
        "every event once, in order"
    );
}

#[test]
fn expect_100_continue_gets_its_interim_answer() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    feed(
        &mut c,
        &mut h,
        b"POST /x HTTP/1.1\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n",
        0,
    );
    assert_eq!(drain(&mut c), b"HTTP/1.1 100 Continue\r\n\r\n");
    feed(&mut c, &mut h, b"ab", 0);
    c.poll(0, &mut h);
    assert!(c.outgoing().is_empty(), "only once");
    feed(&mut c, &mut h, b"cd", 0);
    let a = answers(&drain(&mut c));
    assert_eq!(a[0].status, 200);
    assert_eq!(h.handled[0].body, b"abcd");
}

#[test]
fn head_and_204_answers_have_no_body() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    feed(&mut c, &mut h, b"HEAD /big HTTP/1.1\r\n\r\n", 0);
    let out = drain(&mut c);
    assert!(out.ends_with(b"Content-Length: 10000\r\n\r\n"), "{out:?}");
    let (a, _, _) = one(b"GET /empty HTTP/1.1\r\n\r\n");
    assert_eq!(a.status, 204);
    assert_eq!(a.header("Content-Length"), None);
    assert_eq!(a.header("Content-Type"), None);
    let (a, _, _) = one(b"GET /gone HTTP/1.1\r\n\r\n");
    assert_eq!(a.status, 404);
    assert_eq!(a.error_code(), "not_found");
}

#[test]
fn headers_that_would_break_the_head_are_left_out() {
    let (a, _, _) = one(b"GET /bad-headers HTTP/1.1\r\n\r\n");
    assert_eq!(a.header("X-Good"), Some("yes"));
    assert_eq!(a.header("X-Evil"), None);
    assert_eq!(a.header("Set-Cookie"), None);
    assert_eq!(a.header("Content-Length"), Some("2"));
    assert_eq!(a.headers.len(), 3, "{:?}", a.headers);
}

#[test]
fn the_end_of_input_answers_what_is_complete_then_closes() {
    let mut c = Connection::new(0);
    let mut h = Test::default();
    let mut all = get("/a").into_bytes();
    all.extend_from_slice(b"GET /incomplete HTT");
    feed(&mut c, &mut h, &all, 0);
    c.end_of_input();
    c.poll(0, &mut h);
    assert!(c.closing());
    let a = answers(&drain(&mut c));
    assert_eq!(a.len(), 1);
    assert!(c.finished());
    assert!(h.refused.is_empty());
}
