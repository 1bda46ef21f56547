//! The membership state machine of one node.
//!
//! A [`Node`] has no clock and no I/O: the caller feeds it time
//! ([`Node::tick`]), peer messages ([`Node::receive`]) and the results of
//! its disk operations ([`Node::disk_result`]), and carries out the
//! [`Action`]s it returns. The shared disk holds a *view block* (view
//! number, members, owner) changed only by compare-and-set, and one lease
//! block per node; the disk must apply operations one at a time, in order.

use alloc::vec::Vec;

/// A node id, `0..n`.
pub type NodeId = usize;

/// A set of node ids (at most 64 nodes).
pub type NodeSet = u64;

/// Number of nodes in a set.
pub fn count(set: NodeSet) -> usize {
    set.count_ones() as usize
}

/// Whether `id` is in `set`.
pub fn contains(set: NodeSet, id: NodeId) -> bool {
    set & (1u64 << id) != 0
}

/// Cluster timing and quorum configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Number of nodes (ids `0..nodes`), 1 to 64.
    pub nodes: usize,
    /// Heartbeat interval (Windows: 1 s).
    pub heartbeat_ns: u64,
    /// Missed heartbeats before a peer counts as unreachable (Windows: 5).
    pub threshold: u64,
    /// Lease duration; must exceed `threshold * heartbeat_ns`.
    pub lease_ns: u64,
    /// A disk witness (one extra vote, won by compare-and-set on the view block).
    pub witness: bool,
}

/// Why a [`Config`] is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `nodes` is 0 or more than 64.
    NodeCount,
    /// `heartbeat_ns` or `threshold` is 0.
    ZeroTiming,
    /// The lease does not exceed `threshold * heartbeat_ns`.
    LeaseTooShort,
}

impl Config {
    /// The Windows failover-cluster defaults (1 s, 5 missed) with a 10 s lease.
    pub fn windows_defaults(nodes: usize, witness: bool) -> Self {
        Config {
            nodes,
            heartbeat_ns: 1_000_000_000,
            threshold: 5,
            lease_ns: 10_000_000_000,
            witness,
        }
    }

    /// Checks the configuration.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.nodes == 0 || self.nodes > 64 {
            return Err(ConfigError::NodeCount);
        }
        if self.heartbeat_ns == 0 || self.threshold == 0 {
            return Err(ConfigError::ZeroTiming);
        }
        if self.lease_ns <= self.threshold.saturating_mul(self.heartbeat_ns) {
            return Err(ConfigError::LeaseTooShort);
        }
        Ok(())
    }

    /// Time after the last heartbeat at which a peer counts as unreachable.
    pub fn silence_ns(&self) -> u64 {
        self.threshold * self.heartbeat_ns
    }

    /// Whether `members` hold a strict majority of the configured votes.
    /// With a witness, an exact half also counts: the witness vote goes to
    /// the side that won the view block's compare-and-set.
    pub fn is_quorum(&self, members: NodeSet) -> bool {
        let m = count(members);
        2 * m > self.nodes || (self.witness && 2 * m == self.nodes)
    }

    /// All configured nodes.
    pub fn all(&self) -> NodeSet {
        if self.nodes == 64 {
            u64::MAX
        } else {
            (1u64 << self.nodes) - 1
        }
    }
}

/// A message between nodes (sent on the cluster network).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Message {
    /// A heartbeat.
    Heartbeat {
        /// The sender's incarnation (bumped by every restart).
        incarnation: u64,
        /// The view the sender knows.
        view: u64,
        /// The peers the sender heard recently (itself included).
        heard: NodeSet,
        /// The sender is administratively paused (takes no new VMs).
        paused: bool,
    },
}

/// The view block and the leases as the disk returned them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskState {
    /// View number (epoch), increased by every membership change.
    pub view: u64,
    /// Members of the view.
    pub members: NodeSet,
    /// The node whose compare-and-set installed the view (the witness holder).
    pub owner: Option<NodeId>,
    /// Each node's lease expiry (virtual ns), indexed by node id.
    pub lease_expiry: Vec<u64>,
}

/// An operation on the shared disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskOp {
    /// Read the view block and every lease.
    Read,
    /// Renew the node's lease to `expiry`, only if it is a member of the
    /// current view (checked by the disk, atomically).
    Renew {
        /// Incarnation of the writer.
        incarnation: u64,
        /// New expiry.
        expiry: u64,
    },
    /// Compare-and-set the view block: from `expect_view` to
    /// `expect_view + 1` with `members`, owner the proposer.
    Propose {
        /// The view the proposer expects on the disk.
        expect_view: u64,
        /// The new members.
        members: NodeSet,
    },
}

/// The result of a [`DiskOp`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiskResult {
    /// The operation this answers.
    pub op: DiskOp,
    /// Whether a renew or a compare-and-set took effect.
    pub ok: bool,
    /// The disk after the operation.
    pub state: DiskState,
}

/// Why a node stopped acting as a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// Quorum lost.
    Quorum,
    /// Lease expired (or not renewed in time).
    Lease,
    /// No longer in the disk's view.
    View,
}

/// What the node asks its environment to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a message to a peer.
    Send(NodeId, Message),
    /// Perform a disk operation; feed the result back to [`Node::disk_result`].
    Disk(DiskOp),
    /// Became an acting member of `view`.
    BecomeMember(u64),
    /// Stop VMs and stop LUN writes now.
    Stop(StopReason),
    /// A LUN write made as a member (the simulator's probe of member-only work).
    MemberWrite,
}

/// A peer's state as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Heard and a member of the known view.
    Up,
    /// Not heard within the threshold.
    Down,
    /// Heard, a member, administratively paused.
    Paused,
    /// Heard but not yet a member of the known view.
    Joining,
}

/// One node's membership state machine.
#[derive(Clone, Debug)]
pub struct Node {
    cfg: Config,
    id: NodeId,
    incarnation: u64,
    paused: bool,
    next_heartbeat: u64,
    last_heard: Vec<Option<(u64, NodeSet, bool)>>,
    disk: DiskState,
    lease_expiry: u64,
    fence_until: u64,
    acting: bool,
    /// Planted bugs, for the tests that prove each checker can fail.
    #[cfg(any(test, feature = "sim"))]
    pub bugs: Bugs,
}

/// Planted bugs (simulator builds only).
#[cfg(any(test, feature = "sim"))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bugs {
    /// Act as a member without an unexpired lease.
    pub ignore_lease: bool,
    /// Act in a new view before the excluded nodes' leases ran out.
    pub no_fence: bool,
    /// Never propose a view (the cluster cannot form or re-form).
    pub never_propose: bool,
}

impl Node {
    /// A node starting (or restarting) with a new `incarnation`.
    pub fn new(cfg: Config, id: NodeId, incarnation: u64) -> Result<Self, ConfigError> {
        cfg.validate()?;
        if id >= cfg.nodes {
            return Err(ConfigError::NodeCount);
        }
        Ok(Node {
            cfg,
            id,
            incarnation,
            paused: false,
            next_heartbeat: 0,
            last_heard: alloc::vec![None; cfg.nodes],
            disk: DiskState {
                view: 0,
                members: 0,
                owner: None,
                lease_expiry: alloc::vec![0; cfg.nodes],
            },
            lease_expiry: 0,
            fence_until: u64::MAX,
            acting: false,
            #[cfg(any(test, feature = "sim"))]
            bugs: Bugs::default(),
        })
    }

    /// This node's id.
    pub fn id(&self) -> NodeId {
        self.id
    }

    /// The view this node knows: (number, members).
    pub fn view(&self) -> (u64, NodeSet) {
        (self.disk.view, self.disk.members)
    }

    /// Whether the node currently acts as a member (as of its last input).
    pub fn acting(&self) -> bool {
        self.acting
    }

    /// The lease expiry the disk acknowledged to this node.
    pub fn lease_expiry(&self) -> u64 {
        self.lease_expiry
    }

    /// This node's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Administrative pause: keeps running, takes no new VMs; peers see Paused.
    pub fn set_paused(&mut self, paused: bool) {
        self.paused = paused;
    }

    /// Peers heard within the threshold (and this node).
    pub fn heard(&self, now: u64) -> NodeSet {
        let mut set = 1u64 << self.id;
        for (p, h) in self.last_heard.iter().enumerate() {
            if let Some((t, _, _)) = h
                && now.saturating_sub(*t) < self.cfg.silence_ns()
            {
                set |= 1 << p;
            }
        }
        set
    }

    /// Peers heard within the threshold whose heartbeat also heard us.
    pub fn reachable(&self, now: u64) -> NodeSet {
        let mut set = 1u64 << self.id;
        for (p, h) in self.last_heard.iter().enumerate() {
            if let Some((t, heard, _)) = h
                && now.saturating_sub(*t) < self.cfg.silence_ns()
                && contains(*heard, self.id)
            {
                set |= 1 << p;
            }
        }
        set
    }

    /// How this node sees `peer`.
    pub fn peer_state(&self, peer: NodeId, now: u64) -> PeerState {
        let heard = peer == self.id || contains(self.reachable(now), peer);
        let paused = if peer == self.id {
            self.paused
        } else {
            matches!(self.last_heard.get(peer), Some(Some((_, _, true))))
        };
        match (heard, contains(self.disk.members, peer), paused) {
            (false, _, _) => PeerState::Down,
            (true, false, _) => PeerState::Joining,
            (true, true, true) => PeerState::Paused,
            (true, true, false) => PeerState::Up,
        }
    }

    fn has_quorum(&self, now: u64) -> bool {
        let r = self.reachable(now);
        let m = count(r);
        if 2 * m > self.cfg.nodes {
            return true;
        }
        // An exact half holds quorum only with the witness: its side owns the view.
        self.cfg.witness
            && 2 * m == self.cfg.nodes
            && self.disk.owner.is_some_and(|o| contains(r, o))
            && self.disk.members & !r == 0
            && contains(self.disk.members, self.id)
    }

    fn evaluate(&mut self, now: u64, out: &mut Vec<Action>) {
        let member = contains(self.disk.members, self.id);
        let lease_ok = now < self.lease_expiry;
        let fenced = now >= self.fence_until;
        let quorum = self.has_quorum(now);
        #[cfg(any(test, feature = "sim"))]
        let lease_ok = lease_ok || self.bugs.ignore_lease;
        #[cfg(any(test, feature = "sim"))]
        let fenced = fenced || self.bugs.no_fence;
        let acting = member && lease_ok && fenced && quorum;
        if acting && !self.acting {
            out.push(Action::BecomeMember(self.disk.view));
        } else if !acting && self.acting {
            let reason = if !member {
                StopReason::View
            } else if !quorum {
                StopReason::Quorum
            } else {
                StopReason::Lease
            };
            out.push(Action::Stop(reason));
        }
        self.acting = acting;
    }

    /// Time passes. Returns what to do now.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        self.evaluate(now, &mut out);
        if self.acting {
            out.push(Action::MemberWrite);
        }
        if now >= self.next_heartbeat {
            self.next_heartbeat = now + self.cfg.heartbeat_ns;
            let r = self.reachable(now);
            let msg = Message::Heartbeat {
                incarnation: self.incarnation,
                view: self.disk.view,
                heard: self.heard(now),
                paused: self.paused,
            };
            for p in 0..self.cfg.nodes {
                if p != self.id {
                    out.push(Action::Send(p, msg));
                }
            }
            out.push(Action::Disk(self.disk_op(now, r)));
        }
        out
    }

    fn disk_op(&self, now: u64, r: NodeSet) -> DiskOp {
        let member = contains(self.disk.members, self.id);
        if r != self.disk.members && self.may_propose(now, r) {
            DiskOp::Propose {
                expect_view: self.disk.view,
                members: r,
            }
        } else if member && self.has_quorum(now) {
            DiskOp::Renew {
                incarnation: self.incarnation,
                expiry: now + self.cfg.lease_ns,
            }
        } else {
            DiskOp::Read
        }
    }

    fn may_propose(&self, now: u64, r: NodeSet) -> bool {
        #[cfg(any(test, feature = "sim"))]
        if self.bugs.never_propose {
            return false;
        }
        let m = count(r);
        if 2 * m > self.cfg.nodes {
            return true;
        }
        if !(self.cfg.witness && 2 * m == self.cfg.nodes) {
            return false;
        }
        // Claiming the witness: only if its holder is with us, or its lease ran out.
        match self.disk.owner {
            None => true,
            Some(o) => contains(r, o) || self.disk.lease_expiry[o] <= now,
        }
    }

    /// A message from a peer arrived.
    pub fn receive(&mut self, now: u64, from: NodeId, msg: Message) -> Vec<Action> {
        let Message::Heartbeat { heard, paused, .. } = msg;
        if from < self.cfg.nodes && from != self.id {
            self.last_heard[from] = Some((now, heard, paused));
        }
        let mut out = Vec::new();
        self.evaluate(now, &mut out);
        out
    }

    /// A disk operation this node asked for completed.
    pub fn disk_result(&mut self, now: u64, res: DiskResult) -> Vec<Action> {
        if res.state.view >= self.disk.view {
            // Leases of nodes outside the view are frozen once it is installed:
            // act only after every one of them has run out.
            self.fence_until = (0..self.cfg.nodes)
                .filter(|&p| !contains(res.state.members, p))
                .map(|p| res.state.lease_expiry[p])
                .max()
                .unwrap_or(0);
            self.disk = res.state;
        }
        if let (DiskOp::Renew { expiry, .. }, true) = (res.op, res.ok) {
            self.lease_expiry = self.lease_expiry.max(expiry);
        }
        let mut out = Vec::new();
        self.evaluate(now, &mut out);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_is_checked() {
        let mut c = Config::windows_defaults(3, false);
        assert_eq!(c.validate(), Ok(()));
        c.lease_ns = 5_000_000_000;
        assert_eq!(c.validate(), Err(ConfigError::LeaseTooShort));
        c.nodes = 0;
        assert_eq!(c.validate(), Err(ConfigError::NodeCount));
        assert!(Node::new(Config::windows_defaults(3, false), 3, 0).is_err());
    }

    #[test]
    fn quorum_is_a_strict_majority_or_a_half_with_witness() {
        let c = Config::windows_defaults(3, false);
        assert!(c.is_quorum(0b011));
        assert!(!c.is_quorum(0b001));
        let w = Config::windows_defaults(2, true);
        assert!(w.is_quorum(0b01));
        let nw = Config::windows_defaults(2, false);
        assert!(!nw.is_quorum(0b01));
    }

    #[test]
    fn a_lone_node_of_three_never_acts() {
        let c = Config::windows_defaults(3, false);
        let mut n = Node::new(c, 0, 1).expect("config");
        let acts = n.tick(0);
        assert!(acts.contains(&Action::Disk(DiskOp::Read)));
        assert!(!n.acting());
        assert_eq!(n.peer_state(1, 0), PeerState::Down);
    }
}
