//! Continuous batching over paged KV blocks (DESIGN §4): the block manager and prefix cache
//! (the scheduler itself follows).
//!
//! - [`config`]: [`SchedulerConfig`], the knobs in the scheduler's units.
//! - [`blocks`]: the block pool; [`BlockTable`] is an RAII lease on a sequence's blocks.
//! - [`prefix`]: the automatic prefix cache of full blocks (hash chain, LRU, hit counters).

pub mod blocks;
pub mod config;
pub mod prefix;

pub use blocks::{BlockId, BlockManager, BlockStats, BlockTable, OutOfBlocks};
pub use config::{ConfigError, PolicyType, SchedulerConfig, Template};
pub use prefix::PrefixStats;
