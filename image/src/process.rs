//! Running external commands: announce, run, and turn a failure into an error
//! that says which command failed and how.

use std::ffi::OsStr;
use std::process::{Command, ExitStatus, Output};

use anyhow::{Context, Result, bail};

/// The command as a user could type it (arguments separated by spaces).
pub fn display(cmd: &Command) -> String {
    let mut words = vec![cmd.get_program().to_string_lossy().into_owned()];
    words.extend(cmd.get_args().map(quote));
    words.join(" ")
}

fn quote(arg: &OsStr) -> String {
    let text = arg.to_string_lossy();
    let plain = !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_=.,:/+@%".contains(c));
    if plain {
        text.into_owned()
    } else {
        format!("'{}'", text.replace('\'', "'\\''"))
    }
}

/// Runs `cmd` with inherited stdio; an error unless it exits with status 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd
        .status()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    check(cmd, status)
}

/// Runs `cmd` capturing its output; an error (with that output) unless it exits with status 0.
pub fn run_captured(cmd: &mut Command) -> Result<Output> {
    let output = cmd
        .output()
        .with_context(|| format!("could not start `{}`", display(cmd)))?;
    if !output.status.success() {
        bail!(
            "`{}` failed ({}):\n{}{}",
            display(cmd),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}

/// An error naming `cmd` unless `status` is success.
pub fn check(cmd: &Command, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        bail!("`{}` failed ({status})", display(cmd))
    }
}

/// Prints one short step line on stderr (`==> what`).
pub fn announce(what: &str) {
    eprintln!("==> {what}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_quotes_only_what_needs_it() {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-m", "512M", "-append", "a b", "it's"]);
        assert_eq!(
            display(&cmd),
            "qemu-system-x86_64 -m 512M -append 'a b' 'it'\\''s'"
        );
    }

    #[test]
    fn failures_name_the_command() {
        let err = run_captured(Command::new("sh").args(["-c", "echo oops >&2; exit 3"]))
            .expect_err("exit 3 is a failure");
        let text = err.to_string();
        assert!(text.contains("sh -c") && text.contains("oops"), "{text}");
        assert!(run(Command::new("true").arg("x")).is_ok());
    }
}
