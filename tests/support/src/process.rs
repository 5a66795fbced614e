//! Child processes that must not outlive the test process.

use std::process::Command;

/// Has the child killed (SIGKILL) when the thread that spawns it ends, the test process's
/// exit included (Linux's `PR_SET_PDEATHSIG`): a host or nats-server whose owner never runs
/// its destructor (a test process interrupted, or one that exits while a background scenario
/// still runs) is not left behind. Elsewhere this does nothing.
pub(crate) fn end_with_this_process(command: &mut Command) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only calls prctl, which is
        // async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    command
}

/// Lowers the child's open-file limit (soft and hard) to `n`, as a default `ulimit -n` would
/// have it. Elsewhere than Linux this does nothing.
pub(crate) fn limit_open_files(command: &mut Command, n: u64) -> &mut Command {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: between fork and exec the closure only calls setrlimit, which is
        // async-signal-safe, and allocates nothing.
        unsafe {
            command.pre_exec(move || {
                let limit = libc::rlimit {
                    rlim_cur: n,
                    rlim_max: n,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = n;
    command
}
