//! Benchmark: 4 KiB requests spread across a dynamic VHD, through this
//! library and through `qemu-img bench -f vpc` on the same kind of file,
//! depth 1, both through the host page cache (`-t writeback`; O_DIRECT is
//! not available on every filesystem) and both timed over the request loop
//! only (ours includes a final flush). Offsets follow qemu-img bench:
//! start at `-o`, add the step `-S` after each request, wrap at the disk's
//! size; the step of 2 MiB + 4 KiB lands every request in another block.
//!
//! Three cases: reads of allocated blocks, writes into allocated blocks,
//! and writes that allocate a new block each. One line per case with both
//! rates and the ratio (ours / qemu-img; above 1.0 means faster). Exits
//! non-zero if qemu-img or qemu-io cannot be run.

use std::fs::{File, OpenOptions};
use std::path::Path;
use std::process::{Command, exit};
use std::time::Instant;
use vhd::Vhd;

const SIZE: u64 = 1 << 30;
const REQUEST: usize = 4096;
const STEP: u64 = (2 << 20) + 4096;

fn fail(message: &str) -> ! {
    eprintln!("vs_qemu_img: {message}");
    exit(1)
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| fail(&format!("cannot run {program} ({e}); install qemu-utils")));
    if !out.status.success() {
        fail(&format!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn create(path: &Path, filled: bool) {
    let p = path
        .to_str()
        .unwrap_or_else(|| fail("temp path is not UTF-8"));
    let _ = std::fs::remove_file(path);
    run(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vpc",
            "-o",
            "subformat=dynamic,force_size=on",
            p,
            &SIZE.to_string(),
        ],
    );
    if filled {
        run(
            "qemu-io",
            &["-f", "vpc", "-c", &format!("write -q -P 7 0 {SIZE}"), p],
        );
    }
}

/// qemu-img bench; returns seconds for the run.
fn qemu(path: &Path, count: u64, write: bool) -> f64 {
    let p = path
        .to_str()
        .unwrap_or_else(|| fail("temp path is not UTF-8"));
    let count = count.to_string();
    let step = STEP.to_string();
    let mut args = vec![
        "bench",
        "-f",
        "vpc",
        "-t",
        "writeback",
        "-d",
        "1",
        "-c",
        &count,
    ];
    args.extend(["-s", "4096", "-S", &step, "-o", "0"]);
    if write {
        args.push("-w");
    }
    args.push(p);
    let text = run("qemu-img", &args);
    text.lines()
        .find_map(|l| {
            l.strip_prefix("Run completed in ")?
                .strip_suffix(" seconds.")?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| fail(&format!("unexpected qemu-img bench output: {text}")))
}

/// The same requests through the library; returns seconds.
fn ours(path: &Path, count: u64, write: bool) -> f64 {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| fail(&e.to_string()));
    let mut disk: Vhd<File> = Vhd::open(file).unwrap_or_else(|e| fail(&e.to_string()));
    let mut buf = vec![0u8; REQUEST];
    let start = Instant::now();
    let mut offset = 0u64;
    for _ in 0..count {
        let r = if write {
            disk.write_at(offset, &buf)
        } else {
            disk.read_at(offset, &mut buf)
        };
        r.unwrap_or_else(|e| fail(&e.to_string()));
        offset = (offset + STEP) % SIZE;
    }
    disk.flush().unwrap_or_else(|e| fail(&e.to_string()));
    start.elapsed().as_secs_f64()
}

fn report(case: &str, count: u64, ours: f64, qemu: f64) {
    let (a, b) = (count as f64 / ours, count as f64 / qemu);
    println!(
        "{case:<34} capvisor {a:>10.0} ops/s   qemu-img {b:>10.0} ops/s   ratio {:.2}x",
        a / b
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| fail(&e.to_string()));
    let path = dir.path().join("bench.vhd");
    let blocks = SIZE / (2 << 20);
    println!(
        "4 KiB requests, depth 1, page cache, 1 GiB dynamic VHD (2 MiB blocks), step 2 MiB + 4 KiB"
    );

    create(&path, true);
    let n = 100_000;
    let q = qemu(&path, n, false);
    let o = ours(&path, n, false);
    report("reads", n, o, q);

    let q = qemu(&path, n, true);
    let o = ours(&path, n, true);
    report("writes into allocated blocks", n, o, q);

    let n = blocks - 4;
    create(&path, false);
    let q = qemu(&path, n, true);
    create(&path, false);
    let o = ours(&path, n, true);
    report("writes that allocate a block", n, o, q);
}
