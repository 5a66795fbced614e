//! Driver components to test with: the Rust drivers of the workspace, built for
//! wasm32-wasip2, and the Python and JavaScript example drivers, built by their
//! `examples/<name>/build.sh` (componentize-py and jco, which `tests/run.sh` installs).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use crate::paths::{target_dir, tempdir, workspace};

/// Every Rust driver crate the end-to-end tests use; [`rust_driver`] builds them together.
pub const RUST_DRIVERS: [&str; 7] = [
    "sample-driver",
    "rust-driver",
    "test-driver",
    "noop-driver",
    "step-a",
    "step-b",
    "step-c",
];

/// A driver build that failed: what was built and why it failed.
#[derive(Debug)]
pub struct BuildError {
    what: String,
    detail: String,
}

impl std::fmt::Display for BuildError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "building {} failed: {}", self.what, self.detail)
    }
}

impl std::error::Error for BuildError {}

/// Builds Rust driver crates of the workspace for wasm32-wasip2 (release, a no-op when they
/// are up to date) and returns the directory holding their `.wasm` files
/// (`<target>/wasm32-wasip2/release`, file names with `_` for `-`).
pub fn build_rust_drivers(packages: &[&str]) -> Result<PathBuf, BuildError> {
    let error = |detail: String| BuildError {
        what: format!("{packages:?} for wasm32-wasip2"),
        detail,
    };
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "--release", "--target", "wasm32-wasip2"])
        .args(packages.iter().flat_map(|p| ["-p", p]))
        .current_dir(workspace())
        .env("CARGO_TARGET_DIR", target_dir())
        .status()
        .map_err(|e| error(format!("cannot run cargo: {e}")))?;
    if !status.success() {
        return Err(error(format!("cargo exited with {status}")));
    }
    Ok(target_dir().join("wasm32-wasip2").join("release"))
}

/// The component of one of the [`RUST_DRIVERS`], all of which are built the first time this
/// is called in the process. Panics when the build fails.
pub fn rust_driver(crate_name: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir =
        BUILT.get_or_init(|| build_rust_drivers(&RUST_DRIVERS).unwrap_or_else(|e| panic!("{e}")));
    dir.join(format!("{}.wasm", crate_name.replace('-', "_")))
}

/// Builds the example driver `examples/<name>` with its `build.sh` (and extra arguments for
/// it) into `<target>/example-drivers/<name>.wasm`, or `<name>-<variant>.wasm` when
/// `variant` is not empty, every time it is called, and returns the file.
pub fn build_example_driver(
    name: &str,
    variant: &str,
    args: &[&str],
) -> Result<PathBuf, BuildError> {
    let file = if variant.is_empty() {
        format!("{name}.wasm")
    } else {
        format!("{name}-{variant}.wasm")
    };
    let out = target_dir().join("example-drivers").join(file);
    let error = |detail: String| BuildError {
        what: out.display().to_string(),
        detail,
    };
    let dir = out.parent().expect("the file is in example-drivers/");
    std::fs::create_dir_all(dir)
        .map_err(|e| error(format!("cannot create {}: {e}", dir.display())))?;
    let script = workspace().join("examples").join(name).join("build.sh");
    let started = Instant::now();
    let output = Command::new(&script)
        .arg(&out)
        .args(args)
        .output()
        .map_err(|e| error(format!("cannot run {}: {e}", script.display())))?;
    if !output.status.success() {
        return Err(error(format!(
            "{} exited with {} (tests/run.sh installs its tools):\n{}{}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )));
    }
    eprintln!(
        "built {} in {:.1} s ({} KiB)",
        out.display(),
        started.elapsed().as_secs_f64(),
        std::fs::metadata(&out).map_or(0, |m| m.len() / 1024)
    );
    Ok(out)
}

/// An example driver in another language (`python-driver`, `js-driver`), built by
/// [`build_example_driver`] once per process. Panics when the build fails.
pub fn example_driver(name: &str) -> PathBuf {
    example_driver_variant(name, "", &[])
}

/// [`example_driver`] with extra arguments for the build script, under its own file name
/// (`<name>-<variant>.wasm`), built once per process.
pub fn example_driver_variant(name: &str, variant: &str, args: &[&str]) -> PathBuf {
    type Built = Vec<((String, String), Arc<OnceLock<PathBuf>>)>;
    static BUILT: Mutex<Built> = Mutex::new(Vec::new());
    let key = (name.to_string(), variant.to_string());
    let cell = {
        let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
        match built.iter().find(|(k, _)| *k == key) {
            Some((_, cell)) => cell.clone(),
            None => {
                let cell = Arc::new(OnceLock::new());
                built.push((key, cell.clone()));
                cell
            }
        }
    };
    // One build per file; concurrent callers wait for it, while other files build meanwhile.
    cell.get_or_init(|| build_example_driver(name, variant, args).unwrap_or_else(|e| panic!("{e}")))
        .clone()
}

/// A driver component by name: an example with its own build script (Python, JavaScript), or
/// one of the [`RUST_DRIVERS`].
pub fn driver_file(name: &str) -> PathBuf {
    if workspace()
        .join("examples")
        .join(name)
        .join("build.sh")
        .is_file()
    {
        example_driver(name)
    } else {
        rust_driver(name)
    }
}

/// A temporary directory with a `drivers/` folder holding the named drivers (see
/// [`driver_file`]) as `<name>.wasm`; a host started in it keeps its data in `data/`. Its
/// compile cache (`data/cache`) is one that every such directory of this process shares, so
/// a driver is compiled once per test run rather than once per host (the artefacts' names
/// carry the component's hash and the engine's, as in any cache directory); a test of the
/// first compile itself takes [`workdir_cold`].
pub fn workdir(drivers: &[&str]) -> tempfile::TempDir {
    let dir = workdir_cold(drivers);
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).expect("create data/ in the temporary directory");
    #[cfg(unix)]
    std::os::unix::fs::symlink(shared_cache(), data.join("cache"))
        .expect("link the shared compile cache");
    dir
}

/// The compile cache [`workdir`]'s directories share: in this process's scratch directory.
fn shared_cache() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let dir = crate::paths::scratch_dir().join("compile-cache");
        std::fs::create_dir_all(&dir).expect("create the shared compile cache");
        dir
    })
}

/// [`workdir`] with a compile cache of its own, empty: the first host started in it
/// compiles its drivers.
pub fn workdir_cold(drivers: &[&str]) -> tempfile::TempDir {
    let dir = tempdir();
    let drivers_dir = dir.path().join("drivers");
    std::fs::create_dir(&drivers_dir).expect("create drivers/ in the temporary directory");
    for d in drivers {
        copy_driver(d, &drivers_dir);
    }
    dir
}

fn copy_driver(name: &str, drivers_dir: &Path) {
    let from = driver_file(name);
    let to = drivers_dir.join(format!("{name}.wasm"));
    std::fs::copy(&from, &to)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", from.display(), to.display()));
}
