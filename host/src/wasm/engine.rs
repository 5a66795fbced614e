//! The one wasmtime `Engine` of the host: the pooling instance allocator, sized to the
//! configured concurrency, and a single epoch ticker that drives every deadline.

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

/// Starts the engine's single epoch ticker. It stops by itself once the engine is dropped.
pub fn start_epoch_ticker(engine: &Engine) -> std::io::Result<()> {
    let engine = engine.weak();
    std::thread::Builder::new()
        .name("epoch-ticker".into())
        .spawn(move || {
            while let Some(engine) = engine.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .map(drop)
}
