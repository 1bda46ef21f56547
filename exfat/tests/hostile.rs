//! Hostile and corrupt volumes: each gives a clear error, never a panic, and
//! an operation that meets corruption writes nothing.

use exfat::{Error, FormatOptions, MemDevice, Volume};

fn small_volume() -> Vec<u8> {
    let options = FormatOptions {
        size: 256 << 10,
        cluster_size: Some(512),
        label: "T".into(),
        serial: 7,
    };
    let mut vol = Volume::format(MemDevice::default(), &options).expect("format");
    vol.create_dir("/d").expect("mkdir");
    let mut f = vol.create("/d/file-with-a-long-name.vhd").expect("create");
    vol.write(&mut f, 0, &[0x42; 3000]).expect("write");
    let mut g = vol.create("/chained").expect("create");
    vol.write(&mut g, 0, &[1; 600]).expect("write");
    vol.into_device().expect("close").data
}

fn mount(data: Vec<u8>) -> Result<Volume<MemDevice>, Error> {
    Volume::mount(MemDevice::new(data))
}

fn le32(d: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Byte offset of the root directory's first cluster.
fn root_offset(d: &[u8]) -> usize {
    let heap = le32(d, 88) as usize * 512;
    let cluster = 1usize << (d[108] + d[109]);
    heap + (le32(d, 96) as usize - 2) * cluster
}

#[test]
fn junk_and_truncation() {
    assert_eq!(mount(vec![0xAB; 8192]).err(), Some(Error::NotExfat));
    assert_eq!(mount(vec![1; 10]).err(), Some(Error::NotExfat));
    let mut data = small_volume();
    data.truncate(100 << 10);
    assert!(matches!(mount(data).err(), Some(Error::Corrupt(_))));
}

#[test]
fn boot_region_checksum_and_fields() {
    let mut data = small_volume();
    data[100] ^= 1; // serial number: covered by the checksum
    assert_eq!(
        mount(data).err(),
        Some(Error::Corrupt("boot region checksum mismatch"))
    );
    let mut data = small_volume();
    data[92..96].copy_from_slice(&0xFFFF_FFF0u32.to_le_bytes()); // cluster count
    assert!(matches!(mount(data).err(), Some(Error::Corrupt(_))));
    let mut data = small_volume();
    data[108] = 13; // 8 KiB sectors
    assert!(matches!(mount(data).err(), Some(Error::Corrupt(_))));
}

#[test]
fn corrupt_entry_set_is_reported_and_nothing_written() {
    let mut data = small_volume();
    let root = root_offset(&data);
    // Find the "chained" file entry in the root and damage its name.
    let at = (0..64)
        .map(|i| root + i * 32)
        .find(|&e| data[e] == 0x85 && data[e + 2 * 32 + 2] == b'c')
        .expect("entry");
    data[at + 2 * 32 + 4] ^= 0x20;
    let before = data.clone();
    let mut vol = mount(data).expect("mount still works: the root's system entries are fine");
    assert_eq!(
        vol.list("/").err(),
        Some(Error::Corrupt("entry set checksum mismatch"))
    );
    assert!(matches!(vol.create("/new"), Err(Error::Corrupt(_))));
    assert!(matches!(vol.remove("/d"), Err(Error::Corrupt(_))));
    let report = vol.check().expect("check runs");
    assert!(!report.is_clean());
    let after = vol.into_device().expect("close").data;
    assert!(after == before, "nothing was written to a corrupt volume");
}

#[test]
fn cluster_chain_out_of_range() {
    // Point the FAT entry of the root directory's cluster past the heap.
    let mut data = small_volume();
    let fat = le32(&data, 80) as usize * 512;
    let root = le32(&data, 96) as usize;
    data[fat + root * 4..fat + root * 4 + 4].copy_from_slice(&0x00FF_FFFFu32.to_le_bytes());
    assert_eq!(
        mount(data).err(),
        Some(Error::Corrupt("cluster chain leaves the cluster heap"))
    );
}

#[test]
fn every_bit_flip_of_metadata_is_handled() {
    let image = small_volume();
    let root = root_offset(&image);
    let positions: Vec<usize> = (0..512)
        .chain(24 * 512..26 * 512)
        .chain(root..root + 512)
        .step_by(2)
        .collect();
    for pos in positions {
        for bit in [0x01u8, 0x80] {
            let mut data = image.clone();
            data[pos] ^= bit;
            let Ok(mut vol) = mount(data) else { continue };
            let _ = vol.list("/");
            let _ = vol.list("/d");
            if let Ok(mut f) = vol.open("/d/file-with-a-long-name.vhd") {
                let mut buf = [0u8; 4096];
                let _ = vol.read(&f, 0, &mut buf);
                let _ = vol.write(&mut f, 100, &[9; 700]);
                let _ = vol.extents(&f);
            }
            let _ = vol.create("/x");
            let _ = vol.rename("/chained", "/d/moved");
            let _ = vol.check();
        }
    }
}

#[test]
fn names_and_paths() {
    let mut vol = mount(small_volume()).expect("mount");
    assert_eq!(vol.create("/bad:name").err(), Some(Error::InvalidName));
    assert_eq!(vol.create(&"x".repeat(256)).err(), Some(Error::InvalidName));
    assert_eq!(
        vol.create("/D/FILE-WITH-A-LONG-NAME.VHD").err(),
        Some(Error::AlreadyExists)
    );
    assert_eq!(vol.open("/nope/x").err(), Some(Error::NotFound));
    assert_eq!(vol.open("/chained/x").err(), Some(Error::NotADirectory));
    assert_eq!(vol.open("/d").err(), Some(Error::IsADirectory));
    assert_eq!(vol.remove("/d").err(), Some(Error::DirectoryNotEmpty));
    assert!(matches!(
        vol.rename("/d", "/d/inside"),
        Err(Error::InvalidArgument(_))
    ));
    let long = "é".repeat(200);
    let mut f = vol
        .create(&format!("/d/{long}"))
        .expect("long unicode name");
    vol.write(&mut f, 0, b"x").expect("write");
    assert!(vol.list("/d").expect("ls").iter().any(|e| e.name == long));
    assert!(vol.check().expect("check").is_clean());
}

#[test]
fn out_of_space_is_an_error_and_leaves_a_clean_volume() {
    let mut vol = mount(small_volume()).expect("mount");
    let mut f = vol.create("/big").expect("create");
    assert_eq!(vol.set_len(&mut f, 10 << 20).err(), Some(Error::NoSpace));
    let free = vol.free_bytes();
    vol.set_len(&mut f, free).expect("fill the volume");
    assert!(f.is_contiguous() || vol.free_bytes() == 0);
    assert_eq!(vol.free_bytes(), 0);
    let mut g = vol
        .create("/more")
        .expect("an entry fits in the root's cluster");
    assert_eq!(vol.write(&mut g, 0, b"x").err(), Some(Error::NoSpace));
    vol.remove("/big").expect("rm");
    assert!(vol.check().expect("check").is_clean());
}
