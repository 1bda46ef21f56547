//! Text output of the online verbs: the `vm list` table with Get-VM's
//! columns, the job table, and key/value listings. `--json` never goes
//! through here (it prints the node's answer as is).
//!
//! Invariant: the tables' columns and their order do not change with the
//! data (a missing field prints as `-`).

use comfy_table::presets::NOTHING;
use comfy_table::{CellAlignment, ContentArrangement, Table};
use serde_json::Value;

/// `hh:mm:ss` (hours grow past 99).
pub fn hms(seconds: u64) -> String {
    format!(
        "{:02}:{:02}:{:02}",
        seconds / 3600,
        seconds / 60 % 60,
        seconds % 60
    )
}

fn text(v: &Value, key: &str) -> String {
    match v.get(key) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => "-".into(),
    }
}

fn number(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// A table without borders: headers, a dashed line under them, aligned
/// columns (the look of PowerShell's tables).
fn table(headers: &[&str], right: &[usize], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_style(NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(headers.to_vec());
    t.add_row(
        headers
            .iter()
            .map(|h| "-".repeat(h.len()))
            .collect::<Vec<_>>(),
    );
    for row in rows {
        t.add_row(row);
    }
    for (i, column) in t.column_iter_mut().enumerate() {
        column.set_padding((0, 1));
        if right.contains(&i) {
            column.set_cell_alignment(CellAlignment::Right);
        }
    }
    t.lines()
        .map(|l| l.trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether a VM in `state` holds its memory (Get-VM's Memory Assigned is
/// 0 for a VM that is Off, Saved or Failed).
fn holds_memory(state: &str) -> bool {
    matches!(
        state,
        "Starting" | "Running" | "Paused" | "Saving" | "Stopping"
    )
}

/// `vm list`: Name, State, CPU Usage(%), Memory Assigned(M), Uptime, Status.
pub fn vms(vms: &[Value]) -> String {
    let rows = vms
        .iter()
        .map(|vm| {
            let state = text(vm, "state");
            let memory = if holds_memory(&state) {
                number(vm, "memory_mib")
            } else {
                0
            };
            vec![
                text(vm, "name"),
                state,
                number(vm, "cpu_usage_percent").to_string(),
                memory.to_string(),
                hms(number(vm, "uptime_s")),
                text(vm, "status"),
            ]
        })
        .collect();
    table(
        &[
            "Name",
            "State",
            "CPU Usage(%)",
            "Memory Assigned(M)",
            "Uptime",
            "Status",
        ],
        &[2, 3],
        rows,
    )
}

/// Key/value lines, keys aligned.
fn details(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    pairs
        .iter()
        .map(|(k, v)| format!("{k:<width$} : {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The disks as `/FILE:LUN ...`.
fn disks(vm: &Value) -> String {
    let list: Vec<String> = vm
        .get("disks")
        .and_then(Value::as_array)
        .map(|d| d.iter().map(disk).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "-".into()
    } else {
        list.join(" ")
    }
}

fn disk(d: &Value) -> String {
    format!("{}:{}", text(d, "path"), text(d, "lun"))
}

/// `vm disk list`: LUN and Path.
pub fn disk_table(list: &[Value]) -> String {
    let rows = list
        .iter()
        .map(|d| vec![text(d, "lun"), text(d, "path")])
        .collect();
    table(&["LUN", "Path"], &[0], rows)
}

/// `vm show`.
pub fn vm_details(vm: &Value) -> String {
    let nic = match vm.get("nic") {
        Some(Value::Object(n)) => match n.get("mac") {
            Some(Value::String(mac)) => mac.clone(),
            _ => "yes (MAC picked by the node)".into(),
        },
        _ => "-".into(),
    };
    let args: Vec<String> = vm
        .get("args")
        .and_then(Value::as_array)
        .map(|a| a.iter().map(|v| v.to_string()).collect())
        .unwrap_or_default();
    details(&[
        ("Name", text(vm, "name")),
        ("Id", text(vm, "id")),
        ("State", text(vm, "state")),
        ("Status", text(vm, "status")),
        ("Heartbeat", text(vm, "heartbeat")),
        ("CPU Usage(%)", number(vm, "cpu_usage_percent").to_string()),
        ("Memory(M)", text(vm, "memory_mib")),
        ("Processors", text(vm, "vcpus")),
        ("Uptime", hms(number(vm, "uptime_s"))),
        ("Workload", text(vm, "workload")),
        (
            "Arguments",
            if args.is_empty() {
                "-".into()
            } else {
                args.join(",")
            },
        ),
        ("Disks", disks(vm)),
        ("Network adapter", nic),
        ("Priority", text(vm, "priority")),
        ("CPU", text(vm, "cpu")),
        ("Autostart", text(vm, "autostart")),
    ])
}

/// `node show`.
pub fn node_details(node: &Value) -> String {
    let api = node.get("api").cloned().unwrap_or(Value::Null);
    details(&[
        ("Name", text(node, "name")),
        ("Version", text(node, "version")),
        ("State", text(node, "state")),
        ("Uptime", hms(number(node, "uptime_s"))),
        ("Processors", text(node, "processors")),
        ("VMs", text(node, "vms")),
        ("VMs running", text(node, "vms_running")),
        ("Last event", text(node, "events_seq")),
        ("API requests", text(&api, "requests")),
        ("API refused", text(&api, "refused")),
        ("API bad requests", text(&api, "bad_requests")),
        ("API connections", text(&api, "connections")),
    ])
}

/// `start kv`, `node-shutdown`.
pub fn job_title(job: &Value) -> String {
    let op = text(job, "operation");
    match job.get("vm").and_then(Value::as_str) {
        Some(vm) => format!("{op} {vm}"),
        None => op,
    }
}

fn seconds(ms: u64) -> String {
    format!("{}.{} s", ms / 1000, ms % 1000 / 100)
}

/// One line for a finished job.
pub fn job_line(job: &Value) -> String {
    format!(
        "job {} {}: {} in {}",
        text(job, "id"),
        job_title(job),
        text(job, "state"),
        seconds(number(job, "elapsed_ms"))
    )
}

fn job_error(job: &Value) -> String {
    match job.get("error") {
        Some(e @ Value::Object(_)) => format!("{}: {}", text(e, "code"), text(e, "message")),
        _ => "-".into(),
    }
}

/// `job list`: Id, Operation, VM, State, Percent, Elapsed, Error.
pub fn jobs(list: &[Value]) -> String {
    let rows = list
        .iter()
        .map(|j| {
            vec![
                text(j, "id"),
                text(j, "operation"),
                text(j, "vm").replace("null", "-"),
                text(j, "state"),
                number(j, "percent").to_string(),
                seconds(number(j, "elapsed_ms")),
                job_error(j),
            ]
        })
        .collect();
    table(
        &[
            "Id",
            "Operation",
            "VM",
            "State",
            "Percent",
            "Elapsed",
            "Error",
        ],
        &[0, 4, 5],
        rows,
    )
}

fn bytes(job: &Value, key: &str) -> String {
    match job.get(key).and_then(Value::as_u64) {
        Some(n) => n.to_string(),
        None => "-".into(),
    }
}

/// `job show`.
pub fn job_details(job: &Value) -> String {
    details(&[
        ("Id", text(job, "id")),
        ("Operation", text(job, "operation")),
        ("VM", text(job, "vm")),
        ("State", text(job, "state")),
        ("Percent", number(job, "percent").to_string()),
        ("Elapsed", seconds(number(job, "elapsed_ms"))),
        ("Processed bytes", bytes(job, "processed_bytes")),
        ("Remaining bytes", bytes(job, "remaining_bytes")),
        ("Cancellable", text(job, "cancellable")),
        ("Error", job_error(job)),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn uptime_is_hms() {
        assert_eq!(hms(0), "00:00:00");
        assert_eq!(hms(3_723), "01:02:03");
        assert_eq!(hms(400_000), "111:06:40");
    }

    #[test]
    fn vm_table_columns_line_up() {
        let list = [
            json!({"name":"kv","state":"Running","cpu_usage_percent":3,"memory_mib":32,
                   "uptime_s":62,"status":"Operating normally"}),
            json!({"name":"longname","state":"Off","memory_mib":64,"uptime_s":0,
                   "status":"Operating normally"}),
        ];
        let text = vms(&list);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(lines[0].starts_with("Name"), "{text}");
        // Every column starts where its header does.
        let at = |h: &str| lines[0].find(h).expect("header");
        assert_eq!(lines[2].find("Running"), Some(at("State")));
        assert_eq!(lines[3].find("Off"), Some(at("State")));
        assert_eq!(lines[2].find("00:01:02"), Some(at("Uptime")));
        assert!(lines[1].starts_with("----"));
        // Off: no memory assigned.
        assert!(lines[3].contains(" 0 "), "{text}");
        assert!(lines[2].contains(" 32 "), "{text}");
    }
}
