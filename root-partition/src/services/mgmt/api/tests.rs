//! The API over the fake hypervisor and a memory store: every endpoint and
//! every error status, each answer checked against `docs/openapi.json`.

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use serde_json::{Value, json};

use super::auth::{Auth, NO_TOKEN, TOKEN_FILE, token_digest};
use super::openapi::OpenApi;
use super::routes::{PREFIX, ROUTES};
use super::*;
use crate::node::{Poll, Service};
use crate::services::mgmt::http::Handler;
use crate::services::vm::fake::{FakeHypervisor, FakeOp};
use crate::services::vm::manager::{ManagerConfig, VmManager};
use crate::services::vm::store::MemStore;
use crate::services::vm::{HvEvent, VmId};

const SECOND: u64 = 1_000_000_000;
const TOKEN: &str = "5f1e0d6c2b3a49888f7e6d5c4b3a29181f0e0d0c0b0a09080706050403020100";

fn quiet(_: fmt::Arguments<'_>) {}

struct Node {
    api: Api,
    vms: VmService<FakeHypervisor, MemStore>,
    store: MemStore,
    doc: OpenApi,
    now: u64,
    token: String,
}

#[derive(Debug)]
struct Answer {
    status: u16,
    body: Value,
    response: Response,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.response
            .headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn node_with(auth: Auth) -> Node {
    let store = MemStore::new();
    let mut files = store.clone();
    crate::services::vm::Store::write(&mut files, "/extra.vhd", b"vhd").unwrap();
    crate::services::vm::Store::write(&mut files, "/kv.vhd", b"vhd").unwrap();
    let manager = VmManager::new(
        FakeHypervisor::new(Some(store.clone())),
        store.clone(),
        ManagerConfig {
            stop_timeout_ns: 10 * SECOND,
            boot_timeout_ns: 20 * SECOND,
        },
    );
    let facts = NodeFacts {
        name: "capvisor".into(),
        version: "0.1.0".into(),
        processors: 4,
        seed: 7,
    };
    Node {
        api: Api::new(auth, facts, 0),
        vms: VmService::new(manager, None, quiet),
        store,
        doc: OpenApi::document().unwrap(),
        now: SECOND,
        token: TOKEN.into(),
    }
}

fn node() -> Node {
    node_with(Auth::with_digest(token_digest(TOKEN.as_bytes())))
}

fn request(method: &str, target: &str, body: &str, auth: Option<&str>) -> Request {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut headers = Vec::new();
    if let Some(token) = auth {
        headers.push(("authorization".to_string(), token.as_bytes().to_vec()));
    }
    Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: body.as_bytes().to_vec(),
    }
}

impl Node {
    /// Sends a request with `auth` and checks the answer against the document.
    fn send(&mut self, method: &str, target: &str, body: &str, auth: Option<&str>) -> Answer {
        let req = request(method, target, body, auth);
        let response = self.api.handle(&mut self.vms, &req, self.now);
        if let Err(e) = self.doc.check_answer(
            method,
            &req.path,
            response.status,
            response.content_type,
            &response.body,
        ) {
            panic!(
                "{method} {target} -> {}: {e}: {:?}",
                response.status, response
            );
        }
        let body = if response.body.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&response.body).unwrap()
        };
        Answer {
            status: response.status,
            body,
            response,
        }
    }

    /// Sends a request with the node's token.
    fn call(&mut self, method: &str, target: &str, body: &str) -> Answer {
        let auth = format!("Bearer {}", self.token);
        self.send(method, target, body, Some(&auth))
    }

    /// A request the document says is valid (its body checked too).
    fn ok(&mut self, method: &str, target: &str, body: &str, status: u16) -> Value {
        self.doc
            .check_request(method, target, body.as_bytes())
            .unwrap();
        let a = self.call(method, target, body);
        assert_eq!(a.status, status, "{method} {target}: {}", a.body);
        a.body
    }

    /// An error answer: its status and code.
    fn refused(
        &mut self,
        method: &str,
        target: &str,
        body: &str,
        status: u16,
        code: &str,
    ) -> Value {
        let a = self.call(method, target, body);
        assert_eq!(a.status, status, "{method} {target}: {}", a.body);
        assert_eq!(a.body["error"]["code"], code, "{}", a.body);
        a.body
    }

    /// One node round, a second later.
    fn round(&mut self) -> Poll {
        self.now += SECOND;
        let poll = self.vms.poll(self.now, 0);
        self.api.update(&mut self.vms, self.now);
        poll
    }

    fn create(&mut self, name: &str) -> Value {
        let body = json!({"name": name, "memory_mib": 16, "vcpus": 1, "workload": "kv",
                          "disks": [{"path": "/kv.vhd", "lun": 0}]});
        self.ok("POST", "/api/v1/vms", &body.to_string(), 201)
    }

    fn job(&mut self, id: &Value) -> Value {
        self.ok("GET", &format!("/api/v1/jobs/{id}"), "", 200)
    }

    fn stream(&mut self, since: u64) -> String {
        let mut out = Vec::new();
        self.api.events(since, &mut out, usize::MAX);
        String::from_utf8(out).unwrap()
    }
}

#[test]
fn requests_without_the_right_token_are_refused_and_counted() {
    let mut n = node();
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic abc"),
        Some("Bearer "),
    ] {
        let a = n.send("GET", "/api/v1/vms", "", auth);
        assert_eq!(a.status, 401);
        assert_eq!(a.body["error"]["code"], "unauthorized");
        assert_eq!(a.header("WWW-Authenticate"), Some("Bearer"));
    }
    // Even an unknown path says nothing before the token.
    assert_eq!(n.send("GET", "/api/v1/nope", "", None).status, 401);
    let node = n.ok("GET", "/api/v1/node", "", 200);
    assert_eq!(node["api"]["refused"], 5);
    assert_eq!(node["api"]["requests"], 6);
    // The scheme's case does not matter.
    let auth = format!("bearer {TOKEN}");
    assert_eq!(n.send("GET", "/api/v1/vms", "", Some(&auth)).status, 200);
}

#[test]
fn a_node_without_a_token_refuses_everything() {
    let mut n = node_with(Auth::from_file(b"not a digest\n"));
    let a = n.call("GET", "/api/v1/node", "");
    assert_eq!(a.status, 401);
    assert_eq!(a.body["error"]["message"], NO_TOKEN);
    assert!(!n.api.auth().configured());
    assert_eq!(n.api.stats().refused, 1);
    // The file's exact form: 64 hex digits and a newline.
    let mut file = super::auth::digest_file(&token_digest(b"x"));
    assert!(Auth::from_file(&file).configured());
    file.pop();
    assert!(!Auth::from_file(&file).configured());
    assert!(!Auth::load(&mut MemStore::new()).configured());
}

#[test]
fn the_node_its_counters_and_connections() {
    let mut n = node();
    n.api.connection_opened();
    n.api.connection_opened();
    n.api.refused_input(431);
    let body = n.ok("GET", "/api/v1/node", "", 200);
    assert_eq!(body["name"], "capvisor");
    assert_eq!(body["state"], "Up");
    assert_eq!(body["processors"], 4);
    assert_eq!(body["uptime_s"], 1);
    assert_eq!(body["api"]["connections"], 2);
    assert_eq!(body["api"]["bad_requests"], 1);
    assert_eq!(body["api"]["requests"], 2);
}

#[test]
fn unknown_paths_methods_vms_and_jobs() {
    let mut n = node();
    n.create("kv");
    for path in [
        "/api/v1/nope",
        "/api/v2/vms",
        "/api/v1/vms/",
        "/api/v1/vms/kv/reboot",
        "/",
    ] {
        n.refused("GET", path, "", 404, "not_found");
    }
    let body = n.refused("GET", "/api/v1/vms/ghost", "", 404, "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("ghost"));
    n.refused("POST", "/api/v1/vms/ghost/start", "", 404, "not_found");
    n.refused("GET", "/api/v1/jobs/99", "", 404, "not_found");
    n.refused("GET", "/api/v1/jobs/x", "", 404, "not_found");
    n.refused("POST", "/api/v1/jobs/99/cancel", "", 404, "not_found");
    n.refused("DELETE", "/api/v1/vms/kv/disks/7", "", 404, "not_found");
    n.refused("DELETE", "/api/v1/vms/kv/disks/x", "", 404, "not_found");
    let a = n.call("DELETE", "/api/v1/vms", "");
    assert_eq!(a.status, 405);
    assert_eq!(a.header("Allow"), Some("GET, POST"));
    assert_eq!(a.body["error"]["code"], "method_not_allowed");
    let a = n.call("PATCH", "/api/v1/vms/kv", "");
    assert_eq!((a.status, a.header("Allow")), (405, Some("GET, DELETE")));
    n.refused("GET", "/api/v1/vms/kv/start", "", 405, "method_not_allowed");
}

#[test]
fn creating_vms_and_bad_bodies() {
    let mut n = node();
    let a = {
        let body = json!({"name": "kv", "memory_mib": 16, "vcpus": 1, "workload": "kv",
            "args": [1, 2], "nic": {"mac": "02:63:76:00:00:01"}, "priority": 3, "autostart": true});
        n.call("POST", "/api/v1/vms", &body.to_string())
    };
    assert_eq!(a.status, 201);
    assert_eq!(a.header("Location"), Some("/api/v1/vms/kv"));
    assert_eq!(a.body["state"], "Off");
    assert_eq!(a.body["nic"]["mac"], "02:63:76:00:00:01");
    assert_eq!(a.body["heartbeat"], "NoContact");
    assert_eq!(a.body["status"], "Operating normally");
    let id = a.body["id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36);
    // A given id is kept; another VM gets another random one.
    let body = json!({"name": "b", "id": "12345678-1234-4234-8234-123456789abc",
                      "memory_mib": 16, "vcpus": 1, "workload": "kv"});
    let b = n.ok("POST", "/api/v1/vms", &body.to_string(), 201);
    assert_eq!(b["id"], "12345678-1234-4234-8234-123456789abc");
    let c = n.create("c");
    assert_ne!(c["id"], id);
    let list = n.ok("GET", "/api/v1/vms", "", 200);
    assert_eq!(list["vms"].as_array().unwrap().len(), 3);
    assert!(n.store.get("/vms/kv.json").is_some());

    let conflict = n.refused("POST", "/api/v1/vms", &body.to_string(), 409, "conflict");
    assert!(
        conflict["error"]["message"]
            .as_str()
            .unwrap()
            .contains("already exists")
    );
    for (bad, names) in [
        ("{not json", "bad JSON"),
        ("[1]", "one JSON object"),
        (
            r#"{"name":"x","memory_mib":16,"vcpus":1,"workload":"kv","colour":"red"}"#,
            "colour",
        ),
        (
            r#"{"name":"x","memory_mib":15,"vcpus":1,"workload":"kv"}"#,
            "memory_mib",
        ),
        (r#"{"name":"x","memory_mib":16,"vcpus":1}"#, "workload"),
        (
            r#"{"name":"x","memory_mib":16,"vcpus":1,"workload":"kv","format":1}"#,
            "format",
        ),
        (
            r#"{"name":"much-too-long","memory_mib":16,"vcpus":1,"workload":"kv"}"#,
            "name",
        ),
    ] {
        let e = n.refused("POST", "/api/v1/vms", bad, 400, "bad_request");
        let message = e["error"]["message"].as_str().unwrap();
        assert!(message.contains(names), "{bad}: {message}");
    }
    assert_eq!(
        n.ok("GET", "/api/v1/node", "", 200)["api"]["bad_requests"],
        7
    );
}

#[test]
fn a_vms_whole_life_through_jobs() {
    let mut n = node();
    n.create("kv");
    let a = n.call("POST", "/api/v1/vms/kv/start", "");
    assert_eq!(a.status, 202);
    let job = a.body["id"].clone();
    assert_eq!(
        a.header("Location"),
        Some(format!("/api/v1/jobs/{job}").as_str())
    );
    assert_eq!(a.body["url"], format!("/api/v1/jobs/{job}"));
    assert_eq!(a.body["operation"], "start");
    assert_eq!(a.body["state"], "Running");
    assert_eq!(a.body["cancellable"], true);
    n.round();
    let done = n.job(&job);
    assert_eq!(
        (done["state"].as_str(), done["percent"].as_u64()),
        (Some("Completed"), Some(100))
    );
    assert_eq!(done["cancellable"], false);
    let vm = n.ok("GET", "/api/v1/vms/kv", "", 200);
    assert_eq!(
        (vm["state"].as_str(), vm["heartbeat"].as_str()),
        (Some("Running"), Some("Ok"))
    );
    n.round();
    n.round();
    assert_eq!(n.ok("GET", "/api/v1/vms/kv", "", 200)["uptime_s"], 2);

    // Pause and resume end at once.
    let j = n.ok("POST", "/api/v1/vms/kv/pause", "", 202);
    assert_eq!(j["state"], "Completed");
    let e = n.refused("POST", "/api/v1/vms/kv/pause", "", 409, "invalid_state");
    assert_eq!(e["error"]["state"], "Paused");
    n.ok("POST", "/api/v1/vms/kv/resume", "", 202);

    // Save: the memory is the data.
    let j = n.ok("POST", "/api/v1/vms/kv/save", "", 202);
    assert_eq!(
        (j["processed_bytes"].as_u64(), j["remaining_bytes"].as_u64()),
        (Some(0), Some(16 << 20))
    );
    n.round();
    let j = n.job(&j["id"]);
    assert_eq!(j["state"], "Completed");
    assert_eq!(
        (j["processed_bytes"].as_u64(), j["remaining_bytes"].as_u64()),
        (Some(16 << 20), Some(0))
    );
    assert_eq!(n.ok("GET", "/api/v1/vms/kv", "", 200)["state"], "Saved");
    assert_eq!(n.ok("GET", "/api/v1/vms/kv", "", 200)["uptime_s"], 0);
    let j = n.ok("POST", "/api/v1/vms/kv/restore", "", 202);
    n.round();
    assert_eq!(n.job(&j["id"])["state"], "Completed");

    // Not deleted while it runs; stopped gracefully; then deleted.
    let e = n.refused("DELETE", "/api/v1/vms/kv", "", 409, "invalid_state");
    assert_eq!(e["error"]["state"], "Running");
    let j = n.ok("POST", "/api/v1/vms/kv/stop", "", 202);
    n.round();
    assert_eq!(n.job(&j["id"])["state"], "Completed");
    assert_eq!(n.ok("GET", "/api/v1/vms/kv", "", 200)["state"], "Off");
    n.refused("POST", "/api/v1/vms/kv/stop", "", 409, "invalid_state");
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    let j = n.ok("POST", "/api/v1/vms/kv/turn-off", "", 202);
    assert_eq!(
        (j["operation"].as_str(), j["state"].as_str()),
        (Some("turn-off"), Some("Completed"))
    );
    assert_eq!(n.ok("DELETE", "/api/v1/vms/kv", "", 204), Value::Null);
    n.refused("GET", "/api/v1/vms/kv", "", 404, "not_found");
    assert!(n.store.get("/vms/kv.json").is_none());
    let jobs = n.ok("GET", "/api/v1/jobs", "", 200);
    let ops: Vec<&str> = jobs["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| j["operation"].as_str().unwrap())
        .collect();
    assert_eq!(
        ops,
        [
            "start", "pause", "resume", "save", "restore", "stop", "start", "turn-off"
        ]
    );
}

#[test]
fn jobs_fail_with_a_code_and_a_message() {
    let mut n = node();
    n.create("kv");
    // A hypervisor refusal: no job, a 500 that says why (and the VM Failed).
    n.vms
        .manager
        .hypervisor()
        .fail_next(FakeOp::Start, "no memory left");
    let e = n.refused("POST", "/api/v1/vms/kv/start", "", 500, "internal");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no memory left")
    );
    let vm = n.ok("GET", "/api/v1/vms/kv", "", 200);
    assert_eq!(vm["state"], "Failed");
    assert!(vm["status"].as_str().unwrap().contains("no memory left"));
    // A save that fails later fails its job.
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    n.vms
        .manager
        .hypervisor()
        .fail_next(FakeOp::SaveLater, "the volume is full");
    let j = n.ok("POST", "/api/v1/vms/kv/save", "", 202);
    n.round();
    let j = n.job(&j["id"]);
    assert_eq!(j["state"], "Failed");
    assert_eq!(j["error"]["code"], "internal");
    assert_eq!(j["error"]["message"], "the volume is full");
    assert_eq!(n.ok("GET", "/api/v1/vms/kv", "", 200)["state"], "Running");
    // A start that times out.
    n.ok("POST", "/api/v1/vms/kv/turn-off", "", 202);
    n.vms.manager.hypervisor().guests_boot = false;
    let j = n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    for _ in 0..25 {
        n.round();
    }
    let j = n.job(&j["id"]);
    assert_eq!(j["state"], "Failed");
    assert!(
        j["error"]["message"]
            .as_str()
            .unwrap()
            .contains("did not come up"),
        "{j}"
    );
    assert!(j["elapsed_ms"].as_u64().unwrap() >= 20_000);
}

#[test]
fn starts_and_stops_can_be_cancelled_others_not() {
    let mut n = node();
    n.create("kv");
    n.vms.manager.hypervisor().guests_boot = false;
    let j = n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    let path = format!("/api/v1/jobs/{}/cancel", j["id"]);
    let c = n.ok("POST", &path, "", 200);
    assert_eq!(c["state"], "Cancelled");
    assert_eq!(n.ok("GET", "/api/v1/vms/kv", "", 200)["state"], "Off");
    let e = n.refused("POST", &path, "", 409, "not_cancellable");
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Cancelled")
    );

    n.vms.manager.hypervisor().guests_boot = true;
    n.vms.manager.hypervisor().guests_shut_down = false;
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    let j = n.ok("POST", "/api/v1/vms/kv/stop", "", 202);
    assert_eq!(j["cancellable"], true);
    let c = n.ok("POST", &format!("/api/v1/jobs/{}/cancel", j["id"]), "", 200);
    assert_eq!(c["state"], "Cancelled");
    assert_eq!(n.ok("GET", "/api/v1/vms/kv", "", 200)["state"], "Off");
    // A finished pause cannot be.
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    let p = n.ok("POST", "/api/v1/vms/kv/pause", "", 202);
    n.refused(
        "POST",
        &format!("/api/v1/jobs/{}/cancel", p["id"]),
        "",
        409,
        "not_cancellable",
    );
}

#[test]
fn disks_are_listed_added_and_removed() {
    let mut n = node();
    n.create("kv");
    let d = n.ok("GET", "/api/v1/vms/kv/disks", "", 200);
    assert_eq!(d, json!({"disks": [{"lun": 0, "path": "/kv.vhd"}]}));
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    let j = n.ok(
        "POST",
        "/api/v1/vms/kv/disks",
        r#"{"path":"/extra.vhd","lun":1}"#,
        202,
    );
    assert_eq!(
        (j["operation"].as_str(), j["state"].as_str()),
        (Some("disk-add"), Some("Completed"))
    );
    let id = n.vms.manager.find("kv").unwrap();
    let disks = &n.vms.manager.hypervisor().partition_of(id).unwrap().disks;
    assert_eq!(disks.len(), 2);
    assert_eq!(
        n.ok("GET", "/api/v1/vms/kv", "", 200)["disks"][1]["path"],
        "/extra.vhd"
    );
    let e = n.refused(
        "POST",
        "/api/v1/vms/kv/disks",
        r#"{"path":"/other.vhd","lun":1}"#,
        409,
        "conflict",
    );
    assert!(e["error"]["message"].as_str().unwrap().contains("LUN 1"));
    let e = n.refused(
        "POST",
        "/api/v1/vms/kv/disks",
        r#"{"path":"/none.vhd","lun":2}"#,
        400,
        "bad_request",
    );
    assert!(
        e["error"]["message"]
            .as_str()
            .unwrap()
            .contains("does not exist")
    );
    n.refused(
        "POST",
        "/api/v1/vms/kv/disks",
        r#"{"path":"/extra.vhd"}"#,
        400,
        "bad_request",
    );
    n.refused(
        "POST",
        "/api/v1/vms/kv/disks",
        r#"{"path":"/x.vhd","lun":2,"ro":true}"#,
        400,
        "bad_request",
    );
    n.refused(
        "POST",
        "/api/v1/vms/kv/disks",
        r#"{"path":"/x.vhd","lun":999}"#,
        400,
        "bad_request",
    );
    let j = n.ok("DELETE", "/api/v1/vms/kv/disks/1", "", 202);
    assert_eq!(j["operation"], "disk-remove");
    n.refused("DELETE", "/api/v1/vms/kv/disks/1", "", 404, "not_found");
    // Not while saving.
    n.ok("POST", "/api/v1/vms/kv/save", "", 202);
    let e = n.refused("DELETE", "/api/v1/vms/kv/disks/0", "", 409, "invalid_state");
    assert_eq!(e["error"]["state"], "Saving");
}

#[test]
fn the_console_shows_the_last_lines() {
    let mut n = node();
    n.create("kv");
    assert_eq!(
        n.ok("GET", "/api/v1/vms/kv/console", "", 200),
        json!({"lines": []})
    );
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    let id = n.vms.manager.find("kv").unwrap();
    let hv = n.vms.manager.hypervisor();
    let handle = *hv.partitions.keys().next().unwrap();
    let console = &mut hv.partitions.get_mut(&handle).unwrap().console;
    console.extend((0..300).map(|i| format!("line {i}")));
    assert_eq!(hv.partition_of(id).unwrap().console.len(), 301);
    let lines = n.ok("GET", "/api/v1/vms/kv/console", "", 200);
    let lines = lines["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 200);
    assert_eq!(
        (lines[0].as_str(), lines[199].as_str()),
        (Some("line 100"), Some("line 299"))
    );
}

#[test]
fn heartbeats_show_in_the_status() {
    let mut n = node();
    n.create("kv");
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    let id: VmId = n.vms.manager.find("kv").unwrap();
    n.vms
        .manager
        .hypervisor()
        .inject(id, HvEvent::HeartbeatMissed);
    n.round();
    let vm = n.ok("GET", "/api/v1/vms/kv", "", 200);
    assert_eq!(
        (vm["status"].as_str(), vm["heartbeat"].as_str()),
        (Some("Heartbeat lost"), Some("Lost"))
    );
    n.vms
        .manager
        .hypervisor()
        .inject(id, HvEvent::HeartbeatRestored);
    n.round();
    let vm = n.ok("GET", "/api/v1/vms/kv", "", 200);
    assert_eq!(
        (vm["status"].as_str(), vm["heartbeat"].as_str()),
        (Some("Operating normally"), Some("Ok"))
    );
    let text = n.stream(0);
    assert!(text.contains("\"kind\":\"heartbeat_missed\""), "{text}");
    assert!(text.contains("\"kind\":\"heartbeat_restored\""));
}

#[test]
fn events_are_numbered_and_resumable() {
    let mut n = node();
    let a = n.call("GET", "/api/v1/events?since=0", "");
    assert_eq!((a.status, a.response.events_after), (200, Some(0)));
    assert_eq!(a.response.content_type, "text/event-stream");
    n.refused("GET", "/api/v1/events?since=x", "", 400, "bad_request");
    n.create("kv");
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    let text = n.stream(0);
    let first = text.split("\n\n").next().unwrap();
    assert!(first.starts_with("id: 1\nevent: vm\ndata: {"), "{text}");
    let data: Value = serde_json::from_str(first.split("data: ").nth(1).unwrap()).unwrap();
    assert_eq!(data["kind"], "defined");
    assert_eq!(
        (data["seq"].as_u64(), data["vm"].as_str()),
        (Some(1), Some("kv"))
    );
    for kind in [
        "\"kind\":\"state_changed\"",
        "\"from\":\"Off\",",
        "\"to\":\"Running\"",
        "event: job",
        "\"state\":\"Completed\"",
    ] {
        assert!(text.contains(kind), "{kind}: {text}");
    }
    let last = n.ok("GET", "/api/v1/node", "", 200)["events_seq"]
        .as_u64()
        .unwrap();
    assert_eq!(text.matches("\nevent: ").count() as u64, last);
    // Without since: only what comes next.
    assert_eq!(
        n.call("GET", "/api/v1/events", "").response.events_after,
        Some(last)
    );
    assert_eq!(n.stream(last), "");
    // Resuming from 2 gives 3 on; a small `max` still gives one.
    let mut out = Vec::new();
    assert_eq!(n.api.events(2, &mut out, 1), 3);
    assert!(String::from_utf8(out).unwrap().starts_with("id: 3\n"));
    // Through the Handler trait.
    let mut bound = Bound {
        api: &mut n.api,
        vms: &mut n.vms,
    };
    let mut out = Vec::new();
    assert_eq!(Handler::events(&mut bound, last - 1, &mut out, 4096), last);
}

#[test]
fn a_reader_too_far_behind_gets_a_gap() {
    let mut n = node();
    n.create("kv");
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.round();
    for _ in 0..300 {
        n.ok("POST", "/api/v1/vms/kv/pause", "", 202);
        n.ok("POST", "/api/v1/vms/kv/resume", "", 202);
    }
    let last = n.api.last_event();
    assert!(last > events::MAX_EVENTS as u64);
    let first = last - events::MAX_EVENTS as u64 + 1;
    let text = n.stream(3);
    assert!(
        text.starts_with(&format!(
            "event: gap\ndata: {{\"first\":{first}}}\n\nid: {first}\n"
        )),
        "{}",
        &text[..200]
    );
    assert_eq!(text.matches("\nevent: ").count(), events::MAX_EVENTS);
    // One caught up gets no gap.
    assert!(n.stream(first).starts_with(&format!("id: {}\n", first + 1)));
}

#[test]
fn a_shutdown_stops_every_vm_refuses_new_operations_then_ends() {
    let mut n = node();
    n.create("kv");
    n.create("b");
    n.ok("POST", "/api/v1/vms/kv/start", "", 202);
    n.ok("POST", "/api/v1/vms/b/start", "", 202);
    n.round();
    let j = n.ok("POST", "/api/v1/node/shutdown", "", 202);
    assert_eq!(
        (j["operation"].as_str(), j["vm"].clone()),
        (Some("node-shutdown"), Value::Null)
    );
    assert_eq!(n.ok("GET", "/api/v1/node", "", 200)["state"], "Stopping");
    n.refused("POST", "/api/v1/vms", r#"{"name":"c"}"#, 503, "unavailable");
    n.refused("POST", "/api/v1/vms/kv/start", "", 503, "unavailable");
    n.refused("POST", "/api/v1/node/shutdown", "", 503, "unavailable");
    n.ok("GET", "/api/v1/vms", "", 200);
    let mut rounds = 0;
    while n.round() != Poll::Stop {
        rounds += 1;
        assert!(rounds < 50);
    }
    let j = n.job(&j["id"]);
    assert_eq!(
        (j["state"].as_str(), j["percent"].as_u64()),
        (Some("Completed"), Some(100))
    );
    assert!(
        n.stream(0)
            .contains("event: node\ndata: {\"kind\":\"node\"")
    );
}

#[test]
fn a_new_token_replaces_the_old_at_once() {
    let mut n = node();
    let new = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let digest = token_digest(new.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let body = json!({ "sha256": hex }).to_string();
    for bad in [r#"{"sha256":"abc"}"#, r#"{"digest":"x"}"#, "nonsense"] {
        n.refused("PUT", "/api/v1/node/token", bad, 400, "bad_request");
    }
    let upper = json!({ "sha256": hex.to_uppercase() }).to_string();
    n.refused("PUT", "/api/v1/node/token", &upper, 400, "bad_request");
    assert_eq!(n.ok("PUT", "/api/v1/node/token", &body, 204), Value::Null);
    assert_eq!(
        n.store.get(TOKEN_FILE).unwrap(),
        format!("{hex}\n").as_bytes()
    );
    assert_eq!(n.call("GET", "/api/v1/node", "").status, 401);
    n.token = new.into();
    assert_eq!(n.call("GET", "/api/v1/node", "").status, 200);
    // What the node loads at its next boot.
    let mut store = n.store.clone();
    assert_eq!(Auth::load(&mut store), Auth::with_digest(digest));
    // A volume that fails keeps the old token.
    n.store.set_failing(true);
    let other = json!({ "sha256": "11".repeat(32) }).to_string();
    n.refused("PUT", "/api/v1/node/token", &other, 500, "internal");
    assert_eq!(n.call("GET", "/api/v1/node", "").status, 200);
}

#[test]
fn every_route_is_in_the_document_and_every_documented_one_is_routed() {
    let doc = OpenApi::document().unwrap();
    let mut documented: Vec<(String, Vec<String>)> = doc.operations();
    documented.sort();
    let mut routed: Vec<(String, Vec<String>)> = ROUTES
        .iter()
        .map(|(t, _, m)| {
            let mut m: Vec<String> = m.iter().map(|s| s.to_string()).collect();
            m.sort();
            (format!("{PREFIX}{t}"), m)
        })
        .collect();
    routed.sort();
    for d in &mut documented {
        d.1.sort();
    }
    assert_eq!(routed, documented);
}
