//! Fuzz target: arbitrary requests (method, path, query, headers, body)
//! to the management API over the fake hypervisor, with the node's token,
//! none or a wrong one, each followed by a node round.
//! Invariants: no panic; every answer's status and body are documented in
//! `docs/openapi.json` (or are a documented refusal of an unknown path or
//! method); the event stream reads back.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use root_partition::services::mgmt::api::auth::{Auth, token_digest};
use root_partition::services::mgmt::api::openapi::OpenApi;
use root_partition::services::mgmt::api::{Api, NodeFacts};
use root_partition::services::mgmt::http::Request;
use root_partition::services::vm::definition::{VmDefinition, VmUuid};
use root_partition::services::vm::fake::FakeHypervisor;
use root_partition::services::vm::service::VmService;
use root_partition::services::vm::{ManagerConfig, MemStore, Store, VmManager};

const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
const METHODS: [&str; 6] = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD"];

fn doc() -> &'static OpenApi {
    static DOC: OnceLock<OpenApi> = OnceLock::new();
    DOC.get_or_init(|| OpenApi::document().expect("the document parses"))
}

fn quiet(_: core::fmt::Arguments<'_>) {}

fn node() -> (Api, VmService<FakeHypervisor, MemStore>) {
    let store = MemStore::new();
    let _ = Store::write(&mut store.clone(), "/kv.vhd", b"vhd");
    let mut m = VmManager::new(
        FakeHypervisor::new(Some(store.clone())),
        store,
        ManagerConfig::default(),
    );
    let def = VmDefinition {
        name: "kv".into(),
        id: VmUuid::from_random(1),
        memory_mib: 16,
        vcpus: 1,
        workload: "kv".into(),
        args: vec![],
        disks: vec![],
        nic: None,
        priority: 0,
        cpu: None,
        autostart: false,
    };
    if let Ok(id) = m.define(def) {
        let _ = m.start(id, 0);
    }
    let facts = NodeFacts {
        name: "capvisor".into(),
        version: "0.1.0".into(),
        processors: 2,
        seed: 1,
    };
    let auth = Auth::with_digest(token_digest(TOKEN.as_bytes()));
    (Api::new(auth, facts, 0), VmService::new(m, None, quiet))
}

/// Bytes 0..3: method, token (right, none, wrong), whether the path is
/// under `/api/v1/`; then text: the target's line, header lines up to a
/// blank line, the body. A `\0` starts the next request.
fn request(data: &[u8]) -> Option<Request> {
    let (&[m, t, p], rest) = data.split_first_chunk::<3>()?;
    let text = String::from_utf8_lossy(rest);
    let (head, body) = text.split_once("\n\n").unwrap_or((&text, ""));
    let mut lines = head.split('\n');
    let target = lines.next().unwrap_or("");
    let target = if p & 1 == 1 {
        format!("/api/v1/{target}")
    } else {
        target.to_string()
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    let mut headers: Vec<(String, Vec<u8>)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().as_bytes().to_vec()))
        .collect();
    match t % 3 {
        0 => headers.insert(0, ("authorization".into(), format!("Bearer {TOKEN}").into_bytes())),
        1 => {}
        _ => headers.insert(0, ("authorization".into(), b"Bearer nope".to_vec())),
    }
    let method = METHODS[usize::from(m) % METHODS.len()];
    Some(Request {
        method: method.into(),
        path: path.into(),
        query: query.into(),
        headers,
        body: body.as_bytes().to_vec(),
    })
}

fuzz_target!(|data: &[u8]| {
    let (mut api, mut vms) = node();
    let mut now = 1_000_000_000u64;
    for part in data.split(|&b| b == 0).take(8) {
        let Some(req) = request(part) else { continue };
        let response = api.handle(&mut vms, &req, now);
        if let Err(e) = doc().check_answer(
            &req.method,
            &req.path,
            response.status,
            response.content_type,
            &response.body,
        ) {
            panic!("{} {} -> {}: {e}", req.method, req.path, response.status);
        }
        now += 1_000_000_000;
        let _ = root_partition::node::Service::poll(&mut vms, now, 0);
        api.update(&mut vms, now);
    }
    let mut out = Vec::new();
    let last = api.events(0, &mut out, 1 << 20);
    assert_eq!(last, api.last_event());
});
