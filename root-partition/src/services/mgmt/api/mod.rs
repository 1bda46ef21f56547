//! The management API (`docs/management.md`, `docs/openapi.json`): the
//! router, the handlers of the node, VMs, their disks, jobs and events,
//! and the token check, over the node's [`VmService`]. The HTTP layer
//! hands it complete [`Request`]s through [`Bound`] (a
//! [`Handler`]); the node calls [`Api::update`] every round so VM events
//! reach the event log and jobs move on.
//!
//! # Invariants
//! - Every request is authenticated before anything else is looked at
//!   (an unknown path without a token is 401, not 404); the token is never
//!   logged or kept, only its digest ([`auth`]).
//! - Every answer's status and body are described by `docs/openapi.json`
//!   (the tests check each against it with [`openapi`]).
//! - One sequence numbers every event of the stream (VM, job, node).
//! - While the node stops, new operations get 503; reads and job cancels
//!   go on.

pub mod auth;
pub mod events;
mod handlers;
pub mod jobs;
#[cfg(any(test, feature = "testkit"))]
pub mod openapi;
pub mod routes;

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::string::String;
use alloc::vec::Vec;

use serde::Serialize;
use serde_json::Value;

use self::auth::Auth;
use self::events::{EventLog, fields};
use self::jobs::{JobOp, JobState, Jobs};
use super::http::{Handler, Request, Response, error_body, error_response};
use crate::services::vm::service::VmService;
use crate::services::vm::{Hypervisor, Operation, Store, VmEventKind, VmState};

/// What the node tells the API about itself.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// The node's name (`capvisor`).
    pub name: String,
    /// Its version.
    pub version: String,
    /// Its processors.
    pub processors: u32,
    /// Entropy for the ids of VMs created without one (any bits the node
    /// gathered: TSC, RDRAND).
    pub seed: u64,
}

/// The API's own counters (`api` in the node's body).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ApiStats {
    /// Requests answered (by the handlers or refused by the HTTP layer).
    pub requests: u64,
    /// Requests refused for their token (401).
    pub refused: u64,
    /// Malformed requests: 400s of the handlers, and whatever the HTTP
    /// layer refused (400, 408, 411, 413, 431, 501).
    pub bad_requests: u64,
    /// Connections accepted.
    pub connections: u64,
}

/// The management API.
pub struct Api {
    auth: Auth,
    facts: NodeFacts,
    started_ns: u64,
    stats: ApiStats,
    log: EventLog,
    jobs: Jobs,
    /// When each VM (by raw id) last became Running from no partition.
    running_since: BTreeMap<u64, u64>,
    /// VMs whose heartbeat is lost (raw ids).
    heartbeat_lost: BTreeSet<u64>,
    /// VMs whose last operation failed in the events just taken: (raw id,
    /// operation, reason) — for their jobs.
    failures: Vec<(u64, Operation, String)>,
    /// VM ids made so far (for the random ones).
    made_ids: u64,
    stopping_logged: bool,
    /// VMs busy when the node's shutdown began (its job's percentage).
    shutdown_total: usize,
}

impl Api {
    /// The API with token check `auth` for node `facts`, from `now_ns`.
    pub fn new(auth: Auth, facts: NodeFacts, now_ns: u64) -> Api {
        Api {
            auth,
            facts,
            started_ns: now_ns,
            stats: ApiStats::default(),
            log: EventLog::default(),
            jobs: Jobs::default(),
            running_since: BTreeMap::new(),
            heartbeat_lost: BTreeSet::new(),
            failures: Vec::new(),
            made_ids: 0,
            stopping_logged: false,
            shutdown_total: 0,
        }
    }

    /// The counters.
    pub fn stats(&self) -> ApiStats {
        self.stats
    }

    /// The HTTP layer accepted a connection.
    pub fn connection_opened(&mut self) {
        self.stats.connections += 1;
    }

    /// A request the HTTP layer refused with `status` (see
    /// [`Handler::refused_input`]).
    pub fn refused_input(&mut self, _status: u16) {
        self.stats.requests += 1;
        self.stats.bad_requests += 1;
    }

    /// The token check (whether a token is configured).
    pub fn auth(&self) -> &Auth {
        &self.auth
    }

    /// The number of the last event (0 before the first).
    pub fn last_event(&self) -> u64 {
        self.log.last()
    }

    /// The stream text of the events after `after` (see
    /// [`Handler::events`]).
    pub fn events(&mut self, after: u64, out: &mut Vec<u8>, max: usize) -> u64 {
        self.log.read(after, out, max)
    }

    /// Every node round: takes the VMs' new events into the log and moves
    /// the jobs on.
    pub fn update<H: Hypervisor, S: Store>(&mut self, vms: &mut VmService<H, S>, now_ns: u64) {
        self.absorb(vms, now_ns);
    }

    /// Answers one request.
    pub fn handle<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        req: &Request,
        now_ns: u64,
    ) -> Response {
        self.stats.requests += 1;
        self.absorb(vms, now_ns);
        let response = self.route(vms, req, now_ns);
        match response.status {
            401 => self.stats.refused += 1,
            400 => self.stats.bad_requests += 1,
            _ => {}
        }
        // What the handler did shows in the log at once.
        self.absorb(vms, now_ns);
        response
    }

    fn route<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        req: &Request,
        now_ns: u64,
    ) -> Response {
        if let Err(refusal) = self.auth.check(req.header("authorization")) {
            return error_response(401, "unauthorized", refusal.message())
                .with_header("WWW-Authenticate", "Bearer");
        }
        let Some(matched) = routes::find(&req.path) else {
            return error_response(
                404,
                "not_found",
                &alloc::format!("no such path: {}", req.path),
            );
        };
        if !matched.methods.contains(&req.method.as_str()) {
            let allow = matched.methods.join(", ");
            return error_response(
                405,
                "method_not_allowed",
                &alloc::format!("{} takes {allow}, not {}", req.path, req.method),
            )
            .with_header("Allow", allow);
        }
        let changes = req.method != "GET" && matched.route != routes::Route::JobCancel;
        if changes && vms.stopping() {
            return error_response(
                503,
                "unavailable",
                "the node is shutting down: no new operations",
            );
        }
        handlers::dispatch(self, vms, req, &matched, now_ns)
    }

    fn vm_event(
        &mut self,
        name: &str,
        kind: &str,
        mut extra: serde_json::Map<String, Value>,
        now_ns: u64,
    ) {
        extra.insert("vm".into(), Value::from(name));
        self.log.push("vm", kind, extra, now_ns / 1_000_000);
    }

    /// Takes the VMs' new events into the log, then moves the jobs on.
    fn absorb<H: Hypervisor, S: Store>(&mut self, vms: &mut VmService<H, S>, now_ns: u64) {
        for e in vms.take_events() {
            let raw = e.vm.raw();
            let none = serde_json::Map::new;
            match e.kind {
                VmEventKind::Defined => self.vm_event(&e.name, "defined", none(), now_ns),
                VmEventKind::StateChanged { from, to } => {
                    match &to {
                        VmState::Running if matches!(from, VmState::Starting) => {
                            self.running_since.insert(raw, now_ns);
                        }
                        VmState::Off | VmState::Saved | VmState::Failed { .. } => {
                            self.running_since.remove(&raw);
                            self.heartbeat_lost.remove(&raw);
                        }
                        _ => {}
                    }
                    let mut f = fields([
                        ("from", Value::from(from.name())),
                        ("to", Value::from(to.name())),
                    ]);
                    if let VmState::Failed { reason } = &to {
                        f.insert("reason".into(), Value::from(reason.as_str()));
                    }
                    self.vm_event(&e.name, "state_changed", f, now_ns);
                }
                VmEventKind::ShutdownAcknowledged => {
                    self.vm_event(&e.name, "shutdown_acknowledged", none(), now_ns)
                }
                VmEventKind::StopTimedOut => {
                    self.vm_event(&e.name, "stop_timed_out", none(), now_ns)
                }
                VmEventKind::HeartbeatMissed => {
                    self.heartbeat_lost.insert(raw);
                    self.vm_event(&e.name, "heartbeat_missed", none(), now_ns)
                }
                VmEventKind::HeartbeatRestored => {
                    self.heartbeat_lost.remove(&raw);
                    self.vm_event(&e.name, "heartbeat_restored", none(), now_ns)
                }
                VmEventKind::OperationFailed { operation, reason } => {
                    let f = fields([
                        (
                            "operation",
                            Value::from(handlers::operation_name(operation)),
                        ),
                        ("reason", Value::from(reason.as_str())),
                    ]);
                    self.failures.push((raw, operation, reason));
                    self.vm_event(&e.name, "operation_failed", f, now_ns);
                }
                VmEventKind::Deleted => {
                    self.running_since.remove(&raw);
                    self.heartbeat_lost.remove(&raw);
                    self.vm_event(&e.name, "deleted", none(), now_ns)
                }
            }
        }
        if vms.stopping() && !self.stopping_logged {
            self.stopping_logged = true;
            self.log.push(
                "node",
                "node",
                fields([("state", Value::from("Stopping"))]),
                now_ns / 1_000_000,
            );
        }
        self.move_jobs(vms, now_ns);
        self.failures.clear();
    }

    /// Ends the jobs whose VM got where they lead (or failed on the way).
    fn move_jobs<H: Hypervisor, S: Store>(&mut self, vms: &mut VmService<H, S>, now_ns: u64) {
        let mut changed = Vec::new();
        let busy = vms.busy_vms();
        for job in self.jobs.iter_mut().filter(|j| !j.state.finished()) {
            let before = (job.state, job.percent);
            if job.op == JobOp::NodeShutdown {
                let total = self.shutdown_total.max(1);
                job.percent = ((total - busy.min(total)) * 100 / total) as u8;
                if busy == 0 {
                    job.finish(JobState::Completed, now_ns);
                }
            } else if let Some((id, name)) = job.vm.clone() {
                let failed = self.failures.iter().find(|(vm, op, _)| {
                    *vm == id.raw() && Some(*op) == handlers::waits_for(job.op)
                });
                match vms.manager.state(id) {
                    Err(_) => {
                        job.fail("not_found", alloc::format!("VM {name} was deleted"), now_ns)
                    }
                    Ok(_) if failed.is_some() => {
                        let reason = failed.map(|f| f.2.clone()).unwrap_or_default();
                        job.fail("internal", reason, now_ns);
                    }
                    Ok(state) => {
                        let now = state.name();
                        if Some(now) == job.op.end_state() {
                            job.finish(JobState::Completed, now_ns);
                        } else if !handlers::on_the_way(job.op, now) {
                            let why = match state {
                                VmState::Failed { reason } => reason.clone(),
                                other => alloc::format!(
                                    "VM {name} is {} before the {} ended",
                                    other.name(),
                                    job.op.name()
                                ),
                            };
                            job.fail("internal", why, now_ns);
                        } else if job.percent < 50 {
                            job.percent = 50;
                        }
                    }
                }
            }
            if before != (job.state, job.percent) {
                changed.push(job.id);
            }
        }
        for id in changed {
            self.job_event(id, now_ns);
        }
    }

    /// Logs job `id`'s state.
    fn job_event(&mut self, id: u64, now_ns: u64) {
        let Some(job) = self.jobs.get(id) else { return };
        let f = fields([
            ("job", Value::from(job.id)),
            ("operation", Value::from(job.op.name())),
            (
                "vm",
                job.vm
                    .as_ref()
                    .map_or(Value::Null, |(_, n)| Value::from(n.as_str())),
            ),
            ("state", Value::from(job.state.name())),
            ("percent", Value::from(job.percent)),
        ]);
        self.log.push("job", "job", f, now_ns / 1_000_000);
    }
}

/// The API bound to the node's VM service: the HTTP layer's [`Handler`].
pub struct Bound<'a, H: Hypervisor, S: Store> {
    /// The API.
    pub api: &'a mut Api,
    /// The VMs.
    pub vms: &'a mut VmService<H, S>,
}

impl<H: Hypervisor, S: Store> Handler for Bound<'_, H, S> {
    fn handle(&mut self, request: &Request, now_ns: u64) -> Response {
        self.api.handle(self.vms, request, now_ns)
    }

    fn events(&mut self, after: u64, out: &mut Vec<u8>, max: usize) -> u64 {
        self.api.events(after, out, max)
    }

    fn refused_input(&mut self, status: u16) {
        self.api.refused_input(status);
    }
}

/// A 409 for a VM in the wrong state.
pub(crate) fn invalid_state(message: &str, state: &str) -> Response {
    Response::json(409, error_body("invalid_state", message, Some(state)))
}

#[cfg(test)]
mod tests;
