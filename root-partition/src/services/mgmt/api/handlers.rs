//! The handlers behind each route: the bodies the API sends
//! (`docs/openapi.json` has their schemas), the bodies it reads, and how
//! the VM manager's answers become statuses.

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::jobs::{Job, JobOp, JobState, job_url};
use super::routes::{Matched, Route};
use super::{Api, ApiStats, invalid_state};
use crate::services::mgmt::http::{Request, Response, error_response};
use crate::services::vm::definition::{self, DefinitionError, DiskSlot, VmDefinition, VmUuid};
use crate::services::vm::manager::VmInfo;
use crate::services::vm::service::VmService;
use crate::services::vm::{Hypervisor, Operation, Store, VmError, VmId, VmState};

/// Most console lines sent.
pub const MAX_CONSOLE_LINES: usize = 200;

/// The wire name of a manager operation (events' `operation`).
pub fn operation_name(op: Operation) -> &'static str {
    match op {
        Operation::Define => "define",
        Operation::Start => "start",
        Operation::Pause => "pause",
        Operation::Resume => "resume",
        Operation::Save => "save",
        Operation::Restore => "restore",
        Operation::Stop => "stop",
        Operation::TurnOff => "turn-off",
        Operation::Delete => "delete",
        Operation::AddDisk => "disk-add",
        Operation::RemoveDisk => "disk-remove",
    }
}

/// The manager's operation whose failure event fails a job of `op`.
pub fn waits_for(op: JobOp) -> Option<Operation> {
    match op {
        JobOp::Start => Some(Operation::Start),
        JobOp::Save => Some(Operation::Save),
        JobOp::Restore => Some(Operation::Restore),
        _ => None,
    }
}

/// Whether a VM in `state` may still reach the end of a job of `op`.
pub fn on_the_way(op: JobOp, state: &str) -> bool {
    match op {
        JobOp::Start | JobOp::Restore => state == "Starting",
        JobOp::Stop => state == "Stopping",
        JobOp::Save => state == "Saving",
        _ => false,
    }
}

#[derive(Serialize)]
struct NodeBody<'a> {
    name: &'a str,
    version: &'a str,
    state: &'static str,
    uptime_s: u64,
    processors: u32,
    vms: usize,
    vms_running: usize,
    events_seq: u64,
    api: ApiStats,
}

#[derive(Serialize)]
struct DiskBody<'a> {
    lun: u8,
    path: &'a str,
}

#[derive(Serialize)]
struct NicBody {
    mac: Option<String>,
}

#[derive(Serialize)]
struct VmBody<'a> {
    name: &'a str,
    id: String,
    state: &'static str,
    status: String,
    memory_mib: u64,
    vcpus: u32,
    cpu_usage_percent: u32,
    uptime_s: u64,
    workload: &'a str,
    args: &'a [u64],
    disks: Vec<DiskBody<'a>>,
    nic: Option<NicBody>,
    priority: u8,
    cpu: Option<u32>,
    autostart: bool,
    heartbeat: &'static str,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    sha256: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DiskRequest {
    path: String,
    lun: u8,
}

fn json<T: Serialize>(status: u16, body: &T) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => Response::json(status, bytes),
        Err(e) => error_response(500, "internal", &format!("cannot encode the answer: {e}")),
    }
}

fn bad_request(message: &str) -> Response {
    error_response(400, "bad_request", message)
}

fn not_found(message: &str) -> Response {
    error_response(404, "not_found", message)
}

/// The answer to a refused or failed manager command.
pub fn vm_error(e: &VmError) -> Response {
    let message = e.to_string();
    match e {
        VmError::NoSuchVm => not_found(&message),
        VmError::NoSuchDisk { .. } => not_found(&message),
        VmError::InvalidState { state, .. } => invalid_state(&message, state.name()),
        VmError::Definition(_) => bad_request(&message),
        VmError::AlreadyExists { .. } | VmError::Conflict(_) => {
            error_response(409, "conflict", &message)
        }
        VmError::Store(_) | VmError::Hypervisor(_) => error_response(500, "internal", &message),
    }
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| bad_request(&format!("bad request body: {e}")))
}

/// Answers a request for `matched` (authenticated, method allowed).
pub(super) fn dispatch<H: Hypervisor, S: Store>(
    api: &mut Api,
    vms: &mut VmService<H, S>,
    req: &Request,
    matched: &Matched<'_>,
    now: u64,
) -> Response {
    let get = req.method == "GET";
    let param = |i: usize| matched.params.get(i).copied().unwrap_or("");
    match matched.route {
        Route::Node => json(200, &api.node_body(vms, now)),
        Route::NodeShutdown => api.shutdown(vms, now),
        Route::NodeToken => api.put_token(vms, &req.body),
        Route::Vms if get => {
            let list: Vec<VmBody<'_>> = vms.manager.iter().map(|v| api.vm_body(&v, now)).collect();
            json(200, &serde_json::json!({ "vms": list }))
        }
        Route::Vms => api.create(vms, &req.body, now),
        Route::Vm | Route::VmAction(_) | Route::Disks | Route::Disk | Route::Console => {
            let name = param(0);
            let Some(id) = vms.manager.find(name) else {
                return not_found(&format!("no VM named {name}"));
            };
            api.vm_route(vms, req, matched.route, id, param(1), now)
        }
        Route::Jobs => {
            let list: Vec<Value> = api
                .jobs
                .iter()
                .map(|j| api.job_value(j, vms, now))
                .collect();
            json(200, &serde_json::json!({ "jobs": list }))
        }
        Route::Job | Route::JobCancel => {
            let Some(job) = param(0).parse::<u64>().ok().and_then(|id| api.jobs.get(id)) else {
                return not_found(&format!("no job {}", param(0)));
            };
            let id = job.id;
            if matched.route == Route::Job {
                json(200, &api.job_value(job, vms, now))
            } else {
                api.cancel(vms, id, now)
            }
        }
        Route::Events => {
            let mut after = api.log.last();
            for pair in req.query.split('&').filter(|p| !p.is_empty()) {
                if let Some(n) = pair.strip_prefix("since=") {
                    match n.parse::<u64>() {
                        Ok(n) => after = n,
                        Err(_) => {
                            return bad_request(&format!(
                                "since={n}: must be an event number (0 or more)"
                            ));
                        }
                    }
                }
            }
            Response::events(after)
        }
    }
}

impl Api {
    fn node_body<'a, H: Hypervisor, S: Store>(
        &'a self,
        vms: &VmService<H, S>,
        now: u64,
    ) -> NodeBody<'a> {
        NodeBody {
            name: &self.facts.name,
            version: &self.facts.version,
            state: if vms.stopping() { "Stopping" } else { "Up" },
            uptime_s: now.saturating_sub(self.started_ns) / 1_000_000_000,
            processors: self.facts.processors,
            vms: vms.manager.iter().count(),
            vms_running: vms
                .manager
                .iter()
                .filter(|v| *v.state == VmState::Running)
                .count(),
            events_seq: self.log.last(),
            api: self.stats,
        }
    }

    fn vm_body<'a>(&self, v: &VmInfo<'a>, now: u64) -> VmBody<'a> {
        let raw = v.id.raw();
        let def = v.definition;
        let lost = self.heartbeat_lost.contains(&raw);
        let status = match v.state {
            VmState::Failed { reason } => reason.clone(),
            _ if lost => String::from("Heartbeat lost"),
            _ => String::from("Operating normally"),
        };
        let heartbeat = match v.state {
            _ if !v.has_partition => "NoContact",
            _ if lost => "Lost",
            VmState::Running | VmState::Paused | VmState::Stopping | VmState::Saving => "Ok",
            _ => "NoContact",
        };
        let uptime_s = match self.running_since.get(&raw) {
            Some(since) if v.has_partition => now.saturating_sub(*since) / 1_000_000_000,
            _ => 0,
        };
        VmBody {
            name: &def.name,
            id: def.id.to_string(),
            state: v.state.name(),
            status,
            memory_mib: def.memory_mib,
            vcpus: def.vcpus,
            cpu_usage_percent: 0,
            uptime_s,
            workload: &def.workload,
            args: &def.args,
            disks: disks(def),
            nic: def.nic.map(|n| NicBody {
                mac: n.mac.map(|m| m.to_string()),
            }),
            priority: def.priority,
            cpu: def.cpu,
            autostart: def.autostart,
            heartbeat,
        }
    }

    fn vm_response<H: Hypervisor, S: Store>(
        &self,
        status: u16,
        vms: &VmService<H, S>,
        id: VmId,
        now: u64,
    ) -> Response {
        match vms.manager.info(id) {
            Ok(info) => json(status, &self.vm_body(&info, now)),
            Err(e) => vm_error(&e),
        }
    }

    /// Whether job `job` can be cancelled now.
    fn cancellable<H: Hypervisor, S: Store>(job: &Job, vms: &VmService<H, S>) -> bool {
        let Some((id, _)) = &job.vm else { return false };
        let Ok(state) = vms.manager.state(*id) else {
            return false;
        };
        job.state == JobState::Running
            && match job.op {
                JobOp::Start | JobOp::Restore => *state == VmState::Starting,
                JobOp::Stop => *state == VmState::Stopping,
                _ => false,
            }
    }

    fn job_value<H: Hypervisor, S: Store>(
        &self,
        job: &Job,
        vms: &VmService<H, S>,
        now: u64,
    ) -> Value {
        serde_json::to_value(job.body(now, Self::cancellable(job, vms))).unwrap_or(Value::Null)
    }

    fn job_response<H: Hypervisor, S: Store>(
        &self,
        status: u16,
        id: u64,
        vms: &VmService<H, S>,
        now: u64,
    ) -> Response {
        match self.jobs.get(id) {
            Some(job) => json(status, &self.job_value(job, vms, now)),
            None => not_found(&format!("no job {id}")),
        }
    }

    fn no_room() -> Response {
        error_response(
            503,
            "unavailable",
            "too many jobs under way: wait for one to end",
        )
    }

    /// Begins job `op`, logs it, ends it at once if the VM is already
    /// where it leads, and answers 202 with it.
    fn begun<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        op: JobOp,
        vm: Option<(VmId, String)>,
        done: bool,
        now: u64,
    ) -> Response {
        let bytes = match (&vm, op) {
            (Some((id, _)), JobOp::Save | JobOp::Restore) => vms
                .manager
                .info(*id)
                .ok()
                .map(|i| i.definition.memory_mib << 20),
            _ => None,
        };
        let id = self.jobs.begin(op, vm, now);
        if let Some(job) = self.jobs.get_mut(id) {
            if let Some(total) = bytes {
                job.processed_bytes = Some(0);
                job.remaining_bytes = Some(total);
            }
            if done {
                job.finish(JobState::Completed, now);
            }
        }
        self.job_event(id, now);
        // Events the command caused, and a job that ended with them.
        self.absorb(vms, now);
        self.job_response(202, id, vms, now)
            .with_header("Location", job_url(id))
    }

    fn shutdown<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        now: u64,
    ) -> Response {
        if !self.jobs.has_room() {
            return Self::no_room();
        }
        self.shutdown_total = vms.busy_vms();
        vms.request_stop(now);
        self.begun(vms, JobOp::NodeShutdown, None, false, now)
    }

    fn put_token<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        body: &[u8],
    ) -> Response {
        let request: TokenRequest = match decode(body) {
            Ok(r) => r,
            Err(response) => return response,
        };
        let hex = request.sha256.as_bytes();
        let lower = hex
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c));
        let Some(digest) = super::auth::parse_digest(hex).filter(|_| lower) else {
            return bad_request("field `sha256`: must be 64 lower-case hex digits");
        };
        match self.auth.replace(vms.manager.store(), digest) {
            Ok(()) => Response::empty(204),
            Err(e) => error_response(
                500,
                "internal",
                &format!("data volume: cannot write {}: {e}", super::auth::TOKEN_FILE),
            ),
        }
    }

    /// A random VM id (version 4) from the node's seed.
    fn new_uuid(&mut self, now: u64) -> VmUuid {
        self.made_ids += 1;
        let mut h = Sha256::new();
        h.update(self.facts.seed.to_le_bytes());
        h.update(self.made_ids.to_le_bytes());
        h.update(now.to_le_bytes());
        let digest: [u8; 32] = h.finalize().into();
        let mut bits = [0u8; 16];
        bits.copy_from_slice(&digest[..16]);
        VmUuid::from_random(u128::from_le_bytes(bits))
    }

    fn create<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        body: &[u8],
        now: u64,
    ) -> Response {
        let def = match self.parse_create(body, now) {
            Ok(def) => def,
            Err(e) => return bad_request(&format!("invalid definition: {e}")),
        };
        match vms.manager.define(def) {
            Ok(id) => {
                let name = vms
                    .manager
                    .info(id)
                    .map(|i| i.definition.name.clone())
                    .unwrap_or_default();
                self.vm_response(201, vms, id, now)
                    .with_header("Location", format!("/api/v1/vms/{name}"))
            }
            Err(e) => vm_error(&e),
        }
    }

    /// A `VmCreate` body as a definition: the file format without
    /// `format`, `id` optional.
    fn parse_create(&mut self, body: &[u8], now: u64) -> Result<VmDefinition, DefinitionError> {
        let whole = |reason: String| DefinitionError {
            field: String::new(),
            reason,
        };
        let mut value: Value =
            serde_json::from_slice(body).map_err(|e| whole(format!("bad JSON: {e}")))?;
        let object = value
            .as_object_mut()
            .ok_or_else(|| whole(String::from("must be one JSON object")))?;
        if object.contains_key("format") {
            return Err(DefinitionError {
                field: String::from("format"),
                reason: String::from("unknown field `format`: the API sets it"),
            });
        }
        if !object.contains_key("id") {
            let id = self.new_uuid(now);
            object.insert("id".into(), Value::from(id.to_string()));
        }
        object.insert("format".into(), Value::from(definition::FORMAT));
        let bytes = serde_json::to_vec(&value).map_err(|e| whole(e.to_string()))?;
        definition::decode(&bytes)
    }

    fn vm_route<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        req: &Request,
        route: Route,
        id: VmId,
        lun: &str,
        now: u64,
    ) -> Response {
        let Ok(info) = vms.manager.info(id) else {
            return not_found("no such VM");
        };
        let name = info.definition.name.clone();
        match route {
            Route::Vm if req.method == "GET" => self.vm_response(200, vms, id, now),
            Route::Vm => match vms.manager.delete(id) {
                Ok(()) => Response::empty(204),
                Err(e) => vm_error(&e),
            },
            Route::Console => {
                let mut lines = match vms.manager.console(id) {
                    Ok(lines) => lines,
                    Err(e) => return vm_error(&e),
                };
                let extra = lines.len().saturating_sub(MAX_CONSOLE_LINES);
                lines.drain(..extra);
                json(200, &serde_json::json!({ "lines": lines }))
            }
            Route::Disks if req.method == "GET" => {
                json(200, &serde_json::json!({ "disks": disks(info.definition) }))
            }
            Route::Disks => {
                let request: DiskRequest = match decode(&req.body) {
                    Ok(r) => r,
                    Err(response) => return response,
                };
                if !self.jobs.has_room() {
                    return Self::no_room();
                }
                let slot = DiskSlot {
                    path: request.path,
                    lun: request.lun,
                };
                match vms.manager.add_disk(id, slot) {
                    Ok(()) => self.begun(vms, JobOp::DiskAdd, Some((id, name)), true, now),
                    Err(e) => vm_error(&e),
                }
            }
            Route::Disk => {
                let Ok(lun) = lun.parse::<u8>() else {
                    return not_found(&format!("VM {name} has no disk at LUN {lun}"));
                };
                if !self.jobs.has_room() {
                    return Self::no_room();
                }
                match vms.manager.remove_disk(id, lun) {
                    Ok(()) => self.begun(vms, JobOp::DiskRemove, Some((id, name)), true, now),
                    Err(e) => vm_error(&e),
                }
            }
            Route::VmAction(action) => {
                if !self.jobs.has_room() {
                    return Self::no_room();
                }
                let m = &mut vms.manager;
                let (op, result) = match action {
                    "start" => (JobOp::Start, m.start(id, now)),
                    "stop" => (JobOp::Stop, m.stop(id, now)),
                    "turn-off" => (JobOp::TurnOff, m.turn_off(id)),
                    "pause" => (JobOp::Pause, m.pause(id)),
                    "resume" => (JobOp::Resume, m.resume(id)),
                    "save" => (JobOp::Save, m.save(id)),
                    _ => (JobOp::Restore, m.restore(id, now)),
                };
                match result {
                    Ok(()) => self.begun(vms, op, Some((id, name)), false, now),
                    Err(e) => vm_error(&e),
                }
            }
            _ => not_found("no such path"),
        }
    }

    fn cancel<H: Hypervisor, S: Store>(
        &mut self,
        vms: &mut VmService<H, S>,
        id: u64,
        now: u64,
    ) -> Response {
        let Some(job) = self.jobs.get(id) else {
            return not_found(&format!("no job {id}"));
        };
        if !Self::cancellable(job, vms) {
            let message = format!(
                "job {id} ({}) cannot be cancelled: it is {}{}",
                job.op.name(),
                job.state.name(),
                if job.state.finished() {
                    ""
                } else {
                    " and its operation cannot be undone"
                }
            );
            return error_response(409, "not_cancellable", &message);
        }
        let vm = job.vm.as_ref().map(|(vm, _)| *vm);
        if let Some(job) = self.jobs.get_mut(id) {
            job.state = JobState::Cancelling;
        }
        let result = match vm {
            Some(vm) => vms.manager.turn_off(vm),
            None => Ok(()),
        };
        if let Some(job) = self.jobs.get_mut(id) {
            match result {
                Ok(()) => job.finish(JobState::Cancelled, now),
                Err(e) => job.fail("internal", format!("the cancel failed: {e}"), now),
            }
        }
        self.job_event(id, now);
        self.absorb(vms, now);
        self.job_response(200, id, vms, now)
    }
}

fn disks(def: &VmDefinition) -> Vec<DiskBody<'_>> {
    def.disks
        .iter()
        .map(|d| DiskBody {
            lun: d.lun,
            path: &d.path,
        })
        .collect()
}
