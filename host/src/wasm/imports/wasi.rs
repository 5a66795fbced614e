//! WASI p2 (`wasi:cli`, `wasi:filesystem`, `wasi:clocks`, `wasi:random`, ...): the context of
//! one run, holding only what the driver is granted. Directories and environment variables
//! come from its grants; stdout and stderr go to the run's log; sockets are never granted
//! (outbound HTTP goes through `wasi:http` and its allow-list instead).

use std::path::PathBuf;

use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder};

use super::stdio::LogStream;

/// A host directory granted to a driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirGrant {
    /// The directory on the host.
    pub host: PathBuf,
    /// Where the guest sees it (an absolute path).
    pub guest: String,
    /// Whether the guest may write to it.
    pub writable: bool,
}

/// What a driver's WASI context may hold.
#[derive(Debug, Clone, Default)]
pub struct WasiGrants {
    /// Directories mounted into the guest.
    pub dirs: Vec<DirGrant>,
    /// Environment variables, secrets included.
    pub env: Vec<(String, String)>,
}

/// Builds a run's WASI context: the granted directories and environment, stdout and stderr
/// into the run's log, nothing else. Fails (naming the directory) when a granted directory
/// cannot be opened.
pub fn context(
    grants: &WasiGrants,
    stdout: LogStream,
    stderr: LogStream,
) -> Result<WasiCtx, String> {
    let mut wasi = WasiCtxBuilder::new();
    wasi.stdout(stdout).stderr(stderr);
    if !grants.env.is_empty() {
        wasi.envs(&grants.env);
    }
    for dir in &grants.dirs {
        let perms = if dir.writable {
            FsPerms::ReadWrite
        } else {
            FsPerms::ReadOnly
        };
        wasi.preopened_dir(&dir.host, &dir.guest, perms)
            .map_err(|e| {
                format!(
                    "the granted directory {} could not be opened: {e:#}",
                    dir.host.display()
                )
            })?;
    }
    Ok(wasi.build())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::wasm::imports::log::{Collect, RunLogger};

    fn streams() -> (LogStream, LogStream) {
        let logger = RunLogger::new(Arc::new(Collect::default()), "d", "R", None);
        (
            LogStream::new(logger.clone(), "stdout"),
            LogStream::new(logger, "stderr"),
        )
    }

    #[test]
    fn a_missing_directory_is_named() {
        let grants = WasiGrants {
            dirs: vec![DirGrant {
                host: "/surely/missing/dir".into(),
                guest: "/w".into(),
                writable: false,
            }],
            env: Vec::new(),
        };
        let (out, err) = streams();
        let Err(e) = context(&grants, out, err) else {
            panic!("a missing directory was granted")
        };
        assert!(e.contains("/surely/missing/dir"), "{e}");
    }

    #[test]
    fn nothing_granted_builds() {
        let (out, err) = streams();
        assert!(context(&WasiGrants::default(), out, err).is_ok());
    }
}
