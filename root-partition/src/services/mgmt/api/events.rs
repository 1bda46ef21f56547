//! The API's event log: VM, job and node events in one numbered sequence
//! (from 1), the last [`MAX_EVENTS`] kept, each stored as the text of a
//! server-sent event (`id:`, `event:`, `data:` lines and a blank line).
//! A reader resumes from a number; one that fell behind the oldest kept
//! event gets an `event: gap` first, with the first number kept.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use serde_json::{Map, Value};

/// Events kept for readers.
pub const MAX_EVENTS: usize = 1024;

/// The log.
#[derive(Debug)]
pub struct EventLog {
    events: VecDeque<(u64, String)>,
    next: u64,
}

impl Default for EventLog {
    fn default() -> Self {
        EventLog {
            events: VecDeque::new(),
            next: 1,
        }
    }
}

impl EventLog {
    /// The number of the last event (0 before the first).
    pub fn last(&self) -> u64 {
        self.next - 1
    }

    /// The number of the oldest event kept, if any.
    pub fn first(&self) -> Option<u64> {
        self.events.front().map(|(seq, _)| *seq)
    }

    /// Appends an event of type `event` (`vm`, `job`, `node`): its `data`
    /// object has `seq`, `kind`, `fields` and `time_ms` (keys in name order).
    pub fn push(&mut self, event: &str, kind: &str, fields: Map<String, Value>, time_ms: u64) {
        let seq = self.next;
        self.next += 1;
        let mut data = Map::new();
        data.insert("seq".into(), Value::from(seq));
        data.insert("kind".into(), Value::from(kind));
        data.extend(fields);
        data.insert("time_ms".into(), Value::from(time_ms));
        let json = serde_json::to_string(&Value::Object(data)).unwrap_or_default();
        let text = format!("id: {seq}\nevent: {event}\ndata: {json}\n\n");
        if self.events.len() >= MAX_EVENTS {
            self.events.pop_front();
        }
        self.events.push_back((seq, text));
    }

    /// The stream text of the events after `after` (see
    /// [`crate::services::mgmt::http::Handler::events`]): a gap first if
    /// some of them are gone; returns the number of the last one appended.
    pub fn read(&self, after: u64, out: &mut Vec<u8>, max: usize) -> u64 {
        let Some(first) = self.first() else {
            return after;
        };
        let mut last = after;
        let start = out.len();
        // At least one event when `out` comes empty, whatever `max`.
        let mut must = out.is_empty();
        if after.saturating_add(1) < first {
            out.extend_from_slice(
                format!("event: gap\ndata: {{\"first\":{first}}}\n\n").as_bytes(),
            );
            last = first - 1;
        }
        let skip =
            usize::try_from(last.saturating_add(1).saturating_sub(first)).unwrap_or(usize::MAX);
        for (seq, text) in self.events.iter().skip(skip) {
            if !must && out.len() - start + text.len() > max {
                break;
            }
            out.extend_from_slice(text.as_bytes());
            last = *seq;
            must = false;
        }
        last
    }
}

/// The JSON fields of an event, in order.
pub fn fields<const N: usize>(pairs: [(&str, Value); N]) -> Map<String, Value> {
    pairs
        .into_iter()
        .map(|(k, v)| (String::from(k), v))
        .collect()
}
