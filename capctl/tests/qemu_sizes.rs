//! Issue 14: VHDs capctl makes (`disk convert`, `disk create`; fixed and
//! dynamic) have one size in capvisor, Hyper-V and QEMU, whether or not the
//! size is a CHS product, and `qemu-img compare` finds them identical to
//! their raw sources.
//!
//! Each disk is opened by `qemu-img` as the installed QEMU does by default,
//! as QEMU before 10.0 does (CHS geometry unless it trusts the creator;
//! `force_size_calc=chs` makes QEMU 10 do that), as Hyper-V does (current
//! size, `force_size_calc=current_size`) and, for CHS products, as Virtual
//! PC does (geometry always). Every view must report the source's size and
//! compare identical. These tests need `qemu-img` (Debian: qemu-utils) and
//! fail, never skip, without it.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};
use vhd::Geometry;

fn capctl(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_capctl"))
        .args(args)
        .output()
        .expect("run capctl");
    assert!(
        out.status.success(),
        "capctl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_img(args: &[&str]) -> Output {
    Command::new("qemu-img")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run qemu-img ({e}): this test needs it and does not skip; \
             install it (Debian: apt-get install qemu-utils)"
            )
        })
}

fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8")
}

/// Creators QEMU before 10.0 sizes by current size (its `vpc_open` table);
/// every other creator it sizes by CHS geometry. Written out here so the
/// test judges capctl's choice rather than repeating it.
const QEMU_BEFORE_10_CURRENT_SIZE: [&str; 5] = ["win ", "qem2", "d2v ", "CTXS", "tap\0"];

/// How each reader opens a VHD: a name and the extra `vpc` driver options.
fn views(creator: &str, chs_product: bool) -> Vec<(&'static str, &'static str)> {
    let legacy = if QEMU_BEFORE_10_CURRENT_SIZE.contains(&creator) {
        ""
    } else {
        ",force_size_calc=chs"
    };
    let mut views = vec![
        ("qemu-img (installed, defaults)", ""),
        ("QEMU before 10.0", legacy),
        ("Hyper-V (current size)", ",force_size_calc=current_size"),
    ];
    if chs_product {
        views.push(("Virtual PC (CHS geometry)", ",force_size_calc=chs"));
    }
    views
}

/// The VHD at `vhd` is the raw image at `raw` for capvisor and every reader.
fn assert_same_disk(vhd: &Path, raw: &Path, label: &str) {
    let expected = std::fs::metadata(raw).expect("raw").len();
    let info: serde_json::Value =
        serde_json::from_str(&capctl(&["--json", "disk", "info", p(vhd)])).expect("info JSON");
    assert_eq!(
        info["virtual_size"].as_u64(),
        Some(expected),
        "{label}: capvisor's size"
    );
    let creator = info["creator"].as_str().expect("creator").to_owned();
    let chs_product = Geometry::for_sectors(expected / 512).sectors() * 512 == expected;
    let right = format!("driver=raw,file.filename={}", p(raw));
    for (view, opts) in views(&creator, chs_product) {
        let left = format!("driver=vpc{opts},file.filename={}", p(vhd));
        let out = qemu_img(&["info", "--output=json", "--image-opts", &left]);
        assert!(
            out.status.success(),
            "{label}: qemu-img info ({view}) failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let qinfo: serde_json::Value = serde_json::from_slice(&out.stdout).expect("qemu JSON");
        assert_eq!(
            qinfo["virtual-size"].as_u64(),
            Some(expected),
            "{label}: {view} sees another size than capvisor and the source (creator {creator:?})"
        );
        // Without -s: -s also compares allocation, which a sparse VHD and a
        // raw file never share. Sizes are checked above (compare alone takes
        // a shorter image's missing tail as zeros).
        let out = qemu_img(&["compare", "--image-opts", &left, &right]);
        let said = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && said.contains("Images are identical."),
            "{label}: qemu-img compare ({view}): {said}{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Deterministic bytes (xorshift64*).
fn fill(buf: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    for chunk in buf.chunks_mut(8) {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        let v = x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
}

/// A sparse raw file of `size` bytes with data in `extents` (offset, length).
fn sparse_raw(path: &Path, size: u64, extents: &[(u64, u64)], seed: u64) {
    let f = File::create(path).expect("raw");
    f.set_len(size).expect("size");
    for (i, &(offset, len)) in extents.iter().enumerate() {
        let mut data = vec![0u8; len as usize];
        fill(&mut data, seed + i as u64);
        f.write_all_at(&data, offset).expect("write");
    }
}

/// Data where a CHS reader would cut the disk short: the start, the middle
/// and the last 64 KiB (or all of a small disk).
fn extents(size: u64) -> Vec<(u64, u64)> {
    if size <= 64 << 20 {
        return vec![(0, size)];
    }
    vec![
        (0, 1 << 20),
        ((size / 2) & !511, 3 << 20),
        (size - (64 << 10), 64 << 10),
    ]
}

/// CHS products and not: the 40 MiB, an odd sector count, a size
/// with 63 sectors per track, a CHS product.
fn sizes() -> Vec<(&'static str, u64, bool)> {
    vec![
        ("CHS product 964x5x17", 964 * 5 * 17 * 512, true),
        ("40 MiB", 40 << 20, false),
        ("12345 sectors", 12_345 * 512, false),
        ("300 MiB + 7 sectors", (300 << 20) + 7 * 512, false),
    ]
}

fn check_premise(label: &str, size: u64, chs_product: bool) {
    let g = Geometry::for_sectors(size / 512);
    assert_eq!(
        g.sectors() * 512 == size,
        chs_product,
        "{label}: premise (geometry {g:?})"
    );
}

#[test]
fn converted_vhds_match_their_source_in_qemu_img() {
    let dir = tempfile::tempdir().expect("tempdir");
    for (i, (label, size, chs_product)) in sizes().into_iter().enumerate() {
        check_premise(label, size, chs_product);
        let raw = dir.path().join(format!("src{i}.raw"));
        sparse_raw(&raw, size, &extents(size), 100 + i as u64);
        for kind in ["fixed", "dynamic"] {
            let vhd = dir.path().join(format!("conv{i}-{kind}.vhd"));
            capctl(&["disk", "convert", p(&raw), p(&vhd), "--type", kind]);
            assert_same_disk(&vhd, &raw, &format!("convert {label} to {kind}"));
            // And back: capctl's raw copy is the source, byte for byte.
            let back = dir.path().join(format!("back{i}-{kind}.raw"));
            capctl(&["disk", "convert", p(&vhd), p(&back), "--type", "raw"]);
            assert!(
                std::fs::read(&back).expect("back") == std::fs::read(&raw).expect("raw"),
                "{label} {kind}: raw copy differs from the source"
            );
        }
    }
}

#[test]
fn created_vhds_match_qemu_img_at_every_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut all = sizes();
    // Past the largest CHS geometry (~127 GiB): both files stay sparse.
    all.push(("130 GiB", 130 << 30, false));
    for (i, (label, size, chs_product)) in all.into_iter().enumerate() {
        check_premise(label, size, chs_product);
        // The first and last 64 KiB hold data, the rest reads as zeros.
        let tail = size - (64 << 10);
        let data = [(0, 64 << 10), (tail, 64 << 10)];
        let raw = dir.path().join(format!("ref{i}.raw"));
        sparse_raw(&raw, size, &data, 200 + i as u64);
        let mut chunk = vec![0u8; 64 << 10];
        let f = OpenOptions::new().read(true).open(&raw).expect("raw");
        for kind in ["fixed", "dynamic"] {
            let vhd = dir.path().join(format!("new{i}-{kind}.vhd"));
            let size_arg = size.to_string();
            capctl(&[
                "disk",
                "create",
                p(&vhd),
                "--size",
                &size_arg,
                "--type",
                kind,
            ]);
            for (offset, len) in data {
                f.read_exact_at(&mut chunk[..len as usize], offset)
                    .expect("read");
                let piece = dir.path().join("piece.bin");
                std::fs::write(&piece, &chunk[..len as usize]).expect("piece");
                let at = offset.to_string();
                capctl(&["disk", "write", p(&vhd), "--offset", &at, "-i", p(&piece)]);
            }
            assert_same_disk(&vhd, &raw, &format!("create {label} {kind}"));
        }
    }
}
