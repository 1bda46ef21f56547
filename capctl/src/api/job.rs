//! Jobs, the node's long operations (`docs/management.md`): `capctl job
//! list|show|watch|cancel`, and the watching every long verb does after
//! its `202 Accepted`: poll `GET /jobs/{id}` every 200 ms with a progress
//! bar (hidden with `--json` or without a terminal) until the job ends.
//!
//! Invariant: a watched job's command exits 0 only if the job Completed.

use super::client::{Answer, Client, Method};
use super::{Failure, Global, table};
use crate::Output;
use anyhow::Result;
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::Value;
use std::io::IsTerminal;
use std::process::ExitCode;
use std::time::Duration;

/// How often a watched job is asked for.
pub const POLL: Duration = Duration::from_millis(200);

/// Whether a long verb waits for its job.
#[derive(Args, Clone, Debug)]
pub struct Wait {
    /// Print the job and return at once instead of watching it.
    #[arg(long)]
    pub no_wait: bool,
}

#[derive(Subcommand)]
pub enum JobCommand {
    /// List the node's jobs, oldest first.
    List,
    /// Show one job.
    Show {
        /// The job's id.
        id: u64,
    },
    /// Watch a job until it ends (exit 0 only if it Completed).
    Watch {
        /// The job's id.
        id: u64,
    },
    /// Cancel a job (a start, a restore or a graceful stop in progress).
    Cancel {
        /// The job's id.
        id: u64,
    },
}

/// `capctl job ...`.
pub fn run(cmd: JobCommand, out: &Output, global: &Global) -> Result<ExitCode> {
    let client = Client::new(global)?;
    match cmd {
        JobCommand::List => {
            let body = client.get("/jobs", "job list")?;
            let jobs = body
                .get("jobs")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            out.result(&table::jobs(&jobs), body);
        }
        JobCommand::Show { id } => {
            let job = client.get(&format!("/jobs/{id}"), &format!("job {id}"))?;
            out.result(&table::job_details(&job), job);
        }
        JobCommand::Watch { id } => {
            let job = client.get(&format!("/jobs/{id}"), &format!("job {id}"))?;
            return watch(&client, job, out);
        }
        JobCommand::Cancel { id } => {
            let answer = client.call(
                Method::Post,
                &format!("/jobs/{id}/cancel"),
                None,
                &format!("job {id}"),
            )?;
            out.result(
                &format!(
                    "job {id}: {}",
                    answer
                        .body
                        .get("state")
                        .and_then(Value::as_str)
                        .unwrap_or("?")
                ),
                answer.body,
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// What a long verb does with its `202 Accepted` job: print it
/// (`--no-wait`) or watch it.
pub fn accepted(client: &Client, answer: Answer, wait: &Wait, out: &Output) -> Result<ExitCode> {
    let job = answer.body;
    let Some(id) = job.get("id").and_then(Value::as_u64) else {
        return Err(Failure::new(
            "bad_answer",
            format!(
                "the node at {} answered {} without a job for a long operation",
                client.node(),
                answer.status
            ),
        )
        .into());
    };
    if wait.no_wait {
        out.result(
            &format!(
                "job {id} ({}) accepted: `capctl job watch {id}` follows it",
                table::job_title(&job)
            ),
            job,
        );
        return Ok(ExitCode::SUCCESS);
    }
    watch(client, job, out)
}

/// Whether a job state is final.
pub fn finished(state: &str) -> bool {
    matches!(state, "Completed" | "Failed" | "Cancelled")
}

fn state_of(job: &Value) -> &str {
    job.get("state").and_then(Value::as_str).unwrap_or("")
}

/// Follows `job` until it ends: exit 0 only if it Completed.
pub fn watch(client: &Client, mut job: Value, out: &Output) -> Result<ExitCode> {
    let id = job.get("id").and_then(Value::as_u64).unwrap_or(0);
    let title = table::job_title(&job);
    let shutdown = job.get("operation").and_then(Value::as_str) == Some("node-shutdown");
    let bar = if out.json || !std::io::stderr().is_terminal() {
        ProgressBar::with_draw_target(Some(100), ProgressDrawTarget::hidden())
    } else {
        let bar = ProgressBar::new(100);
        let style = ProgressStyle::with_template("{msg} [{bar:40}] {pos:>3}% {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> ");
        bar.set_style(style);
        bar
    };
    let path = format!("/jobs/{id}");
    let what = format!("job {id}");
    loop {
        let percent = job.get("percent").and_then(Value::as_u64).unwrap_or(0);
        bar.set_position(percent.min(100));
        bar.set_message(format!("job {id} {title}: {}", state_of(&job)));
        if finished(state_of(&job)) {
            break;
        }
        std::thread::sleep(POLL);
        match client.get(&path, &what) {
            Ok(next) => job = next,
            // The node powers off at the end of its own shutdown: the job
            // cannot be read any more, and that is its success.
            Err(e)
                if shutdown
                    && e.downcast_ref::<Failure>()
                        .is_some_and(|f| f.json["error"]["code"] == "unreachable") =>
            {
                bar.finish_and_clear();
                out.result(
                    &format!("job {id} {title}: the node at {} is down", client.node()),
                    serde_json::json!({ "id": id, "operation": "node-shutdown", "state": "Completed",
                        "note": "the node stopped answering: it has shut down" }),
                );
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                bar.abandon();
                return Err(e);
            }
        }
    }
    bar.finish_and_clear();
    let state = state_of(&job).to_owned();
    if state == "Completed" {
        out.result(&table::job_line(&job), job);
        return Ok(ExitCode::SUCCESS);
    }
    let error = job.get("error");
    let reason = error
        .and_then(|e| e.get("message"))
        .and_then(Value::as_str)
        .unwrap_or("no reason given");
    let code = error
        .and_then(|e| e.get("code"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let message = if state == "Cancelled" {
        format!("job {id} {title} was cancelled")
    } else {
        format!("job {id} {title} failed: {reason} ({code})")
    };
    Err(Failure { message, json: job }.into())
}
