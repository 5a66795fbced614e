//! The one wasmtime `Engine` of the host: the pooling instance allocator, sized to the
//! configured concurrency, and a single epoch ticker that drives every deadline.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use wasmtime::{Config, Enabled, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances; deadlines are checked at this granularity.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Engine sizing.
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Component instances alive at once.
    pub pool_instances: u32,
    /// The largest linear memory any driver may have, in bytes.
    pub max_memory: u64,
}

/// Builds the engine. Settings that change compiled code (none here beyond the defaults and
/// epoch interruption) are part of the engine's compatibility hash, which keys the cache.
pub fn build(settings: &EngineSettings) -> wasmtime::Result<Engine> {
    let n = settings.pool_instances;
    let mut pool = PoolingAllocationConfig::default();
    // A Rust component has a handful of core instances (its own, the WASI adapter, shims);
    // Python and JavaScript components have many more, so size per-component limits for them.
    pool.total_component_instances(n)
        .total_core_instances(n * 16)
        .total_memories(n * 2)
        .total_tables(n * 4)
        .total_stacks(n)
        .max_core_instances_per_component(64)
        .max_memories_per_component(8)
        .max_tables_per_component(8)
        .table_elements(100_000)
        .max_memory_size(settings.max_memory as usize)
        // Keeping the first pages of each slot resident turns most of the per-event reset
        // into a memset instead of madvise + page faults (about 2.5x cheaper per event here).
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(2 << 20)
        .async_stack_keep_resident(2 << 20)
        .pagemap_scan(Enabled::Auto);
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Guests whose store can run now (in this process, every engine together): the tickers
/// sleep while there are none, so an idle host wakes no thread a hundred times a second.
static RUNNING: AtomicUsize = AtomicUsize::new(0);
static WAKE_LOCK: Mutex<()> = Mutex::new(());
static WAKE: Condvar = Condvar::new();

/// How long an idle ticker sleeps before it looks again (and notices a dropped engine).
const IDLE_LOOK: Duration = Duration::from_secs(1);

/// Held while a guest's store exists: the epoch ticks for as long as any is held. Every
/// store that runs guest code must hold one, or its deadlines would not advance.
pub(crate) struct Ticking(());

impl Ticking {
    pub(crate) fn start() -> Ticking {
        if RUNNING.fetch_add(1, Ordering::AcqRel) == 0 {
            // Under the lock, so that a ticker between its look and its wait still hears it.
            let _lock = WAKE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
            WAKE.notify_all();
        }
        Ticking(())
    }
}

impl Drop for Ticking {
    fn drop(&mut self) {
        RUNNING.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Starts the engine's single epoch ticker: every [`EPOCH_TICK`] while a guest may run, and
/// asleep otherwise. It stops by itself once the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
                if RUNNING.load(Ordering::Acquire) == 0 {
                    let lock = WAKE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
                    let _ = WAKE.wait_timeout_while(lock, IDLE_LOOK, |()| {
                        RUNNING.load(Ordering::Acquire) == 0
                    });
                }
            }
        })
        .map(drop)
}
