//! `cargo image test`: the project's whole test suite, in the order CI runs it:
//! prerequisites, format, lints, kernel build, fuzz smoke, benchmarks, and
//! last `cargo nextest run --workspace` (host tests and the QEMU suite).
//!
//! # Invariants
//! Each step is announced on stderr; the first failing step stops the suite
//! with an error. The final status is nextest's, so its summary is the last output.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process::{self, announce};
use crate::{kernel, paths, prereq};

/// Which steps to skip (the default runs everything).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SuiteOptions {
    /// Skip `cargo fmt --check` and the clippy runs.
    pub skip_lint: bool,
    /// Skip the fuzz smoke run.
    pub skip_fuzz: bool,
    /// Skip the benchmarks.
    pub skip_bench: bool,
    /// Seconds each fuzz target runs.
    pub fuzz_seconds: u32,
    /// Extra arguments for `cargo nextest run` (e.g. a filter).
    pub nextest_args: Vec<String>,
}

fn cargo(args: &[&str]) -> Command {
    let mut cmd = Command::new("cargo");
    cmd.args(args).current_dir(paths::workspace_root());
    cmd
}

/// Runs the suite; returns nextest's exit status (0 when everything passed).
pub fn run(options: &SuiteOptions) -> Result<i32> {
    let root = paths::workspace_root();

    announce("prerequisites (system packages, rustup target, cargo-nextest, cargo-fuzz)");
    let mut packages = prereq::IMAGE_PACKAGES.to_vec();
    packages.extend_from_slice(prereq::TEST_PACKAGES);
    prereq::ensure_packages(&packages)?;
    prereq::ensure_rust_target()?;
    prereq::ensure_cargo_tool("cargo-nextest", "nextest")?;
    if !options.skip_fuzz {
        prereq::ensure_cargo_tool("cargo-fuzz", "fuzz")?;
    }

    if options.skip_lint {
        announce("format and lints: skipped");
    } else {
        announce("format: cargo fmt --all -- --check");
        process::run(&mut cargo(&["fmt", "--all", "--", "--check"]))?;
        announce("lints (host): cargo clippy --workspace --all-targets -- -D warnings");
        process::run(&mut cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]))?;
        announce("lints (bare metal): cargo clippy --release --target x86_64-unknown-none ...");
        let mut args = vec!["clippy"];
        args.extend(kernel::selection_args());
        args.extend(["--", "-D", "warnings"]);
        process::run(&mut cargo(&args))?;
    }

    announce("kernel binaries: cargo build --release --target x86_64-unknown-none ...");
    kernel::build()?;

    let fuzz_dir = root.join("fuzz");
    if options.skip_fuzz {
        announce("fuzz smoke: skipped");
    } else if fuzz_dir.join("Cargo.toml").is_file() {
        let listed = process::run_captured(cargo(&["fuzz", "list"]).current_dir(&fuzz_dir))?;
        let targets: Vec<String> = String::from_utf8_lossy(&listed.stdout)
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(str::to_owned)
            .collect();
        let max_time = format!("-max_total_time={}", options.fuzz_seconds);
        for target in &targets {
            // libFuzzer refuses a corpus directory that does not exist; a
            // clean clone has only the committed seeds.
            let corpus = fuzz_dir.join("corpus").join(target);
            std::fs::create_dir_all(&corpus)
                .with_context(|| format!("could not create {}", corpus.display()))?;
            announce(&format!(
                "fuzz smoke: {target} ({} s)",
                options.fuzz_seconds
            ));
            let mut cmd = cargo(&[
                "fuzz",
                "run",
                "--sanitizer",
                "none",
                target,
                "--",
                &max_time,
            ]);
            process::run(cmd.current_dir(&fuzz_dir))
                .with_context(|| format!("fuzz target {target} failed"))?;
        }
        if targets.is_empty() {
            announce("fuzz smoke: fuzz/ lists no target");
        }
    } else {
        announce("fuzz smoke: no fuzz/Cargo.toml, nothing to fuzz");
    }

    if options.skip_bench {
        announce("benchmarks: skipped");
    } else if root.join("vhd/benches/vs_qemu_img.rs").is_file() {
        announce("benchmark: cargo bench -p vhd --bench vs_qemu_img");
        process::run(&mut cargo(&[
            "bench",
            "-p",
            "vhd",
            "--bench",
            "vs_qemu_img",
        ]))?;
    } else {
        announce("benchmark: no vhd/benches/vs_qemu_img.rs yet");
    }
    if !options.skip_bench && root.join("ipc/benches/vmbus_ring.rs").is_file() {
        announce("benchmark: cargo bench -p ipc --bench vmbus_ring (VMBus ring vs rtrb)");
        process::run(&mut cargo(&["bench", "-p", "ipc", "--bench", "vmbus_ring"]))?;
    }
    if !options.skip_bench {
        announce("benchmark: null-hypercall round trip under QEMU -icount (cargo image bench)");
        crate::bench::hypercall()?;
        crate::bench::storage()?;
        crate::bench::network()?;
        crate::bench::idle()?;
    }

    announce("tests: cargo nextest run --workspace");
    let mut nextest = cargo(&["nextest", "run", "--workspace"]);
    nextest.args(&options.nextest_args);
    let status = nextest
        .status()
        .with_context(|| format!("could not start `{}`", process::display(&nextest)))?;
    match status.code() {
        Some(code) => Ok(code),
        None => bail!("`{}` was killed ({status})", process::display(&nextest)),
    }
}
