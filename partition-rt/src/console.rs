//! The partition console: text goes to the microkernel with `DebugWrite`
//! (at most [`DEBUG_WRITE_MAX`] bytes a call), which prints a line on the
//! serial console at each `'\n'` as `[<partition name>] <text>`.
//!
//! # Invariants
//! - A line is formatted completely in a [`LineBuffer`] on the caller's
//!   stack first, then sent whole while holding the console lock with
//!   interrupts disabled: lines of different vCPUs never interleave, and an
//!   interrupt handler that prints cannot deadlock against its own vCPU.
//! - [`Console`] retries a chunk the microkernel refused with
//!   `RateLimited`, yielding in between, so text is delayed, never lost;
//!   [`try_line`] is the one path that gives up instead (for tests of the
//!   rate limit).
//! - Lines longer than [`LINE_MAX`] bytes are cut and end in `...`.
//! - Once a line sink is installed ([`set_line_sink`], e.g. the child's
//!   VMBus console), whole lines go there first; a line the sink refuses
//!   (its channel is down) falls back to `DebugWrite`.

use core::fmt;

use ipc::hypercall::{Call, DEBUG_WRITE_MAX, Status};

use crate::arch;
use crate::hypercall::hypercall;
use crate::sync::SpinLock;

/// Longest line sent (longer ones are cut): the microkernel's console line
/// buffer holds 160 bytes and breaks longer lines in two.
pub const LINE_MAX: usize = 160;

static LOCK: SpinLock<()> = SpinLock::new(());

/// Where whole lines go before `DebugWrite`: returns `true` if it took the line.
pub type LineSink = fn(&[u8]) -> bool;

static SINK: SpinLock<Option<LineSink>> = SpinLock::new(None);

/// Installs (or with `None` removes) the line sink.
pub fn set_line_sink(sink: Option<LineSink>) {
    arch::without_interrupts(|| *SINK.lock() = sink);
}

/// One line of text being formatted.
pub struct LineBuffer {
    bytes: [u8; LINE_MAX],
    len: usize,
    truncated: bool,
}

impl Default for LineBuffer {
    fn default() -> Self {
        Self::new()
    }
}

impl LineBuffer {
    /// An empty line.
    pub const fn new() -> Self {
        LineBuffer {
            bytes: [0; LINE_MAX],
            len: 0,
            truncated: false,
        }
    }

    /// Appends `s`, cutting at [`LINE_MAX`] (the cut line ends in `...`).
    pub fn push_str(&mut self, s: &str) {
        let room = LINE_MAX - self.len;
        if s.len() > room {
            self.truncated = true;
        }
        let take = s.len().min(room);
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        if self.truncated {
            self.bytes[LINE_MAX - 3..].copy_from_slice(b"...");
        }
    }

    /// The text so far.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Whether nothing was written since the last clear.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Empties the line.
    pub fn clear(&mut self) {
        self.len = 0;
        self.truncated = false;
    }
}

impl fmt::Write for LineBuffer {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        self.push_str(s);
        Ok(())
    }
}

/// The `DebugWrite` calls that send `line` followed by `'\n'`.
pub fn debug_write_calls(line: &[u8]) -> impl Iterator<Item = Call> + '_ {
    let total = line.len() + 1;
    (0..total.div_ceil(DEBUG_WRITE_MAX)).map(move |chunk| {
        let start = chunk * DEBUG_WRITE_MAX;
        let end = (start + DEBUG_WRITE_MAX).min(total);
        let mut bytes = [0u8; DEBUG_WRITE_MAX];
        for (i, b) in bytes[..end - start].iter_mut().enumerate() {
            *b = line.get(start + i).copied().unwrap_or(b'\n');
        }
        Call::DebugWrite {
            len: (end - start) as u8,
            bytes,
        }
    })
}

/// Sends `line` and a newline through `send`. A `RateLimited` answer is
/// retried after `wait()` when `retry` is set; any other error ends the line.
pub fn send_line(
    line: &[u8],
    retry: bool,
    mut send: impl FnMut(&Call) -> Result<(), Status>,
    mut wait: impl FnMut(),
) -> Result<(), Status> {
    for call in debug_write_calls(line) {
        loop {
            match send(&call) {
                Ok(()) => break,
                Err(Status::RateLimited) if retry => wait(),
                Err(e) => return Err(e),
            }
        }
    }
    Ok(())
}

fn debug_write(call: &Call) -> Result<(), Status> {
    hypercall(call).map(|_| ())
}

fn yield_now() {
    let _ = hypercall(&Call::Yield);
}

/// Sends one whole line under the console lock, interrupts disabled
/// (through the line sink first when `retry` is set; `try_line` tests the
/// `DebugWrite` path itself).
fn emit(line: &[u8], retry: bool) -> Result<(), Status> {
    arch::without_interrupts(|| {
        let _guard = LOCK.lock();
        let sink = *SINK.lock();
        if retry && sink.is_some_and(|sink| sink(line)) {
            return Ok(());
        }
        send_line(line, retry, debug_write, yield_now)
    })
}

/// A line-buffered console writer: text is kept until `'\n'` (or until the
/// writer is flushed or dropped) and then sent as one line.
pub struct Console {
    line: LineBuffer,
}

impl Default for Console {
    fn default() -> Self {
        Self::new()
    }
}

impl Console {
    /// A writer with an empty line.
    pub const fn new() -> Self {
        Console {
            line: LineBuffer::new(),
        }
    }

    /// Sends what is buffered as a line, if anything is.
    pub fn flush(&mut self) -> Result<(), Status> {
        if self.line.is_empty() {
            return Ok(());
        }
        let result = emit(self.line.as_bytes(), true);
        self.line.clear();
        result
    }
}

impl fmt::Write for Console {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut pieces = s.split('\n');
        if let Some(first) = pieces.next() {
            self.line.push_str(first);
        }
        for piece in pieces {
            // Each further piece follows a newline: the line so far is complete.
            let result = emit(self.line.as_bytes(), true);
            self.line.clear();
            result.map_err(|_| fmt::Error)?;
            self.line.push_str(piece);
        }
        Ok(())
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.flush();
    }
}

/// Prints `args` as one line (the engine of [`println!`](crate::println)).
pub fn print_line(args: fmt::Arguments<'_>) {
    let mut console = Console::new();
    let _ = fmt::Write::write_fmt(&mut console, args);
    let _ = console.flush();
}

/// Sends one line through `DebugWrite` (never the line sink) without
/// retrying: `Err(RateLimited)` if the microkernel refused a chunk for the
/// rate limit (the line may then be partly sent).
pub fn try_line(args: fmt::Arguments<'_>) -> Result<(), Status> {
    let mut line = LineBuffer::new();
    let _ = fmt::Write::write_fmt(&mut line, args);
    emit(line.as_bytes(), false)
}

/// Prints a line from a context that may not be able to wait for the
/// console lock (an exception handler): waits a bounded time for it, then
/// sends anyway.
pub fn emergency_line(args: fmt::Arguments<'_>) {
    let mut line = LineBuffer::new();
    let _ = fmt::Write::write_fmt(&mut line, args);
    arch::without_interrupts(|| {
        let mut guard = LOCK.try_lock();
        let mut spins = 0u32;
        while guard.is_none() && spins < 10_000_000 {
            arch::pause();
            spins += 1;
            guard = LOCK.try_lock();
        }
        let _ = send_line(line.as_bytes(), true, debug_write, yield_now);
        drop(guard);
    });
}

/// Prints a line on the partition console (through `DebugWrite`).
#[macro_export]
macro_rules! println {
    () => {
        $crate::console::print_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::console::print_line(format_args!($($arg)*))
    };
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::fmt::Write;
    use std::vec::Vec;

    fn text_of(calls: &[Call]) -> Vec<u8> {
        let mut out = Vec::new();
        for call in calls {
            match call {
                Call::DebugWrite { len, bytes } => out.extend_from_slice(&bytes[..*len as usize]),
                other => panic!("unexpected {other:?}"),
            }
        }
        out
    }

    #[test]
    fn lines_are_chunked_with_a_final_newline() {
        for len in [0usize, 1, 39, 40, 41, 79, 80, 81, 159] {
            let line: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
            let calls: Vec<Call> = debug_write_calls(&line).collect();
            assert_eq!(calls.len(), (len + 1).div_ceil(DEBUG_WRITE_MAX));
            let mut expected = line.clone();
            expected.push(b'\n');
            assert_eq!(text_of(&calls), expected);
            for call in &calls {
                // Each call encodes to registers the kernel decodes back.
                assert_eq!(Call::decode(&call.encode()), Ok(*call));
            }
        }
    }

    #[test]
    fn rate_limited_chunks_are_retried_or_reported() {
        let line = [b'x'; 100];
        let mut answers = [
            Ok(()),
            Err(Status::RateLimited),
            Err(Status::RateLimited),
            Ok(()),
            Ok(()),
        ]
        .into_iter();
        let mut sent = Vec::new();
        let mut waits = 0;
        let result = send_line(
            &line,
            true,
            |call| {
                let answer = answers.next().unwrap();
                if answer.is_ok() {
                    sent.push(*call);
                }
                answer
            },
            || waits += 1,
        );
        assert_eq!(result, Ok(()));
        assert_eq!(waits, 2);
        assert_eq!(text_of(&sent).len(), 101);

        let result = send_line(
            &line,
            false,
            |_| Err(Status::RateLimited),
            || panic!("no wait"),
        );
        assert_eq!(result, Err(Status::RateLimited));
        let result = send_line(&line, true, |_| Err(Status::BadBuffer), || {});
        assert_eq!(result, Err(Status::BadBuffer));
    }

    #[test]
    fn long_lines_are_cut() {
        let mut line = LineBuffer::new();
        for _ in 0..20 {
            write!(line, "0123456789").unwrap();
        }
        assert_eq!(line.as_bytes().len(), LINE_MAX);
        assert!(line.as_bytes().ends_with(b"3456..."));
        line.clear();
        assert!(line.is_empty());
        write!(line, "vcpu {} progress {}", 1, 2).unwrap();
        assert_eq!(line.as_bytes(), b"vcpu 1 progress 2");
    }
}
