//! capctl as the management API's client, end to end: the built binary
//! against a small HTTP/1.1 node stand-in (a thread on 127.0.0.1:0 that
//! answers per the contract from a script and records every request).

use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// One request as the stand-in received it.
#[derive(Clone, Debug)]
struct Recorded {
    method: String,
    /// The target, with its query.
    target: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Recorded {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("request body is JSON")
    }
}

/// What the stand-in answers.
enum Reply {
    Json(u16, Value),
    Empty(u16),
    /// An event stream: this text, then the connection stays open this
    /// long, then closes.
    Sse(String, Duration),
}

type Script = dyn Fn(&Recorded) -> Reply + Send + Sync;

struct Node {
    addr: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
}

impl Node {
    fn start(script: impl Fn(&Recorded) -> Reply + Send + Sync + 'static) -> Node {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr").to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let recorded = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let script = script.clone();
                let recorded = recorded.clone();
                std::thread::spawn(move || serve(stream, &*script, &recorded));
            }
        });
        Node { addr, requests }
    }

    fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().expect("lock").clone()
    }

    fn count(&self, method: &str, target: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.target == target)
            .count()
    }
}

/// Reads one request off `reader`: None when the client closed.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Recorded> {
    let mut head = Vec::new();
    loop {
        let mut line = Vec::new();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            return None;
        }
        head.extend_from_slice(&line);
        if line == b"\r\n" || line == b"\n" {
            break;
        }
    }
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    assert!(
        request
            .parse(&head)
            .expect("well-formed request")
            .is_complete()
    );
    let headers: Vec<(String, String)> = request
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_ascii_lowercase(),
                String::from_utf8_lossy(h.value).into_owned(),
            )
        })
        .collect();
    let length: usize = headers
        .iter()
        .find(|(n, _)| n == "content-length")
        .map(|(_, v)| v.parse().expect("length"))
        .unwrap_or(0);
    assert!(
        !headers.iter().any(|(n, _)| n == "transfer-encoding"),
        "capctl sent a chunked body: the contract wants Content-Length"
    );
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Recorded {
        method: request.method.expect("method").to_owned(),
        target: request.path.expect("path").to_owned(),
        headers,
        body,
    })
}

fn serve(stream: TcpStream, script: &Script, recorded: &Mutex<Vec<Recorded>>) {
    let mut writer = stream.try_clone().expect("clone");
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        recorded.lock().expect("lock").push(request.clone());
        let (status, body) = match script(&request) {
            Reply::Json(status, value) => (status, value.to_string()),
            Reply::Empty(status) => (status, String::new()),
            Reply::Sse(text, open) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                            Cache-Control: no-cache\r\nConnection: close\r\n\r\n";
                let _ = writer.write_all(head.as_bytes());
                let _ = writer.write_all(text.as_bytes());
                let _ = writer.flush();
                std::thread::sleep(open);
                return;
            }
        };
        let mut head = format!(
            "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        );
        if status == 401 {
            head.push_str("WWW-Authenticate: Bearer\r\n");
        }
        head.push_str("\r\n");
        if writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(body.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

fn error(status: u16, code: &str, message: &str) -> Reply {
    Reply::Json(
        status,
        json!({ "error": { "code": code, "message": message } }),
    )
}

/// Runs capctl against `node` with a clean environment of CAPVISOR_*
/// variables plus `env`.
fn capctl_env(node: &str, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_capctl"));
    cmd.env_remove("CAPVISOR_TOKEN")
        .env_remove("CAPVISOR_TOKEN_FILE")
        .env("CAPVISOR_NODE", node);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.args(args).output().expect("run capctl")
}

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// capctl with the token in CAPVISOR_TOKEN.
fn capctl(node: &Node, args: &[&str]) -> Output {
    capctl_env(&node.addr, args, &[("CAPVISOR_TOKEN", TOKEN)])
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "capctl failed: {}{}",
        stdout(out),
        stderr(out)
    );
    stdout(out)
}

/// Exit 1 with one `capctl: error:` line; returns the line.
fn failed(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(1), "{}{}", stdout(out), stderr(out));
    let err = stderr(out);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "one error line: {err}");
    assert!(lines[0].starts_with("capctl: error: "), "{err}");
    lines[0].to_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

fn vm(name: &str, state: &str, uptime: u64, cpu: u64, status: &str) -> Value {
    json!({"name":name,"id":"6f1c2a9e-3b4d-4c5e-8f70-112233445566","state":state,
           "status":status,"memory_mib":32,"vcpus":1,"cpu_usage_percent":cpu,
           "uptime_s":uptime,"workload":"kv","args":[],"disks":[{"lun":0,"path":"/alpha.vhd"}],
           "nic":null,"priority":0,"cpu":null,"autostart":false,"heartbeat":"Ok"})
}

fn job(id: u64, op: &str, state: &str, percent: u64) -> Value {
    json!({"id":id,"url":format!("/api/v1/jobs/{id}"),"operation":op,"vm":"kv","state":state,
           "percent":percent,"elapsed_ms":1200,"processed_bytes":null,"remaining_bytes":null,
           "cancellable":false,"error":null})
}

#[test]
fn the_token_comes_from_a_file_or_the_environment() {
    let node = Node::start(|_| Reply::Json(200, json!({ "vms": [] })));
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("token");
    std::fs::write(&file, "file-token\n").expect("token file");
    let other = dir.path().join("other");
    std::fs::write(&other, "env-file-token").expect("token file");

    let bearer = |out: Output| {
        succeeded(&out);
        let last = node.requests().pop().expect("a request");
        assert_eq!(last.method, "GET");
        assert_eq!(last.target, "/api/v1/vms");
        last.header("authorization")
            .expect("Authorization")
            .to_owned()
    };
    assert_eq!(
        bearer(capctl_env(
            &node.addr,
            &["--token-file", p(&file), "vm", "list"],
            &[]
        )),
        "Bearer file-token"
    );
    assert_eq!(
        bearer(capctl_env(
            &node.addr,
            &["vm", "list"],
            &[("CAPVISOR_TOKEN", "env-token")]
        )),
        "Bearer env-token"
    );
    assert_eq!(
        bearer(capctl_env(
            &node.addr,
            &["vm", "list"],
            &[("CAPVISOR_TOKEN_FILE", p(&other))]
        )),
        "Bearer env-file-token"
    );
    // --token-file wins over both variables; --node over CAPVISOR_NODE.
    assert_eq!(
        bearer(capctl_env(
            "127.0.0.1:1",
            &["--node", &node.addr, "vm", "list", "--token-file", p(&file)],
            &[
                ("CAPVISOR_TOKEN", "env-token"),
                ("CAPVISOR_TOKEN_FILE", p(&other))
            ]
        )),
        "Bearer file-token"
    );
    // No token anywhere: refused before anything is sent.
    let before = node.requests().len();
    let line = failed(&capctl_env(&node.addr, &["vm", "list"], &[]));
    assert!(line.contains("no API token"), "{line}");
    assert_eq!(node.requests().len(), before);
    let missing = dir.path().join("missing");
    let line = failed(&capctl_env(
        &node.addr,
        &["--token-file", p(&missing), "vm", "list"],
        &[],
    ));
    assert!(line.contains(p(&missing)), "{line}");
}

#[test]
fn vm_list_is_a_get_vm_table_or_the_nodes_json() {
    let answer = json!({ "vms": [
        vm("kv", "Running", 3_723, 7, "Operating normally"),
        vm("web-01", "Off", 0, 0, "Operating normally"),
        vm("db", "Failed", 0, 0, "Heartbeat lost"),
    ]});
    let served = answer.clone();
    let node = Node::start(move |_| Reply::Json(200, served.clone()));
    let text = succeeded(&capctl(&node, &["vm", "list"]));
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    let header = lines[0];
    for column in [
        "Name",
        "State",
        "CPU Usage(%)",
        "Memory Assigned(M)",
        "Uptime",
        "Status",
    ] {
        assert!(header.contains(column), "{header}");
    }
    let at = |h: &str| header.find(h).expect("column");
    assert!(at("Name") < at("State") && at("State") < at("CPU Usage(%)"));
    assert!(at("Memory Assigned(M)") < at("Uptime") && at("Uptime") < at("Status"));
    assert!(lines[1].starts_with("----"), "{text}");
    // Each value sits under its header.
    assert_eq!(lines[2].find("kv"), Some(at("Name")));
    assert_eq!(lines[2].find("Running"), Some(at("State")));
    assert_eq!(lines[2].find("01:02:03"), Some(at("Uptime")));
    assert_eq!(lines[2].find("Operating normally"), Some(at("Status")));
    assert_eq!(lines[3].find("Off"), Some(at("State")));
    assert_eq!(lines[4].find("Heartbeat lost"), Some(at("Status")));
    // Numbers are right-aligned under their headers: 7 % and 32 MiB
    // (a running VM holds its memory; an Off one none).
    let cpu_end = at("CPU Usage(%)") + "CPU Usage(%)".len();
    assert_eq!(&lines[2][cpu_end - 1..cpu_end], "7", "{text}");
    let mem_end = at("Memory Assigned(M)") + "Memory Assigned(M)".len();
    assert_eq!(&lines[2][mem_end - 2..mem_end], "32", "{text}");
    assert_eq!(&lines[3][mem_end - 2..mem_end], " 0", "{text}");

    // --json: the node's answer as is, one value.
    let json_out = succeeded(&capctl(&node, &["--json", "vm", "list"]));
    let value: Value = serde_json::from_str(json_out.trim()).expect("one JSON value");
    assert_eq!(value, answer);
    assert_eq!(json_out.trim().lines().count(), 1);
}

#[test]
fn vm_create_posts_the_definition_and_show_reads_it() {
    let node = Node::start(|r| match (r.method.as_str(), r.target.as_str()) {
        ("POST", "/api/v1/vms") => {
            let mut body = r.json();
            body["id"] = json!("00000000-0000-4000-8000-000000000001");
            body["state"] = json!("Off");
            Reply::Json(201, body)
        }
        ("GET", "/api/v1/vms/kv") => {
            Reply::Json(200, vm("kv", "Paused", 5, 0, "Operating normally"))
        }
        _ => error(404, "not_found", "no such resource"),
    });
    let out = succeeded(&capctl(
        &node,
        &[
            "vm",
            "create",
            "kv",
            "--memory",
            "32M",
            "--vcpus",
            "2",
            "--workload",
            "kv",
            "--disk",
            "/alpha.vhd:0",
            "--disk",
            "/beta.vhd",
            "--nic",
            "--autostart",
            "--arg",
            "5",
            "--arg",
            "6",
        ],
    ));
    assert!(out.contains("created VM kv"), "{out}");
    let post = node.requests().pop().expect("request");
    assert_eq!(post.header("content-type"), Some("application/json"));
    let body = post.json();
    assert_eq!(body["name"], "kv");
    assert_eq!(body["memory_mib"], 32);
    assert_eq!(body["vcpus"], 2);
    assert_eq!(body["workload"], "kv");
    assert_eq!(body["args"], json!([5, 6]));
    assert_eq!(
        body["disks"],
        json!([{"path":"/alpha.vhd","lun":0},{"path":"/beta.vhd","lun":1}])
    );
    // A NIC whose MAC the node picks, as docs/vm-definition.md writes it.
    assert_eq!(body["nic"], json!({}));
    assert_eq!(body["autostart"], true);
    // The node picks the id; `format` is the file's, not the API's.
    assert!(
        body.get("id").is_none() && body.get("format").is_none(),
        "{body}"
    );

    // An invalid definition is refused before anything is sent.
    let before = node.requests().len();
    let line = failed(&capctl(
        &node,
        &[
            "vm",
            "create",
            "kv",
            "--memory",
            "32M",
            "--vcpus",
            "9",
            "--workload",
            "kv",
        ],
    ));
    assert!(line.contains("invalid definition"), "{line}");
    assert_eq!(node.requests().len(), before);

    let shown = succeeded(&capctl(&node, &["vm", "show", "kv"]));
    assert!(
        shown.contains("Paused") && shown.contains("/alpha.vhd:0"),
        "{shown}"
    );
}

/// A node whose jobs run `polls` GETs and then end in `end`.
fn job_node(polls: usize, end: &'static str) -> Node {
    let seen = AtomicUsize::new(0);
    Node::start(move |r| match (r.method.as_str(), r.target.as_str()) {
        ("POST", "/api/v1/vms/kv/start") => Reply::Json(202, job(7, "start", "Running", 0)),
        ("POST", "/api/v1/vms/kv/disks") => Reply::Json(202, job(8, "disk-add", "Running", 0)),
        ("DELETE", "/api/v1/vms/kv/disks/1") => {
            Reply::Json(202, job(9, "disk-remove", "Running", 0))
        }
        ("GET", t) if t.starts_with("/api/v1/jobs/") => {
            let id: u64 = t["/api/v1/jobs/".len()..].parse().expect("id");
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            if n < polls {
                let op = ["start", "disk-add", "disk-remove"][(id - 7) as usize];
                return Reply::Json(200, job(id, op, "Running", 40));
            }
            let mut done = job(id, "start", end, 100);
            if end == "Failed" {
                done["error"] =
                    json!({"code":"start_timeout","message":"the VM did not start in 30 s"});
            }
            Reply::Json(200, done)
        }
        _ => error(404, "not_found", "no such resource"),
    })
}

#[test]
fn long_verbs_watch_their_job_until_it_ends() {
    let node = job_node(3, "Completed");
    let started = Instant::now();
    let out = succeeded(&capctl(&node, &["vm", "start", "kv"]));
    assert!(out.contains("job 7 start kv: Completed"), "{out}");
    assert_eq!(node.count("POST", "/api/v1/vms/kv/start"), 1);
    assert_eq!(node.count("GET", "/api/v1/jobs/7"), 3);
    // Polled about every 200 ms, not in a tight loop.
    assert!(started.elapsed() >= Duration::from_millis(500));

    // --json: the finished job, one value.
    let node = job_node(2, "Completed");
    let out = succeeded(&capctl(&node, &["--json", "vm", "start", "kv"]));
    let value: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(value["state"], "Completed");

    // A failed job: exit 1 with the job's error.
    let node = job_node(2, "Failed");
    let out = capctl(&node, &["vm", "start", "kv"]);
    let line = failed(&out);
    assert!(
        line.contains("job 7 start kv failed: the VM did not start in 30 s"),
        "{line}"
    );
    let out = capctl(&node, &["--json", "job", "watch", "7"]);
    failed(&out);
    let value: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(value["state"], "Failed");

    // --no-wait: the job, at once.
    let node = job_node(99, "Completed");
    let out = succeeded(&capctl(
        &node,
        &["--json", "vm", "start", "kv", "--no-wait"],
    ));
    let value: Value = serde_json::from_str(out.trim()).expect("json");
    assert_eq!(value["id"], 7);
    assert_eq!(node.count("GET", "/api/v1/jobs/7"), 0);

    // Disks: the body and the path, then their jobs watched.
    let node = job_node(1, "Completed");
    succeeded(&capctl(
        &node,
        &[
            "vm",
            "disk",
            "add",
            "kv",
            "--path",
            "/extra.vhd",
            "--lun",
            "1",
        ],
    ));
    let add = node
        .requests()
        .into_iter()
        .find(|r| r.target == "/api/v1/vms/kv/disks")
        .expect("disk add");
    assert_eq!(add.method, "POST");
    assert_eq!(add.json(), json!({"path":"/extra.vhd","lun":1}));
    assert_eq!(node.count("GET", "/api/v1/jobs/8"), 1);
    succeeded(&capctl(
        &node,
        &["vm", "disk", "remove", "kv", "--lun", "1"],
    ));
    assert_eq!(node.count("DELETE", "/api/v1/vms/kv/disks/1"), 1);
    assert_eq!(node.count("GET", "/api/v1/jobs/9"), 1);
}

#[test]
fn job_list_show_and_cancel() {
    let node = Node::start(|r| match (r.method.as_str(), r.target.as_str()) {
        ("GET", "/api/v1/jobs") => Reply::Json(
            200,
            json!({"jobs":[job(3,"stop","Completed",100), job(4,"start","Running",20)]}),
        ),
        ("GET", "/api/v1/jobs/4") => Reply::Json(200, job(4, "start", "Running", 20)),
        ("POST", "/api/v1/jobs/4/cancel") => Reply::Json(200, job(4, "start", "Cancelled", 20)),
        ("POST", "/api/v1/jobs/3/cancel") => Reply::Json(
            409,
            json!({"error":{"code":"not_cancellable","message":"job 3 has ended"}}),
        ),
        _ => error(404, "not_found", "no job 99"),
    });
    let list = succeeded(&capctl(&node, &["job", "list"]));
    let lines: Vec<&str> = list.lines().collect();
    assert_eq!(lines.len(), 4, "{list}");
    assert!(
        lines[0].contains("Operation") && lines[3].contains("Running"),
        "{list}"
    );
    assert!(succeeded(&capctl(&node, &["job", "show", "4"])).contains("start"));
    assert!(succeeded(&capctl(&node, &["job", "cancel", "4"])).contains("Cancelled"));
    assert_eq!(node.count("POST", "/api/v1/jobs/4/cancel"), 1);
    let line = failed(&capctl(&node, &["job", "cancel", "3"]));
    assert!(line.contains("job 3 has ended"), "{line}");
    let line = failed(&capctl(&node, &["job", "show", "99"]));
    assert!(line.contains("no such job 99"), "{line}");
}

#[test]
fn refusals_are_one_clear_line_and_exit_1() {
    let node = Node::start(|r| match (r.method.as_str(), r.target.as_str()) {
        _ if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) => {
            error(401, "unauthorized", "missing or wrong API token")
        }
        ("POST", "/api/v1/vms/kv/pause") => Reply::Json(
            409,
            json!({"error":{"code":"invalid_state","message":"VM kv is Off: it cannot be paused","state":"Off"}}),
        ),
        ("DELETE", "/api/v1/vms/kv") => Reply::Empty(204),
        _ => error(404, "not_found", "no VM ghost"),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let wrong = dir.path().join("wrong-token");
    let secret = "feedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedfacefeedface";
    std::fs::write(&wrong, secret).expect("token");

    // 401: says where the token came from, never the token.
    let out = capctl_env(&node.addr, &["--token-file", p(&wrong), "vm", "list"], &[]);
    let line = failed(&out);
    assert!(
        line.contains("refused the API token") && line.contains(p(&wrong)),
        "{line}"
    );
    assert!(!stdout(&out).contains(secret) && !stderr(&out).contains(secret));
    let out = capctl_env(&node.addr, &["vm", "list"], &[("CAPVISOR_TOKEN", secret)]);
    let line = failed(&out);
    assert!(
        line.contains("CAPVISOR_TOKEN") && !line.contains(secret),
        "{line}"
    );

    // 404.
    let line = failed(&capctl(&node, &["vm", "show", "ghost"]));
    assert!(line.contains("no such VM ghost"), "{line}");
    // 409: the node's message, which names the state.
    let line = failed(&capctl(&node, &["vm", "pause", "kv"]));
    assert!(line.contains("VM kv is Off: it cannot be paused"), "{line}");
    // --json: the node's error body on stdout, as is.
    let out = capctl(&node, &["--json", "vm", "pause", "kv"]);
    failed(&out);
    let value: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(value["error"]["code"], "invalid_state");
    assert_eq!(value["error"]["state"], "Off");
    // 204.
    assert!(succeeded(&capctl(&node, &["vm", "delete", "kv"])).contains("deleted VM kv"));
    assert_eq!(node.count("DELETE", "/api/v1/vms/kv"), 1);

    // Unreachable: a port nobody listens on.
    let closed = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = closed.local_addr().expect("addr").to_string();
    drop(closed);
    let out = capctl_env(&addr, &["vm", "list"], &[("CAPVISOR_TOKEN", TOKEN)]);
    let line = failed(&out);
    assert!(
        line.contains(&format!("cannot reach the node at {addr}")) && line.contains("running"),
        "{line}"
    );
    let out = capctl_env(
        &addr,
        &["--json", "node", "show"],
        &[("CAPVISOR_TOKEN", TOKEN)],
    );
    failed(&out);
    let value: Value = serde_json::from_str(stdout(&out).trim()).expect("json");
    assert_eq!(value["error"]["code"], "unreachable");
}

fn sse(seqs: std::ops::RangeInclusive<u64>) -> String {
    seqs.map(|n| {
        format!(
            "id: {n}\nevent: vm\ndata: {}\n\n",
            json!({"seq":n,"kind":"state_changed","vm":"kv","from":"Off","to":"Starting","time_ms":n*10})
        )
    })
    .collect()
}

#[test]
fn events_since_count_follow_and_timeout() {
    let node = Node::start(|r| {
        if r.target == "/api/v1/node" {
            return Reply::Json(
                200,
                json!({"name":"capvisor","version":"0.1.0","state":"Up","uptime_s":9,"processors":2,
                       "vms":1,"vms_running":1,"events_seq":5,
                       "api":{"requests":1,"refused":0,"bad_requests":0,"connections":1}}),
            );
        }
        let since: u64 = r
            .target
            .strip_prefix("/api/v1/events?since=")
            .expect("events")
            .parse()
            .expect("since");
        let mut text = String::from(": keepalive\n\n");
        if since == 0 {
            text.push_str("event: gap\ndata: {\"first\":2}\n\n");
        }
        text.push_str(&sse(since.max(1) + 1..=5));
        // The stream stays open, as the node's does.
        Reply::Sse(text, Duration::from_secs(20))
    });
    // Without --follow: the backlog up to the node's last event, then the end.
    let started = Instant::now();
    let out = succeeded(&capctl(&node, &["events", "--since", "2"]));
    assert!(started.elapsed() < Duration::from_secs(10));
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[0].trim_start().starts_with("3 state_changed"),
        "{out}"
    );
    assert!(lines[2].trim_start().starts_with("5 state_changed") && lines[2].contains("vm=kv"));
    assert_eq!(node.count("GET", "/api/v1/events?since=2"), 1);
    // The gap is reported, not counted.
    let out = succeeded(&capctl(&node, &["events"]));
    assert!(
        out.lines().next().expect("gap").starts_with("gap:"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 5, "{out}");
    // --count; --json: JSON lines, the events' data.
    let out = succeeded(&capctl(
        &node,
        &["--json", "events", "--since", "1", "--count", "2"],
    ));
    let seqs: Vec<u64> = out
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("json line")["seq"]
                .as_u64()
                .expect("seq")
        })
        .collect();
    assert_eq!(seqs, vec![2, 3]);
    // Nothing newer than --since: ends at once without a stream.
    let out = succeeded(&capctl(&node, &["events", "--since", "5"]));
    assert!(out.is_empty());
    assert_eq!(node.count("GET", "/api/v1/events?since=5"), 0);
    // --follow --timeout: the backlog, then the stream's time runs out.
    let started = Instant::now();
    let out = succeeded(&capctl(
        &node,
        &["events", "--since", "3", "--follow", "--timeout", "1"],
    ));
    let took = started.elapsed();
    assert_eq!(out.lines().count(), 2, "{out}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(10),
        "{took:?}"
    );
}

fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn run_ok(args: &[&str]) -> String {
    succeeded(&capctl_env("127.0.0.1:1", args, &[]))
}

#[test]
fn node_token_offline_writes_the_hash_on_the_volume() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("data.img");
    run_ok(&["vol", "format", p(&img), "--size", "64M"]);
    let token_file = dir.path().join("token");
    let out = run_ok(&[
        "node",
        "token",
        "--volume",
        p(&img),
        "--out",
        p(&token_file),
    ]);
    let token = std::fs::read_to_string(&token_file).expect("token file");
    let token = token.trim_end();
    assert_eq!(token.len(), 64);
    assert!(
        token
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    );
    assert!(!out.contains(token), "the token was printed: {out}");
    let mode = std::fs::metadata(&token_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let hash_file = dir.path().join("hash");
    run_ok(&[
        "vol",
        "get",
        p(&img),
        "/node/api-token.sha256",
        p(&hash_file),
    ]);
    assert_eq!(
        std::fs::read_to_string(&hash_file).expect("hash"),
        format!("{}\n", sha256_hex(token))
    );
    assert!(run_ok(&["vol", "check", p(&img)]).contains("ok"));

    // Again, into the file CAPVISOR_TOKEN_FILE names: a new token replaces both.
    let out = capctl_env(
        "127.0.0.1:1",
        &["node", "token", "--volume", p(&img)],
        &[("CAPVISOR_TOKEN_FILE", p(&token_file))],
    );
    succeeded(&out);
    let second = std::fs::read_to_string(&token_file).expect("token file");
    let second = second.trim_end();
    assert_ne!(second, token);
    std::fs::remove_file(&hash_file).expect("rm");
    run_ok(&[
        "vol",
        "get",
        p(&img),
        "/node/api-token.sha256",
        p(&hash_file),
    ]);
    assert_eq!(
        std::fs::read_to_string(&hash_file).expect("hash"),
        format!("{}\n", sha256_hex(second))
    );

    // No file given: standard output is the only place for it.
    let out = run_ok(&["node", "token", "--volume", p(&img)]);
    let third = out.trim();
    std::fs::remove_file(&hash_file).expect("rm");
    run_ok(&[
        "vol",
        "get",
        p(&img),
        "/node/api-token.sha256",
        p(&hash_file),
    ]);
    assert_eq!(
        std::fs::read_to_string(&hash_file).expect("hash"),
        format!("{}\n", sha256_hex(third))
    );

    // Not a volume: exit 1, and the old token file is left as it was.
    let junk = dir.path().join("junk.img");
    std::fs::write(&junk, vec![0u8; 65536]).expect("junk");
    failed(&capctl_env(
        "127.0.0.1:1",
        &[
            "node",
            "token",
            "--volume",
            p(&junk),
            "--out",
            p(&token_file),
        ],
        &[],
    ));
    assert_eq!(
        std::fs::read_to_string(&token_file)
            .expect("file")
            .trim_end(),
        second
    );
}

#[test]
fn node_token_online_replaces_the_hash_with_the_current_token() {
    let node = Node::start(|r| match (r.method.as_str(), r.target.as_str()) {
        _ if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) => {
            error(401, "unauthorized", "wrong token")
        }
        ("PUT", "/api/v1/node/token") => Reply::Empty(204),
        _ => error(404, "not_found", "no such resource"),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).expect("token");
    let out = succeeded(&capctl_env(
        &node.addr,
        &["--token-file", p(&token_file), "node", "token"],
        &[],
    ));
    let new = std::fs::read_to_string(&token_file).expect("token file");
    let new = new.trim_end();
    assert_ne!(new, TOKEN);
    assert!(!out.contains(new));
    let put = node.requests().pop().expect("PUT");
    assert_eq!(put.method, "PUT");
    assert_eq!(
        put.header("authorization"),
        Some(format!("Bearer {TOKEN}").as_str())
    );
    assert_eq!(put.json(), json!({ "sha256": sha256_hex(new) }));
    // Now the file holds a token the stand-in refuses: the file stays.
    let line = failed(&capctl_env(
        &node.addr,
        &["--token-file", p(&token_file), "node", "token"],
        &[],
    ));
    assert!(line.contains("refused"), "{line}");
    assert_eq!(
        std::fs::read_to_string(&token_file)
            .expect("file")
            .trim_end(),
        new
    );
}

#[test]
fn node_show_and_shutdown() {
    let polls = AtomicUsize::new(0);
    let node = Node::start(move |r| match (r.method.as_str(), r.target.as_str()) {
        ("GET", "/api/v1/node") => Reply::Json(
            200,
            json!({"name":"capvisor","version":"0.1.0","state":"Up","uptime_s":75,"processors":2,
                   "vms":2,"vms_running":1,"events_seq":12,
                   "api":{"requests":30,"refused":2,"bad_requests":1,"connections":4}}),
        ),
        ("POST", "/api/v1/node/shutdown") => {
            let mut j = job(1, "node-shutdown", "Running", 0);
            j["vm"] = Value::Null;
            Reply::Json(202, j)
        }
        ("GET", "/api/v1/jobs/1") => {
            let state = if polls.fetch_add(1, Ordering::SeqCst) == 0 {
                "Running"
            } else {
                "Completed"
            };
            let mut j = job(1, "node-shutdown", state, 50);
            j["vm"] = Value::Null;
            Reply::Json(200, j)
        }
        _ => error(404, "not_found", "no such resource"),
    });
    let shown = succeeded(&capctl(&node, &["node", "show"]));
    assert!(
        shown.contains("00:01:15") && shown.contains("API refused"),
        "{shown}"
    );
    let out = succeeded(&capctl(&node, &["node", "shutdown"]));
    assert!(out.contains("node-shutdown: Completed"), "{out}");
}
