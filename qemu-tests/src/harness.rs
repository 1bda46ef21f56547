//! The serial-marker harness: runs a child process, reads its stdout line by
//! line, matches markers in order, then checks how it exited.
//!
//! # Invariants
//! Markers match distinct lines, in order (a line matches when it contains the
//! marker). The child never outlives [`run`]: on any failure, or when the
//! overall deadline passes, it is killed through its own PID and reaped.

use std::fmt;
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use ipc::exit::ExitCode;

/// One marker to wait for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expectation {
    /// Text a serial line must contain.
    pub marker: String,
    /// How long to wait for it after the previous marker.
    pub timeout: Duration,
    /// Part of an unordered group: consecutive unordered expectations may
    /// be seen in any order (concurrent vCPUs), each on its own line, all
    /// after the marker before the group.
    pub unordered: bool,
}

impl Expectation {
    /// Waits `timeout` for a line containing `marker` (rendered with `Display`).
    pub fn new(marker: impl fmt::Display, timeout: Duration) -> Self {
        Expectation {
            marker: marker.to_string(),
            timeout,
            unordered: false,
        }
    }

    /// As [`Expectation::new`], in an unordered group with its unordered neighbours.
    pub fn any_order(marker: impl fmt::Display, timeout: Duration) -> Self {
        Expectation {
            unordered: true,
            ..Expectation::new(marker, timeout)
        }
    }
}

/// Matches `group` against `serial[cursor..]`, each marker on a distinct
/// line; returns the index after the last line used, or `None` if some
/// marker is not there yet.
fn match_group(serial: &[String], cursor: usize, group: &[Expectation]) -> Option<usize> {
    let mut used: Vec<usize> = Vec::new();
    for expectation in group {
        let line = (cursor..serial.len())
            .find(|i| !used.contains(i) && serial[*i].contains(&expectation.marker))?;
        used.push(line);
    }
    used.iter().max().map(|last| last + 1)
}

/// Splits expectations into groups: one ordered marker, or a run of unordered ones.
fn groups(expectations: &[Expectation]) -> Vec<&[Expectation]> {
    let mut out = Vec::new();
    let mut start = 0;
    while start < expectations.len() {
        let mut end = start + 1;
        if expectations[start].unordered {
            while end < expectations.len() && expectations[end].unordered {
                end += 1;
            }
        }
        out.push(&expectations[start..end]);
        start = end;
    }
    out
}

/// The exit status a run must end with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpectedExit {
    /// The kernel wrote this code to `isa-debug-exit`.
    Kernel(ExitCode),
    /// The process exits with this status (e.g. 0 after an ACPI power-off).
    Status(i32),
    /// The process exits, with any status: the markers decide (Bochs exits
    /// with 1 whatever happened; its cases end on the kernel's `run ended` line).
    Any,
}

impl ExpectedExit {
    /// The process status this expectation stands for.
    pub fn status(self) -> i32 {
        match self {
            ExpectedExit::Kernel(code) => code.qemu_status(),
            ExpectedExit::Status(status) => status,
            ExpectedExit::Any => -1,
        }
    }

    fn matches(self, status: ExitStatus) -> bool {
        self == ExpectedExit::Any || status.code() == Some(self.status())
    }
}

impl fmt::Display for ExpectedExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExpectedExit::Kernel(code) => write!(f, "{code:?} (status {})", code.qemu_status()),
            ExpectedExit::Status(status) => write!(f, "status {status}"),
            ExpectedExit::Any => write!(f, "any status"),
        }
    }
}

/// Time limits of one run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Hard limit for the whole run, whatever the markers allow.
    pub overall: Duration,
    /// How long the child may take to exit after the last marker.
    pub exit: Duration,
}

/// What a successful run saw.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transcript {
    /// Every stdout line.
    pub serial: Vec<String>,
    /// How the child exited.
    pub status: ExitStatus,
}

/// Why a run failed, with everything it captured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub reason: String,
    /// The stdout lines captured so far.
    pub serial: Vec<String>,
    /// The child's stderr captured so far.
    pub stderr: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.reason)?;
        writeln!(f, "---- serial log ({} lines) ----", self.serial.len())?;
        for line in &self.serial {
            writeln!(f, "{line}")?;
        }
        writeln!(f, "---- end of serial log ----")?;
        if !self.stderr.trim().is_empty() {
            writeln!(
                f,
                "---- stderr ----\n{}\n---- end of stderr ----",
                self.stderr.trim_end()
            )?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// The child process, killed and reaped when dropped unless it already exited.
struct Guarded(Child);

impl Guarded {
    /// Waits until the child exits or `deadline` passes.
    fn wait_until(&mut self, deadline: Instant) -> Option<ExitStatus> {
        loop {
            match self.0.try_wait() {
                Ok(Some(status)) => return Some(status),
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            // `Child::kill` signals exactly this child's PID; an error means it already exited.
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `cmd` (stdin closed, stdout and stderr captured), waits for each
/// marker of `expectations` in order, then for the child to exit with `exit`.
pub fn run(
    mut cmd: Command,
    expectations: &[Expectation],
    exit: ExpectedExit,
    limits: Limits,
) -> Result<Transcript, Failure> {
    let started = Instant::now();
    let hard_deadline = started + limits.overall;
    let stderr_text = Arc::new(Mutex::new(String::new()));
    let failure = |reason: String, serial: &[String]| Failure {
        reason,
        serial: serial.to_vec(),
        stderr: stderr_text
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone(),
    };

    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match cmd.spawn() {
        Ok(child) => Guarded(child),
        Err(error) => return Err(failure(format!("could not start {cmd:?}: {error}"), &[])),
    };
    let lines = match child.0.stdout.take() {
        Some(stdout) => spawn_line_reader(stdout),
        None => return Err(failure("child has no stdout pipe".to_owned(), &[])),
    };
    if let Some(stderr) = child.0.stderr.take() {
        spawn_text_collector(stderr, Arc::clone(&stderr_text));
    }

    let mut serial: Vec<String> = Vec::new();
    let mut cursor = 0;
    let mut seen = 0;
    for group in groups(expectations) {
        let index = seen;
        let timeout = group.iter().map(|e| e.timeout).max().unwrap_or_default();
        let deadline = (Instant::now() + timeout).min(hard_deadline);
        let wanted = || {
            let texts: Vec<&str> = group.iter().map(|e| e.marker.as_str()).collect();
            texts.join("\" + \"")
        };
        loop {
            if let Some(next) = match_group(&serial, cursor, group) {
                cursor = next;
                seen += group.len();
                break;
            }
            let wait = deadline.saturating_duration_since(Instant::now());
            match lines.recv_timeout(wait) {
                Ok(Some(line)) => serial.push(line),
                Ok(None) | Err(RecvTimeoutError::Disconnected) => {
                    let status = child.wait_until(Instant::now() + Duration::from_secs(5));
                    let how = status.map_or("did not exit".to_owned(), |s| format!("exited: {s}"));
                    return Err(failure(
                        format!(
                            "output ended (the process {how}) before marker {}/{} \"{}\" after {:.1?}",
                            index + 1,
                            expectations.len(),
                            wanted(),
                            started.elapsed()
                        ),
                        &serial,
                    ));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let which = if Instant::now() >= hard_deadline {
                        format!("overall timeout of {:?}", limits.overall)
                    } else {
                        format!("timeout of {timeout:?}")
                    };
                    return Err(failure(
                        format!(
                            "marker {}/{} \"{}\" not seen: {which} passed (after {:.1?}); \
                             the process was killed",
                            index + 1,
                            expectations.len(),
                            wanted(),
                            started.elapsed()
                        ),
                        &serial,
                    ));
                }
            }
        }
    }

    let exit_deadline = (Instant::now() + limits.exit).min(hard_deadline);
    let Some(status) = child.wait_until(exit_deadline) else {
        drain(&lines, &mut serial, Duration::ZERO);
        return Err(failure(
            format!(
                "every marker seen, but the process did not exit within {:?} (expected {exit}); \
                 it was killed",
                limits.exit
            ),
            &serial,
        ));
    };
    drain(&lines, &mut serial, Duration::from_secs(2));
    if !exit.matches(status) {
        let meaning = match status.code().and_then(ipc::exit::from_qemu_status) {
            Some(code) => format!(" = {code:?}"),
            None => String::new(),
        };
        return Err(failure(
            format!(
                "every marker seen, but the process exited with {status}{meaning}; expected {exit}"
            ),
            &serial,
        ));
    }
    Ok(Transcript { serial, status })
}

/// Moves the lines still in flight into `serial`, waiting up to `grace` for the end of output.
fn drain(lines: &Receiver<Option<String>>, serial: &mut Vec<String>, grace: Duration) {
    let deadline = Instant::now() + grace;
    while let Ok(Some(line)) =
        lines.recv_timeout(deadline.saturating_duration_since(Instant::now()))
    {
        serial.push(line);
    }
}

/// Sends each line of `source` (lossily decoded, line ending removed), then `None` at its end.
fn spawn_line_reader(source: impl Read + Send + 'static) -> Receiver<Option<String>> {
    let (sender, receiver) = mpsc::channel();
    thread::spawn(move || {
        let mut reader = BufReader::new(source);
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            match reader.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buffer);
                    let line = line.trim_end_matches(['\n', '\r']).to_owned();
                    if sender.send(Some(line)).is_err() {
                        return;
                    }
                }
            }
        }
        let _ = sender.send(None);
    });
    receiver
}

/// Appends everything `source` produces to `text`, as it arrives.
fn spawn_text_collector(mut source: impl Read + Send + 'static, text: Arc<Mutex<String>>) {
    thread::spawn(move || {
        let mut chunk = [0_u8; 4096];
        while let Ok(count @ 1..) = source.read(&mut chunk) {
            let decoded = String::from_utf8_lossy(&chunk[..count]);
            text.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push_str(&decoded);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", script]);
        cmd
    }

    fn markers(texts: &[&str], seconds: f64) -> Vec<Expectation> {
        texts
            .iter()
            .map(|t| Expectation::new(t, Duration::from_secs_f64(seconds)))
            .collect()
    }

    const LIMITS: Limits = Limits {
        overall: Duration::from_secs(20),
        exit: Duration::from_secs(5),
    };

    #[test]
    fn markers_in_order_and_exit_status_pass() {
        let transcript = run(
            sh("echo 'boot: capvisor'; echo noise; echo 'cpu 0 online'; printf 'last'; exit 33"),
            &markers(&["capvisor", "cpu 0 online", "last"], 5.0),
            ExpectedExit::Kernel(ExitCode::Success),
            LIMITS,
        )
        .expect("markers are there in order");
        assert_eq!(
            transcript.serial,
            ["boot: capvisor", "noise", "cpu 0 online", "last"]
        );
        assert_eq!(transcript.status.code(), Some(33));
    }

    #[test]
    fn markers_out_of_order_fail_at_end_of_output() {
        let failure = run(
            sh("echo second; echo first; exit 0"),
            &markers(&["first", "second"], 5.0),
            ExpectedExit::Status(0),
            LIMITS,
        )
        .expect_err("second came before first");
        assert!(failure.reason.contains("output ended"), "{failure}");
        assert!(
            failure.reason.contains("marker 2/2 \"second\""),
            "{failure}"
        );
        assert_eq!(failure.serial, ["second", "first"]);
    }

    #[test]
    fn unordered_groups_match_in_any_order_but_after_their_anchor() {
        let e = |m: &str, any: bool| {
            let t = Duration::from_secs(5);
            if any {
                Expectation::any_order(m, t)
            } else {
                Expectation::new(m, t)
            }
        };
        let ok = [
            e("start", false),
            e("b1", true),
            e("b0", true),
            e("end", false),
        ];
        let out = run(
            sh("echo start; echo b0; echo b1; echo end"),
            &ok,
            ExpectedExit::Status(0),
            LIMITS,
        );
        assert!(out.is_ok(), "{:?}", out.err());
        // A group member printed before its anchor does not count.
        let out = run(
            sh("echo b0; echo start; echo b1; echo end"),
            &ok,
            ExpectedExit::Status(0),
            LIMITS,
        );
        assert!(out.is_err());
        // Two members cannot share one line.
        let same = [e("b", true), e("b", true)];
        assert!(run(sh("echo b"), &same, ExpectedExit::Status(0), LIMITS).is_err());
    }

    #[test]
    fn one_line_matches_one_marker_only() {
        let failure = run(
            sh("echo 'cpu 0 online'; exit 0"),
            &markers(&["cpu 0 online", "cpu 0 online"], 5.0),
            ExpectedExit::Status(0),
            LIMITS,
        )
        .expect_err("a repeated marker needs a second line");
        assert!(failure.reason.contains("marker 2/2"), "{failure}");
    }

    #[test]
    fn a_missing_marker_times_out_and_kills_the_child() {
        let started = Instant::now();
        let failure = run(
            sh("echo ready; echo 'to stderr' >&2; exec sleep 60"),
            &markers(&["ready", "never printed"], 0.5),
            ExpectedExit::Status(0),
            LIMITS,
        )
        .expect_err("the second marker never comes");
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "took {:?}",
            started.elapsed()
        );
        assert!(failure.reason.contains("timeout of 500ms"), "{failure}");
        assert!(failure.reason.contains("\"never printed\""), "{failure}");
        assert_eq!(failure.serial, ["ready"]);
        let shown = failure.to_string();
        assert!(
            shown.contains("---- serial log (1 lines) ----\nready\n"),
            "{shown}"
        );
        assert!(shown.contains("---- stderr ----\nto stderr\n"), "{shown}");
    }

    #[test]
    fn the_overall_timeout_bounds_every_marker() {
        let started = Instant::now();
        let failure = run(
            sh("exec sleep 60"),
            &markers(&["anything"], 60.0),
            ExpectedExit::Status(0),
            Limits {
                overall: Duration::from_millis(300),
                exit: Duration::from_secs(5),
            },
        )
        .expect_err("nothing is printed");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(failure.reason.contains("overall timeout"), "{failure}");
    }

    #[test]
    fn end_of_output_before_the_markers_fails() {
        let failure = run(
            sh("echo 'capvisor microkernel'; exit 35"),
            &markers(&["capvisor microkernel", "cpu 0 online"], 5.0),
            ExpectedExit::Kernel(ExitCode::Success),
            LIMITS,
        )
        .expect_err("the child stops early");
        assert!(failure.reason.contains("output ended"), "{failure}");
        assert!(failure.reason.contains("exit status: 35"), "{failure}");
    }

    #[test]
    fn a_wrong_exit_status_fails() {
        let failure = run(
            sh("echo done; exit 35"),
            &markers(&["done"], 5.0),
            ExpectedExit::Kernel(ExitCode::Success),
            LIMITS,
        )
        .expect_err("35 is Failure, not Success");
        assert!(failure.reason.contains("= Failure"), "{failure}");
        assert!(
            failure.reason.contains("expected Success (status 33)"),
            "{failure}"
        );
        assert!(
            run(
                sh("echo done; exit 35"),
                &markers(&["done"], 5.0),
                ExpectedExit::Kernel(ExitCode::Failure),
                LIMITS
            )
            .is_ok()
        );
    }

    #[test]
    fn a_child_that_never_exits_is_killed() {
        let started = Instant::now();
        let failure = run(
            sh("echo done; exec sleep 60"),
            &markers(&["done"], 5.0),
            ExpectedExit::Status(0),
            Limits {
                overall: Duration::from_secs(20),
                exit: Duration::from_millis(300),
            },
        )
        .expect_err("the child hangs after its markers");
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(failure.reason.contains("did not exit"), "{failure}");
    }

    #[test]
    fn a_program_that_cannot_start_fails_cleanly() {
        let failure = run(
            Command::new("/no/such/qemu"),
            &markers(&["x"], 1.0),
            ExpectedExit::Status(0),
            LIMITS,
        )
        .expect_err("no such program");
        assert!(failure.reason.contains("could not start"), "{failure}");
    }
}
