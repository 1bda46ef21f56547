//! The management API's server (`docs/management.md`, "HTTP"): the root's
//! TCP/IP stack (`smoltcp`) on the management NIC, listening on
//! [`API_PORT`] with [`CONNECTIONS`] sockets, each carrying one
//! [`Connection`] whose requests a [`Handler`] answers.
//!
//! # Invariants
//! - At most [`CONNECTIONS`] clients at once; a socket whose connection is
//!   finished is closed (or reset if its output could not be sent) and
//!   listens again, so a client that misbehaves holds one socket for a
//!   bounded time and never the others.
//! - A closed connection lingers at most [`LINGER_NS`] waiting for the
//!   client's side of the close before its socket is reset.
//! - The server never blocks: each poll moves what the interface and the
//!   connections have and says when it next has something to do.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use smoltcp::iface::{Interface, PollResult, SocketHandle, SocketSet};
use smoltcp::phy::Device;
use smoltcp::socket::tcp;
use smoltcp::time::Duration;

use super::conn::Connection;
use super::http::Handler;
use super::{Addressing, instant, interface};
use crate::node::Poll;

/// The management API's TCP port.
pub const API_PORT: u16 = 7100;
/// Clients served at once.
pub const CONNECTIONS: usize = 8;
/// How long a closed connection waits for the client to close its side
/// before its socket is reset.
pub const LINGER_NS: u64 = 5_000_000_000;
/// Closed connections kept waiting for their clients' side to close
/// (each in its own socket, out of the serving slots: a closing
/// connection never keeps a new client out); past this many the oldest
/// is reset.
pub const LINGERING: usize = 32;
/// Each socket's receive buffer.
const RX_BUFFER: usize = 8 * 1024;
/// Each socket's transmit buffer.
const TX_BUFFER: usize = 16 * 1024;
/// smoltcp resets a connection whose peer sent nothing for this long (not
/// even an acknowledgement of what was sent, such as an event stream's
/// keep-alive comments); longer than
/// [`IDLE_TIMEOUT_NS`](super::conn::IDLE_TIMEOUT_NS), which
/// closes an idle connection gracefully first.
const PEER_TIMEOUT: Duration = Duration::from_secs(90);

/// One socket and its client.
struct Slot {
    handle: SocketHandle,
    conn: Option<Connection>,
    /// When the socket was closed after its connection finished.
    closed_at: Option<u64>,
}

/// The management API on the management NIC `D`.
pub struct ApiServer<D: Device> {
    nic: D,
    iface: Interface,
    sockets: SocketSet<'static>,
    slots: Vec<Slot>,
    /// Closed connections' sockets and when each closed, oldest first.
    lingering: VecDeque<(SocketHandle, u64)>,
    accepted: u64,
}

/// A socket listening on [`API_PORT`].
fn listening_socket() -> Result<tcp::Socket<'static>, String> {
    let mut socket = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; RX_BUFFER]),
        tcp::SocketBuffer::new(vec![0; TX_BUFFER]),
    );
    socket.set_nagle_enabled(false);
    socket.set_timeout(Some(PEER_TIMEOUT));
    socket
        .listen(API_PORT)
        .map_err(|e| alloc::format!("listen: {e:?}"))?;
    Ok(socket)
}

impl<D: Device> ApiServer<D> {
    /// The stack on `nic` at `at`, listening on [`API_PORT`]; `now_ns` is
    /// the node's clock.
    pub fn new(mut nic: D, at: Addressing, now_ns: u64) -> Result<Self, String> {
        let iface = interface(&mut nic, at, now_ns)?;
        let mut sockets = SocketSet::new(vec![]);
        let mut slots = Vec::with_capacity(CONNECTIONS);
        for _ in 0..CONNECTIONS {
            slots.push(Slot {
                handle: sockets.add(listening_socket()?),
                conn: None,
                closed_at: None,
            });
        }
        Ok(ApiServer {
            nic,
            iface,
            sockets,
            slots,
            lingering: VecDeque::new(),
            accepted: 0,
        })
    }

    /// The NIC (to take its interrupts).
    pub fn nic(&mut self) -> &mut D {
        &mut self.nic
    }

    /// Connections accepted since the server started.
    pub fn accepted(&self) -> u64 {
        self.accepted
    }

    /// Connections open now, closed ones whose answer is not yet
    /// acknowledged included.
    pub fn open(&self) -> usize {
        let unsent = self
            .lingering
            .iter()
            .filter(|&&(handle, _)| self.sockets.get::<tcp::Socket<'_>>(handle).send_queue() > 0)
            .count();
        self.slots.iter().filter(|s| s.conn.is_some()).count() + unsent
    }

    /// Moves the stack and every connection: `Busy` if bytes moved (poll
    /// again), else `Idle` until smoltcp's next timer or a connection's
    /// next deadline.
    pub fn poll(&mut self, now_ns: u64, handler: &mut dyn Handler) -> Poll {
        let mut busy = self
            .iface
            .poll(instant(now_ns), &mut self.nic, &mut self.sockets)
            != PollResult::None;
        let mut deadline: Option<u64> = None;
        for slot in &mut self.slots {
            let socket = self.sockets.get_mut::<tcp::Socket<'_>>(slot.handle);
            busy |= slot.step(socket, now_ns, handler, &mut self.accepted);
            if let Some(t) = slot.deadline() {
                deadline = Some(deadline.map_or(t, |d| d.min(t)));
            }
        }
        busy |= self.move_out_closed();
        if let Some(t) = self.reap_lingering(now_ns) {
            deadline = Some(deadline.map_or(t, |d| d.min(t)));
        }
        if busy {
            return Poll::Busy;
        }
        let stack = match self.iface.poll_delay(instant(now_ns), &self.sockets) {
            Some(delay) if delay.total_micros() == 0 => return Poll::Busy,
            Some(delay) => Some(now_ns.saturating_add(delay.total_micros() * 1000)),
            None => None,
        };
        match (stack, deadline) {
            (Some(a), Some(b)) => Poll::Idle(Some(a.min(b))),
            (a, b) => Poll::Idle(a.or(b)),
        }
    }
}

impl<D: Device> ApiServer<D> {
    /// Moves every slot whose connection closed out to the lingering
    /// sockets and gives the slot a fresh listening socket; true if any
    /// moved.
    fn move_out_closed(&mut self) -> bool {
        let mut moved = false;
        for slot in &mut self.slots {
            let Some(closed_at) = slot.closed_at else {
                continue;
            };
            let Ok(fresh) = listening_socket() else {
                continue;
            };
            let old = core::mem::replace(&mut slot.handle, self.sockets.add(fresh));
            slot.conn = None;
            slot.closed_at = None;
            self.lingering.push_back((old, closed_at));
            moved = true;
        }
        while self.lingering.len() > LINGERING {
            if let Some((handle, _)) = self.lingering.pop_front() {
                self.sockets.get_mut::<tcp::Socket<'_>>(handle).abort();
                self.sockets.remove(handle);
            }
        }
        moved
    }

    /// Lets go of lingering sockets whose clients closed (or that waited
    /// [`LINGER_NS`]); the next such deadline.
    fn reap_lingering(&mut self, now_ns: u64) -> Option<u64> {
        let sockets = &mut self.sockets;
        self.lingering.retain(|&(handle, closed_at)| {
            let socket = sockets.get_mut::<tcp::Socket<'_>>(handle);
            let done = !socket.is_open() || now_ns >= closed_at.saturating_add(LINGER_NS);
            if done {
                socket.abort();
                sockets.remove(handle);
            }
            !done
        });
        self.lingering
            .iter()
            .map(|&(_, at)| at.saturating_add(LINGER_NS))
            .min()
    }
}

impl Slot {
    /// Moves this socket's bytes; true if anything moved.
    fn step(
        &mut self,
        socket: &mut tcp::Socket<'_>,
        now_ns: u64,
        handler: &mut dyn Handler,
        accepted: &mut u64,
    ) -> bool {
        let state = socket.state();
        if !socket.is_open() || (state == tcp::State::Listen && self.conn.is_some()) {
            // Closed, reset by the client, timed out or back from TIME-WAIT.
            let was_in_use = state != tcp::State::Listen || self.conn.is_some();
            if state != tcp::State::Listen {
                socket.abort();
                let _ = socket.listen(API_PORT);
            }
            self.conn = None;
            self.closed_at = None;
            return was_in_use;
        }
        if let Some(at) = self.closed_at {
            if now_ns >= at.saturating_add(LINGER_NS) {
                socket.abort();
                return true;
            }
            return false;
        }
        if self.conn.is_none() && matches!(state, tcp::State::Established | tcp::State::CloseWait) {
            self.conn = Some(Connection::new(now_ns));
            *accepted += 1;
        }
        let Some(conn) = self.conn.as_mut() else {
            return false;
        };
        let mut moved = false;
        // Twice: the receive buffer is a ring, its bytes in up to two pieces.
        for _ in 0..2 {
            let took = socket
                .recv(|bytes| {
                    let n = conn.receive(bytes, now_ns, handler);
                    (n, n)
                })
                .unwrap_or(0);
            moved |= took > 0;
            if took == 0 {
                break;
            }
        }
        if !socket.may_recv() {
            conn.end_of_input();
        }
        conn.poll(now_ns, handler);
        for _ in 0..2 {
            let out = conn.outgoing();
            if out.is_empty() {
                break;
            }
            match socket.send_slice(out) {
                Ok(n) if n > 0 => {
                    conn.sent(n);
                    moved = true;
                }
                _ => break,
            }
        }
        if conn.aborted() {
            // Reset: the next poll sends the RST, then listens again.
            socket.abort();
            self.conn = None;
            return true;
        }
        if conn.finished() {
            socket.close();
            self.closed_at = Some(now_ns);
            return true;
        }
        moved
    }

    /// When this slot next has something to do by the clock.
    fn deadline(&self) -> Option<u64> {
        match (self.closed_at, &self.conn) {
            (Some(at), _) => Some(at.saturating_add(LINGER_NS)),
            (None, Some(conn)) => conn.next_deadline(),
            (None, None) => None,
        }
    }
}

#[cfg(test)]
mod tests;
