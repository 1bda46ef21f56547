use super::*;
use crate::services::vm::definition::{DiskSlot, VmUuid, encode};
use exfat::FormatOptions;
use vhd::MemDevice;

fn def(name: &str, id: u128) -> VmDefinition {
    VmDefinition {
        name: name.into(),
        id: VmUuid::from_random(id),
        memory_mib: 16,
        vcpus: 1,
        workload: "hello".into(),
        args: Vec::new(),
        disks: vec![DiskSlot {
            path: "/d.vhd".into(),
            lun: 0,
        }],
        nic: None,
        priority: 0,
        cpu: None,
        autostart: false,
    }
}

fn volume() -> Volume<MemDevice> {
    let options = FormatOptions {
        size: 8 << 20,
        cluster_size: None,
        label: "DATA".into(),
        serial: 1,
    };
    Volume::format(MemDevice::new(vec![0; 8 << 20]), &options).unwrap()
}

/// The same checks on any store.
fn exercise<S: Store>(store: &mut S) {
    assert_eq!(
        store.list(VM_FOLDER).unwrap(),
        Vec::new(),
        "absent folder is empty"
    );
    replace(store, "/vms/a.json", &encode(&def("a", 1))).unwrap();
    replace(store, "/vms/b.json", b"old").unwrap();
    replace(store, "/vms/b.json", &encode(&def("b", 2))).unwrap();
    let mut names: Vec<String> = store
        .list(VM_FOLDER)
        .unwrap()
        .into_iter()
        .map(|e| e.name)
        .collect();
    names.sort();
    assert_eq!(names, ["a.json", "b.json"]);
    assert_eq!(
        store.read("/vms/b.json", 1 << 16).unwrap(),
        encode(&def("b", 2))
    );
    assert!(matches!(
        store.read("/vms/b.json", 10),
        Err(StoreError::TooLarge { .. })
    ));
    assert_eq!(store.read("/vms/c.json", 10), Err(StoreError::NotFound));
    assert!(store.exists("/vms/a.json").unwrap());
    assert!(!store.exists("/vms/a.vmrs").unwrap());
    store.write("/vms/a.vmrs", b"state").unwrap();
    let report = load_all(store).unwrap();
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.loaded, [(def("a", 1), true), (def("b", 2), false)]);
    store.remove("/vms/a.json").unwrap();
    assert_eq!(store.remove("/vms/a.json"), Err(StoreError::NotFound));
    assert!(remove_if_present(store, "/vms/a.json").is_ok());
}

#[test]
fn memory_store() {
    exercise(&mut MemStore::new());
}

#[test]
fn exfat_volume_store() {
    let mut vol = volume();
    exercise(&mut vol);
    assert!(vol.check().unwrap().is_clean());
    // And through the root's shared volume.
    let mut shared = crate::disks::mount(vol.into_device().unwrap()).unwrap();
    let report = load_all(&mut shared).unwrap();
    assert_eq!(report.loaded, [(def("b", 2), false)]);
}

#[test]
fn interrupted_writes_are_finished_or_discarded() {
    let store = MemStore::new();
    // A crash after the old file was removed: the complete temporary file
    // is the definition.
    store.plant("/vms/a.json.tmp", &encode(&def("a", 1)));
    // A crash while the temporary file was written: the old one stays.
    store.plant("/vms/b.json", &encode(&def("b", 2)));
    store.plant("/vms/b.json.tmp", b"{\"format\": 1, \"na");
    let report = load_all(&mut store.clone()).unwrap();
    assert_eq!(report.loaded, [(def("a", 1), false), (def("b", 2), false)]);
    assert!(report.skipped.is_empty(), "{:?}", report.skipped);
    assert_eq!(report.recovered.len(), 2);
    assert_eq!(store.paths(), ["/vms/a.json", "/vms/b.json"]);
}

#[test]
fn a_failing_volume_is_an_error_not_a_panic() {
    let store = MemStore::new();
    store.set_failing(true);
    assert!(matches!(
        replace(&mut store.clone(), "/vms/a.json", b"x"),
        Err(StoreError::Io(_))
    ));
    store.set_failing(false);
    assert_eq!(load_all(&mut store.clone()).unwrap(), LoadReport::default());
}

#[test]
fn a_crash_at_any_point_of_a_replace_leaves_the_old_or_the_new_definition() {
    let old = def("a", 1);
    let mut new = def("a", 1);
    new.memory_mib = 64;
    let mut outcomes = Vec::new();
    for changes in 0..8 {
        let store = MemStore::new();
        replace(&mut store.clone(), "/vms/a.json", &encode(&old)).unwrap();
        store.crash_after(Some(changes));
        let finished = replace(&mut store.clone(), "/vms/a.json", &encode(&new)).is_ok();
        store.crash_after(None);
        // The node boots again.
        let report = load_all(&mut store.clone()).unwrap();
        assert!(report.skipped.is_empty(), "{changes}: {:?}", report.skipped);
        let [(loaded, false)] = report.loaded.as_slice() else {
            panic!("{changes}: {:?}", report.loaded)
        };
        assert!(*loaded == old || *loaded == new, "{changes}");
        if finished {
            assert_eq!(*loaded, new);
        }
        outcomes.push(*loaded == new);
        // Whatever happened, nothing is left over after the boot.
        assert_eq!(store.paths(), ["/vms/a.json"], "{changes}");
    }
    // Early crashes keep the old file, late ones the new.
    assert_eq!(outcomes.first(), Some(&false));
    assert_eq!(outcomes.last(), Some(&true));
}
