//! Where the workspace and its cargo target directory are.

use std::path::{Path, PathBuf};

/// The workspace root (the directory of the top-level `Cargo.toml`).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("tests/support lies two levels below the workspace root")
        .to_path_buf()
}

/// The cargo target directory this process was built in: the nearest ancestor of the running
/// test or bench executable that holds cargo's `CACHEDIR.TAG`, else `$CARGO_TARGET_DIR`
/// (relative to the workspace), else the workspace's `target/`.
pub fn target_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe()
        && let Some(dir) = exe
            .ancestors()
            .skip(1)
            .find(|d| d.join("CACHEDIR.TAG").is_file())
    {
        return dir.to_path_buf();
    }
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace().join(dir),
        None => workspace().join("target"),
    }
}

/// A new temporary directory, removed when dropped. It lies under this process's own scratch
/// directory (`$TMPDIR/conveyor-e2e-<pid>/`), so that a directory kept in a `static` (whose
/// destructor never runs), such as a host shared by several tests, is removed by the next
/// test process instead of piling up: the first call removes the scratch directories of
/// processes that are gone.
pub fn tempdir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("run-")
        .tempdir_in(scratch_dir())
        .expect("create a temporary directory")
}

/// This process's scratch directory, under the system's temporary directory.
pub(crate) fn scratch_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        const PREFIX: &str = "conveyor-e2e-";
        let tmp = std::env::temp_dir();
        if let Ok(entries) = std::fs::read_dir(&tmp) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let Some(pid) = name.to_str().and_then(|n| n.strip_prefix(PREFIX)) else {
                    continue;
                };
                let gone = pid.parse::<u32>().is_ok_and(|pid| {
                    pid != std::process::id() && !Path::new("/proc").join(pid.to_string()).exists()
                });
                if gone && Path::new("/proc/self").exists() {
                    let _ = std::fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = tmp.join(format!("{PREFIX}{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        dir
    })
}
