//! `capctl vm ...` online: the node's VMs through `/api/v1/vms` (list,
//! show, create, the long operations as jobs, delete, console, disks).
//! The offline verbs (`--volume`) live in `crate::vm`.
//!
//! Invariant: a VM name is checked before it goes into a URL, so a
//! request path is always one the API defines.

use super::client::{Client, Method};
use super::job::{self, Wait};
use super::{Global, table};
use crate::Output;
use anyhow::{Result, bail};
use root_partition::services::vm::definition::valid_name;
use serde_json::{Value, json};
use std::process::ExitCode;

fn vm_path(name: &str) -> Result<String> {
    if !valid_name(name) {
        bail!("{name:?} is not a VM name (1 to 8 letters, digits, `-`, `_`)");
    }
    Ok(format!("/vms/{name}"))
}

/// `vm list`: the Get-VM table, or the node's answer with `--json`.
pub fn list(global: &Global, out: &Output) -> Result<ExitCode> {
    let client = Client::new(global)?;
    let body = client.get("/vms", "VM list")?;
    let vms = body
        .get("vms")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.result(&table::vms(&vms), body);
    Ok(ExitCode::SUCCESS)
}

/// `vm show NAME`.
pub fn show(global: &Global, out: &Output, name: &str) -> Result<ExitCode> {
    let path = vm_path(name)?;
    let client = Client::new(global)?;
    let vm = client.get(&path, &format!("VM {name}"))?;
    out.result(&table::vm_details(&vm), vm);
    Ok(ExitCode::SUCCESS)
}

/// `vm create NAME ...`: POST the VmCreate body.
pub fn create(global: &Global, out: &Output, name: &str, body: Value) -> Result<ExitCode> {
    let client = Client::new(global)?;
    let answer = client.call(Method::Post, "/vms", Some(&body), &format!("VM {name}"))?;
    let vm = answer.body;
    out.result(
        &format!(
            "created VM {} ({}), state {}",
            vm.get("name").and_then(Value::as_str).unwrap_or(name),
            vm.get("id").and_then(Value::as_str).unwrap_or("?"),
            vm.get("state").and_then(Value::as_str).unwrap_or("?"),
        ),
        vm,
    );
    Ok(ExitCode::SUCCESS)
}

/// `vm start|stop|turn-off|pause|resume|save|restore NAME`: the job,
/// watched unless `--no-wait`.
pub fn operation(
    global: &Global,
    out: &Output,
    name: &str,
    verb: &str,
    wait: &Wait,
) -> Result<ExitCode> {
    let path = format!("{}/{verb}", vm_path(name)?);
    let client = Client::new(global)?;
    let answer = client.call(Method::Post, &path, None, &format!("VM {name}"))?;
    job::accepted(&client, answer, wait, out)
}

/// `vm delete NAME`.
pub fn delete(global: &Global, out: &Output, name: &str) -> Result<ExitCode> {
    let path = vm_path(name)?;
    let client = Client::new(global)?;
    client.call(Method::Delete, &path, None, &format!("VM {name}"))?;
    out.result(&format!("deleted VM {name}"), json!({ "deleted": name }));
    Ok(ExitCode::SUCCESS)
}

/// `vm console NAME`: the last console lines.
pub fn console(global: &Global, out: &Output, name: &str) -> Result<ExitCode> {
    let path = format!("{}/console", vm_path(name)?);
    let client = Client::new(global)?;
    let body = client.get(&path, &format!("VM {name}"))?;
    let lines: Vec<&str> = body
        .get("lines")
        .and_then(Value::as_array)
        .map(|l| l.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    out.result(&lines.join("\n"), body.clone());
    Ok(ExitCode::SUCCESS)
}

/// `vm disk list NAME`.
pub fn disk_list(global: &Global, out: &Output, name: &str) -> Result<ExitCode> {
    let path = format!("{}/disks", vm_path(name)?);
    let client = Client::new(global)?;
    let body = client.get(&path, &format!("VM {name}"))?;
    let disks = body
        .get("disks")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    out.result(&table::disk_table(&disks), body);
    Ok(ExitCode::SUCCESS)
}

/// `vm disk add NAME --path P --lun L`.
pub fn disk_add(
    global: &Global,
    out: &Output,
    name: &str,
    disk: &str,
    lun: u8,
    wait: &Wait,
) -> Result<ExitCode> {
    let path = format!("{}/disks", vm_path(name)?);
    let client = Client::new(global)?;
    let body = json!({ "path": disk, "lun": lun });
    let answer = client.call(Method::Post, &path, Some(&body), &format!("VM {name}"))?;
    job::accepted(&client, answer, wait, out)
}

/// `vm disk remove NAME --lun L`.
pub fn disk_remove(
    global: &Global,
    out: &Output,
    name: &str,
    lun: u8,
    wait: &Wait,
) -> Result<ExitCode> {
    let path = format!("{}/disks/{lun}", vm_path(name)?);
    let client = Client::new(global)?;
    let answer = client.call(
        Method::Delete,
        &path,
        None,
        &format!("disk at LUN {lun} of VM {name}"),
    )?;
    job::accepted(&client, answer, wait, out)
}
