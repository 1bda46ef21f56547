//! `cargo image run` as a user meets it (issue 16, must-show 4): the run
//! prepares its data disk, boots the node in QEMU and prints the commands
//! to try; this test runs every printed command exactly as printed, in
//! order (the last shuts the node down), and the run must end cleanly.
//!
//! The commands are printed as `    $ COMMAND` lines on standard error.
//! QEMU under TCG: in nextest's `qemu` group (`.config/nextest.toml`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A free port on 127.0.0.1.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

#[test]
fn the_printed_commands_work_as_printed() {
    let dir = tempfile::tempdir().expect("a scratch directory");
    let disk = dir.path().join("data-disk.img");
    image::datadisk::ensure(&disk).expect("a data disk");
    let (mgmt, kv) = (free_port(), free_port());
    let mut run = Command::new(env!("CARGO_BIN_EXE_image"))
        .args(["run", "--data-disk"])
        .arg(&disk)
        .args([
            "--mgmt-port",
            &mgmt.to_string(),
            "--kv-port",
            &kv.to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo image run starts");
    let (tx, rx) = mpsc::channel::<(bool, String)>();
    let out = run.stdout.take().expect("stdout");
    let err = run.stderr.take().expect("stderr");
    for (serial, pipe) in [
        (true, Box::new(out) as Box<dyn std::io::Read + Send>),
        (false, Box::new(err)),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let _ = tx.send((serial, line));
            }
        });
    }
    let deadline = Instant::now() + Duration::from_secs(420);
    let mut commands = Vec::new();
    let mut seen = Vec::new();
    let mut up = false;
    // The printed commands (on stderr, indented) and the node's API line.
    while !up {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok((serial, line)) = rx.recv_timeout(left) else {
            let _ = run.kill();
            panic!(
                "the node never served its API; output:\n{}",
                seen.join("\n")
            );
        };
        if let Some(command) = line.strip_prefix("    $ ").filter(|_| !serial) {
            commands.push(command.to_owned());
        }
        up |= serial && line.contains("root partition: node: management API at");
        seen.push(line);
    }
    assert!(
        commands.len() >= 5,
        "too few commands printed:\n{}",
        seen.join("\n")
    );
    assert!(commands[0].contains(&format!("--node 127.0.0.1:{mgmt}")));
    // The demo VM autostarts: wait for it before the first command.
    while Instant::now() < deadline {
        let Ok((_, line)) = rx.recv_timeout(Duration::from_secs(60)) else {
            break;
        };
        let running = line.contains("root: vm kv: Starting -> Running");
        seen.push(line);
        if running {
            break;
        }
    }
    for command in &commands {
        // The key-value service listens a moment after the VM runs.
        let mut tries = 0;
        let output = loop {
            let output = Command::new("sh")
                .args(["-c", command])
                .output()
                .expect("sh runs");
            let text = String::from_utf8_lossy(&output.stdout).into_owned();
            let retry = command.contains("nc ") && !text.contains("VALUE hello") && tries < 30;
            if !retry {
                break output;
            }
            tries += 1;
            std::thread::sleep(Duration::from_secs(2));
        };
        let stdout = String::from_utf8_lossy(&output.stdout);
        eprintln!("$ {command}\n{stdout}");
        assert!(
            output.status.success(),
            "`{command}` failed: {stdout} {}",
            String::from_utf8_lossy(&output.stderr)
        );
        if command.contains("nc ") {
            assert!(stdout.contains("VALUE hello"), "`{command}`: {stdout}");
        }
        if command.ends_with("vm list") {
            assert!(stdout.contains("kv"), "`{command}`: {stdout}");
        }
    }
    // The last command shut the node down: the run ends, successfully.
    let status = loop {
        if let Some(status) = run.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline + Duration::from_secs(120) {
            let _ = run.kill();
            panic!("the run did not end after node shutdown");
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    while let Ok((_, line)) = rx.try_recv() {
        seen.push(line);
    }
    assert!(
        status.success(),
        "cargo image run ended with {status}:\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("root partition: node: data volume flushed")),
        "{}",
        seen.join("\n")
    );
}
