//! Test support: small engines on the mock backend (or any backend) with block size 4.

use super::core::Engine;
use super::{EngineHandle, EngineMonitor, EngineStatus};
use crate::backend::mock::{MockBackend, MockOptions};
use crate::backend::Backend;
use crate::scheduler::{Scheduler, SchedulerLimits};
use std::time::Duration;

/// A mock with `vocab` ids (none avoided), `num_blocks` blocks of 4 tokens, no pacing.
pub fn mock(vocab: usize, num_blocks: usize) -> MockBackend {
    MockBackend::new(MockOptions {
        vocab_size: vocab,
        avoid: Vec::new(),
        block_size: 4,
        num_blocks,
        step_time: Duration::ZERO,
        token_time: Duration::ZERO,
        max_position: 256,
        stall_file: None,
        reply: None,
    })
    .expect("mock")
}

/// An engine over `backend` (blocks of 4 tokens, `maxSeqLen` 256, a short queue delay).
pub fn engine_on(backend: Box<dyn Backend>) -> EngineHandle {
    let limits = SchedulerLimits {
        block_size: 4,
        num_blocks: backend.info().num_blocks,
        max_seq_len: 256,
        max_queue_delay: Duration::from_micros(200),
        ..SchedulerLimits::default()
    };
    let sched = Scheduler::new(limits).expect("scheduler");
    Engine::spawn(sched, backend).expect("spawn").0
}

/// The engine's status once every KV block is free, polling for up to 5 s (the engine thread
/// publishes right after it acts, but a loaded machine may not run it at once); the last
/// status seen otherwise, for the caller's assertion to show.
pub fn status_when_free(h: &EngineHandle) -> EngineStatus {
    let mut st = h.status();
    for _ in 0..500 {
        if st.free_npu_blocks == st.total_npu_blocks {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
        st = h.status();
    }
    st
}
