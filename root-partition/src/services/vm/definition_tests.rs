use super::*;

const EXAMPLE: &str = r#"{
  "format": 1,
  "name": "alpha",
  "id": "6F1C2A9E-3B4D-4C5E-8F70-112233445566",
  "memory_mib": 32,
  "vcpus": 2,
  "workload": "disk",
  "args": [3, 1000],
  "disks": [
    { "path": "/extra.vhd", "lun": 1 },
    { "path": "/alpha.vhd", "lun": 0 }
  ],
  "nic": { "mac": "02:63:76:00:00:05" },
  "priority": 3,
  "cpu": 1,
  "autostart": true
}"#;

fn minimal(extra: &str) -> String {
    format!(
        r#"{{"format": 1, "name": "a", "id": "00000000-0000-4000-8000-000000000001",
            "memory_mib": 16, "vcpus": 1, "workload": "hello"{extra}}}"#
    )
}

fn refused(text: &str) -> DefinitionError {
    decode(text.as_bytes()).expect_err(text)
}

#[test]
fn reads_the_documented_example() {
    let def = decode(EXAMPLE.as_bytes()).unwrap();
    assert_eq!(def.name, "alpha");
    assert_eq!(def.id.to_string(), "6f1c2a9e-3b4d-4c5e-8f70-112233445566");
    assert_eq!(def.memory_mib, 32);
    assert_eq!(def.args, [3, 1000]);
    assert_eq!(
        def.disks,
        [
            DiskSlot {
                path: "/alpha.vhd".into(),
                lun: 0
            },
            DiskSlot {
                path: "/extra.vhd".into(),
                lun: 1
            },
        ]
    );
    assert_eq!(
        def.nic,
        Some(Nic {
            mac: Some(Mac([2, 0x63, 0x76, 0, 0, 5]))
        })
    );
    assert_eq!((def.priority, def.cpu, def.autostart), (3, Some(1), true));
    assert_eq!(def.path(), "/vms/alpha.json");
    assert_eq!(def.saved_state_path(), "/vms/alpha.vmrs");
    // Round trip through the writer.
    let again = decode(&encode(&def)).unwrap();
    assert_eq!(again, def);
    // The documentation shows the same example.
    let doc = include_str!("../../../../docs/vm-definition.md");
    assert!(
        doc.contains("\"id\": \"6f1c2a9e-3b4d-4c5e-8f70-112233445566\""),
        "docs/vm-definition.md lost its example"
    );
}

#[test]
fn defaults_for_optional_fields() {
    let def = decode(minimal("").as_bytes()).unwrap();
    assert!(def.args.is_empty() && def.disks.is_empty());
    assert_eq!(
        (def.nic, def.priority, def.cpu, def.autostart),
        (None, 0, None, false)
    );
    let def = decode(minimal(r#", "nic": {}, "cpu": null"#).as_bytes()).unwrap();
    assert_eq!(def.nic, Some(Nic { mac: None }));
}

#[test]
fn converts_to_the_child_specification() {
    let spec = decode(EXAMPLE.as_bytes()).unwrap().child_spec();
    assert_eq!(spec.name.as_str(), "alpha");
    assert_eq!(spec.memory, 32 << 20);
    assert_eq!(spec.vcpus, 2);
    assert_eq!(spec.workload(), "disk");
    assert_eq!(spec.args, [3, 1000, 0, 0]);
    assert_eq!((spec.cpu, spec.priority), (Some(1), 3));
    assert_eq!(
        spec.disks[0].map(|d| d.as_str().to_string()),
        Some("alpha.vhd".into())
    );
    assert_eq!(
        spec.disks[1].map(|d| d.as_str().to_string()),
        Some("extra.vhd".into())
    );
    assert_eq!(spec.disks[2], None);
}

#[test]
fn names_follow_the_boot_configuration() {
    for name in [
        "a",
        "abcdefgh",
        "a-b_9",
        "ABC",
        "abcdefghi",
        "",
        "a.b",
        "a b",
        "é",
        "a/b",
    ] {
        let ours = valid_name(name);
        let text = format!("scenario s\nchild {name} workload=x\n");
        let theirs = crate::config::scenario(&text, "s").is_ok();
        assert_eq!(ours, theirs, "{name:?}");
    }
}

#[test]
fn refuses_other_versions() {
    for (format, field) in [
        ("2", "format"),
        ("0", "format"),
        ("\"1\"", "format"),
        ("1.0", "format"),
    ] {
        let text = minimal("").replace("\"format\": 1", &format!("\"format\": {format}"));
        let e = refused(&text);
        assert_eq!(e.field, field, "{text}");
        assert!(e.reason.contains("unsupported format version"), "{e}");
    }
    let e = refused(r#"{"name": "a"}"#);
    assert_eq!((e.field.as_str(), e.reason.as_str()), ("format", "missing"));
    // A newer version is refused as such even with fields this node does not know.
    let e = refused(r#"{"format": 2, "colour": "red"}"#);
    assert!(e.reason.contains("version 2"), "{e}");
}

#[test]
fn errors_name_the_field() {
    let cases: &[(&str, &str)] = &[
        (r#", "colour": "red""#, "colour"),
        (r#", "name": "b""#, "name"),
        (r#", "priority": 8"#, "priority"),
        (r#", "priority": -1"#, "priority"),
        (r#", "cpu": 64"#, "cpu"),
        (r#", "cpu": "0""#, "cpu"),
        (r#", "autostart": 1"#, "autostart"),
        (r#", "args": [1, 2, 3, 4, 5]"#, "args"),
        (r#", "args": [1, -2]"#, "args[1]"),
        (r#", "args": [1.5]"#, "args[0]"),
        (r#", "args": 7"#, "args"),
        (r#", "disks": {}"#, "disks"),
        (r#", "disks": [1]"#, "disks[0]"),
        (r#", "disks": [{"path": "/a.vhd"}]"#, "disks[0].lun"),
        (r#", "disks": [{"lun": 0}]"#, "disks[0].path"),
        (
            r#", "disks": [{"path": "/a.vhd", "lun": 0, "ro": true}]"#,
            "disks[0]",
        ),
        (
            r#", "disks": [{"path": "a.vhd", "lun": 0}]"#,
            "disks[0].path",
        ),
        (
            r#", "disks": [{"path": "/../a.vhd", "lun": 0}]"#,
            "disks[0].path",
        ),
        (
            r#", "disks": [{"path": "/d/a.vhd", "lun": 0}]"#,
            "disks[0].path",
        ),
        (
            r#", "disks": [{"path": "/.a.vhd", "lun": 0}]"#,
            "disks[0].path",
        ),
        (
            r#", "disks": [{"path": "/a.vhd", "lun": 4}]"#,
            "disks[0].lun",
        ),
        (
            r#", "disks": [{"path": "/a.vhd", "lun": 0}, {"path": "/b.vhd", "lun": 0}]"#,
            "disks[1].lun",
        ),
        (
            r#", "disks": [{"path": "/a.vhd", "lun": 0}, {"path": "/A.VHD", "lun": 1}]"#,
            "disks[1].path",
        ),
        (
            r#", "disks": [{"path": "/a", "lun": 0}, {"path": "/b", "lun": 1}, {"path": "/c", "lun": 2}, {"path": "/d", "lun": 3}, {"path": "/e", "lun": 3}]"#,
            "disks",
        ),
        (r#", "nic": "02:00:00:00:00:01""#, "nic"),
        (r#", "nic": {"mac": "02:00:00:00:00"}"#, "nic.mac"),
        (r#", "nic": {"mac": "02:00:00:00:00:0g"}"#, "nic.mac"),
        (r#", "nic": {"mac": "03:00:00:00:00:01"}"#, "nic.mac"),
        (r#", "nic": {"mac": "00:11:22:33:44:55"}"#, "nic.mac"),
        (r#", "nic": {"mac": "02:00:00:00:00:01", "vlan": 3}"#, "nic"),
    ];
    for (extra, field) in cases {
        let e = refused(&minimal(extra));
        assert_eq!(e.field, *field, "{extra}: {e}");
    }
    let base = minimal("");
    let swaps: &[(&str, &str, &str)] = &[
        ("\"name\": \"a\"", "\"name\": \"abcdefghi\"", "name"),
        ("\"name\": \"a\"", "\"name\": \"a.b\"", "name"),
        ("\"name\": \"a\"", "\"name\": 5", "name"),
        ("\"name\": \"a\", ", "", "name"),
        (
            "\"id\": \"00000000-0000-4000-8000-000000000001\"",
            "\"id\": \"42\"",
            "id",
        ),
        (
            "\"id\": \"00000000-0000-4000-8000-000000000001\"",
            "\"id\": \"0000000x-0000-4000-8000-000000000001\"",
            "id",
        ),
        ("\"memory_mib\": 16", "\"memory_mib\": 2", "memory_mib"),
        ("\"memory_mib\": 16", "\"memory_mib\": 2048", "memory_mib"),
        ("\"memory_mib\": 16", "\"memory_mib\": 17", "memory_mib"),
        (
            "\"memory_mib\": 16",
            "\"memory_mib\": \"16M\"",
            "memory_mib",
        ),
        ("\"vcpus\": 1", "\"vcpus\": 0", "vcpus"),
        ("\"vcpus\": 1", "\"vcpus\": 5", "vcpus"),
        ("\"workload\": \"hello\"", "\"workload\": \"\"", "workload"),
        (
            "\"workload\": \"hello\"",
            "\"workload\": \"a b\"",
            "workload",
        ),
        (
            "\"workload\": \"hello\"",
            "\"workload\": \"abcdefghijabcdefghijabcdefghijabc\"",
            "workload",
        ),
    ];
    for (from, to, field) in swaps {
        let text = base.replace(from, to);
        assert_ne!(text, base, "{from}");
        let e = refused(&text);
        assert_eq!(e.field, *field, "{to}: {e}");
    }
}

#[test]
fn refuses_damaged_files() {
    for text in [
        "",
        "{",
        "[]",
        "null",
        "{\"format\": 1,}",
        "\u{feff}{}",
        "{\"format\": 1} x",
    ] {
        let e = decode(text.as_bytes()).expect_err(text);
        assert!(!e.reason.is_empty());
    }
    assert!(decode(&[0xff, 0xfe, 0x00]).is_err());
    // A list in field order is not an object.
    let list = r#"[1, "a", "00000000-0000-4000-8000-000000000001", 16, 1, "hello"]"#;
    assert_eq!(refused(list).reason, "must be one JSON object");
    // `null` is the same as leaving an optional field out.
    let nulls = minimal(
        r#", "args": null, "disks": null, "nic": null, "priority": null, "autostart": null"#,
    );
    assert_eq!(decode(nulls.as_bytes()), decode(minimal("").as_bytes()));
    let big = format!("{}{}", minimal(""), " ".repeat(MAX_DEFINITION_BYTES));
    assert_eq!(refused(&big).field, "");
    // Nesting deeper than serde_json's limit is an error, not a stack overflow.
    let deep = format!(
        "{{\"format\": 1, \"args\": {}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    assert!(decode(deep.as_bytes()).is_err());
}

#[test]
fn uuids() {
    let id = VmUuid::from_random(u128::MAX);
    assert_eq!(id.to_string(), "ffffffff-ffff-4fff-bfff-ffffffffffff");
    assert_eq!(VmUuid::parse(&id.to_string()), Some(id));
    assert_eq!(
        VmUuid::from_random(0).to_string(),
        "00000000-0000-4000-8000-000000000000"
    );
    for bad in [
        "",
        "ffffffff-ffff-4fff-bfff-fffffffffff",
        "ffffffffxffff-4fff-bfff-ffffffffffff",
        "+fffffff-ffff-4fff-bfff-ffffffffffff",
    ] {
        assert_eq!(VmUuid::parse(bad), None, "{bad}");
    }
}

#[test]
fn validate_checks_definitions_built_in_code() {
    let mut def = decode(minimal("").as_bytes()).unwrap();
    assert_eq!(def.clone().validate(), Ok(def.clone()));
    def.vcpus = 9;
    assert_eq!(def.validate().unwrap_err().field, "vcpus");
}
