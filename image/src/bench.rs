//! `cargo image bench`: the null-hypercall round trip in instructions, on
//! both backends.
//!
//! Boots the ISO with `scenario=idle bench=hypercall` on one processor: AMD
//! SVM under QEMU `-icount shift=0`, Intel VMX under Bochs; on both the
//! time-stamp counter advances by one per instruction executed. The root
//! partition reports the round trip as it sees it (guest view: the call
//! instruction, the microkernel's path, the VM entry and the loop), the
//! microkernel reports its own path from the VM exit to the next VM entry.
//! Both are counts that do not depend on the host machine's speed.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use crate::bochs::BochsOptions;
use crate::kernel::Binaries;
use crate::qemu::QemuOptions;
use crate::{iso, kernel, prereq, process};

/// The kernel command line of the measurement.
pub const CMDLINE: &str = "scenario=idle bench=hypercall";
/// How long one measurement may take.
const LIMIT: Duration = Duration::from_secs(300);

/// Runs the measurement on both backends; prints and returns the `bench:`
/// lines, each prefixed with its backend (`svm:`, `vmx:`).
pub fn hypercall() -> Result<Vec<String>> {
    prereq::ensure_image_prerequisites()?;
    prereq::ensure_packages(prereq::BOCHS_PACKAGES)?;
    let binaries = kernel::build()?;
    let mut lines = run_one("svm", &binaries, false)?;
    lines.extend(run_one("vmx", &binaries, true)?);
    let ratio = vmx_over_svm(&lines).context("the bench lines of a backend are missing")?;
    println!("{ratio}");
    lines.push(ratio);
    Ok(lines)
}

/// The most the VMX microkernel path may cost, as a multiple of SVM's
/// (`docs/benchmarks.md`).
pub const VMX_PATH_GOAL: f64 = 2.0;

/// The `vmx/svm` line: the VMX figures over the SVM ones (the microkernel's
/// shortest path, and the guest's view), from the `svm:`/`vmx:` lines.
fn vmx_over_svm(lines: &[String]) -> Option<String> {
    let figure = |backend: &str, label: &str| {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{backend}: ")))
            .find_map(|l| number_after(l, label))
    };
    let path = |backend| figure(backend, "microkernel null hypercall path: min");
    let guest = |backend| figure(backend, "null hypercall round trip:");
    let (svm_path, vmx_path) = (path("svm")?, path("vmx")?);
    let (svm_guest, vmx_guest) = (guest("svm")?, guest("vmx")?);
    let ratio = |vmx: u64, svm: u64| vmx as f64 / svm.max(1) as f64;
    let path_ratio = ratio(vmx_path, svm_path);
    Some(format!(
        "vmx/svm: bench: microkernel null hypercall path {path_ratio:.2}x ({vmx_path} / {svm_path}, goal <= {VMX_PATH_GOAL:.0}x: {}), guest view {:.2}x ({vmx_guest} / {svm_guest})",
        if path_ratio <= VMX_PATH_GOAL {
            "met"
        } else {
            "not met"
        },
        ratio(vmx_guest, svm_guest),
    ))
}

fn run_one(backend: &str, binaries: &Binaries, bochs: bool) -> Result<Vec<String>> {
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-bench-")
        .tempdir()?;
    let iso_path = scratch.path().join("capvisor.iso");
    let cmdline = if bochs {
        format!("{CMDLINE} {}", ipc::markers::POWEROFF_ON_EXIT)
    } else {
        CMDLINE.to_owned()
    };
    iso::make(binaries, &cmdline, &iso_path)?;
    let cmd = if bochs {
        BochsOptions {
            cpus: 1,
            ..Default::default()
        }
        .command(&iso_path, scratch.path())?
    } else {
        let options = QemuOptions {
            smp: 1,
            extra_args: vec!["-icount".to_owned(), "shift=0".to_owned()],
            ..QemuOptions::default()
        };
        options.command(&iso_path, scratch.path())?
    };
    let (status, lines) = serial_lines(cmd)?;
    let bench: Vec<String> = lines
        .iter()
        .filter(|l| l.contains("bench: "))
        .map(|l| {
            format!(
                "{backend}: {}",
                l[l.find("bench: ").unwrap_or(0)..].trim_end_matches('\r')
            )
        })
        .collect();
    let success = ipc::markers::RunEnded(ipc::exit::ExitCode::Success).to_string();
    let ended = lines.iter().any(|l| l.contains(&success));
    // Bochs exits with 1 whatever happened; QEMU with the kernel's code.
    let status_ok = bochs || status.code() == Some(ipc::exit::ExitCode::Success.qemu_status());
    if !ended || !status_ok || bench.len() < 2 {
        bail!(
            "the {backend} measurement failed ({status}); serial:\n{}",
            lines.join("\n")
        );
    }
    for line in &bench {
        println!("{line}");
    }
    Ok(bench)
}

/// Starts `cmd` with its standard output read line by line on a thread:
/// the process, the lines as they come, and the command as shown.
fn spawn_with_lines(
    cmd: &mut std::process::Command,
) -> Result<(std::process::Child, mpsc::Receiver<String>, String)> {
    cmd.stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    let shown = process::display(cmd);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("could not start {shown}"))?;
    let stdout = child.stdout.take().context("the emulator has no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).split(b'\n').map_while(Result::ok) {
            if tx
                .send(String::from_utf8_lossy(&line).into_owned())
                .is_err()
            {
                break;
            }
        }
    });
    Ok((child, rx, shown))
}

/// Runs `cmd` to its end (at most [`LIMIT`]); its status and serial lines.
fn serial_lines(mut cmd: std::process::Command) -> Result<(std::process::ExitStatus, Vec<String>)> {
    let (mut child, rx, shown) = spawn_with_lines(&mut cmd)?;
    let deadline = Instant::now() + LIMIT;
    let mut lines = Vec::new();
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            lines.push(line);
        }
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "`{shown}` did not finish within {LIMIT:?}; serial:\n{}",
                lines.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    std::thread::sleep(Duration::from_millis(200));
    while let Ok(line) = rx.try_recv() {
        lines.push(line);
    }
    Ok((status, lines))
}

/// The kernel command line of the storage measurement.
pub const STORAGE_CMDLINE: &str = "scenario=dbench bench=storage";

/// Numbers after `label` in `line` (`"in 123 cycles"` → 123).
fn number_after(line: &str, label: &str) -> Option<u64> {
    let rest = &line[line.find(label)? + label.len()..];
    rest.split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())?
        .parse()
        .ok()
}

/// `cargo image bench`, storage: a child reads `bench.vhd` through VMBus
/// (sequential 64 KiB requests, then random 4 KiB ones), then the root reads
/// the same VHD directly through the same VHD, exFAT and virtio-blk code;
/// prints the child's throughput relative to the root's (time-stamp
/// cycles in the same run) and the child's requests per port signal.
pub fn storage() -> Result<Vec<String>> {
    prereq::ensure_image_prerequisites()?;
    let binaries = kernel::build()?;
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-bench-storage-")
        .tempdir()?;
    let iso_path = scratch.path().join("capvisor.iso");
    iso::make(&binaries, STORAGE_CMDLINE, &iso_path)?;
    let (master, _) = crate::datadisk::ensure(&crate::datadisk::default_path())?;
    let disk = scratch.path().join("data-disk.img");
    crate::datadisk::sparse_copy(&master.path, &disk)?;
    let options = QemuOptions {
        data_disk: Some(disk),
        ..QemuOptions::default()
    };
    let (status, lines) = serial_lines(options.command(&iso_path, scratch.path())?)?;
    let find = |who: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("disk bench ({who})")))
            .and_then(|l| Some((number_after(l, "bytes in")?, number_after(l, "KiB in")?)))
    };
    let signals = lines
        .iter()
        .find(|l| l.contains("root: b storage:"))
        .and_then(|l| Some((number_after(l, "storage:")?, number_after(l, "errors,")?)));
    let (Some(one), Some(queued), Some(root), Some((requests, signals))) = (
        find(ipc::disk::CHILD_ONE_AT_A_TIME),
        find(ipc::disk::CHILD_QUEUED),
        find(ipc::disk::ROOT_DIRECT),
        signals,
    ) else {
        bail!(
            "the storage measurement failed ({status}); serial:\n{}",
            lines.join("\n")
        );
    };
    let ratio = |root: u64, child: u64| root as f64 / child.max(1) as f64;
    let mut out = Vec::new();
    for (what, child) in [
        ("1 request in flight", one),
        ("queued: 4 sequential, 32 random in flight", queued),
    ] {
        out.push(format!(
            "storage bench: child over VMBus ({what}) vs root reading bench.vhd directly (1 in flight): sequential 8 MiB in 64 KiB reads {:.2}x, random 4 KiB reads {:.2}x the root's throughput (goal >= 0.8)",
            ratio(root.0, child.0),
            ratio(root.1, child.1)
        ));
    }
    out.push(format!(
        "storage bench: cycles: root {}/{}, child 1 in flight {}/{}, queued {}/{} (sequential/random)",
        root.0, root.1, one.0, one.1, queued.0, queued.1
    ));
    out.push(format!(
        "storage bench: {requests} requests, {signals} port signals from the child ({})",
        if signals == 0 {
            "the root polls the storage rings while children run".to_owned()
        } else {
            format!(
                "{:.2} requests per signal",
                requests as f64 / signals as f64
            )
        }
    ));
    for line in &out {
        println!("{line}");
    }
    Ok(out)
}

/// "`frames / signals` frames per signal", or that there was none.
fn per_signal(frames: u64, signals: u64) -> String {
    if signals == 0 {
        format!("{frames} frames without a signal")
    } else {
        format!("{:.1} frames per signal", frames as f64 / signals as f64)
    }
}

/// The kernel command line of the network measurement.
pub const NETWORK_CMDLINE: &str = "scenario=nbench bench=network";

/// `cargo image bench`, network: child s1 streams 20,000 frames of 1514
/// bytes to child s2 through the root's virtual switch (each over its
/// VMBus network channel); then the root pushes the same frames through the
/// same switch itself, between the same two ports, each delivered by a
/// copy (the wire without VMBus). Prints the children's throughput (frames
/// received over the receiver's cycles) relative to the root's, and the
/// port signals on both children's network channels, each way, with the
/// frames per signal (all of them counted).
pub fn network() -> Result<Vec<String>> {
    prereq::ensure_image_prerequisites()?;
    let binaries = kernel::build()?;
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-bench-network-")
        .tempdir()?;
    let iso_path = scratch.path().join("capvisor.iso");
    iso::make(&binaries, NETWORK_CMDLINE, &iso_path)?;
    let options = QemuOptions {
        extra_args: [
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0,romfile=",
        ]
        .map(String::from)
        .to_vec(),
        ..QemuOptions::default()
    };
    let (status, lines) = serial_lines(options.command(&iso_path, scratch.path())?)?;
    let find = |who: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("frames bench ({who})")))
            .and_then(|l| Some((number_after(l, ":")?, number_after(l, "bytes in")?)))
    };
    // Port signals on each child's network channel: (from it, to it).
    let signals = |child: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("root: {child} network:")))
            .and_then(|l| Some((number_after(l, "signals:")?, number_after(l, " in,")?)))
    };
    // Messages on each child's network channel: (from it, to it, frames).
    let messages = |child: &str| {
        lines
            .iter()
            .find(|l| l.contains(&format!("root: {child} network messages:")))
            .and_then(|l| {
                Some((
                    number_after(l, "messages:")?,
                    number_after(l, " in,")?,
                    number_after(l, "out (")?,
                ))
            })
    };
    let per_frame = |m: Option<(u64, u64, u64)>| {
        m.map_or_else(
            || "?".to_string(),
            |(i, o, f)| {
                format!(
                    "{i} in, {o} out for {f} frames: {:.2} per frame",
                    (i + o) as f64 / f.max(1) as f64
                )
            },
        )
    };
    let (Some(sent), Some(received), Some(root), Some(sender), Some(receiver)) = (
        find("sender"),
        find("receiver"),
        find("root"),
        signals("s1"),
        signals("s2"),
    ) else {
        bail!(
            "the network measurement failed ({status}); serial:\n{}",
            lines.join("\n")
        );
    };
    let child_rate = received.0 as f64 / received.1.max(1) as f64;
    let root_rate = root.0 as f64 / root.1.max(1) as f64;
    let out = vec![
        format!(
            "network bench: child to child through the switch over VMBus: {} of {} frames of {} bytes received in {} cycles; the root through the same switch without VMBus: {} frames in {} cycles: children's throughput {:.2}x the root's",
            received.0,
            sent.0,
            ipc::kv::BENCH_FRAME_SIZE,
            received.1,
            root.0,
            root.1,
            child_rate / root_rate.max(f64::MIN_POSITIVE)
        ),
        format!(
            "network bench: port signals: sender to root {}, root to sender {} (completions), root to receiver {} (frames), receiver to root {}: {}",
            sender.0,
            sender.1,
            receiver.1,
            receiver.0,
            per_signal(received.0, sender.0 + sender.1 + receiver.0 + receiver.1),
        ),
        format!(
            "network bench: messages: sender {}; receiver {}",
            per_frame(messages("s1")),
            per_frame(messages("s2")),
        ),
    ];
    for line in &out {
        println!("{line}");
    }
    Ok(out)
}

/// How long the idle benchmark watches each node.
pub const IDLE_WINDOW: Duration = Duration::from_secs(30);
/// The idle node's kernel command line (its loop sleeps); the peer adds
/// `node.poll` (its loop polls, as the root did before it was a node).
pub const IDLE_CMDLINE: &str = "";
/// The idle node's one VM (workload `idle`, defined with capctl).
const IDLE_VM: &str = "idle1";

/// CPU time (user + system) a process has used so far, from
/// `/proc/PID/stat` (fields 14 and 15, in clock ticks of 1/100 s, the
/// kernel's `USER_HZ` on every Linux port).
fn cpu_time(pid: u32) -> Result<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("could not read /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from after its ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("unreadable /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ')': state is field 3, so utime (14) is index 11, stime (15) 12.
    let ticks = |i: usize| -> Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .context("unreadable /proc stat field")
    };
    Ok(Duration::from_millis((ticks(11)? + ticks(12)?) * 10))
}

/// One idle node: boots `iso` with a data disk holding one idle VM, waits
/// until the VM runs, and
/// returns the QEMU process's CPU time over [`IDLE_WINDOW`] as a share of
/// one host core; the node is stopped (by PID) afterwards.
fn idle_share(iso: &std::path::Path, scratch: &std::path::Path) -> Result<f64> {
    // A data disk of its own with one idle VM defined (autostart).
    let (master, _) = crate::datadisk::ensure(&crate::datadisk::default_path())?;
    let disk = scratch.join("data-disk.img");
    crate::datadisk::sparse_copy(&master.path, &disk)?;
    let capctl = crate::datadisk::capctl()?;
    let mut define = std::process::Command::new(&capctl);
    define.args(["vm", "define", "--volume"]).arg(&disk).args([
        IDLE_VM,
        "--memory",
        "16M",
        "--vcpus",
        "1",
        "--workload",
        ipc::workload::IDLE,
        "--autostart",
    ]);
    process::run(&mut define)?;
    let options = QemuOptions {
        data_disk: Some(disk),
        ..QemuOptions::default()
    };
    let mut cmd = options.command(iso, scratch)?;
    let (mut child, rx, _) = spawn_with_lines(&mut cmd)?;
    let result = (|| {
        let deadline = Instant::now() + LIMIT;
        let mut seen = Vec::new();
        loop {
            match rx.recv_timeout(Duration::from_millis(200)) {
                Ok(line) => {
                    let up = line.contains(&format!("root: vm {IDLE_VM}: Starting -> Running"));
                    seen.push(line);
                    if up {
                        break;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    bail!(
                        "the node ended before its loop started:\n{}",
                        seen.join("\n")
                    )
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the node's loop did not start in {LIMIT:?}:\n{}",
                    seen.join("\n")
                );
            }
        }
        // Let the boot's last work settle, then watch.
        std::thread::sleep(Duration::from_secs(2));
        let before = cpu_time(child.id())?;
        std::thread::sleep(IDLE_WINDOW);
        let after = cpu_time(child.id())?;
        Ok((after - before).as_secs_f64() / IDLE_WINDOW.as_secs_f64())
    })();
    let _ = child.kill();
    let _ = child.wait();
    result
}

/// The idle benchmark: the CPU time of the QEMU process of an idle node
/// over [`IDLE_WINDOW`], next to the same node with its loop forced to
/// poll, both watched at the same time; prints the shares of one host
/// core and their ratio (goal: the idle node at most 5% of a core).
pub fn idle() -> Result<Vec<String>> {
    prereq::ensure_image_prerequisites()?;
    let binaries = kernel::build()?;
    let scratch = tempfile::Builder::new()
        .prefix("capvisor-bench-idle-")
        .tempdir()?;
    let (sleeping_dir, polling_dir) = (scratch.path().join("sleep"), scratch.path().join("poll"));
    std::fs::create_dir_all(&sleeping_dir)?;
    std::fs::create_dir_all(&polling_dir)?;
    let sleeping_iso = sleeping_dir.join("capvisor.iso");
    let polling_iso = polling_dir.join("capvisor.iso");
    iso::make(&binaries, IDLE_CMDLINE, &sleeping_iso)?;
    iso::make(
        &binaries,
        &format!("{IDLE_CMDLINE} node.poll"),
        &polling_iso,
    )?;
    let polling = std::thread::spawn(move || idle_share(&polling_iso, &polling_dir));
    let sleeping = idle_share(&sleeping_iso, &sleeping_dir);
    let polling = polling
        .join()
        .map_err(|_| anyhow::anyhow!("the polling node's watcher panicked"))?;
    let (sleeping, polling) = (sleeping?, polling?);
    let out = vec![
        format!(
            "idle bench: idle node with one idle VM: QEMU process {:.1}% of one host core over {} s (goal <= 5%)",
            sleeping * 100.0,
            IDLE_WINDOW.as_secs()
        ),
        format!(
            "idle bench: the same node with its loop polling: {:.1}% of one host core; sleeping costs {:.3}x the polling node's CPU time",
            polling * 100.0,
            sleeping / polling.max(f64::MIN_POSITIVE)
        ),
    ];
    for line in &out {
        println!("{line}");
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_line_divides_vmx_by_svm() {
        let lines: Vec<String> = [
            "svm: bench: null hypercall round trip: 263 instructions (guest view, min of 20 batches of 1000)",
            "svm: bench: microkernel null hypercall path: min 109, mean 118 instructions over 20000 calls",
            "vmx: bench: null hypercall round trip: 358 instructions (guest view, min of 20 batches of 1000)",
            "vmx: bench: microkernel null hypercall path: min 203, mean 212 instructions over 20000 calls",
        ]
        .map(String::from)
        .to_vec();
        assert_eq!(
            vmx_over_svm(&lines).as_deref(),
            Some(
                "vmx/svm: bench: microkernel null hypercall path 1.86x (203 / 109, goal <= 2x: met), guest view 1.36x (358 / 263)"
            )
        );
        assert_eq!(vmx_over_svm(&lines[..2]), None);
    }
}
