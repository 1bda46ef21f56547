//! The management plane's QEMU cases (issue 16): a node driven only
//! through `capctl` over its forwarded management port, and a node under
//! bad tokens and a flood of bad requests while a VM runs and a second
//! client keeps asking. Every JSON answer is validated against
//! `docs/openapi.json` with the library's validator.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ipc::markers;
use root_partition::services::mgmt::api::openapi::OpenApi;
use serde_json::Value;

use crate::cases::{Case, Ports, Script, case, machine};
use crate::harness::{Expectation, ExpectedExit, Limits};
use image::qemu::Firmware;
use ipc::exit::ExitCode;

/// The node's line once its management API listens.
pub const API_LISTENING: &str = "root partition: node: management API at 10.0.2.15:7100";
/// The node's line once it stopped and flushed its data volume.
pub const VOLUME_FLUSHED: &str = "root partition: node: data volume flushed";

/// How long the client waits for the node's API at first (the node boots
/// under TCG first).
const API_UP: Duration = Duration::from_secs(240);

fn openapi() -> Result<&'static OpenApi, String> {
    static DOC: std::sync::OnceLock<Result<OpenApi, String>> = std::sync::OnceLock::new();
    DOC.get_or_init(OpenApi::document)
        .as_ref()
        .map_err(Clone::clone)
}

/// Checks `body` against the document's schema for the answer.
fn validate(method: &str, path: &str, status: u16, body: &Value) -> Result<(), String> {
    let bytes = serde_json::to_vec(body).map_err(|e| e.to_string())?;
    openapi()?
        .check_response(method, path, status, "application/json", &bytes)
        .map_err(|e| {
            format!(
                "{method} {path} -> {status}: answer does not match docs/openapi.json: {e}: {body}"
            )
        })
}

/// A node's address and token for `capctl`.
struct Node {
    capctl: PathBuf,
    port: u16,
    token: PathBuf,
}

impl Node {
    fn new(ports: &Ports) -> Result<Node, String> {
        let disk = ports.data_disk.as_deref().ok_or("no data disk")?;
        Ok(Node {
            capctl: image::datadisk::capctl().map_err(|e| format!("{e:#}"))?,
            port: ports.port,
            token: image::front::token_path(disk),
        })
    }

    /// `capctl --node .. --token-file .. --json ARGS`: stdout on success,
    /// the exit code and both outputs otherwise.
    fn run(&self, args: &[&str]) -> Result<String, (i32, String)> {
        let out = Command::new(&self.capctl)
            .arg("--node")
            .arg(format!("127.0.0.1:{}", self.port))
            .arg("--token-file")
            .arg(&self.token)
            .arg("--json")
            .args(args)
            .output()
            .map_err(|e| (-1, format!("capctl: {e}")))?;
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            Ok(stdout)
        } else {
            Err((
                out.status.code().unwrap_or(-1),
                format!(
                    "capctl {}: exit {:?}: {stdout} {}",
                    args.join(" "),
                    out.status.code(),
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            ))
        }
    }

    /// [`Node::run`], its output parsed and validated as the answer to
    /// `method path` with `status`.
    fn json(&self, args: &[&str], method: &str, path: &str, status: u16) -> Result<Value, String> {
        let text = self.run(args).map_err(|(_, e)| e)?;
        let value: Value = serde_json::from_str(text.trim())
            .map_err(|e| format!("capctl {}: not JSON ({e}): {text}", args.join(" ")))?;
        validate(method, path, status, &value)?;
        Ok(value)
    }

    /// A long verb: capctl waits for its job; the job's last state is
    /// validated and must be Completed.
    fn job(&self, args: &[&str]) -> Result<Value, String> {
        let job = self.json(args, "GET", "/api/v1/jobs/1", 200)?;
        if job["state"] != "Completed" {
            return Err(format!(
                "capctl {}: job did not complete: {job}",
                args.join(" ")
            ));
        }
        Ok(job)
    }

    /// Waits for the API to answer `node show`.
    fn wait_up(&self) -> Result<Value, String> {
        let deadline = Instant::now() + API_UP;
        loop {
            match self.run(&["node", "show"]) {
                Ok(text) => {
                    let v: Value = serde_json::from_str(text.trim())
                        .map_err(|e| format!("node show: not JSON ({e}): {text}"))?;
                    validate("GET", "/api/v1/node", 200, &v)?;
                    return Ok(v);
                }
                Err((_, e)) if Instant::now() > deadline => {
                    return Err(format!("the node's API never answered: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    }

    /// A VM's state, as `vm show` tells it.
    fn state(&self, vm: &str) -> Result<String, String> {
        let v = self.json(
            &["vm", "show", vm],
            "GET",
            &format!("/api/v1/vms/{vm}"),
            200,
        )?;
        Ok(v["state"].as_str().unwrap_or_default().to_owned())
    }

    /// Waits until `vm` is in `state`.
    fn wait_state(&self, vm: &str, state: &str, within: Duration) -> Result<(), String> {
        let deadline = Instant::now() + within;
        loop {
            let now = self.state(vm)?;
            if now == state {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!("VM {vm} is {now}, not {state}, after {within:?}"));
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }
}

/// A key-value session on the VM-traffic network.
struct Kv {
    stream: TcpStream,
    pending: Vec<u8>,
}

impl Kv {
    /// Connects (retrying while the service comes up) and checks it answers.
    fn connect(port: u16, within: Duration) -> Result<Kv, String> {
        let deadline = Instant::now() + within;
        loop {
            let attempt = TcpStream::connect(("127.0.0.1", port))
                .map_err(|e| e.to_string())
                .and_then(|stream| {
                    stream
                        .set_read_timeout(Some(Duration::from_secs(20)))
                        .map_err(|e| e.to_string())?;
                    let mut kv = Kv {
                        stream,
                        pending: Vec::new(),
                    };
                    let probe = kv.ask("GET capvisor-probe")?;
                    if probe != "NOT_FOUND" && !probe.starts_with("VALUE") {
                        return Err(format!("probe answered {probe:?}"));
                    }
                    Ok(kv)
                });
            match attempt {
                Ok(kv) => return Ok(kv),
                Err(e) if Instant::now() > deadline => {
                    return Err(format!("the key-value service never answered: {e}"));
                }
                Err(_) => std::thread::sleep(Duration::from_secs(1)),
            }
        }
    }

    /// Sends `line`, returns the answer line.
    fn ask(&mut self, line: &str) -> Result<String, String> {
        self.stream
            .write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("kv {line}: {e}"))?;
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let answer: Vec<u8> = self.pending.drain(..=end).collect();
                return Ok(String::from_utf8_lossy(&answer).trim().to_owned());
            }
            let mut buf = [0u8; 512];
            let n = self
                .stream
                .read(&mut buf)
                .map_err(|e| format!("kv {line}: {e}"))?;
            if n == 0 {
                return Err(format!("kv {line}: the service closed the connection"));
            }
            self.pending.extend_from_slice(&buf[..n]);
        }
    }

    fn expect(&mut self, line: &str, answer: &str) -> Result<(), String> {
        let got = self.ask(line)?;
        if got == answer {
            Ok(())
        } else {
            Err(format!("kv {line}: answered {got:?}, expected {answer:?}"))
        }
    }
}

/// Writes a new API token for `disk` with capctl (`node token --volume`).
fn make_token(disk: &Path) -> Result<(), String> {
    let capctl = image::datadisk::capctl().map_err(|e| format!("{e:#}"))?;
    image::front::make_token(&capctl, disk)
        .map(|_| ())
        .map_err(|e| format!("{e:#}"))
}

/// A failed client shuts the node down (best effort) so its boot ends now
/// and the failure is reported, instead of the node running on to the
/// case's time limit.
fn or_shut_down(ports: &Ports, outcome: Result<String, String>) -> Result<String, String> {
    if outcome.is_err()
        && let Ok(node) = Node::new(ports)
    {
        let _ = node.run(&["node", "shutdown", "--no-wait"]);
    }
    outcome
}

/// Must-show 1: create, start, talk, hot-add, pause/resume, save/restore
/// with the session kept, graceful stop, delete, node shutdown.
fn lifecycle_client(ports: Ports) -> Result<String, String> {
    or_shut_down(&ports, lifecycle(&ports))
}

fn lifecycle(ports: &Ports) -> Result<String, String> {
    let node = Node::new(ports)?;
    let shown = node.wait_up()?;
    let args = image::front::demo_args();
    let created = node.json(
        &[
            "vm",
            "create",
            "t1",
            "--memory",
            "32M",
            "--vcpus",
            "1",
            "--workload",
            "kv",
            "--args",
            &args,
            "--nic",
            "--disk",
            "/alpha.vhd:0",
        ],
        "POST",
        "/api/v1/vms",
        201,
    )?;
    if created["state"] != "Off" {
        return Err(format!("a new VM is not Off: {created}"));
    }
    let list = node.json(&["vm", "list"], "GET", "/api/v1/vms", 200)?;
    if !list["vms"]
        .as_array()
        .is_some_and(|v| v.iter().any(|vm| vm["name"] == "t1"))
    {
        return Err(format!("vm list does not show t1: {list}"));
    }
    node.job(&["vm", "start", "t1"])?;
    node.wait_state("t1", "Running", Duration::from_secs(60))?;
    // The event stream from the start: t1 defined, then started.
    let events = node.run(&["events", "--since", "0"]).map_err(|(_, e)| e)?;
    let running = events.lines().any(|l| {
        serde_json::from_str::<Value>(l)
            .is_ok_and(|e| e.to_string().contains("\"t1\"") && e.to_string().contains("Running"))
    });
    if !running {
        return Err(format!(
            "the event stream does not show t1 running: {events}"
        ));
    }
    let mut kv = Kv::connect(ports.uplink, Duration::from_secs(120))?;
    kv.expect("SET greeting hello", "OK")?;
    kv.expect("GET greeting", "VALUE hello")?;
    // Hot add a second disk to the running VM.
    node.job(&[
        "vm",
        "disk",
        "add",
        "t1",
        "--path",
        "/extra.vhd",
        "--lun",
        "1",
    ])?;
    let shown_vm = node.json(&["vm", "show", "t1"], "GET", "/api/v1/vms/t1", 200)?;
    if !shown_vm["disks"]
        .as_array()
        .is_some_and(|d| d.iter().any(|d| d["lun"] == 1))
    {
        return Err(format!("the hot-added disk is not in the VM: {shown_vm}"));
    }
    // A wrong state is refused with the state named.
    match node.run(&["vm", "resume", "t1"]) {
        Err((1, e)) if e.contains("Running") => {}
        other => {
            return Err(format!(
                "resume of a running VM was not refused with its state: {other:?}"
            ));
        }
    }
    node.job(&["vm", "pause", "t1"])?;
    if node.state("t1")? != "Paused" {
        return Err("pause did not leave the VM Paused".into());
    }
    node.job(&["vm", "resume", "t1"])?;
    kv.expect("GET greeting", "VALUE hello")?;
    // The guest's console lines so far (its bus's; a restored bus starts
    // a new tail).
    let console = node.json(
        &["vm", "console", "t1"],
        "GET",
        "/api/v1/vms/t1/console",
        200,
    )?;
    let serving = |l: &Value| l.as_str().is_some_and(|l| l.contains("kv: serving"));
    if !console["lines"]
        .as_array()
        .is_some_and(|l| l.iter().any(serving))
    {
        return Err(format!(
            "the VM's console does not show its service: {console}"
        ));
    }
    node.job(&["vm", "save", "t1"])?;
    if node.state("t1")? != "Saved" {
        return Err("save did not leave the VM Saved".into());
    }
    node.job(&["vm", "restore", "t1"])?;
    // The same TCP session goes on after the restore.
    kv.expect("GET greeting", "VALUE hello")?;
    kv.expect("SET after restore", "OK")?;
    drop(kv);
    node.job(&["vm", "stop", "t1"])?;
    if node.state("t1")? != "Off" {
        return Err("stop did not leave the VM Off".into());
    }
    let deleted = node.run(&["vm", "delete", "t1"]).map_err(|(_, e)| e)?;
    match node.run(&["vm", "show", "t1"]) {
        Err((1, e)) if e.to_lowercase().contains("no such vm") => {}
        other => return Err(format!("a deleted VM is still shown: {other:?}")),
    }
    let jobs = node.json(&["job", "list"], "GET", "/api/v1/jobs", 200)?;
    let count = jobs["jobs"].as_array().map_or(0, Vec::len);
    node.job(&["node", "shutdown"]).or_else(|e| {
        // The node may power off before capctl sees the job's end.
        if e.contains("unreachable") || e.contains("connect") {
            Ok(Value::Null)
        } else {
            Err(e)
        }
    })?;
    Ok(format!(
        "node {} answered every step; {count} jobs; delete said {}",
        shown["name"],
        deleted.trim()
    ))
}

/// After the node stopped: t1's store is on its disk (the kv workload
/// saved it when asked to shut down).
fn lifecycle_disk_check(disk: &Path) -> Result<(), String> {
    let records = kv_records_on(disk, "/alpha.vhd")?;
    for (key, value) in [("greeting", "hello"), ("after", "restore")] {
        if !records.iter().any(|(k, v)| k == key && v == value) {
            return Err(format!("{key}={value} is not on /alpha.vhd: {records:?}"));
        }
    }
    Ok(())
}

/// The kv workload's records on the VHD `vhd` of the volume `disk`
/// (copied out and read with capctl, decoded with `ipc::kv`).
fn kv_records_on(disk: &Path, vhd: &str) -> Result<Vec<(String, String)>, String> {
    let capctl = image::datadisk::capctl().map_err(|e| format!("{e:#}"))?;
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let copy = dir.path().join("disk.vhd");
    let raw = dir.path().join("disk.raw");
    let run = |args: &[&std::ffi::OsStr]| -> Result<(), String> {
        let out = Command::new(&capctl)
            .args(args)
            .output()
            .map_err(|e| format!("capctl: {e}"))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("capctl: {}", String::from_utf8_lossy(&out.stderr)))
        }
    };
    run(&[
        "vol".as_ref(),
        "get".as_ref(),
        disk.as_os_str(),
        vhd.as_ref(),
        copy.as_os_str(),
    ])?;
    run(&[
        "disk".as_ref(),
        "read".as_ref(),
        copy.as_os_str(),
        "--length".as_ref(),
        "1M".as_ref(),
        "-o".as_ref(),
        raw.as_os_str(),
    ])?;
    let bytes = std::fs::read(&raw).map_err(|e| e.to_string())?;
    let table = ipc::kv::decode(&bytes).map_err(|e| format!("{vhd}: {e}"))?;
    Ok(table
        .iter()
        .map(|(k, v)| {
            (
                String::from_utf8_lossy(k).into_owned(),
                String::from_utf8_lossy(v).into_owned(),
            )
        })
        .collect())
}

/// One raw HTTP exchange (`Connection: close`): the status and body.
fn http(port: u16, request: &[u8]) -> Result<(u16, String), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    s.write_all(request).map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no status line in {text:?}"))?;
    let body = text
        .split_once("\r\n\r\n")
        .map_or("", |(_, b)| b)
        .to_owned();
    Ok((status, body))
}

fn get(path: &str, token: Option<&str>) -> Vec<u8> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: node\r\n{auth}Connection: close\r\n\r\n").into_bytes()
}

/// The node's `api.refused` counter.
fn refused(port: u16, token: &str) -> Result<u64, String> {
    let (status, body) = http(port, &get("/api/v1/node", Some(token)))?;
    let v: Value = serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
    validate("GET", "/api/v1/node", status, &v)?;
    v["api"]["refused"]
        .as_u64()
        .ok_or_else(|| format!("no api.refused in {v}"))
}

/// One bad request of kind `i % 5`: garbage, a head past the limit, a
/// body past the limit, a bad JSON body, a slow request held 12 s.
fn bad_request(port: u16, i: usize, token: &str) -> Result<Option<u16>, String> {
    let request: Vec<u8> = match i % 5 {
        0 => format!("\x01\x02GARBAGE {i} \u{7f}\r\n\r\n").into_bytes(),
        1 => format!(
            "GET /api/v1/vms HTTP/1.1\r\nX-Pad: {}\r\n\r\n",
            "a".repeat(12 * 1024)
        )
        .into_bytes(),
        2 => format!(
            "POST /api/v1/vms HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: 10000000\r\n\r\n{{"
        )
        .into_bytes(),
        3 => {
            let body = "{\"name\": [1, 2";
            format!(
                "POST /api/v1/vms HTTP/1.1\r\nAuthorization: Bearer {token}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            )
            .into_bytes()
        }
        _ => {
            // Slow: half a head, then the client leaves ([`held_slow`]
            // holds some to the node's limit).
            let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
            s.write_all(b"GET /api/v1/vms HTTP/1.1\r\nHost: sl")
                .map_err(|e| e.to_string())?;
            return Ok(None);
        }
    };
    http(port, &request).map(|(status, _)| Some(status))
}

/// Slow requests held open until the node gives up on them: `waves` of
/// four at once (half the node's connections: the others keep serving);
/// the status each got.
fn held_slow(port: u16, waves: usize) -> Vec<Result<u16, String>> {
    let mut out = Vec::new();
    for _ in 0..waves {
        let held: Vec<_> = (0..4)
            .map(|_| {
                std::thread::spawn(move || -> Result<u16, String> {
                    let mut s =
                        TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
                    s.write_all(b"GET /api/v1/vms HTTP/1.1\r\nHost: sl")
                        .map_err(|e| e.to_string())?;
                    s.set_read_timeout(Some(Duration::from_secs(30)))
                        .map_err(|e| e.to_string())?;
                    let mut answer = Vec::new();
                    let _ = s.read_to_end(&mut answer);
                    let text = String::from_utf8_lossy(&answer);
                    text.split_whitespace()
                        .nth(1)
                        .and_then(|c| c.parse().ok())
                        .ok_or_else(|| format!("no status for a slow request: {text:?}"))
                })
            })
            .collect();
        out.extend(
            held.into_iter()
                .map(|t| t.join().unwrap_or_else(|_| Err("panicked".into()))),
        );
    }
    out
}

/// Must-show 2: tokens refused and counted; 1,000 bad requests while a
/// VM runs and a second client keeps asking; every valid request answered.
fn security_client(ports: Ports) -> Result<String, String> {
    or_shut_down(&ports, security(&ports))
}

fn security(ports: &Ports) -> Result<String, String> {
    let node = Node::new(ports)?;
    node.wait_up()?;
    let token = std::fs::read_to_string(&node.token)
        .map_err(|e| format!("token file: {e}"))?
        .trim()
        .to_owned();
    node.wait_state("kv", "Running", Duration::from_secs(120))?;
    let mut kv = Kv::connect(ports.uplink, Duration::from_secs(120))?;
    kv.expect("SET before flood", "OK")?;
    let port = ports.port;
    let before = refused(port, &token)?;
    let (status, body) = http(port, &get("/api/v1/vms", None))?;
    if status != 401 {
        return Err(format!("no token: {status} {body}"));
    }
    validate(
        "GET",
        "/api/v1/vms",
        401,
        &serde_json::from_str(&body).unwrap_or(Value::Null),
    )?;
    let wrong = "0".repeat(64);
    let (status, body) = http(port, &get("/api/v1/vms", Some(&wrong)))?;
    if status != 401 {
        return Err(format!("wrong token: {status} {body}"));
    }
    match node.run(&["vm", "list"]) {
        Ok(_) => {}
        Err((_, e)) => return Err(format!("the right token was refused: {e}")),
    }
    let after = refused(port, &token)?;
    if after != before + 2 {
        return Err(format!("refusals counted {before} -> {after}, expected +2"));
    }
    // The flood and a valid client side by side.
    let done = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let valid = {
        let (done, answered, token) = (done.clone(), answered.clone(), token.clone());
        std::thread::spawn(move || -> Result<(), String> {
            while !done.load(Ordering::SeqCst) {
                let (status, body) = http(port, &get("/api/v1/vms", Some(&token)))
                    .map_err(|e| format!("a valid request was not answered: {e}"))?;
                if status != 200 {
                    return Err(format!("a valid request got {status}: {body}"));
                }
                let v: Value = serde_json::from_str(&body).map_err(|e| e.to_string())?;
                validate("GET", "/api/v1/vms", 200, &v)?;
                answered.fetch_add(1, Ordering::SeqCst);
            }
            Ok(())
        })
    };
    let slow = std::thread::spawn(move || held_slow(port, 2));
    let mut statuses = std::collections::BTreeMap::new();
    let mut flood_error = None;
    for i in 0..1000 {
        match bad_request(port, i, &token) {
            Ok(Some(status)) => *statuses.entry(status).or_insert(0u32) += 1,
            Ok(None) => {}
            // A connection the node closed at once counts as refused.
            Err(_) => *statuses.entry(0).or_insert(0u32) += 1,
        }
        if let Some(bad) = statuses.keys().find(|s| matches!(s, 200..=299 | 500..)) {
            flood_error = Some(format!("a bad request got {bad}"));
            break;
        }
    }
    for held in slow.join().map_err(|_| "the slow clients panicked")? {
        *statuses.entry(held?).or_insert(0u32) += 1;
    }
    done.store(true, Ordering::SeqCst);
    let valid = valid.join().map_err(|_| "the valid client panicked")?;
    valid?;
    if let Some(e) = flood_error {
        return Err(e);
    }
    for needed in [400, 408, 413, 431] {
        if !statuses.contains_key(&needed) {
            return Err(format!(
                "no {needed} among the answers to the flood: {statuses:?}"
            ));
        }
    }
    let answered = answered.load(Ordering::SeqCst);
    if answered < 10 {
        return Err(format!(
            "only {answered} valid requests were made during the flood"
        ));
    }
    node.wait_state("kv", "Running", Duration::from_secs(5))?;
    kv.expect("GET before", "VALUE flood")?;
    let shown = node.wait_up()?;
    node.job(&["node", "shutdown"]).or_else(|e| {
        if e.contains("unreachable") || e.contains("connect") {
            Ok(Value::Null)
        } else {
            Err(e)
        }
    })?;
    Ok(format!(
        "flood answers {statuses:?}; {answered} valid requests answered during it; node stats {}",
        shown["api"]
    ))
}

/// A token, and `alpha` and `beta` (idle, autostart).
pub(crate) fn prepare_two_idle_vms(disk: &Path) -> Result<(), String> {
    make_token(disk)?;
    crate::cases::define_two_idle_vms(disk)
}

/// `capctl vm list` until both VMs show Running (90 s at most).
pub(crate) fn two_vms_running_client(ports: Ports) -> Result<String, String> {
    let node = Node::new(&ports)?;
    node.wait_up()?;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let list = node.json(&["vm", "list"], "GET", "/api/v1/vms", 200)?;
        let running = |name: &str| {
            list["vms"].as_array().is_some_and(|v| {
                v.iter()
                    .any(|vm| vm["name"] == name && vm["state"] == "Running")
            })
        };
        if running("alpha") && running("beta") {
            return Ok(format!("vm list: {list}"));
        }
        if Instant::now() > deadline {
            return Err(format!("alpha and beta are not both Running: {list}"));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Defines `kv` (autostart, on the VM-traffic network) and a token.
fn prepare_kv_node(disk: &Path) -> Result<(), String> {
    make_token(disk)?;
    let capctl = image::datadisk::capctl().map_err(|e| format!("{e:#}"))?;
    image::front::define_demo(&capctl, disk).map_err(|e| format!("{e:#}"))
}

fn node_markers(last: Duration) -> Vec<Expectation> {
    vec![
        Expectation::new(markers::ROOT_BANNER, Duration::from_secs(60)),
        Expectation::new(API_LISTENING, Duration::from_secs(120)),
        Expectation::new("root: node stopping: stopping every VM", last),
        Expectation::new(VOLUME_FLUSHED, Duration::from_secs(120)),
        Expectation::new(
            "root partition: node stopped after",
            Duration::from_secs(60),
        ),
    ]
}

/// A node that runs until `capctl node shutdown`, waiting for
/// [`node_markers`], with up to 10 minutes in all.
fn node_case(name: &'static str) -> Case {
    let mut c = case(
        name,
        machine(2, "EPYC", Firmware::Bios, true),
        "",
        Script::Node,
        ExpectedExit::Kernel(ExitCode::Success),
    );
    c.markers = node_markers(Duration::from_secs(540));
    c.limits = Limits {
        overall: Duration::from_secs(600),
        exit: Duration::from_secs(45),
    };
    c
}

/// The management plane's cases.
pub fn cases() -> Vec<Case> {
    vec![
        node_case("management_capctl_drives_a_vm_through_its_life")
        .prepare("capctl node token", make_token)
        .host_client_with_uplink(
            "capctl: create, start, kv, disk add, pause, resume, save, restore, stop, delete, shutdown",
            "10.0.2.15:7100",
            "10.0.2.20:7000",
            lifecycle_client,
        )
        .host_check("t1's store on its disk after the graceful stop", lifecycle_disk_check),
        node_case("management_refuses_bad_tokens_and_survives_1000_bad_requests")
            .prepare(
                "capctl node token, vm define kv (autostart)",
                prepare_kv_node,
            )
            .host_client_with_uplink(
                "401s counted; 1,000 bad requests beside a valid client",
                "10.0.2.15:7100",
                "10.0.2.20:7000",
                security_client,
            ),
    ]
}
