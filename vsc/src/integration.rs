//! The integration services' client (class `INTEGRATION_CLASS`, messages
//! in `ipc::vmbus::integration`): answers the root's heartbeats and hands
//! a shutdown request to the runtime, which decides and later reports
//! [`IntegrationClient::done`].
//!
//! # Invariants
//! Nothing here waits: [`IntegrationClient::poll`] reads what is there
//! (a bounded batch) and answers; a reply that does not fit a full ring is
//! dropped (the root counts a missed heartbeat, which is what it is). A
//! message the root may not send, or one out of range, is an error the
//! caller treats as a broken channel.

use ipc::vmbus::integration::{IntegrationMessage, MAX_MESSAGE, ShutdownReason};
use ipc::vmbus::memory::RingMemory;
use ipc::vmbus::packet;
use ipc::vmbus::ring::{Consumer, Producer, Recv, RingError, Sent};

/// Messages handled per [`IntegrationClient::poll`].
pub const BATCH: usize = 16;

/// Why an integration operation failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntegrationClientError {
    /// The ring broke (the channel is unusable).
    Ring(RingError),
    /// The root sent something it may not (a child's message, a bad
    /// time limit, bytes that do not decode).
    BadMessage,
    /// `done` without an accepted shutdown request.
    NotShuttingDown,
    /// The ring to the root is full.
    Full,
}

/// The runtime's answer to a shutdown request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShutdownAnswer {
    /// Shut down: `ShutdownAck { accepted: true }` (then [`IntegrationClient::done`]).
    Accept,
    /// Refuse: `ShutdownAck { accepted: false }`.
    Refuse,
    /// Say nothing (the root's time limit decides).
    Ignore,
}

/// The child's end of an open integration channel.
#[derive(Debug)]
pub struct IntegrationClient<M: RingMemory> {
    tx: Producer<M>,
    rx: Consumer<M>,
    heartbeats: u64,
    shutting_down: bool,
    signals: u64,
}

impl<M: RingMemory> IntegrationClient<M> {
    /// A client over the channel's outbound (`tx`) and inbound (`rx`) rings.
    pub fn new(tx: Producer<M>, rx: Consumer<M>) -> Self {
        IntegrationClient {
            tx,
            rx,
            heartbeats: 0,
            shutting_down: false,
            signals: 0,
        }
    }

    /// Heartbeats answered.
    pub fn heartbeats(&self) -> u64 {
        self.heartbeats
    }

    /// Whether a shutdown was accepted.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down
    }

    fn send(
        &mut self,
        message: &IntegrationMessage,
        signal: &mut impl FnMut(),
    ) -> Result<bool, IntegrationClientError> {
        let mut scratch = [0u8; MAX_MESSAGE];
        match self
            .tx
            .send_message(0, 0, message, &mut scratch)
            .map_err(IntegrationClientError::Ring)?
        {
            Sent::Written { signal: s } => {
                if s {
                    self.signals += 1;
                    signal();
                }
                Ok(true)
            }
            Sent::Full => Ok(false),
        }
    }

    /// Reads what the root sent (at most [`BATCH`] messages): answers each
    /// heartbeat with `uptime_ms`; a shutdown request goes to `on_shutdown`
    /// (reason, time limit in ms), whose answer is sent. Calls `signal`
    /// when the root must be signalled. Returns the messages handled.
    pub fn poll(
        &mut self,
        uptime_ms: u64,
        mut on_shutdown: impl FnMut(ShutdownReason, u32) -> ShutdownAnswer,
        mut signal: impl FnMut(),
    ) -> Result<usize, IntegrationClientError> {
        let mut buf = [0u8; 64];
        let mut handled = 0;
        for _ in 0..BATCH {
            let message = match self
                .rx
                .try_recv(&mut buf)
                .map_err(IntegrationClientError::Ring)?
            {
                Recv::Packet(p) => packet::decode::<IntegrationMessage>(&p)
                    .map_err(|_| IntegrationClientError::BadMessage)?,
                Recv::Empty { signal_producer } => {
                    if signal_producer {
                        signal();
                    }
                    break;
                }
            };
            if message.from_child() || message.check().is_err() {
                return Err(IntegrationClientError::BadMessage);
            }
            handled += 1;
            match message {
                IntegrationMessage::Heartbeat { sequence } => {
                    let reply = IntegrationMessage::HeartbeatReply {
                        sequence,
                        uptime_ms,
                    };
                    if self.send(&reply, &mut signal)? {
                        self.heartbeats += 1;
                    }
                }
                IntegrationMessage::ShutdownRequest {
                    reason,
                    deadline_ms,
                } => {
                    let accepted = match on_shutdown(reason, deadline_ms) {
                        ShutdownAnswer::Accept => true,
                        ShutdownAnswer::Refuse => false,
                        ShutdownAnswer::Ignore => continue,
                    };
                    self.shutting_down |= accepted;
                    self.send(&IntegrationMessage::ShutdownAck { accepted }, &mut signal)?;
                }
                // `from_child` refused these above.
                _ => return Err(IntegrationClientError::BadMessage),
            }
        }
        Ok(handled)
    }

    /// Reports the shutdown complete (workload ended, disks flushed); the
    /// child halts next.
    pub fn done(&mut self, mut signal: impl FnMut()) -> Result<(), IntegrationClientError> {
        if !self.shutting_down {
            return Err(IntegrationClientError::NotShuttingDown);
        }
        if self.send(&IntegrationMessage::ShutdownDone, &mut signal)? {
            Ok(())
        } else {
            Err(IntegrationClientError::Full)
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

    fn drain(rx: &mut Consumer<AtomicRingMemory<'_>>) -> Vec<IntegrationMessage> {
        let mut buf = [0u8; 64];
        let mut out = Vec::new();
        while let Ok(Recv::Packet(p)) = rx.try_recv(&mut buf) {
            out.push(packet::decode(&p).unwrap());
        }
        out
    }

    #[test]
    fn answers_heartbeats_and_hands_shutdowns_to_the_runtime() {
        let words: Vec<AtomicU64> = (0..(CONTROL_BYTES + 4096) * 2 / 8)
            .map(|_| AtomicU64::new(0))
            .collect();
        let (a, b) = AtomicRingMemory::new(&words).split_at(CONTROL_BYTES + 4096);
        initialize(&a).unwrap();
        initialize(&b).unwrap();
        let mut client =
            IntegrationClient::new(Producer::new(a).unwrap(), Consumer::new(b).unwrap());
        let mut root_tx = Producer::new(b).unwrap();
        let mut root_rx = Consumer::new(a).unwrap();
        let mut scratch = [0u8; 64];
        let mut send = |m: IntegrationMessage| {
            root_tx.send_message(0, 0, &m, &mut scratch).unwrap();
        };
        let never = |_: ShutdownReason, _: u32| -> ShutdownAnswer { panic!("no request") };
        assert_eq!(client.poll(5, never, || {}), Ok(0));
        assert_eq!(
            client.done(|| {}),
            Err(IntegrationClientError::NotShuttingDown)
        );
        send(IntegrationMessage::Heartbeat { sequence: 1 });
        send(IntegrationMessage::Heartbeat { sequence: 2 });
        assert_eq!(client.poll(42, never, || {}), Ok(2));
        assert_eq!(client.heartbeats(), 2);
        assert_eq!(
            drain(&mut root_rx),
            [
                IntegrationMessage::HeartbeatReply {
                    sequence: 1,
                    uptime_ms: 42
                },
                IntegrationMessage::HeartbeatReply {
                    sequence: 2,
                    uptime_ms: 42
                }
            ]
        );
        // Ignored, refused, accepted.
        let request = IntegrationMessage::ShutdownRequest {
            reason: ShutdownReason::Stop,
            deadline_ms: 3000,
        };
        for (answer, expected) in [
            (ShutdownAnswer::Ignore, None),
            (ShutdownAnswer::Refuse, Some(false)),
            (ShutdownAnswer::Accept, Some(true)),
        ] {
            send(request);
            let mut asked = None;
            client
                .poll(
                    0,
                    |reason, ms| {
                        asked = Some((reason, ms));
                        answer
                    },
                    || {},
                )
                .unwrap();
            assert_eq!(asked, Some((ShutdownReason::Stop, 3000)));
            let acks: Vec<_> = drain(&mut root_rx);
            assert_eq!(
                acks,
                expected
                    .map(|accepted| IntegrationMessage::ShutdownAck { accepted })
                    .into_iter()
                    .collect::<Vec<_>>()
            );
        }
        assert!(client.shutting_down());
        client.done(|| {}).unwrap();
        assert_eq!(drain(&mut root_rx), [IntegrationMessage::ShutdownDone]);
        // The root may not send a child's message, nor a bad time limit.
        for bad in [
            IntegrationMessage::ShutdownDone,
            IntegrationMessage::ShutdownRequest {
                reason: ShutdownReason::Stop,
                deadline_ms: 0,
            },
        ] {
            send(bad);
            assert_eq!(
                client.poll(0, never, || {}),
                Err(IntegrationClientError::BadMessage)
            );
        }
    }
}
