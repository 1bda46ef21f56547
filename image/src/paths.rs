//! Where things live: the workspace root, cargo's target directory, the default ISO.

use std::env;
use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the root `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// Cargo's target directory: `CARGO_TARGET_DIR` (or `CARGO_BUILD_TARGET_DIR`) when set,
/// else `target/` in the workspace root.
pub fn target_dir() -> PathBuf {
    let from_env =
        env::var_os("CARGO_TARGET_DIR").or_else(|| env::var_os("CARGO_BUILD_TARGET_DIR"));
    match from_env {
        Some(dir) if !dir.is_empty() => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        _ => workspace_root().join("target"),
    }
}

/// Where `cargo image iso` writes the ISO unless told otherwise.
pub fn default_iso() -> PathBuf {
    target_dir().join("capvisor.iso")
}
