//! `capctl migrate`: the live-migration simulator on the host. It runs the
//! root partition's own pre-copy engine (`root_partition::migrate`) against
//! a model of a child and a link, on a simulated clock
//! (`docs/migration.md`).

use crate::Output;
use crate::image::parse_size;
use anyhow::{Result, anyhow, bail};
use clap::{Args, Subcommand};
use root_partition::migrate::sim::{Model, simulate};
use root_partition::migrate::{Policy, Stats};
use serde_json::json;
use std::process::ExitCode;

/// Live migration.
#[derive(Subcommand)]
pub enum MigrateCommand {
    /// Simulate one migration: passes, stop reason, blackout, totals.
    Simulate(SimArgs),
    /// Print the Markdown table of 4 and 64 GiB children on 1 and 10 GbE
    /// under a light and a heavy load (the one in docs/migration.md).
    Table(TableArgs),
}

/// The model and the policy.
#[derive(Args)]
pub struct SimArgs {
    /// Guest memory (e.g. 4G, 64G).
    #[arg(long, default_value = "4G")]
    memory: String,
    /// Page writes per second while the child runs.
    #[arg(long, default_value_t = 256)]
    dirty_rate: u64,
    /// Memory the writes go to (e.g. 1G); default: all of it.
    #[arg(long)]
    working_set: Option<String>,
    /// Link speed in bits per second (e.g. 1G, 10G, 100M).
    #[arg(long, default_value = "10G")]
    link: String,
    /// The root's cost per page sent, in ns.
    #[arg(long, default_value_t = 250)]
    per_page_ns: u64,
    /// vCPUs of the child.
    #[arg(long, default_value_t = 2)]
    vcpus: u16,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// The stop-and-copy policy.
#[derive(Args)]
pub struct PolicyArgs {
    /// Downtime budget in ms.
    #[arg(long, default_value_t = 50)]
    budget_ms: u64,
    /// Most pre-copy passes.
    #[arg(long, default_value_t = 10)]
    max_passes: u32,
    /// Stop when a pass shrinks the dirty set by less than this percentage
    /// (0: never).
    #[arg(long, default_value_t = 0)]
    min_progress: u32,
    /// Auto-converge: the first throttle (percent of time the child is held
    /// paused) once a pass does not halve the dirty set (0: never throttle).
    #[arg(long, default_value_t = 20)]
    throttle: u8,
}

/// `table` options.
#[derive(Args)]
pub struct TableArgs {
    /// The root's cost per page sent, in ns.
    #[arg(long, default_value_t = 250)]
    per_page_ns: u64,
    #[command(flatten)]
    policy: PolicyArgs,
}

impl PolicyArgs {
    fn policy(&self) -> Result<Policy> {
        if self.max_passes == 0 {
            bail!("--max-passes must be at least 1");
        }
        Ok(Policy {
            max_passes: self.max_passes,
            downtime_budget_ns: self.budget_ms.saturating_mul(1_000_000),
            min_progress_percent: self.min_progress.min(100),
            throttle_initial_percent: self.throttle.min(99),
            ..Policy::default()
        })
    }
}

/// Parses a link speed in bits per second ("10G", "1G", "100M", "2.5G")
/// into bytes per second.
fn parse_link(text: &str) -> Result<u64> {
    let t = text.trim();
    let t = t
        .strip_suffix("bps")
        .or_else(|| t.strip_suffix("b"))
        .unwrap_or(t);
    let (digits, scale) = match t.chars().last() {
        Some('K' | 'k') => (&t[..t.len() - 1], 1e3),
        Some('M' | 'm') => (&t[..t.len() - 1], 1e6),
        Some('G' | 'g') => (&t[..t.len() - 1], 1e9),
        _ => (t, 1.0),
    };
    let n: f64 = digits
        .trim()
        .parse()
        .map_err(|_| anyhow!("invalid link speed '{text}' (use e.g. 1G, 10G)"))?;
    let bytes = n * scale / 8.0;
    if !(1.0..1e15).contains(&bytes) {
        bail!("link speed '{text}' is out of range");
    }
    Ok(bytes as u64)
}

fn model(
    memory: u64,
    dirty_rate: u64,
    working_set: u64,
    link: u64,
    per_page_ns: u64,
    vcpus: u16,
) -> Result<Model> {
    if memory < 4096 {
        bail!("--memory must be at least one page (4K)");
    }
    if vcpus == 0 {
        bail!("--vcpus must be at least 1");
    }
    if memory > ipc::hypercall::MAX_GPA {
        bail!("--memory above 64G: a partition cannot address it");
    }
    Ok(Model {
        memory_bytes: memory,
        dirty_rate_pages_per_s: dirty_rate,
        working_set_pages: working_set / 4096,
        link_bytes_per_s: link,
        per_page_ns,
        vcpus,
    })
}

fn run_model(m: &Model, policy: &Policy) -> Result<Stats> {
    simulate(m, policy).map_err(|e| anyhow!("simulation aborted: {}", e.reason))
}

fn stats_json(s: &Stats) -> Result<serde_json::Value> {
    let mut text = String::new();
    s.write_json(&mut text)?;
    Ok(serde_json::from_str(&text)?)
}

/// Runs a `migrate` command.
pub fn run(cmd: MigrateCommand, out: &Output) -> Result<ExitCode> {
    match cmd {
        MigrateCommand::Simulate(a) => {
            let memory = parse_size(&a.memory)?;
            let ws = match &a.working_set {
                Some(w) => parse_size(w)?,
                None => memory,
            };
            let m = model(
                memory,
                a.dirty_rate,
                ws,
                parse_link(&a.link)?,
                a.per_page_ns,
                a.vcpus,
            )?;
            let s = run_model(&m, &a.policy.policy()?)?;
            out.result(&s.to_string(), stats_json(&s)?);
        }
        MigrateCommand::Table(a) => {
            let policy = a.policy.policy()?;
            let mut rows = Vec::new();
            let mut text = String::from(
                "| memory | link | load | passes | stop reason | throttle | total bytes / RAM | blackout pages | predicted blackout ms | simulated blackout ms | total s |\n\
                 |---|---|---|---|---|---|---|---|---|---|---|\n",
            );
            for (mem_name, memory) in [("4 GiB", 4u64 << 30), ("64 GiB", 64 << 30)] {
                for (link_name, link) in [("1 GbE", 125_000_000u64), ("10 GbE", 1_250_000_000)] {
                    for (load, rate, ws) in [
                        (
                            "light: 256 pages/s (1 MiB/s) over all memory",
                            256u64,
                            memory,
                        ),
                        (
                            "heavy: 400k pages/s over a 1 GiB working set",
                            400_000,
                            1 << 30,
                        ),
                    ] {
                        let m = model(memory, rate, ws, link, a.per_page_ns, 2)?;
                        let s = run_model(&m, &policy)?;
                        let stop = s.stop.map_or("none", |r| r.name());
                        let r = s.ratio_milli();
                        text.push_str(&format!(
                            "| {mem_name} | {link_name} | {load} | {} | {stop} | {}% | {}.{:03} | {} | {:.1} | {:.1} | {:.1} |\n",
                            s.passes.len(),
                            s.throttle_percent,
                            r / 1000,
                            r % 1000,
                            s.blackout_pages,
                            s.predicted_blackout_ns as f64 / 1e6,
                            s.blackout_ns as f64 / 1e6,
                            s.total_ns as f64 / 1e9,
                        ));
                        rows.push(json!({
                            "memory_bytes": memory,
                            "link_bytes_per_s": link,
                            "dirty_rate_pages_per_s": rate,
                            "working_set_bytes": ws,
                            "stats": stats_json(&s)?,
                        }));
                    }
                }
            }
            out.result(text.trim_end(), json!({ "rows": rows }));
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::parse_link;

    #[test]
    fn link_speeds() {
        assert_eq!(parse_link("10G").ok(), Some(1_250_000_000));
        assert_eq!(parse_link("1Gbps").ok(), Some(125_000_000));
        assert_eq!(parse_link("100M").ok(), Some(12_500_000));
        assert_eq!(parse_link("2.5G").ok(), Some(312_500_000));
        assert!(parse_link("fast").is_err());
        assert!(parse_link("0").is_err());
    }
}
