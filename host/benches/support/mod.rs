//! What the benches share: where the workspace and its target directory are, building guest
//! drivers, and printing durations.

#![allow(dead_code)] // each bench uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/..")).to_path_buf()
}

/// The cargo target directory (honours `CARGO_TARGET_DIR`, relative to the workspace).
pub fn target_dir() -> PathBuf {
    let root = workspace_root();
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root.join(dir),
        None => root.join("target"),
    }
}

/// Builds Rust guest drivers for wasm32-wasip2 (release); returns where their `.wasm` files are.
pub fn build_rust_drivers(
    packages: &[&str],
) -> std::io::Result<(std::process::ExitStatus, PathBuf)> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(workspace_root())
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .status()?;
    Ok((status, target_dir().join("wasm32-wasip2").join("release")))
}

/// A duration in the unit that suits it.
pub fn format_duration(d: Duration) -> String {
    let ns = d.as_nanos() as f64;
    if ns < 1_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 1_000_000.0 {
        format!("{:.1} µs", ns / 1_000.0)
    } else if ns < 1_000_000_000.0 {
        format!("{:.2} ms", ns / 1_000_000.0)
    } else {
        format!("{:.2} s", ns / 1_000_000_000.0)
    }
}
