//! `capctl events`: the node's server-sent event stream (`GET
//! /events?since=N`), parsed line by line (`id:`, `event:`, `data:`, `:`
//! comments, a blank line ends an event) and printed one line per event
//! (JSON lines with `--json`).
//!
//! Without `--follow` the command ends once it printed the events the node
//! had when it was asked (up to `GET /node`'s `events_seq`); with it, it
//! goes on until `--count` events, `--timeout` seconds or the node closes
//! the stream.

use super::client::Client;
use super::{Failure, Global};
use crate::Output;
use anyhow::Result;
use clap::Args;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// `capctl events` options.
#[derive(Args)]
pub struct EventsArgs {
    /// Start after event number N (0: every event the node still keeps).
    #[arg(long, default_value_t = 0)]
    since: u64,
    /// Stop after N events.
    #[arg(long)]
    count: Option<u64>,
    /// Keep reading new events as they happen.
    #[arg(long)]
    follow: bool,
    /// Stop after this many seconds of the stream (e.g. 2.5).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
}

/// One event of the stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Its `id:` (the sequence number), if it had one.
    pub id: Option<u64>,
    /// Its `event:` type (`message` if none was given).
    pub kind: String,
    /// Its `data:` lines joined with newlines.
    pub data: String,
}

/// The server-sent events parser: fed one line at a time.
#[derive(Default)]
pub struct Parser {
    id: Option<u64>,
    kind: Option<String>,
    data: Option<String>,
}

impl Parser {
    /// Takes one line (with or without its line ending); returns the event
    /// a blank line completes.
    pub fn line(&mut self, line: &str) -> Option<Event> {
        let line = line.trim_end_matches(['\n', '\r']);
        if line.is_empty() {
            let data = self.data.take();
            let kind = self.kind.take();
            let id = self.id.take();
            return data.map(|data| Event {
                id,
                kind: kind.unwrap_or_else(|| "message".into()),
                data,
            });
        }
        if line.starts_with(':') {
            return None; // a comment: `: keepalive`
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => self.id = value.parse().ok(),
            "event" => self.kind = Some(value.to_owned()),
            "data" => match &mut self.data {
                Some(data) => {
                    data.push('\n');
                    data.push_str(value);
                }
                None => self.data = Some(value.to_owned()),
            },
            _ => {} // `retry:` and unknown fields are ignored, as the standard says.
        }
        None
    }
}

/// The event's sequence number: its `id:`, else the data's `seq`.
fn seq_of(event: &Event, data: &Value) -> Option<u64> {
    event.id.or_else(|| data.get("seq").and_then(Value::as_u64))
}

/// One line for people: `17 state_changed vm=kv from=Off to=Starting ...`.
pub fn describe(event: &Event, data: &Value) -> String {
    if event.kind == "gap" {
        return format!(
            "gap: the node no longer keeps the events before {}",
            data.get("first")
                .map(Value::to_string)
                .unwrap_or("?".into())
        );
    }
    let mut line = match seq_of(event, data) {
        Some(seq) => format!("{seq:>6} "),
        None => "     - ".into(),
    };
    let kind = data
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or(&event.kind);
    line.push_str(kind);
    match data {
        Value::Object(map) => {
            for (key, value) in map {
                if key == "seq" || key == "kind" {
                    continue;
                }
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                line.push_str(&format!(" {key}={value}"));
            }
        }
        other => line.push_str(&format!(" {other}")),
    }
    line
}

/// `capctl events`.
pub fn run(args: EventsArgs, out: &Output, global: &Global) -> Result<ExitCode> {
    let timeout = match args.timeout {
        Some(s) if s.is_finite() && s > 0.0 => Some(Duration::from_secs_f64(s)),
        Some(s) => anyhow::bail!("--timeout {s}: not a positive number of seconds"),
        None => None,
    };
    if args.count == Some(0) {
        return Ok(ExitCode::SUCCESS);
    }
    // Without --follow: up to the last event the node has now.
    let last = if args.follow {
        None
    } else {
        let node = Client::new(global)?.get("/node", "node")?;
        let last = node.get("events_seq").and_then(Value::as_u64).unwrap_or(0);
        if last <= args.since {
            return Ok(ExitCode::SUCCESS);
        }
        Some(last)
    };
    let client = Client::with_timeout(global, timeout)?;
    let start = Instant::now();
    let mut reader = BufReader::new(client.events(args.since)?);
    let mut parser = Parser::default();
    let mut printed = 0u64;
    let mut line = String::new();
    loop {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => {
                if last.is_some() {
                    return Err(Failure::new(
                        "unreachable",
                        format!(
                            "the node at {} closed the event stream before its last event",
                            client.node()
                        ),
                    )
                    .into());
                }
                eprintln!(
                    "capctl: the node at {} closed the event stream",
                    client.node()
                );
                return Ok(ExitCode::SUCCESS);
            }
            Ok(_) => {}
            // The stream's time is up: the end asked for.
            Err(_) if timeout.is_some_and(|t| start.elapsed() + Duration::from_millis(50) >= t) => {
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                return Err(Failure::new(
                    "unreachable",
                    format!(
                        "the event stream from the node at {} broke off: {e}",
                        client.node()
                    ),
                )
                .into());
            }
        }
        let Some(event) = parser.line(&line) else {
            continue;
        };
        let data: Value =
            serde_json::from_str(&event.data).unwrap_or(Value::String(event.data.clone()));
        if out.json {
            if event.kind == "gap" {
                println!("{}", json!({ "gap": data }));
            } else {
                println!("{data}");
            }
        } else {
            println!("{}", describe(&event, &data));
        }
        if event.kind == "gap" {
            continue;
        }
        printed += 1;
        let seq = seq_of(&event, &data).unwrap_or(0);
        if args.count.is_some_and(|c| printed >= c) || last.is_some_and(|l| seq >= l) {
            return Ok(ExitCode::SUCCESS);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(text: &str) -> Vec<Event> {
        let mut p = Parser::default();
        text.split_inclusive('\n')
            .filter_map(|l| p.line(l))
            .collect()
    }

    #[test]
    fn parses_ids_types_data_and_comments() {
        let events = feed(
            ": keepalive\n\nid: 17\nevent: vm\ndata: {\"seq\":17}\n\n\
             event: gap\ndata: {\"first\":3}\r\n\r\nid:18\ndata:a\ndata: b\nretry: 5\n\n",
        );
        assert_eq!(
            events,
            vec![
                Event {
                    id: Some(17),
                    kind: "vm".into(),
                    data: "{\"seq\":17}".into()
                },
                Event {
                    id: None,
                    kind: "gap".into(),
                    data: "{\"first\":3}".into()
                },
                Event {
                    id: Some(18),
                    kind: "message".into(),
                    data: "a\nb".into()
                },
            ]
        );
    }

    #[test]
    fn an_unfinished_event_is_not_given() {
        assert!(feed("id: 1\nevent: vm\ndata: {}\n").is_empty());
    }

    #[test]
    fn describes_an_event_on_one_line() {
        let e = Event {
            id: Some(17),
            kind: "vm".into(),
            data: String::new(),
        };
        let data = json!({"seq":17,"kind":"state_changed","vm":"kv","from":"Off","to":"Starting"});
        let line = describe(&e, &data);
        assert!(line.trim_start().starts_with("17 state_changed"), "{line}");
        assert!(
            line.contains("vm=kv") && line.contains("from=Off") && line.contains("to=Starting")
        );
    }
}
