//! Round trips through fixed, dynamic and differencing disks in memory,
//! checked against a flat model of the virtual disk.

mod common;

use common::{MemResolver, Rng, new_disk};
use vhd::{ChainAccess, DiskType, MemDevice, ParentLocation, Vhd};

/// Random reads and writes of random lengths and alignments, compared with a model.
fn exercise(disk: &mut Vhd<MemDevice>, model: &mut [u8], rng: &mut Rng, ops: usize) {
    let size = model.len() as u64;
    for _ in 0..ops {
        let len = 1 + rng.below(3 * 4096) as usize;
        let offset = rng.below(size - len as u64);
        let range = offset as usize..offset as usize + len;
        if rng.below(2) == 0 {
            let mut data = vec![0u8; len];
            rng.fill(&mut data);
            disk.write_at(offset, &data).expect("write");
            model[range].copy_from_slice(&data);
        } else {
            let mut got = vec![0u8; len];
            disk.read_at(offset, &mut got).expect("read");
            assert!(got == model[range], "mismatch at {offset}+{len}");
        }
    }
}

fn read_all(disk: &mut Vhd<MemDevice>) -> Vec<u8> {
    let mut all = vec![0u8; disk.size() as usize];
    disk.read_at(0, &mut all).expect("read all");
    all
}

#[test]
fn fixed_disk_round_trip_and_reopen() {
    let size = 3 << 20;
    let mut disk =
        Vhd::create_fixed(MemDevice::default(), &new_disk(size, 1 << 21, 1)).expect("create");
    assert_eq!(disk.disk_type(), DiskType::Fixed);
    let mut model = vec![0u8; size as usize];
    exercise(&mut disk, &mut model, &mut Rng(7), 300);
    let dev = disk.into_device().expect("close");
    assert_eq!(
        dev.data.len() as u64,
        size + 512,
        "fixed file is data + footer"
    );
    let mut again = Vhd::open(dev).expect("reopen");
    assert!(read_all(&mut again) == model);
}

#[test]
fn dynamic_disk_round_trip_small_blocks_odd_size() {
    // 5.5 blocks of 64 KiB: the last block is partly past the end.
    let size = 64 * 1024 * 5 + 32 * 1024;
    let mut disk =
        Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 64 * 1024, 2)).expect("create");
    assert_eq!(disk.block_usage(), Some((6, 0)));
    let mut model = vec![0u8; size as usize];
    exercise(&mut disk, &mut model, &mut Rng(9), 400);
    disk.flush().expect("flush");
    let dev = disk.into_device().expect("close");
    let mut again = Vhd::open(dev).expect("reopen");
    assert!(read_all(&mut again) == model);
    assert!(again.check().expect("check").is_empty());
}

#[test]
fn dynamic_disk_grows_only_where_written() {
    let size = 64 << 20;
    let mut disk =
        Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 2 << 20, 3)).expect("create");
    let before = disk.device().data.len();
    disk.write_at(10 << 20, &[0xab; 4096]).expect("write");
    disk.write_at((10 << 20) + 8192, &[0xcd; 100])
        .expect("write in same block");
    disk.flush().expect("flush");
    let after = disk.device().data.len();
    assert_eq!(
        after - before,
        512 + (2 << 20),
        "one bitmap sector and one block appended"
    );
    assert_eq!(disk.block_usage(), Some((32, 1)));
    let ranges = disk.allocated_ranges().expect("ranges");
    assert_eq!(ranges, vec![(10 << 20, 12 << 20)]);
}

#[test]
fn unflushed_table_is_not_on_disk_but_footer_is_valid() {
    let mut disk =
        Vhd::create_dynamic(MemDevice::default(), &new_disk(8 << 20, 1 << 20, 4)).expect("create");
    disk.write_at(0, &[1; 512]).expect("write");
    // Simulate a crash: take the bytes as they are without flushing.
    let snapshot = disk.device().clone();
    let mut crashed = Vhd::open(snapshot).expect("file stays a valid VHD before flush");
    assert_eq!(
        crashed.block_usage(),
        Some((8, 0)),
        "table entry is written only at flush"
    );
    let mut sector = [9u8; 512];
    crashed.read_at(0, &mut sector).expect("read");
    assert_eq!(sector, [0; 512]);
    disk.flush().expect("flush");
    let mut flushed = Vhd::open(disk.device().clone()).expect("open");
    flushed.read_at(0, &mut sector).expect("read");
    assert_eq!(sector, [1; 512]);
}

fn base_with_data(size: u64, rng: &mut Rng) -> (MemDevice, Vec<u8>) {
    let mut base =
        Vhd::create_dynamic(MemDevice::default(), &new_disk(size, 1 << 20, 10)).expect("base");
    let mut model = vec![0u8; size as usize];
    exercise(&mut base, &mut model, rng, 200);
    (base.into_device().expect("close"), model)
}

#[test]
fn differencing_reads_through_and_merges() {
    let size = 6 << 20;
    let mut rng = Rng(11);
    let (base_dev, mut model) = base_with_data(size, &mut rng);
    let base = Vhd::open_read_only(base_dev.clone()).expect("base");
    let child = Vhd::create_differencing(
        MemDevice::default(),
        &base,
        "base.vhd",
        &[
            ParentLocation::relative(".\\base.vhd"),
            ParentLocation::absolute("C:\\vms\\base.vhd"),
        ],
        &new_disk(size, 512 * 1024, 20),
    )
    .expect("child");
    let child_dev = child.into_device().expect("close");
    let mut resolver = MemResolver {
        disks: vec![("base.vhd".into(), base_dev.clone())],
    };
    let access = ChainAccess {
        writable: true,
        writable_parent: false,
    };
    let mut child = Vhd::open_chain(child_dev, access, &mut resolver).expect("chain");
    assert_eq!(child.disk_type(), DiskType::Differencing);
    let locations = child.parent_locations().expect("locators");
    assert_eq!(locations[0].path, ".\\base.vhd");
    assert_eq!(locations[1].path, "C:\\vms\\base.vhd");
    assert!(
        read_all(&mut child) == model,
        "child reads its parent's data"
    );
    let parent_model = model.clone();
    exercise(&mut child, &mut model, &mut rng, 300);
    child.flush().expect("flush");
    assert!(read_all(&mut child) == model);
    // The parent is unchanged.
    let mut base_again = Vhd::open(base_dev.clone()).expect("base");
    assert!(read_all(&mut base_again) == parent_model);

    // Reopen and merge into a writable parent.
    let child_dev = child.into_device().expect("close");
    let access = ChainAccess {
        writable: false,
        writable_parent: true,
    };
    let mut child = Vhd::open_chain(child_dev, access, &mut resolver).expect("chain");
    let mut calls = 0;
    let copied = child
        .merge_into_parent(&mut |_, _| calls += 1)
        .expect("merge");
    assert!(copied > 0);
    assert_eq!(calls, 12, "progress once per child block");
    let merged = child
        .take_parent()
        .expect("parent")
        .into_device()
        .expect("close");
    let mut merged = Vhd::open(merged).expect("merged");
    assert!(
        read_all(&mut merged) == model,
        "parent holds the merged data"
    );
}

#[test]
fn three_level_chain() {
    let size = 4 << 20;
    let mut rng = Rng(5);
    let (base_dev, mut model) = base_with_data(size, &mut rng);
    let base = Vhd::open_read_only(base_dev.clone()).expect("base");
    let mid = Vhd::create_differencing(
        MemDevice::default(),
        &base,
        "base.vhd",
        &[ParentLocation::relative(".\\base.vhd")],
        &new_disk(size, 1 << 20, 30),
    )
    .expect("mid");
    let mut resolver = MemResolver {
        disks: vec![("base.vhd".into(), base_dev)],
    };
    let mut mid = Vhd::open_chain(
        mid.into_device().expect("dev"),
        ChainAccess {
            writable: true,
            writable_parent: false,
        },
        &mut resolver,
    )
    .expect("mid chain");
    exercise(&mut mid, &mut model, &mut rng, 100);
    let mid_ro = {
        mid.flush().expect("flush");
        mid.device().clone()
    };
    let mid_disk = Vhd::open_read_only(mid_ro.clone()).expect("mid");
    let top = Vhd::create_differencing(
        MemDevice::default(),
        &mid_disk,
        "mid.vhd",
        &[ParentLocation::relative(".\\mid.vhd")],
        &new_disk(size, 1 << 20, 31),
    )
    .expect("top");
    resolver.disks.push(("mid.vhd".into(), mid_ro));
    let mut top = Vhd::open_chain(
        top.into_device().expect("dev"),
        ChainAccess {
            writable: true,
            writable_parent: false,
        },
        &mut resolver,
    )
    .expect("top chain");
    exercise(&mut top, &mut model, &mut rng, 200);
    assert!(read_all(&mut top) == model);
}
