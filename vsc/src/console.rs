//! The console client: the child's log lines go to the root as
//! [`ConsoleMessage::Line`] packets; input arrives as
//! [`ConsoleMessage::Input`]. See `docs/devices/console.md`.
//!
//! # Invariants
//! A line is never lost while the channel is open: a full ring is waited
//! out (the caller's `wait`), and a ring error is returned (the caller then
//! falls back to its debug console). Lines are cut at
//! [`MAX_LINE`] bytes on a character boundary.

use ipc::vmbus::console::{ConsoleMessage, MAX_LINE};
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet::{self, Bytes};
use ipc::vmbus::ring::{Consumer, Producer, Recv, RingError, Sent};

/// Why a console operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsoleClientError {
    /// The ring broke (the channel is unusable).
    Ring(RingError),
    /// The root sent something that is not console input.
    BadMessage,
    /// The ring stayed full for longer than the caller's patience.
    Timeout,
}

/// The child's end of an open console channel.
#[derive(Debug)]
pub struct ConsoleClient<M: RingMemory> {
    tx: Producer<M>,
    rx: Consumer<M>,
    lines: u64,
    signals: u64,
}

/// The longest prefix of `bytes` that is valid UTF-8, at most [`MAX_LINE`] bytes.
pub fn line_text(bytes: &[u8]) -> &str {
    let bytes = &bytes[..bytes.len().min(MAX_LINE)];
    match core::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or(""),
    }
}

impl<M: RingMemory> ConsoleClient<M> {
    /// A client over the channel's outbound (`tx`) and inbound (`rx`) rings.
    pub fn new(tx: Producer<M>, rx: Consumer<M>) -> Self {
        ConsoleClient {
            tx,
            rx,
            lines: 0,
            signals: 0,
        }
    }

    /// Lines sent.
    pub fn lines(&self) -> u64 {
        self.lines
    }

    /// Signals sent to the root.
    pub fn signals(&self) -> u64 {
        self.signals
    }

    /// Sends one line (`bytes`, cut to valid UTF-8 of at most
    /// [`MAX_LINE`] bytes, newlines replaced). Calls `signal` when the root
    /// must be signalled and `wait` while the ring is full, at most
    /// `patience` times.
    pub fn write_line(
        &mut self,
        bytes: &[u8],
        mut signal: impl FnMut(),
        mut wait: impl FnMut(),
        mut patience: u64,
    ) -> Result<(), ConsoleClientError> {
        let mut clean = [0u8; MAX_LINE];
        let n = bytes.len().min(MAX_LINE);
        for (d, &s) in clean.iter_mut().zip(&bytes[..n]) {
            *d = if s == b'\n' { b' ' } else { s };
        }
        let text = line_text(&clean[..n]);
        let message = ConsoleMessage::Line { text };
        let mut scratch = [0u8; MAX_LINE + 16];
        loop {
            match self
                .tx
                .send_message(0, self.lines, &message, &mut scratch)
                .map_err(ConsoleClientError::Ring)?
            {
                Sent::Written { signal: s } => {
                    self.lines += 1;
                    if s {
                        self.signals += 1;
                        signal();
                    }
                    return Ok(());
                }
                Sent::Full => {
                    patience = patience.checked_sub(1).ok_or(ConsoleClientError::Timeout)?;
                    wait();
                }
            }
        }
    }

    /// Reads pending input into `out`; returns the bytes copied (0 if none).
    /// `signal` is called if the root waits for space to send more.
    pub fn read_input(
        &mut self,
        out: &mut [u8],
        mut signal: impl FnMut(),
    ) -> Result<usize, ConsoleClientError> {
        let mut buf = [0u8; 512];
        match self
            .rx
            .try_recv(&mut buf)
            .map_err(ConsoleClientError::Ring)?
        {
            Recv::Packet(p) => match packet::decode::<ConsoleMessage<'_>>(&p) {
                Ok(
                    m @ ConsoleMessage::Input {
                        bytes: Bytes(bytes),
                    },
                ) if m.check().is_ok() => {
                    let n = bytes.len().min(out.len());
                    out[..n].copy_from_slice(&bytes[..n]);
                    Ok(n)
                }
                _ => Err(ConsoleClientError::BadMessage),
            },
            Recv::Empty { signal_producer } => {
                if signal_producer {
                    signal();
                }
                Ok(0)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use core::sync::atomic::AtomicU64;
    use ipc::vmbus::memory::AtomicRingMemory;
    use ipc::vmbus::ring::{CONTROL_BYTES, initialize};
    use std::vec::Vec;

    #[test]
    fn lines_arrive_cut_and_clean() {
        let words: Vec<AtomicU64> = (0..(CONTROL_BYTES + 4096) * 2 / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let (a, b) = AtomicRingMemory::new(&words).split_at(CONTROL_BYTES + 4096);
        initialize(&a).unwrap();
        initialize(&b).unwrap();
        let mut client = ConsoleClient::new(Producer::new(a).unwrap(), Consumer::new(b).unwrap());
        let mut signals = 0;
        client
            .write_line(b"hello", || signals += 1, || panic!("full"), 0)
            .unwrap();
        client
            .write_line(b"a\nb", || signals += 1, || panic!("full"), 0)
            .unwrap();
        let long = [b'x'; 300];
        client
            .write_line(&long, || signals += 1, || panic!("full"), 0)
            .unwrap();
        // "\xc3\xa9" is one character: a cut in the middle drops it whole.
        client
            .write_line(b"caf\xc3", || signals += 1, || panic!("full"), 0)
            .unwrap();
        assert_eq!(signals, 1);
        assert_eq!((client.lines(), client.signals()), (4, 1));
        let mut rx = Consumer::new(a).unwrap();
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        while let Ok(Recv::Packet(p)) = rx.try_recv(&mut buf) {
            match packet::decode::<ConsoleMessage<'_>>(&p).unwrap() {
                ConsoleMessage::Line { text } => got.push(std::string::String::from(text)),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(got[0], "hello");
        assert_eq!(got[1], "a b");
        assert_eq!(got[2].len(), MAX_LINE);
        assert_eq!(got[3], "caf");
        // Input from the root.
        let mut tx = Producer::new(b).unwrap();
        let mut scratch = [0u8; 64];
        tx.send_message(
            0,
            0,
            &ConsoleMessage::Input {
                bytes: Bytes(b"ls\n"),
            },
            &mut scratch,
        )
        .unwrap();
        let mut out = [0u8; 8];
        assert_eq!(client.read_input(&mut out, || {}), Ok(3));
        assert_eq!(&out[..3], b"ls\n");
        assert_eq!(client.read_input(&mut out, || {}), Ok(0));
        tx.send_message(0, 0, &ConsoleMessage::Line { text: "no" }, &mut scratch)
            .unwrap();
        assert_eq!(
            client.read_input(&mut out, || {}),
            Err(ConsoleClientError::BadMessage)
        );
    }
}
