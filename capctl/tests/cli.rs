//! The capctl binary end to end: disk and volume commands on temp files,
//! their outputs, and non-zero exits with clear errors on bad input.

use std::path::Path;
use std::process::{Command, Output};

fn capctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_capctl"))
        .args(args)
        .output()
        .expect("run capctl")
}

fn ok(args: &[&str]) -> String {
    let out = capctl(args);
    assert!(
        out.status.success(),
        "capctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

#[test]
fn disks_chain_convert_merge() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    let child = dir.path().join("child.vhd");
    let data = dir.path().join("data.bin");
    std::fs::write(
        &data,
        (0..300_000u32).map(|i| (i % 251) as u8).collect::<Vec<_>>(),
    )
    .expect("data");
    ok(&["disk", "create", p(&base), "--size", "16M"]);
    ok(&["disk", "write", p(&base), "--offset", "1M", "-i", p(&data)]);
    ok(&[
        "disk",
        "create",
        p(&child),
        "--type",
        "differencing",
        "--parent",
        p(&base),
    ]);
    ok(&[
        "disk",
        "write",
        p(&child),
        "--offset",
        "1100000",
        "-i",
        p(&data),
    ]);
    let info = ok(&["--json", "disk", "info", p(&child)]);
    assert!(
        info.contains("\"type\":\"differencing\"") && info.contains("base.vhd"),
        "{info}"
    );
    assert!(ok(&["--json", "disk", "check", p(&child)]).contains("\"ok\":true"));
    // Flatten the chain and compare it with qemu-img's view after a merge.
    let flat = dir.path().join("flat.raw");
    ok(&["disk", "convert", p(&child), p(&flat), "--type", "raw"]);
    ok(&["disk", "merge", p(&child)]);
    let merged = dir.path().join("merged.raw");
    let status = Command::new("qemu-img")
        .args(["convert", "-O", "raw", "--image-opts"])
        .arg(format!(
            "driver=vpc,force_size_calc=current_size,file.filename={}",
            p(&base)
        ))
        .arg(p(&merged))
        .status()
        .expect("qemu-img (qemu-utils) must be installed");
    assert!(
        status.success(),
        "qemu-img convert of the merged parent failed"
    );
    assert!(std::fs::read(&flat).expect("flat") == std::fs::read(&merged).expect("merged"));
    let read = capctl(&[
        "disk",
        "read",
        p(&base),
        "--offset",
        "1100000",
        "--length",
        "1000",
    ]);
    assert!(read.status.success());
    assert_eq!(read.stdout.len(), 1000);
}

#[test]
fn volumes_put_get_ls_rm_check() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("vol.img");
    let vhd = dir.path().join("disk.vhd");
    ok(&["disk", "create", p(&vhd), "--size", "8M", "--type", "fixed"]);
    ok(&["vol", "format", p(&img), "--size", "64M", "--label", "VMS"]);
    let put = ok(&[
        "--json",
        "vol",
        "put",
        p(&img),
        p(&vhd),
        "/disks/web/disk.vhd",
    ]);
    assert!(put.contains("\"contiguous\":true"), "{put}");
    assert!(ok(&["vol", "ls", p(&img), "/disks/web"]).contains("disk.vhd"));
    let back = dir.path().join("back.vhd");
    ok(&["vol", "get", p(&img), "/disks/web/disk.vhd", p(&back)]);
    assert!(std::fs::read(&vhd).expect("a") == std::fs::read(&back).expect("b"));
    ok(&["disk", "check", p(&back)]);
    let fsck = Command::new("fsck.exfat")
        .args(["-n", p(&img)])
        .status()
        .expect("fsck.exfat (exfatprogs) must be installed");
    assert!(fsck.success());
    ok(&["vol", "rm", p(&img), "/disks/web/disk.vhd"]);
    assert!(ok(&["vol", "check", p(&img)]).contains("ok"));
}

#[test]
fn bad_input_fails_clearly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let junk = dir.path().join("junk.vhd");
    std::fs::write(&junk, vec![7u8; 4096]).expect("junk");
    let out = capctl(&["disk", "info", p(&junk)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no 'conectix' footer"));
    let out = capctl(&["--json", "vol", "ls", p(&junk)]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"error\""));
    let out = capctl(&[
        "disk",
        "create",
        p(&dir.path().join("x.vhd")),
        "--size",
        "lots",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid size"));
    let out = capctl(&[
        "disk",
        "create",
        p(&dir.path().join("y.vhd")),
        "--type",
        "differencing",
    ]);
    assert!(!out.status.success());
    let out = capctl(&["disk", "frobnicate"]);
    assert!(!out.status.success());
}

/// Whether `haystack` holds `text` in UTF-16LE (how W2ku/W2ru locators are stored).
fn holds_utf16(haystack: &[u8], text: &str) -> bool {
    let needle: Vec<u8> = text.encode_utf16().flat_map(u16::to_le_bytes).collect();
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[test]
fn relative_only_differencing_disks_record_no_host_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().join("base.vhd");
    let (with, without) = (dir.path().join("abs.vhd"), dir.path().join("rel.vhd"));
    ok(&["disk", "create", p(&base), "--size", "8M"]);
    let data = dir.path().join("data.bin");
    std::fs::write(&data, b"written into the parent").expect("data");
    ok(&["disk", "write", p(&base), "-i", p(&data)]);
    ok(&[
        "disk",
        "create",
        p(&with),
        "--type",
        "differencing",
        "--parent",
        p(&base),
    ]);
    let args = [
        "--type",
        "differencing",
        "--parent",
        p(&base),
        "--relative-only",
    ];
    ok(&[&["disk", "create", p(&without)], &args[..]].concat());
    let host_path = std::fs::canonicalize(&base).expect("canonical");
    let host_path = host_path.to_str().expect("utf-8");
    assert!(holds_utf16(&std::fs::read(&with).expect("read"), host_path));
    let rel = std::fs::read(&without).expect("read");
    assert!(!holds_utf16(&rel, host_path));
    assert!(holds_utf16(&rel, ".\\base.vhd"));

    // Moved together, the chain still opens and reads the parent's data.
    let moved = tempfile::tempdir().expect("tempdir");
    for (from, to) in [(&base, "base.vhd"), (&without, "rel.vhd")] {
        std::fs::rename(from, moved.path().join(to)).expect("move");
    }
    let top = moved.path().join("rel.vhd");
    assert!(ok(&["--json", "disk", "check", p(&top)]).contains("\"ok\":true"));
    let expected = b"written into the parent".to_vec();
    let len = expected.len().to_string();
    assert_eq!(
        ok(&["disk", "read", p(&top), "--length", &len]).into_bytes(),
        expected
    );

    // A parent elsewhere has no relative locator to record.
    let other = tempfile::tempdir().expect("tempdir");
    let (x, moved_base) = (other.path().join("x.vhd"), moved.path().join("base.vhd"));
    let out = capctl(&[
        "disk",
        "create",
        p(&x),
        "--type",
        "differencing",
        "--parent",
        p(&moved_base),
        "--relative-only",
    ]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--relative-only needs"));
}

#[test]
fn migrate_simulate_and_table() {
    // 64 GiB on 10 GbE under a light load: converges well within 10 passes.
    let text = ok(&[
        "migrate",
        "simulate",
        "--memory",
        "64G",
        "--dirty-rate",
        "256",
        "--link",
        "10G",
        "--budget-ms",
        "50",
    ]);
    assert!(
        text.starts_with("migration: pass 1 pages=16777216 "),
        "{text}"
    );
    assert!(text.contains("outcome=completed"), "{text}");
    let json = ok(&[
        "--json",
        "migrate",
        "simulate",
        "--memory",
        "64G",
        "--dirty-rate",
        "256",
        "--link",
        "10G",
    ]);
    let v: serde_json::Value = serde_json::from_str(&json).expect("one JSON object");
    let passes = v["passes"].as_array().expect("passes").len();
    assert!((1..=10).contains(&passes), "{json}");
    assert!(
        matches!(v["stop"].as_str(), Some("all_sent" | "fits_budget")),
        "{json}"
    );
    let (total, memory) = (
        v["total_bytes"].as_u64().expect("total"),
        v["memory_bytes"].as_u64().expect("memory"),
    );
    assert_eq!(memory, 64 << 30);
    assert!(total >= memory && total < memory + memory / 10, "{json}");
    assert!(
        v["blackout_ns"].as_u64().expect("blackout") <= 50_000_000,
        "{json}"
    );
    // A hot working set on a slow link never fits: the pass limit stops it.
    let heavy = ok(&[
        "--json",
        "migrate",
        "simulate",
        "--memory",
        "4G",
        "--dirty-rate",
        "400000",
        "--working-set",
        "1G",
        "--link",
        "1G",
    ]);
    let v: serde_json::Value = serde_json::from_str(&heavy).expect("json");
    assert_eq!(v["stop"], "pass_limit");
    assert_eq!(v["passes"].as_array().map(Vec::len), Some(10));
    // The table: a header, a separator and eight rows.
    let table = ok(&["migrate", "table"]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 10, "{table}");
    assert!(lines[0].starts_with("| memory | link | load | passes | stop reason |"));
    assert!(
        lines
            .iter()
            .skip(2)
            .all(|l| l.starts_with("| ") && l.matches('|').count() == 12)
    );
    // Auto-converge brings 64 GiB dirtying 400k pages/s on 10 GbE under
    // the 50 ms budget; without it the blackout is ten times that.
    let heavy = |throttle: &str| {
        let json = ok(&[
            "--json",
            "migrate",
            "simulate",
            "--memory",
            "64G",
            "--dirty-rate",
            "400000",
            "--working-set",
            "1G",
            "--link",
            "10G",
            "--throttle",
            throttle,
        ]);
        let v: serde_json::Value = serde_json::from_str(&json).expect("json");
        (
            v["blackout_ns"].as_u64().expect("blackout"),
            v["throttle_percent"].as_u64().expect("throttle"),
        )
    };
    let (throttled, percent) = heavy("20");
    assert!(
        throttled <= 50_000_000 && percent >= 20,
        "{throttled} ns at {percent}%"
    );
    let (free, percent) = heavy("0");
    assert!(
        free > 10 * throttled && percent == 0,
        "{free} ns at {percent}%"
    );
    assert!(table.contains("| 64 GiB | 10 GbE | light"));
    // Bad arguments: one clear error.
    let bad = capctl(&["migrate", "simulate", "--link", "fast"]);
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("invalid link speed"));
}

#[test]
fn vm_definitions_define_list_remove() {
    let dir = tempfile::tempdir().expect("tempdir");
    let img = dir.path().join("data.img");
    ok(&["vol", "format", p(&img), "--size", "64M"]);
    let vhd = dir.path().join("web.vhd");
    ok(&["disk", "create", p(&vhd), "--size", "8M"]);
    ok(&["vol", "put", p(&img), p(&vhd), "/web.vhd"]);
    let web = ok(&[
        "--json",
        "vm",
        "define",
        "--volume",
        p(&img),
        "web",
        "--memory",
        "32M",
        "--vcpus",
        "2",
        "--workload",
        "kv",
        "--args",
        "7,9",
        "--disk",
        "/web.vhd:0",
        "--mac",
        "02:63:76:00:00:09",
        "--priority",
        "3",
        "--cpu",
        "1",
        "--autostart",
        "--id",
        "6f1c2a9e-3b4d-4c5e-8f70-112233445566",
    ]);
    assert!(web.contains("\"state\":\"Off\""), "{web}");
    ok(&[
        "vm",
        "define",
        "--volume",
        p(&img),
        "db",
        "--memory",
        "16M",
        "--workload",
        "hello",
    ]);
    // A damaged file beside them is reported with its path, not fatal.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, b"{\"format\": 1, \"name\": \"bad\", \"vcpus\": 9}").expect("bad");
    ok(&["vol", "put", p(&img), p(&bad), "/vms/bad.json"]);

    let list = ok(&["--json", "vm", "list", "--volume", p(&img)]);
    let v: serde_json::Value = serde_json::from_str(&list).expect("json");
    let vms = v["vms"].as_array().expect("vms");
    let names: Vec<&str> = vms.iter().map(|vm| vm["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["db", "web"]);
    let web = &vms[1];
    assert_eq!(web["id"], "6f1c2a9e-3b4d-4c5e-8f70-112233445566");
    assert_eq!(web["memory_mib"], 32);
    assert_eq!(web["args"], serde_json::json!([7, 9]));
    assert_eq!(
        web["disks"],
        serde_json::json!([{ "path": "/web.vhd", "lun": 0 }])
    );
    assert_eq!(web["nic"]["mac"], "02:63:76:00:00:09");
    assert_eq!(
        (web["priority"].as_u64(), web["cpu"].as_u64()),
        (Some(3), Some(1))
    );
    assert_eq!(web["autostart"], true);
    assert_eq!(v["skipped"][0]["path"], "/vms/bad.json");
    assert!(
        v["skipped"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("missing field"),
        "{list}"
    );
    let text = ok(&["vm", "list", "--volume", p(&img)]);
    assert!(text.contains("skipped /vms/bad.json"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("web ") && l.contains("32M")),
        "{text}"
    );

    // Refusals: a name in use (in any case), an id in use, bad values naming the field.
    for (args, message) in [
        (
            vec!["WEB", "--memory", "16M", "--workload", "hello"],
            "already defined",
        ),
        (
            vec![
                "other",
                "--memory",
                "16M",
                "--workload",
                "hello",
                "--id",
                "6f1c2a9e-3b4d-4c5e-8f70-112233445566",
            ],
            "already used",
        ),
        (
            vec!["x", "--memory", "3M", "--workload", "hello"],
            "field `memory_mib`",
        ),
        (
            vec![
                "x",
                "--memory",
                "16M",
                "--workload",
                "hello",
                "--vcpus",
                "5",
            ],
            "field `vcpus`",
        ),
        (
            vec![
                "x",
                "--memory",
                "16M",
                "--workload",
                "hello",
                "--disk",
                "/a:0",
                "--disk",
                "/b:0",
            ],
            "field `disks[1].lun`",
        ),
        (
            vec![
                "x",
                "--memory",
                "16M",
                "--workload",
                "hello",
                "--mac",
                "01:00:00:00:00:01",
            ],
            "field `nic.mac`",
        ),
        (
            vec!["x.y", "--memory", "16M", "--workload", "hello"],
            "field `name`",
        ),
        (
            vec!["bad", "--memory", "16M", "--workload", "hello"],
            "does not load",
        ),
    ] {
        let mut full = vec!["vm", "define", "--volume", p(&img)];
        full.extend(args);
        let out = capctl(&full);
        assert!(!out.status.success(), "{full:?} succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(message), "{full:?}: {err}");
    }

    // The node reads what capctl wrote, with the same code: after a
    // "reboot" the autostart VM starts and the other stays off.
    {
        use root_partition::services::vm::fake::FakeHypervisor;
        use root_partition::services::vm::{ManagerConfig, VmManager};
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&img)
            .expect("image");
        let volume = exfat::Volume::mount(file).expect("mount");
        let (mut node, report) = VmManager::boot(
            FakeHypervisor::new(None),
            volume,
            ManagerConfig::default(),
            0,
        )
        .expect("boot");
        assert_eq!(report.skipped.len(), 1);
        node.poll(0);
        let state = |n: &str| node.state(node.find(n).unwrap()).unwrap().name();
        assert_eq!((state("web"), state("db")), ("Running", "Off"));
        let spec = node.hypervisor().partitions.values().next().unwrap().spec;
        assert_eq!(spec.disks[0].unwrap().as_str(), "web.vhd");
        assert_eq!(spec.args, [7, 9, 0, 0]);
    }

    ok(&["vm", "remove", "--volume", p(&img), "db"]);
    let out = capctl(&["vm", "remove", "--volume", p(&img), "db"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no VM db"));
    ok(&["vm", "remove", "--volume", p(&img), "bad"]);
    let list = ok(&["--json", "vm", "list", "--volume", p(&img)]);
    assert!(
        list.contains("\"skipped\":[]") && !list.contains("\"db\""),
        "{list}"
    );
    assert!(ok(&["vol", "check", p(&img)]).contains("ok"));
}
