//! The node's words on the kernel command line: `node.poll` (the loop
//! polls instead of sleeping: the benchmark's peer), `node.run-for=S`
//! (stop after S seconds: every VM stopped gracefully first),
//! `node.stop-timeout=S` (the time a guest has to shut down). A word that
//! starts with `node.` and is not one of these, or has a value that is
//! not a number of seconds, is reported and ignored.

use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;

use super::{Mode, Poll, Service};

/// Longest `node.run-for` and `node.stop-timeout` (a year).
pub const MAX_SECONDS: u64 = 365 * 24 * 3600;

/// What the command line asks of the node.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Poll instead of sleeping.
    pub poll: bool,
    /// Stop after this many seconds.
    pub run_for_s: Option<u64>,
    /// The time a guest has to shut down, in seconds.
    pub stop_timeout_s: Option<u64>,
    /// Words that were not understood, with why.
    pub ignored: Vec<String>,
}

impl Options {
    /// Reads the node's words of `cmdline`.
    pub fn parse(cmdline: &str) -> Options {
        let mut o = Options::default();
        for word in cmdline.split_whitespace() {
            let Some(rest) = word.strip_prefix("node.") else {
                continue;
            };
            let (key, value) = match rest.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (rest, None),
            };
            let seconds = || {
                value
                    .and_then(|v| v.parse::<u64>().ok())
                    .filter(|&s| s <= MAX_SECONDS)
            };
            let slot = match (key, value) {
                ("poll", None) => {
                    o.poll = true;
                    continue;
                }
                ("run-for", Some(_)) => &mut o.run_for_s,
                ("stop-timeout", Some(_)) => &mut o.stop_timeout_s,
                _ => {
                    o.ignored.push(format!("{word}: not a node option"));
                    continue;
                }
            };
            match seconds() {
                Some(s) => *slot = Some(s),
                None => o.ignored.push(format!(
                    "{word}: not a number of seconds up to {MAX_SECONDS}"
                )),
            }
        }
        o
    }

    /// The line the node prints when its loop starts.
    pub fn banner(&self) -> String {
        let mode = match self.mode() {
            Mode::Sleep => "sleep",
            Mode::Poll => "poll",
        };
        let until = match self.run_for_s {
            Some(s) => format!("stopping after {s} s"),
            None => String::from("running until told to power off"),
        };
        format!("{} (mode {mode}, {until})", ipc::markers::NODE_UP)
    }

    /// When the node stops, for a loop started at `start_ns`.
    pub fn stop_at(&self, start_ns: u64) -> Option<u64> {
        self.run_for_s
            .map(|s| start_ns.saturating_add(s.saturating_mul(1_000_000_000)))
    }

    /// The loop's mode.
    pub fn mode(&self) -> Mode {
        if self.poll { Mode::Poll } else { Mode::Sleep }
    }
}

/// Stops the node at a deadline (when no VM service does it).
pub struct StopAt {
    /// The deadline, if any.
    pub deadline: Option<u64>,
}

impl Service for StopAt {
    fn name(&self) -> &'static str {
        "stop"
    }
    fn poll(&mut self, now: u64, _events: u64) -> Poll {
        match self.deadline {
            Some(d) if now >= d => Poll::Stop,
            d => Poll::Idle(d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_node_words_are_read_and_the_rest_left_alone() {
        let o = Options::parse("console=com1 node.run-for=30 node.poll node.stop-timeout=5 x=1");
        assert_eq!(
            o,
            Options {
                poll: true,
                run_for_s: Some(30),
                stop_timeout_s: Some(5),
                ignored: Vec::new()
            }
        );
        assert_eq!(o.mode(), Mode::Poll);
        assert_eq!(Options::parse("").mode(), Mode::Sleep);
    }

    #[test]
    fn bad_node_words_are_reported_and_ignored() {
        let o = Options::parse(
            "node.run-for=soon node.stop-timeout=-1 node.fly node.poll=1 node.run-for=99999999999",
        );
        assert_eq!(o.run_for_s, None);
        assert_eq!(o.stop_timeout_s, None);
        assert!(!o.poll);
        assert_eq!(o.ignored.len(), 5, "{:?}", o.ignored);
        assert!(o.ignored[0].starts_with("node.run-for=soon: not a number"));
        assert!(o.ignored[2].starts_with("node.fly: not a node option"));
    }

    #[test]
    fn the_banner_says_the_mode_and_the_end() {
        let o = Options::parse("node.poll node.run-for=30");
        assert_eq!(
            o.banner(),
            format!("{} (mode poll, stopping after 30 s)", ipc::markers::NODE_UP)
        );
        assert_eq!(o.stop_at(5), Some(30_000_000_005));
        let o = Options::parse("");
        assert_eq!(
            o.banner(),
            format!(
                "{} (mode sleep, running until told to power off)",
                ipc::markers::NODE_UP
            )
        );
        assert_eq!(o.stop_at(5), None);
    }

    #[test]
    fn stop_at_stops_at_its_deadline_only() {
        let mut s = StopAt { deadline: Some(10) };
        assert_eq!(s.poll(9, 0), Poll::Idle(Some(10)));
        assert_eq!(s.poll(10, 0), Poll::Stop);
        assert_eq!(StopAt { deadline: None }.poll(5, 0), Poll::Idle(None));
    }
}
