//! `cargo image`: capvisor's host tool. Builds the boot ISO, boots it in QEMU,
//! and runs the project's whole test suite.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use image::launch::{self, Emulator};
use image::qemu::{Accel, Firmware, QemuOptions};
use image::suite::{self, SuiteOptions};
use image::{datadisk, iso, kernel, paths, prereq};

/// capvisor's host tool.
#[derive(Parser, Debug)]
#[command(name = "cargo image", bin_name = "cargo image", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Build the kernel binaries and write a hybrid BIOS + UEFI GRUB ISO (multiboot2).
    Iso(IsoArgs),
    /// Build the ISO and boot it in QEMU with the serial console on this terminal.
    ///
    /// Exits 0 when capvisor exits with Success, 1 for Failure, 2 for RootFault,
    /// otherwise with QEMU's own status. Ctrl-C stops QEMU.
    Run(RunArgs),
    /// Run the whole test suite: prerequisites, fmt, clippy, kernel build, fuzz
    /// smoke, benchmarks, then `cargo nextest run --workspace` (host and QEMU tests).
    Test(TestArgs),
    /// Run the benchmarks (`docs/benchmarks.md`): the null-hypercall round trip in
    /// instructions (QEMU `-icount shift=0`), storage and the virtual switch.
    Bench(BenchArgs),
    /// Count root-partition's non-test lines: the share the host builds and
    /// tests (the library) and what only the bare-metal binary builds.
    Lines,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Only this benchmark (default: all of them, in this order).
    #[arg(value_enum)]
    only: Option<BenchKind>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BenchKind {
    /// The null-hypercall round trip (SVM under QEMU, VMX under Bochs).
    Hypercall,
    /// A child's storage over VMBus vs the root reading directly.
    Storage,
    /// Child to child through the virtual switch vs the root moving the same frames.
    Network,
    /// The CPU time of an idle node's QEMU process, sleeping vs polling.
    Idle,
}

#[derive(Args, Debug)]
struct IsoArgs {
    /// Kernel command line (e.g. `selftest=read-hypervisor-frame`).
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Where to write the ISO [default: target/capvisor.iso].
    #[arg(long)]
    out: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum AccelArg {
    /// Software emulation (emulates SVM + NPT).
    Tcg,
    /// Hardware virtualization (needs nested SVM on the host).
    Kvm,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Number of processors.
    #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    smp: u32,
    /// Guest RAM.
    #[arg(long, default_value = "512M")]
    memory: String,
    /// QEMU CPU model (needs SVM + NPT to run capvisor: EPYC, max, ...).
    #[arg(long, default_value = "EPYC")]
    cpu: String,
    /// QEMU accelerator.
    #[arg(long, value_enum, default_value = "tcg")]
    accel: AccelArg,
    /// Boot through UEFI (OVMF) instead of BIOS.
    #[arg(long)]
    uefi: bool,
    /// Kernel command line.
    #[arg(long, default_value = "")]
    cmdline: String,
    /// Boot in Bochs (Intel VMX + EPT) instead of QEMU: comes with the VMX backend.
    /// Bochs gets no data disk.
    #[arg(long)]
    bochs: bool,
    /// Attach this raw image as the data disk (virtio-blk PCI) instead of
    /// target/data-disk.img, which is built when missing.
    #[arg(long, value_name = "PATH", conflicts_with_all = ["no_data_disk", "bochs"])]
    data_disk: Option<PathBuf>,
    /// Attach no data disk.
    #[arg(long)]
    no_data_disk: bool,
    /// Host port on 127.0.0.1 forwarded to the key-value service of
    /// scenario `kv` (10.0.2.20:7000 behind the root's virtual switch).
    #[arg(long, default_value_t = 7000, conflicts_with = "no_network")]
    kv_port: u16,
    /// Host port on 127.0.0.1 forwarded to the node's management API on
    /// its management network (10.0.2.15:7100, the second NIC).
    #[arg(long, default_value_t = 7100, conflicts_with = "no_network")]
    mgmt_port: u16,
    /// Attach no network adapter.
    #[arg(long)]
    no_network: bool,
}

#[derive(Args, Debug)]
struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (local iteration only).
    #[arg(long)]
    skip_lint: bool,
    /// Skip the fuzz smoke run (local iteration only).
    #[arg(long)]
    skip_fuzz: bool,
    /// Skip the benchmarks (local iteration only).
    #[arg(long)]
    skip_bench: bool,
    /// Seconds each fuzz target runs.
    #[arg(long, default_value_t = 20)]
    fuzz_seconds: u32,
    /// Further arguments for `cargo nextest run` (after `--`), e.g. a test filter.
    #[arg(last = true)]
    nextest_args: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Iso(args) => iso_command(&args).map(|()| 0),
        Command::Run(args) => run_command(&args),
        Command::Test(args) => test_command(args),
        Command::Bench(args) => bench_command(&args).map(|()| 0),
        Command::Lines => lines_command().map(|()| 0),
    };
    match result {
        Ok(status) => ExitCode::from(u8::try_from(status).unwrap_or(1)),
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn lines_command() -> Result<()> {
    let src = paths::workspace_root().join("root-partition/src");
    let share = image::lines::share(&src)?;
    println!("root-partition, non-test lines of code (docs/node.md says how they are counted):");
    for (file, lines) in &share.bare_files {
        let name = file.strip_prefix(&src).unwrap_or(file);
        println!("  bare metal  {lines:>6}  {}", name.display());
    }
    println!(
        "host-built and host-tested (library): {} lines; bare metal only: {} lines + {} of self-tests",
        share.host, share.bare, share.selftests
    );
    println!(
        "host share: {:.1}% of all non-test lines ({:.1}% without the self-tests)",
        share.percent(),
        share.percent_without_selftests()
    );
    Ok(())
}

fn bench_command(args: &BenchArgs) -> Result<()> {
    let runs = |kind| args.only.is_none_or(|only| only == kind);
    if runs(BenchKind::Hypercall) {
        image::bench::hypercall()?;
    }
    if runs(BenchKind::Storage) {
        image::bench::storage()?;
    }
    if runs(BenchKind::Network) {
        image::bench::network()?;
    }
    if runs(BenchKind::Idle) {
        image::bench::idle()?;
    }
    Ok(())
}

fn build_iso(cmdline: &str, out: &std::path::Path) -> Result<()> {
    iso::check_cmdline(cmdline)?;
    prereq::ensure_image_prerequisites()?;
    let binaries = kernel::build()?;
    iso::make(&binaries, cmdline, out)
}

fn iso_command(args: &IsoArgs) -> Result<()> {
    let out = args.out.clone().unwrap_or_else(paths::default_iso);
    build_iso(&args.cmdline, &out)?;
    println!("{}", out.display());
    Ok(())
}

fn run_command(args: &RunArgs) -> Result<i32> {
    let emulator = if args.bochs {
        Emulator::Bochs(image::bochs::BochsOptions {
            cpus: args.smp,
            ..Default::default()
        })
    } else {
        Emulator::Qemu(QemuOptions {
            smp: args.smp,
            memory: args.memory.clone(),
            cpu: args.cpu.clone(),
            accel: match args.accel {
                AccelArg::Tcg => Accel::Tcg,
                AccelArg::Kvm => Accel::Kvm,
            },
            firmware: if args.uefi {
                Firmware::Uefi
            } else {
                Firmware::Bios
            },
            data_disk: data_disk(args)?,
            extra_args: network_args(args),
            ..QemuOptions::default()
        })
    };
    // No scenario: the root boots as a node that keeps running; with a
    // management network and a data disk it is managed with capctl.
    let node = !args
        .cmdline
        .split_whitespace()
        .any(|w| w.starts_with("scenario="));
    let disk = match &emulator {
        Emulator::Qemu(q) => q.data_disk.clone(),
        Emulator::Bochs(_) => None,
    };
    let mut graceful = None;
    if node
        && !args.no_network
        && !args.bochs
        && let Some(disk) = disk
    {
        let capctl = datadisk::capctl()?;
        let (token, done) = image::front::prepare(&capctl, &disk)?;
        for line in done {
            eprintln!("data disk: {line}");
        }
        let commands = image::front::try_commands(&capctl, args.mgmt_port, &token, args.kv_port);
        eprintln!(
            "node: the management API is forwarded to 127.0.0.1:{} (token file {}); the demo VM `{}` (key-value service, {}.{}.{}.{}:{}) starts with the node and is forwarded to 127.0.0.1:{}. Once the node is up, try in another terminal:",
            args.mgmt_port,
            token.display(),
            image::front::DEMO_VM,
            image::front::DEMO_ADDRESS[0],
            image::front::DEMO_ADDRESS[1],
            image::front::DEMO_ADDRESS[2],
            image::front::DEMO_ADDRESS[3],
            image::front::DEMO_PORT,
            args.kv_port,
        );
        for c in &commands {
            eprintln!("    $ {c}");
        }
        eprintln!("Ctrl-C here shuts the node down cleanly as well (twice: stop QEMU at once).");
        let (port, capctl, token) = (args.mgmt_port, capctl.clone(), token.clone());
        graceful = Some(launch::Graceful {
            request: Box::new(move || {
                let out = std::process::Command::new(&capctl)
                    .arg("--node")
                    .arg(format!("127.0.0.1:{port}"))
                    .arg("--token-file")
                    .arg(&token)
                    .args(["node", "shutdown", "--no-wait"])
                    .output()?;
                if out.status.success() {
                    Ok(())
                } else {
                    anyhow::bail!("{}", String::from_utf8_lossy(&out.stderr).trim())
                }
            }),
            grace: std::time::Duration::from_secs(90),
        });
    } else if !args.bochs && !args.no_network {
        eprintln!(
            "network: virtio-net on QEMU user networking; the root is 10.0.2.15, the key-value \
             service of `--cmdline scenario=kv` (child kv1, 10.0.2.20:7000) is at 127.0.0.1:{port}: \
             printf 'SET greeting hello\\nGET greeting\\nQUIT\\n' | nc 127.0.0.1 {port}",
            port = args.kv_port
        );
    }
    emulator.ensure_supported()?;
    let out = paths::default_iso();
    // Bochs has no debug-exit device: the kernel powers off however the run ends.
    let cmdline = if args.bochs {
        format!("{} {}", args.cmdline, ipc::markers::POWEROFF_ON_EXIT)
            .trim()
            .to_owned()
    } else {
        args.cmdline.clone()
    };
    build_iso(&cmdline, &out)?;
    let finished = launch::boot(&emulator, &out, graceful)?;
    if finished.interrupted {
        if finished.outcome.tool_status() == 0
            && matches!(finished.outcome, image::qemu::Outcome::Kernel(_))
        {
            eprintln!("interrupted (Ctrl-C): the node shut down cleanly");
            return Ok(0);
        }
        eprintln!("interrupted (Ctrl-C): QEMU stopped");
        return Ok(130);
    }
    if args.bochs {
        // Bochs always exits with 1; the kernel's last line says how the run ended.
        eprintln!(
            "Bochs stopped; the line `capvisor: run ended: ...` above says how the run ended"
        );
        return Ok(0);
    }
    eprintln!("{}", finished.outcome);
    Ok(finished.outcome.tool_status())
}

/// The data disk `cargo image run` attaches: none, the one given, or the
/// default one (built when missing).
/// The NICs, both virtio-net on QEMU user networking (separate networks,
/// as the seeds recommend): the first is the VM-traffic network (the
/// virtual switch's uplink; the key-value port of a child forwarded), the
/// second the management network (the root's own address; its status
/// port forwarded).
fn network_args(args: &RunArgs) -> Vec<String> {
    if args.bochs || args.no_network {
        return Vec::new();
    }
    vec![
        "-netdev".to_owned(),
        format!(
            "user,id=n0,hostfwd=tcp:127.0.0.1:{}-10.0.2.20:7000",
            args.kv_port
        ),
        "-device".to_owned(),
        "virtio-net-pci,netdev=n0,romfile=".to_owned(),
        "-netdev".to_owned(),
        format!(
            "user,id=mgmt,hostfwd=tcp:127.0.0.1:{}-10.0.2.15:7100",
            args.mgmt_port
        ),
        "-device".to_owned(),
        "virtio-net-pci,netdev=mgmt,romfile=".to_owned(),
    ]
}

fn data_disk(args: &RunArgs) -> Result<Option<PathBuf>> {
    if args.no_data_disk {
        return Ok(None);
    }
    if let Some(path) = &args.data_disk {
        if !path.is_file() {
            anyhow::bail!("no data disk at {}", path.display());
        }
        eprintln!("data disk: {}", path.display());
        return Ok(Some(path.clone()));
    }
    let path = datadisk::default_path();
    if !path.is_file() {
        eprintln!(
            "no data disk yet: building a fresh one ({} MiB exFAT volume `{}` of VHDs, made with capctl)",
            datadisk::SIZE >> 20,
            datadisk::LABEL
        );
    }
    let (disk, built) = datadisk::ensure(&path)?;
    eprintln!(
        "data disk{}: {} (--no-data-disk to boot without it; delete it for a fresh one)",
        if built { " built" } else { "" },
        disk.path.display()
    );
    Ok(Some(disk.path))
}

fn test_command(args: TestArgs) -> Result<i32> {
    suite::run(&SuiteOptions {
        skip_lint: args.skip_lint,
        skip_fuzz: args.skip_fuzz,
        skip_bench: args.skip_bench,
        fuzz_seconds: args.fuzz_seconds,
        nextest_args: args.nextest_args,
    })
}
