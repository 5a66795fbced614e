//! The compiled-component cache: `<data_dir>/cache/<sha256 of the .wasm>-<engine hash>.cwasm`.
//!
//! Compiling takes 50 ms for a small Rust driver and several seconds for Python or
//! JavaScript; loading a cached artefact takes well under a millisecond (it is mmapped). The
//! key includes the engine's compatibility hash, so an artefact compiled by another wasmtime
//! version or configuration is never loaded: it just misses and is rebuilt.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::Engine;
use wasmtime::component::Component;

use super::compile_queue::CompileQueue;

/// Why a file could not be turned into a component.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the file: {0}")]
    Read(#[source] std::io::Error),
    /// It is not WebAssembly at all.
    #[error("not a WebAssembly file (it does not start with \\0asm)")]
    NotWasm,
    /// It is a core module, not a component.
    #[error(
        "this is a core WebAssembly module, not a component: build the driver with \
         `cargo build --target wasm32-wasip2` (or run `wasm-tools component new` on it)"
    )]
    CoreModule,
    /// wasmtime refused to compile it (the text carries a hint for the usual causes).
    #[error("it does not compile: {0}")]
    Compile(String),
}

/// How a component was obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Provenance {
    /// Loaded from a cached artefact.
    Cache,
    /// Compiled now (and cached for next time).
    Compiled,
}

/// A compiled component with its identity.
pub struct Compiled {
    /// The component.
    pub component: Component,
    /// The sha256 of the `.wasm` file, hex.
    pub sha256: String,
    /// Cache hit or fresh compile.
    pub provenance: Provenance,
    /// How long getting it took.
    pub elapsed: Duration,
}

/// The on-disk cache.
#[derive(Clone)]
pub struct ComponentCache {
    dir: PathBuf,
    engine: Engine,
    engine_hash: String,
    compiles: Arc<CompileQueue>,
}

impl ComponentCache {
    /// A cache in `dir` (created if missing) for `engine`.
    pub fn new(engine: &Engine, dir: &Path) -> std::io::Result<ComponentCache> {
        std::fs::create_dir_all(dir)?;
        let mut h = std::collections::hash_map::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut h);
        Ok(ComponentCache {
            dir: dir.to_path_buf(),
            engine: engine.clone(),
            engine_hash: format!("{:016x}", h.finish()),
            compiles: Arc::default(),
        })
    }

    /// Loads the component in `wasm_path`, from the cache when possible. Blocking: call it
    /// from a blocking thread.
    pub fn load(&self, wasm_path: &Path) -> Result<Compiled, LoadError> {
        let start = Instant::now();
        let (bytes, sha256) = read_component(wasm_path)?;
        let artefact = self
            .dir
            .join(format!("{sha256}-{}.cwasm", self.engine_hash));
        if artefact.exists() {
            // SAFETY: the artefact was written by this host's own compiler (the cache
            // directory is the host's, and its name carries the engine's compatibility hash),
            // so it is a trusted wasmtime artefact for this engine.
            match unsafe { Component::deserialize_file(&self.engine, &artefact) } {
                Ok(component) => {
                    return Ok(Compiled {
                        component,
                        sha256,
                        provenance: Provenance::Cache,
                        elapsed: start.elapsed(),
                    });
                }
                Err(e) => tracing::warn!(
                    artefact = %artefact.display(),
                    error = %e,
                    "cached component is unusable; recompiling"
                ),
            }
        }
        let component = self
            .compiles
            .run(bytes.len() as u64, || compile(&self.engine, &bytes))?;
        if let Err(e) = self.store(&artefact, &component) {
            tracing::warn!(artefact = %artefact.display(), error = %e, "could not cache the compiled component");
        }
        Ok(Compiled {
            component,
            sha256,
            provenance: Provenance::Compiled,
            elapsed: start.elapsed(),
        })
    }

    fn store(&self, artefact: &Path, component: &Component) -> anyhow::Result<()> {
        let bytes = component.serialize()?;
        // Write then rename, so a crash never leaves a truncated artefact under the real name;
        // a name of its own per write, so two writers of one artefact (two hosts sharing a
        // cache directory) never interleave in one file.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = artefact.with_extension(format!("tmp{}-{n}", std::process::id()));
        std::fs::write(&tmp, bytes)?;
        std::fs::rename(&tmp, artefact)?;
        Ok(())
    }
}

/// Compiles a component file without the cache (for `conveyor-host check`).
pub fn compile_uncached(engine: &Engine, wasm_path: &Path) -> Result<Compiled, LoadError> {
    let start = Instant::now();
    let (bytes, sha256) = read_component(wasm_path)?;
    let component = compile(engine, &bytes)?;
    Ok(Compiled {
        component,
        sha256,
        provenance: Provenance::Compiled,
        elapsed: start.elapsed(),
    })
}

pub(crate) fn compile(engine: &Engine, bytes: &[u8]) -> Result<Component, LoadError> {
    Component::new(engine, bytes).map_err(|e| LoadError::Compile(compile_hint(format!("{e:#}"))))
}

/// Adds what to do to wasmtime's compile errors that have a usual cause.
fn compile_hint(message: String) -> String {
    if message.contains("component model async feature") {
        format!(
            "{message}. The component uses the component model's async ABI, which this host \
             does not enable; with jco's QuickJS backend, build with `--backend-qjs-disable-async` \
             (examples/js-driver/build.mjs does)"
        )
    } else {
        message
    }
}

fn read_component(path: &Path) -> Result<(Vec<u8>, String), LoadError> {
    let bytes = std::fs::read(path).map_err(LoadError::Read)?;
    check_header(&bytes)?;
    let sha256 = hex::encode(Sha256::digest(&bytes));
    Ok((bytes, sha256))
}

/// Tells a component from a core module or a non-Wasm file before handing it to the compiler,
/// whose messages for those cases are less direct.
pub fn check_header(bytes: &[u8]) -> Result<(), LoadError> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        return Err(LoadError::NotWasm);
    }
    // Bytes 4..8: version and layer. Core modules are `01 00 00 00`; components have layer 1.
    if bytes[6..8] == [0, 0] {
        return Err(LoadError::CoreModule);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_checks() {
        assert!(matches!(
            check_header(b"hello world"),
            Err(LoadError::NotWasm)
        ));
        assert!(matches!(
            check_header(b"\0asm\x01\0\0\0"),
            Err(LoadError::CoreModule)
        ));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
    }
}
