//! A deterministic simulator for the membership state machine: virtual
//! time, nodes, lossy and delaying links with partitions, one shared disk
//! that applies operations in order, pauses (a node gets no ticks and no
//! input for a while, then goes on with stale state), kills and restarts,
//! all drawn from one seed. The same seed gives the same history
//! ([`Outcome::trace_hash`]); [`replay`] re-runs a seed.
//!
//! Three checkers read the recorded [`Record`]s: [`check_one_quorum`],
//! [`check_leases`] and [`check_reform`].

use crate::membership::{
    Action, Bugs, Config, DiskOp, DiskResult, DiskState, Message, Node, NodeId, NodeSet, contains,
};
use alloc::collections::{BinaryHeap, VecDeque};
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cmp::Reverse;

/// splitmix64: a small PRNG written out so that replays are exact.
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `lo..hi` (`lo` if the range is empty).
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            lo
        } else {
            lo + self.next_u64() % (hi - lo)
        }
    }
    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.range(0, den) < num
    }
}

/// What the simulator records; the checkers read only this.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// A node's state after it handled an input.
    State {
        /// Virtual time.
        t: u64,
        /// The node.
        node: NodeId,
        /// It acts as a member.
        acting: bool,
        /// Its view number.
        view: u64,
        /// Its view's members.
        members: NodeSet,
        /// Its acknowledged lease expiry.
        lease_expiry: u64,
    },
    /// A node stopped (paused or killed: false) or runs again (true).
    Running {
        /// Virtual time.
        t: u64,
        /// The node.
        node: NodeId,
        /// Whether it runs.
        running: bool,
    },
    /// A member-only LUN write, with the disk's lease block at that instant.
    MemberWrite {
        /// Virtual time.
        t: u64,
        /// The writer.
        node: NodeId,
        /// The writer's incarnation.
        incarnation: u64,
        /// Incarnation in the writer's lease block on the disk.
        disk_incarnation: u64,
        /// Expiry in the writer's lease block on the disk.
        disk_expiry: u64,
    },
    /// Every fault healed: links up, paused nodes continued, dead ones restarted.
    Healed {
        /// Virtual time.
        t: u64,
    },
}

/// Simulation parameters.
#[derive(Clone, Copy, Debug)]
pub struct SimConfig {
    /// The cluster.
    pub cluster: Config,
    /// Faults are injected in `0..fault_ns`, then everything heals.
    pub fault_ns: u64,
    /// Run this long after healing.
    pub settle_ns: u64,
    /// Message and disk delay bound.
    pub max_delay_ns: u64,
    /// Planted bugs for every node.
    pub bugs: Bugs,
}

impl SimConfig {
    /// Scaled timings (100 ms heartbeats, threshold 5, 1 s lease: Windows' ratio).
    pub fn scaled(nodes: usize, witness: bool) -> Self {
        SimConfig {
            cluster: Config {
                nodes,
                heartbeat_ns: 100_000_000,
                threshold: 5,
                lease_ns: 1_000_000_000,
                witness,
            },
            fault_ns: 8_000_000_000,
            settle_ns: 4_000_000_000,
            max_delay_ns: 20_000_000,
            bugs: Bugs::default(),
        }
    }

    /// The bound within which the cluster re-forms after the last heal.
    pub fn reform_bound(&self) -> u64 {
        3 * self.cluster.silence_ns() + self.cluster.lease_ns
    }
}

#[derive(Clone, Debug)]
enum Ev {
    Tick(NodeId, u64),
    Deliver(NodeId, NodeId, Message),
    DiskApply(NodeId, u64, DiskOp),
    DiskReply(NodeId, u64, DiskResult),
    Fault,
    Heal,
}

/// The result of one run.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Everything recorded.
    pub history: Vec<Record>,
    /// Hash of the history (FNV-1a), equal for equal seeds.
    pub trace_hash: u64,
    /// When everything healed.
    pub healed_at: u64,
    /// When the run ended.
    pub end: u64,
}

struct Disk {
    view: u64,
    members: NodeSet,
    owner: Option<NodeId>,
    lease: Vec<(u64, u64)>,
}

impl Disk {
    fn state(&self) -> DiskState {
        DiskState {
            view: self.view,
            members: self.members,
            owner: self.owner,
            lease_expiry: self.lease.iter().map(|l| l.1).collect(),
        }
    }
    fn apply(&mut self, node: NodeId, op: DiskOp) -> DiskResult {
        let ok = match op {
            DiskOp::Read => true,
            DiskOp::Renew {
                incarnation,
                expiry,
            } => {
                let ok = contains(self.members, node);
                if ok {
                    self.lease[node] = (incarnation, self.lease[node].1.max(expiry));
                }
                ok
            }
            DiskOp::Propose {
                expect_view,
                members,
            } => {
                let ok = self.view == expect_view;
                if ok {
                    self.view += 1;
                    self.members = members;
                    self.owner = Some(node);
                }
                ok
            }
        };
        DiskResult {
            op,
            ok,
            state: self.state(),
        }
    }
}

struct Sim {
    cfg: SimConfig,
    rng: Rng,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, usize)>>,
    events: Vec<Option<Ev>>,
    nodes: Vec<Node>,
    alive: Vec<bool>,
    paused_until: Vec<u64>,
    paused_mark: Vec<bool>,
    tick_gen: Vec<u64>,
    held: Vec<VecDeque<Ev>>,
    incarnation: Vec<u64>,
    link: Vec<Vec<bool>>,
    disk_path: Vec<bool>,
    loss_pct: u64,
    disk: Disk,
    history: Vec<Record>,
    healed: bool,
}

impl Sim {
    fn push(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.events.push(Some(ev));
        self.queue
            .push(Reverse((at, self.seq, self.events.len() - 1)));
    }

    /// Starts a node's tick chain at `at`, ending any earlier chain.
    fn start_ticks(&mut self, n: NodeId, at: u64) {
        self.tick_gen[n] += 1;
        let g = self.tick_gen[n];
        self.push(at, Ev::Tick(n, g));
    }

    fn delay(&mut self) -> u64 {
        self.rng.range(1, self.cfg.max_delay_ns)
    }

    fn running(&self, n: NodeId) -> bool {
        self.alive[n] && self.now >= self.paused_until[n]
    }

    fn record_state(&mut self, n: NodeId) {
        let node = &self.nodes[n];
        let (view, members) = node.view();
        self.history.push(Record::State {
            t: self.now,
            node: n,
            acting: node.acting(),
            view,
            members,
            lease_expiry: node.lease_expiry(),
        });
    }

    fn perform(&mut self, n: NodeId, actions: Vec<Action>) {
        for a in actions {
            match a {
                Action::Send(to, msg) => {
                    if self.link[n][to] && !self.rng.chance(self.loss_pct, 100) {
                        let d = self.delay();
                        self.push(self.now + d, Ev::Deliver(to, n, msg));
                    }
                }
                Action::Disk(op) => {
                    if self.disk_path[n] {
                        let d = self.delay();
                        self.push(self.now + d, Ev::DiskApply(n, self.incarnation[n], op));
                    }
                }
                Action::MemberWrite => {
                    let (di, de) = self.disk.lease[n];
                    self.history.push(Record::MemberWrite {
                        t: self.now,
                        node: n,
                        incarnation: self.incarnation[n],
                        disk_incarnation: di,
                        disk_expiry: de,
                    });
                }
                Action::BecomeMember(_) | Action::Stop(_) => {}
            }
        }
        self.record_state(n);
    }

    fn restart(&mut self, n: NodeId) {
        self.incarnation[n] += 1;
        let mut node = match Node::new(self.cfg.cluster, n, self.incarnation[n]) {
            Ok(node) => node,
            Err(e) => panic!("simulator config refused: {e:?}"),
        };
        node.bugs = self.cfg.bugs;
        self.nodes[n] = node;
        self.alive[n] = true;
        self.paused_until[n] = 0;
        self.paused_mark[n] = false;
        self.held[n].clear();
        self.history.push(Record::Running {
            t: self.now,
            node: n,
            running: true,
        });
    }

    fn fault(&mut self) {
        let n = self.cfg.cluster.nodes;
        let pick = self.rng.range(0, n as u64) as usize;
        match self.rng.range(0, 7) {
            0 => {
                // Partition: each node on side 0 or 1.
                let sides: Vec<bool> = (0..n).map(|_| self.rng.chance(1, 2)).collect();
                for a in 0..n {
                    for b in 0..n {
                        self.link[a][b] = sides[a] == sides[b];
                    }
                }
            }
            1 => {
                // One directional link cut.
                let other = self.rng.range(0, n as u64) as usize;
                self.link[pick][other] = false;
            }
            2 => self.loss_pct = self.rng.range(0, 60),
            3 => {
                // Pause, up to twice the lease.
                if self.running(pick) {
                    let len = self.rng.range(1, 2 * self.cfg.cluster.lease_ns);
                    self.paused_until[pick] = self.now + len;
                    self.paused_mark[pick] = true;
                    self.history.push(Record::Running {
                        t: self.now,
                        node: pick,
                        running: false,
                    });
                    self.start_ticks(pick, self.now + len);
                }
            }
            4 => {
                if self.alive[pick] {
                    self.alive[pick] = false;
                    self.history.push(Record::Running {
                        t: self.now,
                        node: pick,
                        running: false,
                    });
                } else {
                    self.restart(pick);
                    self.start_ticks(pick, self.now);
                }
            }
            5 => self.disk_path[pick] = !self.disk_path[pick],
            _ => {
                for row in self.link.iter_mut() {
                    row.iter_mut().for_each(|l| *l = true);
                }
            }
        }
        let next = self.now + self.rng.range(1, 2 * self.cfg.cluster.lease_ns);
        if next < self.cfg.fault_ns {
            self.push(next, Ev::Fault);
        }
    }

    fn heal(&mut self) {
        self.healed = true;
        for row in self.link.iter_mut() {
            row.iter_mut().for_each(|l| *l = true);
        }
        self.loss_pct = 0;
        self.disk_path.iter_mut().for_each(|p| *p = true);
        for n in 0..self.cfg.cluster.nodes {
            if !self.alive[n] {
                self.restart(n);
                self.start_ticks(n, self.now);
            } else if self.paused_until[n] > self.now {
                self.paused_until[n] = self.now;
                self.start_ticks(n, self.now);
            }
        }
        self.history.push(Record::Healed { t: self.now });
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Fault => self.fault(),
            Ev::Heal => self.heal(),
            Ev::DiskApply(n, inc, op) => {
                let res = self.disk.apply(n, op);
                let d = self.delay();
                self.push(self.now + d, Ev::DiskReply(n, inc, res));
            }
            Ev::Tick(n, g) => {
                if !self.alive[n] || g != self.tick_gen[n] {
                    return;
                }
                if self.now < self.paused_until[n] {
                    return; // a tick is queued for the end of the pause
                }
                // A continued node first gets what arrived while it was paused.
                if self.paused_mark[n] {
                    self.paused_mark[n] = false;
                    self.history.push(Record::Running {
                        t: self.now,
                        node: n,
                        running: true,
                    });
                }
                let acts = self.nodes[n].tick(self.now);
                self.perform(n, acts);
                while let Some(held) = self.held[n].pop_front() {
                    self.handle(held);
                }
                let next = self.now + self.cfg.cluster.heartbeat_ns / 4;
                self.push(next, Ev::Tick(n, g));
            }
            Ev::Deliver(to, from, msg) => {
                if !self.alive[to] {
                    return;
                }
                if self.now < self.paused_until[to] {
                    self.held[to].push_back(Ev::Deliver(to, from, msg));
                    return;
                }
                let acts = self.nodes[to].receive(self.now, from, msg);
                self.perform(to, acts);
            }
            Ev::DiskReply(n, inc, res) => {
                if !self.alive[n] || inc != self.incarnation[n] || !self.disk_path[n] {
                    return;
                }
                if self.now < self.paused_until[n] {
                    self.held[n].push_back(Ev::DiskReply(n, inc, res));
                    return;
                }
                let acts = self.nodes[n].disk_result(self.now, res);
                self.perform(n, acts);
            }
        }
    }
}

/// Runs one seed.
pub fn run(cfg: SimConfig, seed: u64) -> Outcome {
    let n = cfg.cluster.nodes;
    let mut sim = Sim {
        cfg,
        rng: Rng::new(seed),
        now: 0,
        seq: 0,
        queue: BinaryHeap::new(),
        events: Vec::new(),
        nodes: Vec::new(),
        alive: vec![false; n],
        paused_until: vec![0; n],
        paused_mark: vec![false; n],
        tick_gen: vec![0; n],
        held: (0..n).map(|_| VecDeque::new()).collect(),
        incarnation: vec![0; n],
        link: vec![vec![true; n]; n],
        disk_path: vec![true; n],
        loss_pct: 0,
        disk: Disk {
            view: 0,
            members: 0,
            owner: None,
            lease: vec![(0, 0); n],
        },
        history: Vec::new(),
        healed: false,
    };
    for i in 0..n {
        let mut node = match Node::new(cfg.cluster, i, 0) {
            Ok(node) => node,
            Err(e) => panic!("simulator config refused: {e:?}"),
        };
        node.bugs = cfg.bugs;
        sim.nodes.push(node);
        sim.restart(i);
        let start = sim.rng.range(0, cfg.cluster.heartbeat_ns);
        sim.start_ticks(i, start);
    }
    let first = sim
        .rng
        .range(cfg.cluster.lease_ns, 2 * cfg.cluster.lease_ns);
    sim.push(first, Ev::Fault);
    sim.push(cfg.fault_ns, Ev::Heal);
    let end = cfg.fault_ns + cfg.settle_ns;
    while let Some(Reverse((t, _, idx))) = sim.queue.pop() {
        if t > end {
            break;
        }
        sim.now = t;
        if let Some(ev) = sim.events[idx].take() {
            // Faults and ticks scheduled before the heal keep firing; drop
            // faults that come after it.
            if sim.healed && matches!(ev, Ev::Fault) {
                continue;
            }
            sim.handle(ev);
        }
    }
    let trace_hash = hash_history(&sim.history);
    Outcome {
        seed,
        history: sim.history,
        trace_hash,
        healed_at: cfg.fault_ns,
        end,
    }
}

/// Re-runs a seed exactly (the same history as the first run).
pub fn replay(cfg: SimConfig, seed: u64) -> Outcome {
    run(cfg, seed)
}

/// FNV-1a over the history's debug text.
pub fn hash_history(history: &[Record]) -> u64 {
    use core::fmt::Write;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut s = String::new();
    for r in history {
        s.clear();
        let _ = write!(s, "{r:?}");
        for b in s.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

#[derive(Clone, Copy)]
struct Seen {
    acting: bool,
    view: u64,
    members: NodeSet,
    lease_expiry: u64,
    running: bool,
}

/// Invariant (a): at every instant, the nodes acting as members (running,
/// flagged acting, lease not yet run out) agree: views of the same number
/// have the same members, each acting view is a quorum, and every node
/// acting in an older view is a member of the newest acting view.
pub fn check_one_quorum(cluster: &Config, history: &[Record]) -> Result<(), String> {
    let mut seen: Vec<Option<Seen>> = vec![None; cluster.nodes];
    for r in history {
        let t = match *r {
            Record::State {
                t,
                node,
                acting,
                view,
                members,
                lease_expiry,
            } => {
                let running = seen[node].is_none_or(|s| s.running);
                seen[node] = Some(Seen {
                    acting,
                    view,
                    members,
                    lease_expiry,
                    running,
                });
                t
            }
            Record::Running { t, node, running } => {
                if let Some(s) = seen[node].as_mut() {
                    s.running = running;
                }
                t
            }
            _ => continue,
        };
        let acting: Vec<(NodeId, Seen)> = seen
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.map(|s| (i, s)))
            .filter(|(_, s)| s.running && s.acting && t < s.lease_expiry)
            .collect();
        let Some(&(_, newest)) = acting.iter().max_by_key(|(_, s)| s.view) else {
            continue;
        };
        for &(i, s) in &acting {
            if !cluster.is_quorum(s.members) {
                return Err(alloc::format!(
                    "t={t}: node {i} acts in view {} whose members {:#b} are no quorum",
                    s.view,
                    s.members
                ));
            }
            if s.view == newest.view && s.members != newest.members {
                return Err(alloc::format!(
                    "t={t}: two memberships acting as view {}",
                    s.view
                ));
            }
            if !contains(newest.members, i) {
                return Err(alloc::format!(
                    "t={t}: node {i} acts in view {} but is not in acting view {} ({:#b})",
                    s.view,
                    newest.view,
                    newest.members
                ));
            }
        }
    }
    Ok(())
}

/// Invariant (b): every member-only write happened while the writer's own
/// lease block on the disk was unexpired and of the writer's incarnation.
pub fn check_leases(history: &[Record]) -> Result<(), String> {
    for r in history {
        if let Record::MemberWrite {
            t,
            node,
            incarnation,
            disk_incarnation,
            disk_expiry,
        } = *r
            && (disk_incarnation != incarnation || t >= disk_expiry)
        {
            return Err(alloc::format!(
                "t={t}: node {node} (incarnation {incarnation}) wrote as a member, \
                 disk lease is incarnation {disk_incarnation} expiring {disk_expiry}"
            ));
        }
    }
    Ok(())
}

/// Invariant (c): by `bound` after the last heal every node runs and acts
/// as a member of one view holding all nodes.
pub fn check_reform(cluster: &Config, history: &[Record], bound: u64) -> Result<(), String> {
    let Some(healed) = history.iter().rev().find_map(|r| match r {
        Record::Healed { t } => Some(*t),
        _ => None,
    }) else {
        return Err(String::from("the history never healed"));
    };
    let deadline = healed + bound;
    let mut last: Vec<Option<(bool, u64, NodeSet, u64)>> = vec![None; cluster.nodes];
    let mut reached = false;
    for r in history {
        match *r {
            Record::State {
                t,
                node,
                acting,
                view,
                members,
                lease_expiry,
            } => {
                if t > deadline {
                    reached = true;
                    break;
                }
                last[node] = Some((acting, view, members, lease_expiry));
            }
            Record::Running { t, .. } | Record::MemberWrite { t, .. } | Record::Healed { t } => {
                if t > deadline {
                    reached = true;
                    break;
                }
            }
        }
    }
    if !reached {
        return Err(alloc::format!("the history ends before {deadline}"));
    }
    let mut view = None;
    for (i, l) in last.iter().enumerate() {
        let Some((acting, v, members, lease)) = *l else {
            return Err(alloc::format!("node {i} never reported"));
        };
        if !acting || lease <= deadline || members != cluster.all() {
            return Err(alloc::format!(
                "{bound} ns after healing node {i}: acting {acting}, view {v} members {members:#b}, lease to {lease}"
            ));
        }
        if *view.get_or_insert(v) != v {
            return Err(alloc::format!(
                "nodes in views {view:?} and {v} after healing"
            ));
        }
    }
    Ok(())
}

/// Runs one seed and all three checkers.
pub fn check_seed(cfg: SimConfig, seed: u64) -> Result<Outcome, String> {
    let out = run(cfg, seed);
    let fail = |e: String| alloc::format!("seed {seed:#x}: {e} (replay with sim::replay)");
    check_one_quorum(&cfg.cluster, &out.history).map_err(fail)?;
    check_leases(&out.history).map_err(fail)?;
    check_reform(&cfg.cluster, &out.history, cfg.reform_bound()).map_err(fail)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::println;
    use std::time::Instant;

    /// Runs seeds 0, 1, … for `budget_ms` (or `CLUSTER_SIM_MS` if set).
    fn many(cfg: SimConfig, label: &str, budget_ms: u128) -> usize {
        let budget_ms = std::env::var("CLUSTER_SIM_MS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(budget_ms);
        let start = Instant::now();
        let mut seeds = 0usize;
        let mut seed = 0u64;
        while start.elapsed().as_millis() < budget_ms {
            if let Err(e) = check_seed(cfg, seed) {
                panic!("{label}: {e}");
            }
            seeds += 1;
            seed += 1;
        }
        println!(
            "{label}: {seeds} seeds, 0 violations, {:?}",
            start.elapsed()
        );
        seeds
    }

    #[test]
    fn many_seeds_three_nodes() {
        assert!(many(SimConfig::scaled(3, false), "3 nodes", 5000) >= 50);
    }

    #[test]
    fn many_seeds_two_nodes_and_witness() {
        assert!(many(SimConfig::scaled(2, true), "2 nodes + witness", 5000) >= 50);
    }

    #[test]
    fn seeds_five_nodes_and_four_with_witness() {
        assert!(many(SimConfig::scaled(5, false), "5 nodes", 1000) >= 10);
        assert!(many(SimConfig::scaled(4, true), "4 nodes + witness", 1000) >= 10);
    }

    #[test]
    fn the_faults_bite() {
        // The seeds must really take nodes out of the cluster, or the
        // invariants would hold trivially.
        let cfg = SimConfig::scaled(3, false);
        let (mut stops, mut stopped_nodes, mut max_view) = (0, 0, 0);
        for seed in 0..50 {
            let h = run(cfg, seed).history;
            let mut was = [false; 3];
            for r in &h {
                match *r {
                    Record::State {
                        node,
                        acting,
                        view,
                        t,
                        ..
                    } => {
                        if was[node] && !acting && t < cfg.fault_ns {
                            stops += 1;
                        }
                        was[node] = acting;
                        max_view = max_view.max(view);
                    }
                    Record::Running { running: false, .. } => stopped_nodes += 1,
                    _ => {}
                }
            }
        }
        println!(
            "50 seeds: {stops} member stops, {stopped_nodes} pauses/kills, max view {max_view}"
        );
        assert!(stops > 20 && stopped_nodes > 20 && max_view > 5);
    }

    #[test]
    fn a_seed_replays_exactly() {
        let cfg = SimConfig::scaled(3, false);
        let a = run(cfg, 42);
        let b = replay(cfg, 42);
        assert_eq!(a.trace_hash, b.trace_hash);
        assert_eq!(a.history, b.history);
        assert_ne!(a.trace_hash, run(cfg, 43).trace_hash);
    }

    #[test]
    fn the_cluster_forms_without_faults() {
        let mut cfg = SimConfig::scaled(3, false);
        cfg.fault_ns = 0;
        let out = run(cfg, 7);
        check_reform(&cfg.cluster, &out.history, cfg.reform_bound()).expect("re-forms");
    }

    fn first_failure(cfg: SimConfig, check: impl Fn(&Outcome) -> Result<(), String>) -> bool {
        (0..200).any(|seed| check(&run(cfg, seed)).is_err())
    }

    #[test]
    fn lease_checker_catches_a_node_that_ignores_its_lease() {
        let mut cfg = SimConfig::scaled(3, false);
        cfg.bugs.ignore_lease = true;
        assert!(first_failure(cfg, |o| check_leases(&o.history)));
        let mut h = run(SimConfig::scaled(3, false), 1).history;
        let w = h.iter_mut().find_map(|r| match r {
            Record::MemberWrite { disk_expiry, .. } => Some(disk_expiry),
            _ => None,
        });
        *w.expect("a member write") = 0;
        assert!(check_leases(&h).is_err());
    }

    #[test]
    fn quorum_checker_catches_a_node_that_does_not_wait_for_fencing() {
        let mut cfg = SimConfig::scaled(3, false);
        cfg.bugs.no_fence = true;
        let c = cfg.cluster;
        assert!(first_failure(cfg, |o| check_one_quorum(&c, &o.history)));
    }

    #[test]
    fn quorum_checker_catches_a_doctored_split_brain() {
        let c = SimConfig::scaled(3, false).cluster;
        let st = |t, node, view, members| Record::State {
            t,
            node,
            acting: true,
            view,
            members,
            lease_expiry: 1_000,
        };
        let ok = [st(1, 0, 1, 0b111), st(2, 1, 1, 0b111), st(3, 2, 1, 0b111)];
        assert_eq!(check_one_quorum(&c, &ok), Ok(()));
        let bad = [st(1, 0, 1, 0b111), st(2, 1, 2, 0b011), st(3, 2, 1, 0b111)];
        assert!(check_one_quorum(&c, &bad).is_err());
        let minority = [st(1, 0, 1, 0b001)];
        assert!(check_one_quorum(&c, &minority).is_err());
    }

    #[test]
    fn reform_checker_catches_a_cluster_that_never_forms() {
        let mut cfg = SimConfig::scaled(3, false);
        cfg.bugs.never_propose = true;
        let out = run(cfg, 3);
        assert!(check_reform(&cfg.cluster, &out.history, cfg.reform_bound()).is_err());
    }
}
