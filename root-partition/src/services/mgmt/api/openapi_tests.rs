//! The checker catches what it is for: planted violations of the schema.

use serde_json::json;

use super::*;

fn job() -> Value {
    json!({"id": 1, "url": "/api/v1/jobs/1", "operation": "start", "vm": "kv",
           "state": "Running", "percent": 0, "elapsed_ms": 5, "processed_bytes": null,
           "remaining_bytes": null, "cancellable": true, "error": null})
}

fn check(doc: &OpenApi, status: u16, body: &Value) -> Result<(), String> {
    doc.check_response(
        "GET",
        "/api/v1/jobs/1",
        status,
        "application/json",
        body.to_string().as_bytes(),
    )
}

#[test]
fn a_valid_job_passes() {
    let doc = OpenApi::document().unwrap();
    check(&doc, 200, &job()).unwrap();
    let mut failed = job();
    failed["error"] = json!({"code": "internal", "message": "no"});
    failed["processed_bytes"] = json!(4096);
    check(&doc, 200, &failed).unwrap();
}

#[test]
fn planted_violations_are_caught() {
    let doc = OpenApi::document().unwrap();
    let mut extra = job();
    extra["colour"] = json!("red");
    assert!(check(&doc, 200, &extra).unwrap_err().contains("`colour`"));
    let mut missing = job();
    missing.as_object_mut().unwrap().remove("percent");
    assert!(
        check(&doc, 200, &missing)
            .unwrap_err()
            .contains("`percent`")
    );
    let mut wrong = job();
    wrong["percent"] = json!("0");
    assert!(
        check(&doc, 200, &wrong)
            .unwrap_err()
            .contains("body.percent")
    );
    let mut null = job();
    null["cancellable"] = Value::Null;
    assert!(check(&doc, 200, &null).is_err());
    let mut state = job();
    state["state"] = json!("Sleeping");
    assert!(check(&doc, 200, &state).unwrap_err().contains("not one of"));
    let mut big = job();
    big["percent"] = json!(101);
    assert!(check(&doc, 200, &big).unwrap_err().contains("above"));
    let mut nested = job();
    nested["error"] = json!({"code": "internal"});
    assert!(check(&doc, 200, &nested).unwrap_err().contains("`message`"));
    assert!(
        check(&doc, 418, &job())
            .unwrap_err()
            .contains("418 is not documented")
    );
    let e = doc
        .check_response("GET", "/api/v1/nope", 200, "application/json", b"{}")
        .unwrap_err();
    assert!(e.contains("not in the document"), "{e}");
    let e = doc
        .check_response("PATCH", "/api/v1/jobs/1", 200, "application/json", b"{}")
        .unwrap_err();
    assert!(e.contains("not in the document"), "{e}");
    assert!(check(&doc, 200, &json!([1])).is_err());
    // Undocumented paths and methods may only be refused, with the error body.
    let refusal = br#"{"error":{"code":"not_found","message":"no such path"}}"#;
    doc.check_answer("GET", "/api/v1/nope", 404, "application/json", refusal)
        .unwrap();
    assert!(
        doc.check_answer("GET", "/api/v1/nope", 200, "application/json", b"{}")
            .is_err()
    );
    assert!(
        doc.check_answer("GET", "/api/v1/nope", 404, "application/json", b"{}")
            .is_err()
    );
    let refusal = br#"{"error":{"code":"method_not_allowed","message":"no"}}"#;
    doc.check_answer("PATCH", "/api/v1/jobs/1", 405, "application/json", refusal)
        .unwrap();
    assert!(
        doc.check_answer("PATCH", "/api/v1/nope", 405, "application/json", refusal)
            .is_err()
    );
    // A body where none is documented, and a content type not documented.
    assert!(
        doc.check_response("DELETE", "/api/v1/vms/kv", 204, "application/json", b"{}")
            .is_err()
    );
    assert!(
        doc.check_response("GET", "/api/v1/jobs/1", 200, "text/plain", b"x")
            .is_err()
    );
}

#[test]
fn request_bodies_are_checked_too() {
    let doc = OpenApi::document().unwrap();
    let ok = br#"{"name":"kv","memory_mib":16,"vcpus":1,"workload":"kv","nic":{"mac":null}}"#;
    doc.check_request("POST", "/api/v1/vms", ok).unwrap();
    let extra = br#"{"name":"kv","memory_mib":16,"vcpus":1,"workload":"kv","format":1}"#;
    assert!(doc.check_request("POST", "/api/v1/vms", extra).is_err());
    assert!(
        doc.check_request("POST", "/api/v1/vms", br#"{"name":"kv"}"#)
            .is_err()
    );
    let digest = alloc::format!(r#"{{"sha256":"{}"}}"#, "ab".repeat(32));
    doc.check_request("PUT", "/api/v1/node/token", digest.as_bytes())
        .unwrap();
    let upper = alloc::format!(r#"{{"sha256":"{}"}}"#, "AB".repeat(32));
    assert!(
        doc.check_request("PUT", "/api/v1/node/token", upper.as_bytes())
            .is_err()
    );
    assert!(
        doc.check_request("POST", "/api/v1/vms/kv/start", b"{}")
            .is_err()
    );
    doc.check_request("POST", "/api/v1/vms/kv/start", b"")
        .unwrap();
}

#[test]
fn references_into_nowhere_are_reported() {
    let doc = OpenApi::parse(
        r##"{"paths":{"/a":{"get":{"responses":{"200":{"$ref":"#/components/responses/X"}}}}}}"##,
    )
    .unwrap();
    let e = doc
        .check_response("GET", "/a", 200, "application/json", b"{}")
        .unwrap_err();
    assert!(e.contains("no such part"), "{e}");
    assert!(OpenApi::parse("{}").is_err());
}
