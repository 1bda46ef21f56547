//! The key-value service's line protocol (workload `kv`), as the child
//! serves it and a host client speaks it: one command per line, one answer
//! line each.
//!
//! ```text
//! SET key value   -> OK
//! GET key         -> VALUE value | NOT_FOUND
//! DEL key         -> OK | NOT_FOUND
//! QUIT            -> BYE (the service ends)
//! anything else   -> ERR reason
//! ```
//!
//! # Invariants
//! Keys are 1..=[`MAX_KEY`] bytes without spaces, values 0..=[`MAX_VALUE`]
//! bytes (the rest of the line); lines end with `\n` (a `\r` before it is
//! dropped). [`parse`] never panics on any input.

use core::fmt;

/// Workload `kv`: `args[0]` is the child's IPv4 address (big-endian
/// number), `args[1]` the TCP port, `args[2]` the MTU (0: 1500).
pub const KV: &str = "kv";
/// Longest key.
pub const MAX_KEY: usize = 64;
/// Longest value.
pub const MAX_VALUE: usize = 1024;
/// Longest line the service reads.
pub const MAX_LINE: usize = 4 + MAX_KEY + 1 + MAX_VALUE + 2;

/// One command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// Store `value` under `key`.
    Set(&'a [u8], &'a [u8]),
    /// Look `key` up.
    Get(&'a [u8]),
    /// Forget `key`.
    Del(&'a [u8]),
    /// End the session and the service.
    Quit,
}

/// Why a line is not a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KvError {
    /// Not SET, GET, DEL or QUIT.
    UnknownCommand,
    /// A key is missing, too long or holds a space.
    BadKey,
    /// The value is too long.
    BadValue,
    /// Words after a command that takes none.
    Trailing,
}

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KvError::UnknownCommand => "unknown command",
            KvError::BadKey => "bad key",
            KvError::BadValue => "value too long",
            KvError::Trailing => "unexpected words",
        })
    }
}

fn key(k: &[u8]) -> Result<&[u8], KvError> {
    if k.is_empty() || k.len() > MAX_KEY || k.contains(&b' ') {
        return Err(KvError::BadKey);
    }
    Ok(k)
}

/// Parses one line (without its `\n`; a trailing `\r` is ignored).
pub fn parse(line: &[u8]) -> Result<Command<'_>, KvError> {
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let (word, rest) = match line.iter().position(|&b| b == b' ') {
        Some(i) => (&line[..i], Some(&line[i + 1..])),
        None => (line, None),
    };
    match (word, rest) {
        (b"SET", Some(rest)) => {
            let (k, v) = match rest.iter().position(|&b| b == b' ') {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &rest[rest.len()..]),
            };
            if v.len() > MAX_VALUE {
                return Err(KvError::BadValue);
            }
            Ok(Command::Set(key(k)?, v))
        }
        (b"GET", Some(k)) => Ok(Command::Get(key(k)?)),
        (b"DEL", Some(k)) => Ok(Command::Del(key(k)?)),
        (b"SET" | b"GET" | b"DEL", None) => Err(KvError::BadKey),
        (b"QUIT", None) => Ok(Command::Quit),
        (b"QUIT", Some(_)) => Err(KvError::Trailing),
        _ => Err(KvError::UnknownCommand),
    }
}

/// `kv: serving on A:P (MAC M, MTU U)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvServing<'a> {
    /// Address and port.
    pub endpoint: &'a str,
    /// The child's MAC.
    pub mac: &'a str,
    /// Negotiated MTU.
    pub mtu: u16,
}

impl fmt::Display for KvServing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kv: serving on {} (MAC {}, MTU {})",
            self.endpoint, self.mac, self.mtu
        )
    }
}

/// `kv: done after N commands (S sets, G gets, D dels, E errors)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KvDone {
    /// Commands answered.
    pub commands: u64,
    /// SETs.
    pub sets: u64,
    /// GETs.
    pub gets: u64,
    /// DELs.
    pub dels: u64,
    /// Lines answered `ERR`.
    pub errors: u64,
}

impl fmt::Display for KvDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "kv: done after {} commands ({} sets, {} gets, {} dels, {} errors)",
            self.commands, self.sets, self.gets, self.dels, self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_commands() {
        assert_eq!(parse(b"SET a 1 2 3"), Ok(Command::Set(b"a", b"1 2 3")));
        assert_eq!(parse(b"SET a"), Ok(Command::Set(b"a", b"")));
        assert_eq!(parse(b"GET a\r"), Ok(Command::Get(b"a")));
        assert_eq!(parse(b"DEL key-1"), Ok(Command::Del(b"key-1")));
        assert_eq!(parse(b"QUIT"), Ok(Command::Quit));
    }

    #[test]
    fn refuses_bad_lines() {
        assert_eq!(parse(b""), Err(KvError::UnknownCommand));
        assert_eq!(parse(b"get a"), Err(KvError::UnknownCommand));
        assert_eq!(parse(b"GET"), Err(KvError::BadKey));
        assert_eq!(parse(b"GET "), Err(KvError::BadKey));
        assert_eq!(parse(b"GET a b"), Err(KvError::BadKey));
        assert_eq!(parse(b"QUIT now"), Err(KvError::Trailing));
        let long = [b'k'; MAX_KEY + 1];
        let mut line = b"GET ".to_vec();
        line.extend_from_slice(&long);
        assert_eq!(parse(&line), Err(KvError::BadKey));
        let mut set = b"SET k ".to_vec();
        set.extend(core::iter::repeat_n(b'v', MAX_VALUE + 1));
        assert_eq!(parse(&set), Err(KvError::BadValue));
    }
}

/// Workload `netflood`: `args[0]` the index of the child whose MAC it
/// forges, `args[1]` frames of each kind (forged source, own source).
pub const NETFLOOD: &str = "netflood";

/// `netflood: sent F frames with a forged source and O with its own (X failed)`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NetFloodDone {
    /// Frames sent with the forged source (the root answers each).
    pub forged: u64,
    /// Frames sent with its own source.
    pub own: u64,
    /// Sends that could not be made.
    pub failed: u64,
}

impl fmt::Display for NetFloodDone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "netflood: sent {} frames with a forged source and {} with its own ({} failed)",
            self.forged, self.own, self.failed
        )
    }
}

/// Workload `frames`: raw Ethernet frames between children. `args[0]` is
/// the mode ([`FRAMES_PING`] or [`FRAMES_ECHO`]), `args[1]` the peer's
/// child index (ping), `args[2]` the frames (ping: sent; echo: to echo
/// before ending), `args[3]` the frame size in bytes, header included
/// (its MTU is that less 14, at least 1500).
pub const FRAMES: &str = "frames";
/// Send frames to the peer one at a time; check each echo byte for byte.
pub const FRAMES_PING: u64 = 1;
/// Send every frame back to its source.
pub const FRAMES_ECHO: u64 = 2;
/// EtherType of the workload's frames (IEEE local experimental 2).
pub const FRAMES_ETHERTYPE: [u8; 2] = [0x88, 0xb6];

/// Send `args[2]` frames of `args[3]` bytes to the peer back to back.
pub const FRAMES_STREAM: u64 = 3;
/// Count the frames that arrive until `args[2]` came or none comes for a while.
pub const FRAMES_SINK: u64 = 4;

/// `frames bench (WHO): N frames of S bytes in C cycles`: a stream's
/// sender, its receiver (frames received, first to last) or the root's
/// run of the same frames through its switch without VMBus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesBench<'a> {
    /// "sender", "receiver" or "root".
    pub who: &'a str,
    /// Frames.
    pub frames: u64,
    /// Frame size.
    pub size: u64,
    /// Time-stamp cycles.
    pub cycles: u64,
}

impl fmt::Display for FramesBench<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames bench ({}): {} frames of {} bytes in {} cycles",
            self.who, self.frames, self.size, self.cycles
        )
    }
}

/// Frames of the network benchmark (scenario `nbench`).
pub const BENCH_FRAMES: u64 = 20_000;
/// Their size (a full 1500-byte MTU frame).
pub const BENCH_FRAME_SIZE: u64 = 1514;

/// `frames: N of N frames of S bytes echoed intact (MTU U)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesEchoed {
    /// Echoes that matched.
    pub intact: u64,
    /// Frames sent.
    pub sent: u64,
    /// Frame size.
    pub size: u64,
    /// The child's MTU.
    pub mtu: u16,
}

impl fmt::Display for FramesEchoed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames: {} of {} frames of {} bytes echoed intact (MTU {})",
            self.intact, self.sent, self.size, self.mtu
        )
    }
}

/// `frames: echoed N frames, the largest S bytes (MTU U)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FramesServed {
    /// Frames echoed.
    pub echoed: u64,
    /// The largest frame.
    pub largest: u64,
    /// The child's MTU.
    pub mtu: u16,
}

impl fmt::Display for FramesServed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "frames: echoed {} frames, the largest {} bytes (MTU {})",
            self.echoed, self.largest, self.mtu
        )
    }
}
