//! Continuous batching over paged KV blocks (DESIGN §4): the waiting queue, the batch policy of
//! MindIE's `ScheduleConfig`, the sequence state machine, the block manager and the prefix
//! cache. The scheduler knows nothing of the backend: it hands the engine a [`Plan`] per step
//! (new tokens, positions, block tables, which rows need logits), and the engine reports the
//! sampled tokens back with [`Scheduler::complete`].
//!
//! - [`limits`]: [`SchedulerLimits`], the knobs in the scheduler's units.
//! - [`blocks`]: the block pool; [`BlockTable`] is an RAII lease on a sequence's blocks.
//! - [`prefix`]: the automatic prefix cache of full blocks (hash chain, LRU, hit counters).
//! - [`sequence`]: requests, sequence state, finish reasons, events.
//! - [`policy`]: waiting order, preemption victims, the `supportSelectBatch` rule.
//! - [`plan`]: what one step runs.
//! - [`handoff`]: KV kept under leases after a sequence ends, and sequences adopted with KV
//!   prefilled elsewhere (PD disaggregation).
//! - `sched` / `step` / `invariants`: the [`Scheduler`] itself, batch building, self-checks.

pub mod blocks;
pub mod handoff;
mod invariants;
pub mod limits;
pub mod plan;
pub mod policy;
pub mod prefix;
mod sched;
pub mod sequence;
mod step;

#[cfg(test)]
mod tests;

pub use blocks::{BlockId, BlockManager, BlockStats, BlockTable, OutOfBlocks};
pub use handoff::{AdoptError, Lease};
pub use limits::{LimitsError, PolicyType, SchedulerLimits, Template};
pub use plan::{Plan, PlannedSeq, StepKind};
pub use prefix::PrefixStats;
pub use sched::{Scheduler, SchedulerStats};
pub use sequence::{
    AbortReason, AddError, FinishReason, SeqEvent, SeqId, SeqInfo, SeqRequest, SeqStatus,
};
