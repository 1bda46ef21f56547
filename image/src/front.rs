//! `cargo image run` as the product's front door: the data disk gets an API
//! token (its hash on the volume, the token in a file beside the disk) and
//! the demo VM `kv` (the key-value service, autostart), and the run prints
//! the exact `capctl` commands that manage the node it boots.
//!
//! # Invariants
//! Every change to the disk is made by running `capctl`, as an
//! administrator would; the token is written only to its file (mode 0600)
//! and never printed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::process;

/// The demo VM's name.
pub const DEMO_VM: &str = "kv";
/// The demo VM's address on the VM-traffic network and its service port.
pub const DEMO_ADDRESS: [u8; 4] = [10, 0, 2, 20];
/// The key-value service's port.
pub const DEMO_PORT: u16 = 7000;

/// The token file of the data disk `disk` (`NAME.token` beside it).
pub fn token_path(disk: &Path) -> PathBuf {
    let mut name = disk.file_name().unwrap_or_default().to_os_string();
    name.push(".token");
    disk.with_file_name(name)
}

/// Runs `capctl ARGS`; its standard output, or why it failed.
pub fn capctl_run(capctl: &Path, args: &[&str]) -> Result<String> {
    let mut cmd = Command::new(capctl);
    cmd.args(args);
    let out = cmd
        .output()
        .with_context(|| format!("could not run `{}`", process::display(&cmd)))?;
    if !out.status.success() {
        bail!(
            "`{}` failed: {}",
            process::display(&cmd),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A new API token for the node of `disk`: its digest on the volume, the
/// token in [`token_path`] (`capctl node token --volume`). Returns the
/// token file.
pub fn make_token(capctl: &Path, disk: &Path) -> Result<PathBuf> {
    let disk_s = disk.to_str().context("the data disk's path is not UTF-8")?;
    let token = token_path(disk);
    let token_s = token.to_str().context("the token's path is not UTF-8")?;
    capctl_run(
        capctl,
        &["node", "token", "--volume", disk_s, "--out", token_s],
    )?;
    Ok(token)
}

/// Makes `disk` ready for a node the administrator manages: a token (a
/// new one when its file is missing) and the demo VM (when no VM of that
/// name is defined). Returns the token file and what was done.
pub fn prepare(capctl: &Path, disk: &Path) -> Result<(PathBuf, Vec<String>)> {
    let disk_s = disk.to_str().context("the data disk's path is not UTF-8")?;
    let token = token_path(disk);
    let token_s = token.to_str().context("the token's path is not UTF-8")?;
    let mut done = Vec::new();
    if !token.is_file() {
        make_token(capctl, disk)?;
        done.push(format!("new API token in {token_s}"));
    }
    let listed = capctl_run(capctl, &["--json", "vm", "list", "--volume", disk_s])?;
    let defined = serde_json::from_str::<serde_json::Value>(&listed)
        .ok()
        .and_then(|v| v.get("vms").and_then(|v| v.as_array()).cloned())
        .unwrap_or_default()
        .iter()
        .any(|vm| vm.get("name").and_then(|n| n.as_str()) == Some(DEMO_VM));
    if !defined {
        define_demo(capctl, disk)?;
        done.push(format!(
            "demo VM {DEMO_VM} defined (the key-value service, autostart)"
        ));
    }
    Ok((token, done))
}

/// Defines the demo VM on `disk` (`capctl vm define --volume`): the
/// key-value service on the VM-traffic network, autostart.
pub fn define_demo(capctl: &Path, disk: &Path) -> Result<()> {
    let disk_s = disk.to_str().context("the data disk's path is not UTF-8")?;
    let args = demo_args();
    capctl_run(
        capctl,
        &[
            "vm",
            "define",
            "--volume",
            disk_s,
            DEMO_VM,
            "--memory",
            "32M",
            "--vcpus",
            "1",
            "--workload",
            "kv",
            "--args",
            &args,
            "--nic",
            "--autostart",
        ],
    )?;
    Ok(())
}

/// The kv workload's arguments: address, port, MTU (0: 1500).
pub fn demo_args() -> String {
    format!("{},{},0", u32::from_be_bytes(DEMO_ADDRESS), DEMO_PORT)
}

/// The commands a run prints, each exactly as it is to be typed:
/// `capctl` with the node's address and token file, then the key-value
/// client.
pub fn try_commands(capctl: &Path, mgmt_port: u16, token: &Path, kv_port: u16) -> Vec<String> {
    let base = format!(
        "{} --node 127.0.0.1:{mgmt_port} --token-file {}",
        capctl.display(),
        token.display()
    );
    let mut out: Vec<String> = [
        "vm list".to_owned(),
        format!("vm console {DEMO_VM}"),
        format!("vm stop {DEMO_VM}"),
        format!("vm start {DEMO_VM}"),
    ]
    .iter()
    .map(|verb| format!("{base} {verb}"))
    .collect();
    out.push(format!(
        "printf 'SET greeting hello\\nGET greeting\\n' | nc -N 127.0.0.1 {kv_port}"
    ));
    out.push(format!("{base} node shutdown"));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_sits_beside_its_disk() {
        assert_eq!(
            token_path(Path::new("/t/data-disk.img")),
            Path::new("/t/data-disk.img.token")
        );
    }

    #[test]
    fn the_printed_commands_name_the_node_token_and_ports() {
        let c = try_commands(Path::new("/b/capctl"), 7100, Path::new("/t/tok"), 7000);
        assert_eq!(
            c[0],
            "/b/capctl --node 127.0.0.1:7100 --token-file /t/tok vm list"
        );
        assert!(c.iter().any(|l| l.ends_with("| nc -N 127.0.0.1 7000")));
        assert!(c.last().unwrap().ends_with("node shutdown"));
        assert_eq!(demo_args(), format!("{},7000,0", 0x0a00_0214u32));
    }
}
