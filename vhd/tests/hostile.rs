//! Malformed and hostile files: each gives a clear error (or a documented
//! recovery), never a panic or an access out of bounds.

mod common;

use common::{MemResolver, Rng, new_disk};
use vhd::{ChainAccess, Error, MemDevice, ParentLocation, Vhd};

const HEADER: usize = 512;
const TABLE: usize = 1536;

fn checksum(bytes: &[u8], skip: usize) -> [u8; 4] {
    let sum = bytes
        .iter()
        .enumerate()
        .filter(|(i, _)| !(skip..skip + 4).contains(i))
        .fold(0u32, |a, (_, &b)| a.wrapping_add(u32::from(b)));
    (!sum).to_be_bytes()
}

/// Recompute the checksums of both footers and the dynamic header.
fn reseal(data: &mut [u8]) {
    let end = data.len() - 512;
    for at in [0, end] {
        if &data[at..at + 8] == b"conectix" {
            let sum = checksum(&data[at..at + 512], 64);
            data[at + 64..at + 68].copy_from_slice(&sum);
        }
    }
    if &data[HEADER..HEADER + 8] == b"cxsparse" {
        let sum = checksum(&data[HEADER..HEADER + 1024], 36);
        data[HEADER + 36..HEADER + 40].copy_from_slice(&sum);
    }
}

/// A 4 MiB dynamic disk with 1 MiB blocks and two blocks written.
fn dynamic_image() -> Vec<u8> {
    let mut disk =
        Vhd::create_dynamic(MemDevice::default(), &new_disk(4 << 20, 1 << 20, 1)).expect("create");
    disk.write_at(0, &[1; 4096]).expect("write");
    disk.write_at(3 << 20, &[2; 4096]).expect("write");
    disk.into_device().expect("close").data
}

fn open(data: Vec<u8>) -> Result<Vhd<MemDevice>, Error> {
    Vhd::open(MemDevice::new(data))
}

fn set_u32(data: &mut [u8], at: usize, v: u32) {
    data[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

fn set_u64(data: &mut [u8], at: usize, v: u64) {
    data[at..at + 8].copy_from_slice(&v.to_be_bytes());
}

#[test]
fn too_small_and_junk() {
    assert_eq!(open(vec![0; 100]).err(), Some(Error::TooSmall { len: 100 }));
    let mut junk = vec![0u8; 8192];
    Rng(3).fill(&mut junk);
    assert_eq!(open(junk).err(), Some(Error::NoFooter));
}

#[test]
fn fixed_footer_checksum_mismatch() {
    let disk =
        Vhd::create_fixed(MemDevice::default(), &new_disk(1 << 20, 1 << 21, 1)).expect("create");
    let mut data = disk.into_device().expect("close").data;
    let end = data.len() - 512;
    data[end + 48] ^= 1;
    assert!(matches!(
        open(data).err(),
        Some(Error::FooterChecksum { .. })
    ));
}

#[test]
fn damaged_end_footer_is_recovered_from_copy_and_rewritten() {
    let mut data = dynamic_image();
    let end = data.len() - 512;
    data[end + 20] ^= 0xff;
    let mut disk = open(data).expect("recovers from the copy at offset 0");
    assert!(disk.footer_recovered());
    let findings = disk.check().expect("check");
    assert!(findings.iter().any(|f| f.severity == vhd::Severity::Error));
    let mut sector = [0u8; 512];
    disk.read_at(3 << 20, &mut sector).expect("read");
    assert_eq!(sector, [2; 512]);
    disk.flush().expect("flush rewrites the footer");
    let mut repaired = Vhd::open(disk.into_device().expect("close")).expect("open");
    assert!(!repaired.footer_recovered());
    assert!(repaired.check().expect("check").is_empty());
}

#[test]
fn both_footers_damaged() {
    let mut data = dynamic_image();
    let end = data.len() - 512;
    data[end + 20] ^= 0xff;
    data[20] ^= 0xff;
    assert!(matches!(
        open(data).err(),
        Some(Error::FooterChecksum { .. })
    ));
}

#[test]
fn header_checksum_mismatch() {
    let mut data = dynamic_image();
    data[HEADER + 28] ^= 1;
    assert!(matches!(
        open(data).err(),
        Some(Error::HeaderChecksum { .. })
    ));
}

#[test]
fn table_entry_out_of_file() {
    let mut data = dynamic_image();
    set_u32(&mut data, TABLE + 4, 0x00ff_0000);
    assert_eq!(
        open(data).err(),
        Some(Error::BlockOutOfFile {
            block: 1,
            offset: 0x00ff_0000 * 512
        })
    );
    let mut data = dynamic_image();
    // Block whose data would run over the footer.
    let len = data.len();
    set_u32(&mut data, TABLE + 4, ((len - 1024) / 512) as u32);
    assert!(matches!(
        open(data).err(),
        Some(Error::BlockOutOfFile { block: 1, .. })
    ));
}

#[test]
fn overlapping_blocks_and_metadata() {
    let mut data = dynamic_image();
    let first = u32::from_be_bytes(data[TABLE..TABLE + 4].try_into().expect("4 bytes"));
    set_u32(&mut data, TABLE + 8, first + 1);
    assert!(matches!(open(data).err(), Some(Error::BlockOverlap { .. })));
    let mut data = dynamic_image();
    set_u32(&mut data, TABLE + 8, 2); // on top of the dynamic header
    assert!(matches!(
        open(data).err(),
        Some(Error::BlockOverlap { block: 2 })
    ));
}

#[test]
fn huge_sizes_and_bad_tables() {
    let mut data = dynamic_image();
    let end = data.len() - 512;
    for at in [0, end] {
        set_u64(&mut data, at + 48, 1 << 60);
    }
    reseal(&mut data);
    assert_eq!(open(data).err(), Some(Error::BadSize(1 << 60)));

    let mut data = dynamic_image();
    set_u32(&mut data, HEADER + 28, 2); // four blocks needed
    reseal(&mut data);
    assert!(matches!(open(data).err(), Some(Error::BadTable(_))));

    let mut data = dynamic_image();
    set_u64(&mut data, HEADER + 16, u64::MAX - 3);
    reseal(&mut data);
    assert!(matches!(open(data).err(), Some(Error::BadTable(_))));

    let mut data = dynamic_image();
    set_u32(&mut data, HEADER + 32, 3 << 20);
    reseal(&mut data);
    assert_eq!(open(data).err(), Some(Error::BadBlockSize(3 << 20)));

    let mut data = dynamic_image();
    let end = data.len() - 512;
    for at in [0, end] {
        set_u64(&mut data, at + 16, u64::MAX - 100);
    }
    reseal(&mut data);
    assert!(matches!(open(data).err(), Some(Error::Malformed(_))));
}

#[test]
fn unsupported_type_and_version() {
    let mut data = dynamic_image();
    let end = data.len() - 512;
    for at in [0, end] {
        set_u32(&mut data, at + 60, 5);
    }
    reseal(&mut data);
    assert_eq!(open(data).err(), Some(Error::UnsupportedDiskType(5)));
    let mut data = dynamic_image();
    for at in [0, end] {
        set_u32(&mut data, at + 12, 0x0002_0000);
    }
    reseal(&mut data);
    assert_eq!(
        open(data).err(),
        Some(Error::UnsupportedVersion(0x0002_0000))
    );
}

#[test]
fn fixed_disk_shorter_than_its_size() {
    let disk =
        Vhd::create_fixed(MemDevice::default(), &new_disk(1 << 20, 1 << 21, 1)).expect("create");
    let mut data = disk.into_device().expect("close").data;
    let end = data.len() - 512;
    set_u64(&mut data, end + 48, 2 << 20);
    reseal(&mut data);
    assert!(matches!(open(data).err(), Some(Error::Malformed(_))));
}

#[test]
fn accesses_out_of_range_and_read_only() {
    let mut disk = open(dynamic_image()).expect("open");
    let mut buf = [0u8; 16];
    assert!(matches!(
        disk.read_at((4 << 20) - 8, &mut buf),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        disk.read_at(u64::MAX - 2, &mut buf),
        Err(Error::OutOfRange { .. })
    ));
    assert!(matches!(
        disk.write_at(4 << 20, &buf),
        Err(Error::OutOfRange { .. })
    ));
    let mut ro = Vhd::open_read_only(MemDevice::new(dynamic_image())).expect("open");
    assert_eq!(ro.write_at(0, &buf), Err(Error::ReadOnly));
}

fn diff_over(parent: &Vhd<MemDevice>, name: &str, id: u8) -> MemDevice {
    Vhd::create_differencing(
        MemDevice::default(),
        parent,
        name,
        &[ParentLocation::relative(&format!(".\\{name}"))],
        &new_disk(parent.size(), 1 << 20, id),
    )
    .expect("differencing")
    .into_device()
    .expect("close")
}

#[test]
fn differencing_without_parent_and_with_wrong_parent() {
    let base = open(dynamic_image()).expect("base");
    let child = diff_over(&base, "base.vhd", 2);
    let mut alone = Vhd::open(child.clone()).expect("open alone");
    let mut buf = [0u8; 512];
    assert_eq!(alone.read_at(0, &mut buf), Err(Error::NoParent));
    let other = Vhd::create_dynamic(MemDevice::default(), &new_disk(4 << 20, 1 << 20, 9))
        .expect("other")
        .into_device()
        .expect("close");
    let mut resolver = MemResolver {
        disks: vec![("base.vhd".into(), other)],
    };
    let err = Vhd::open_chain(child, ChainAccess::default(), &mut resolver).err();
    assert!(matches!(err, Some(Error::ParentMismatch(_))));
}

#[test]
fn parent_loop_is_detected() {
    // base (id 1) <- c (id 2); then a differencing "base" with id 1 whose parent is c.
    let base = open(dynamic_image()).expect("base");
    let c_dev = diff_over(&base, "base.vhd", 2);
    let c = Vhd::open_read_only(c_dev.clone()).expect("c");
    let fake_base = diff_over(&c, "c.vhd", 1);
    let mut resolver = MemResolver {
        disks: vec![
            ("base.vhd".into(), fake_base),
            ("c.vhd".into(), c_dev.clone()),
        ],
    };
    let err = Vhd::open_chain(c_dev, ChainAccess::default(), &mut resolver).err();
    assert_eq!(err, Some(Error::ParentLoop));
}

#[test]
fn chain_depth_is_bounded() {
    let base = dynamic_image();
    let mut resolver = MemResolver {
        disks: vec![("d0.vhd".into(), MemDevice::new(base.clone()))],
    };
    let mut parent = open(base).expect("base");
    for level in 1..=vhd::MAX_CHAIN_DEPTH + 1 {
        let dev = diff_over(&parent, &format!("d{}.vhd", level - 1), level as u8 + 1);
        resolver.disks.push((format!("d{level}.vhd"), dev.clone()));
        parent = Vhd::open_read_only(dev).expect("level");
    }
    let top = resolver.disks.last().expect("top").1.clone();
    let err = Vhd::open_chain(top, ChainAccess::default(), &mut resolver).err();
    assert_eq!(err, Some(Error::ChainTooDeep));
}

#[test]
fn locator_outside_the_file() {
    let base = open(dynamic_image()).expect("base");
    let mut data = diff_over(&base, "base.vhd", 2).data;
    // First locator entry: data offset at header + 576 + 16.
    set_u64(&mut data, HEADER + 576 + 16, 1 << 40);
    reseal(&mut data);
    let mut child = open(data).expect("opens; the locator is read when resolving");
    assert!(matches!(
        child.parent_locations(),
        Err(Error::BadLocator(_))
    ));
}

#[test]
fn every_bit_flip_in_metadata_is_handled() {
    let mut disk = Vhd::create_dynamic(MemDevice::default(), &new_disk(512 << 10, 64 << 10, 1))
        .expect("create");
    disk.write_at(0, &[1; 4096]).expect("write");
    disk.write_at(300 << 10, &[2; 4096]).expect("write");
    let image = disk.into_device().expect("close").data;
    let end = image.len() - 512;
    let positions = (0..2048).chain(end..image.len());
    for pos in positions {
        for bit in [0x01u8, 0x80] {
            let mut data = image.clone();
            data[pos] ^= bit;
            reseal(&mut data);
            if let Ok(mut disk) = open(data) {
                let size = disk.size();
                let mut buf = vec![0u8; 64 * 1024];
                let mut offset = 0;
                while offset + buf.len() as u64 <= size {
                    let _ = disk.read_at(offset, &mut buf);
                    offset += 100 << 10;
                }
                let _ = disk.write_at(size / 2, &[7; 1000]);
                let _ = disk.flush();
                let _ = disk.check();
            }
        }
    }
}
