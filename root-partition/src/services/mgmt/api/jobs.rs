//! Jobs: every long operation the API begins (a VM's start, stop, save,
//! restore, ..., a disk's hot add or remove, the node's shutdown) is a job
//! with a number, a state, a percentage, its elapsed time, the bytes it
//! processed and has left where that means something, an error code and
//! message if it failed, and a cancel where one is possible. The last
//! [`MAX_JOBS`] are kept; finished ones age out first.

use alloc::collections::VecDeque;
use alloc::format;
use alloc::string::String;

use serde::Serialize;

use crate::services::vm::VmId;

/// Jobs kept.
pub const MAX_JOBS: usize = 64;

/// What a job does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobOp {
    /// Start a VM (ends Running).
    Start,
    /// Stop a VM gracefully (ends Off).
    Stop,
    /// Turn a VM off (ends Off).
    TurnOff,
    /// Pause (ends Paused).
    Pause,
    /// Resume (ends Running).
    Resume,
    /// Save (ends Saved).
    Save,
    /// Restore (ends Running).
    Restore,
    /// Add a disk (ends attached).
    DiskAdd,
    /// Remove a disk (ends detached).
    DiskRemove,
    /// Stop every VM and the node.
    NodeShutdown,
}

impl JobOp {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            JobOp::Start => "start",
            JobOp::Stop => "stop",
            JobOp::TurnOff => "turn-off",
            JobOp::Pause => "pause",
            JobOp::Resume => "resume",
            JobOp::Save => "save",
            JobOp::Restore => "restore",
            JobOp::DiskAdd => "disk-add",
            JobOp::DiskRemove => "disk-remove",
            JobOp::NodeShutdown => "node-shutdown",
        }
    }

    /// The VM state that ends the job, for the operations that wait for one.
    pub fn end_state(self) -> Option<&'static str> {
        match self {
            JobOp::Start | JobOp::Restore | JobOp::Resume => Some("Running"),
            JobOp::Stop | JobOp::TurnOff => Some("Off"),
            JobOp::Save => Some("Saved"),
            JobOp::Pause => Some("Paused"),
            JobOp::DiskAdd | JobOp::DiskRemove | JobOp::NodeShutdown => None,
        }
    }
}

/// Where a job is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobState {
    /// Under way.
    Running,
    /// Done.
    Completed,
    /// It failed (its error says why).
    Failed,
    /// A cancel is under way.
    Cancelling,
    /// Cancelled.
    Cancelled,
}

impl JobState {
    /// Its name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            JobState::Running => "Running",
            JobState::Completed => "Completed",
            JobState::Failed => "Failed",
            JobState::Cancelling => "Cancelling",
            JobState::Cancelled => "Cancelled",
        }
    }

    /// Whether the job is over.
    pub fn finished(self) -> bool {
        matches!(
            self,
            JobState::Completed | JobState::Failed | JobState::Cancelled
        )
    }
}

/// One job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Job {
    /// Its number (from 1).
    pub id: u64,
    /// What it does.
    pub op: JobOp,
    /// The VM it works on (none for the node's).
    pub vm: Option<(VmId, String)>,
    /// Where it is.
    pub state: JobState,
    /// 0 to 100.
    pub percent: u8,
    /// When it began (node clock).
    pub started_ns: u64,
    /// When it ended.
    pub ended_ns: Option<u64>,
    /// Bytes processed, where that means something (a save's memory).
    pub processed_bytes: Option<u64>,
    /// Bytes left to process.
    pub remaining_bytes: Option<u64>,
    /// Why it failed: code and message.
    pub error: Option<(String, String)>,
}

/// A job as the API sends it.
#[derive(Serialize)]
pub struct JobBody<'a> {
    id: u64,
    url: String,
    operation: &'static str,
    vm: Option<&'a str>,
    state: &'static str,
    percent: u8,
    elapsed_ms: u64,
    processed_bytes: Option<u64>,
    remaining_bytes: Option<u64>,
    cancellable: bool,
    error: Option<ErrorBody<'a>>,
}

/// A job's error.
#[derive(Serialize)]
pub struct ErrorBody<'a> {
    code: &'a str,
    message: &'a str,
}

/// A job's URL.
pub fn job_url(id: u64) -> String {
    format!("/api/v1/jobs/{id}")
}

impl Job {
    /// Its body at `now_ns`; `cancellable` as the caller found it.
    pub fn body(&self, now_ns: u64, cancellable: bool) -> JobBody<'_> {
        JobBody {
            id: self.id,
            url: job_url(self.id),
            operation: self.op.name(),
            vm: self.vm.as_ref().map(|(_, n)| n.as_str()),
            state: self.state.name(),
            percent: self.percent,
            elapsed_ms: self
                .ended_ns
                .unwrap_or(now_ns)
                .saturating_sub(self.started_ns)
                / 1_000_000,
            processed_bytes: self.processed_bytes,
            remaining_bytes: self.remaining_bytes,
            cancellable,
            error: self
                .error
                .as_ref()
                .map(|(code, message)| ErrorBody { code, message }),
        }
    }

    /// Ends the job in `state` at `now_ns`.
    pub fn finish(&mut self, state: JobState, now_ns: u64) {
        self.state = state;
        self.ended_ns = Some(now_ns);
        if state == JobState::Completed {
            self.percent = 100;
            if let Some(left) = self.remaining_bytes.take() {
                self.processed_bytes = Some(self.processed_bytes.unwrap_or(0) + left);
                self.remaining_bytes = Some(0);
            }
        }
    }

    /// Fails the job with `code` and `message`.
    pub fn fail(&mut self, code: &str, message: String, now_ns: u64) {
        self.error = Some((String::from(code), message));
        self.finish(JobState::Failed, now_ns);
    }
}

/// The kept jobs, oldest first.
#[derive(Debug)]
pub struct Jobs {
    jobs: VecDeque<Job>,
    next: u64,
}

impl Default for Jobs {
    fn default() -> Self {
        Jobs {
            jobs: VecDeque::new(),
            next: 1,
        }
    }
}

impl Jobs {
    /// Whether a new job has room (a finished one can age out, or fewer
    /// than [`MAX_JOBS`] are kept).
    pub fn has_room(&self) -> bool {
        self.jobs.len() < MAX_JOBS || self.jobs.iter().any(|j| j.state.finished())
    }

    /// Begins a job (the caller checked [`Jobs::has_room`]); returns its id.
    pub fn begin(&mut self, op: JobOp, vm: Option<(VmId, String)>, now_ns: u64) -> u64 {
        if self.jobs.len() >= MAX_JOBS {
            let oldest = self
                .jobs
                .iter()
                .position(|j| j.state.finished())
                .unwrap_or(0);
            self.jobs.remove(oldest);
        }
        let id = self.next;
        self.next += 1;
        self.jobs.push_back(Job {
            id,
            op,
            vm,
            state: JobState::Running,
            percent: 0,
            started_ns: now_ns,
            ended_ns: None,
            processed_bytes: None,
            remaining_bytes: None,
            error: None,
        });
        id
    }

    /// Job `id`.
    pub fn get(&self, id: u64) -> Option<&Job> {
        self.jobs.iter().find(|j| j.id == id)
    }

    /// Job `id`, to change.
    pub fn get_mut(&mut self, id: u64) -> Option<&mut Job> {
        self.jobs.iter_mut().find(|j| j.id == id)
    }

    /// Every kept job, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Job> {
        self.jobs.iter()
    }

    /// Every kept job, to change.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = &mut Job> {
        self.jobs.iter_mut()
    }
}
