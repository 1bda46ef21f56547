//! Interoperability with exfatprogs: volumes capvisor formats and fills pass
//! `fsck.exfat`; volumes `mkfs.exfat` makes are read and written by capvisor
//! and still pass. These tests require the tools and fail if they are missing.

use exfat::{FormatOptions, Volume};
use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::Command;

fn tool(program: &str, args: &[&str]) -> (bool, String) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run `{program}` ({e}); install exfatprogs (mkfs.exfat, fsck.exfat)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn fsck(path: &Path) {
    let (ok, text) = tool("fsck.exfat", &["-n", "-v", path.to_str().expect("utf-8")]);
    assert!(ok, "fsck.exfat rejects {}:\n{text}", path.display());
}

fn open_rw(path: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .expect("open image")
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Create a small tree with long names, a preallocated file, a fragmented
/// file, renames and deletions.
fn fill(vol: &mut Volume<File>) {
    vol.create_dir("/disks").expect("mkdir");
    vol.create_dir("/disks/A directory with a rather long name, longer than fifteen")
        .expect("mkdir long");
    let mut f = vol.create("/disks/base.vhd").expect("create");
    vol.write(&mut f, 0, &pattern(300_000, 1)).expect("write");
    let mut g = vol.create("/disks/prealloc.vhd").expect("create");
    vol.set_len(&mut g, 5 << 20).expect("preallocate");
    vol.write(&mut g, 4096, &pattern(10_000, 2))
        .expect("write inside");
    for i in 0..40 {
        let mut s = vol.create(&format!("/small-{i:02}.txt")).expect("small");
        vol.write(&mut s, 0, &pattern(5000 + i, i as u8))
            .expect("small write");
    }
    for i in (0..40).step_by(2) {
        vol.remove(&format!("/small-{i:02}.txt")).expect("rm");
    }
    // Grows into the holes left behind: fragmented, FAT-chained.
    let mut h = vol.create("/fragmented.bin").expect("create");
    for k in 0..30 {
        vol.write(&mut h, k * 7000, &pattern(7000, k as u8))
            .expect("append");
        let mut t = vol.create(&format!("/spacer-{k}.txt")).expect("spacer");
        vol.write(&mut t, 0, &pattern(100, 9))
            .expect("spacer write");
    }
    vol.rename("/small-01.txt", "/disks/moved.txt")
        .expect("rename");
    vol.rename("/disks/base.vhd", "/disks/Base-Renamed.VHD")
        .expect("rename in place");
    let mut f = vol
        .open("/disks/base-renamed.vhd")
        .expect("case-insensitive open");
    vol.set_len(&mut f, 100_000).expect("truncate");
    vol.flush().expect("flush");
}

fn verify(vol: &mut Volume<File>) {
    let f = vol.open("/DISKS/BASE-RENAMED.VHD").expect("open");
    let mut buf = vec![0u8; 100_000];
    assert_eq!(vol.read(&f, 0, &mut buf).expect("read"), 100_000);
    assert!(buf == pattern(300_000, 1)[..100_000]);
    let g = vol.open("/disks/prealloc.vhd").expect("open");
    assert_eq!(g.len(), 5 << 20);
    let mut buf = vec![0xAAu8; 20_000];
    vol.read(&g, 0, &mut buf).expect("read");
    assert!(buf[..4096].iter().all(|&b| b == 0));
    assert!(buf[4096..14096] == pattern(10_000, 2)[..]);
    assert!(buf[14096..].iter().all(|&b| b == 0));
    let h = vol.open("/fragmented.bin").expect("open");
    assert!(!h.is_contiguous(), "the fragmented file needed a FAT chain");
    let mut buf = vec![0u8; 7000];
    for k in 0..30 {
        vol.read(&h, k * 7000, &mut buf).expect("read");
        assert!(buf == pattern(7000, k as u8), "chunk {k}");
    }
    let names: Vec<String> = vol
        .list("/disks")
        .expect("ls")
        .into_iter()
        .map(|e| e.name)
        .collect();
    assert!(names.contains(&"moved.txt".to_owned()), "{names:?}");
    assert!(names.contains(&"Base-Renamed.VHD".to_owned()), "{names:?}");
    assert!(vol.check().expect("check").is_clean());
}

#[test]
fn capvisor_volumes_pass_fsck() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (size, cluster) in [
        (64u64 << 20, None),
        (300 << 20, Some(512u32)),
        (40 << 20, Some(64 << 10)),
    ] {
        let path = dir.path().join(format!("v{size}.img"));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .expect("create");
        let options = FormatOptions {
            size,
            cluster_size: cluster,
            label: "CAPVISOR".into(),
            serial: 0x1234_5678,
        };
        let vol = Volume::format(file, &options).expect("format");
        drop(vol.into_device().expect("close"));
        fsck(&path);
        let mut vol = Volume::mount(open_rw(&path)).expect("mount");
        assert_eq!(vol.label(), "CAPVISOR");
        fill(&mut vol);
        drop(vol.into_device().expect("close"));
        fsck(&path);
        let mut vol = Volume::mount(open_rw(&path)).expect("remount");
        verify(&mut vol);
    }
}

#[test]
fn mkfs_volumes_are_read_and_written() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (size, cluster) in [
        ("64M", None),
        ("200M", Some("4096")),
        ("1G", Some("131072")),
    ] {
        let path = dir.path().join(format!("m{size}.img"));
        File::create(&path)
            .expect("create")
            .set_len(match size {
                "64M" => 64 << 20,
                "200M" => 200 << 20,
                _ => 1 << 30,
            })
            .expect("size");
        let p = path.to_str().expect("utf-8");
        let mut args = vec!["-L", "MKFS"];
        if let Some(c) = cluster {
            args.extend(["-c", c]);
        }
        args.push(p);
        let (ok, text) = tool("mkfs.exfat", &args);
        assert!(ok, "mkfs.exfat failed: {text}");
        let mut vol = Volume::mount(open_rw(&path)).expect("mount mkfs volume");
        assert_eq!(vol.label(), "MKFS");
        assert!(vol.check().expect("check").is_clean());
        fill(&mut vol);
        drop(vol.into_device().expect("close"));
        fsck(&path);
        let mut vol = Volume::mount(open_rw(&path)).expect("remount");
        verify(&mut vol);
    }
}
