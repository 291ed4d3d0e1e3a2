//! A failed step ends its requests with an error and frees their blocks; a lost device also
//! turns the engine's health abnormal (ready false, the backend's reason), while a bad-input
//! error leaves the engine ready for the next request.

use super::request::{Finish, GenRequest, TokenEvent};
use super::test_support::{engine_on, mock, status_when_free};
use crate::backend::mock::MockBackend;
use crate::backend::{Backend, BackendError, BackendInfo, BlockId, KvChunk, StepBatch, StepOutput};

/// The mock, failing every step with the error `fail` makes.
struct Failing {
    inner: MockBackend,
    fail: fn() -> BackendError,
}

impl Backend for Failing {
    fn info(&self) -> &BackendInfo {
        self.inner.info()
    }
    fn step(&mut self, _batch: &StepBatch) -> Result<StepOutput, BackendError> {
        Err((self.fail)())
    }
    fn export_blocks(&self, ids: &[BlockId]) -> Result<KvChunk, BackendError> {
        self.inner.export_blocks(ids)
    }
    fn import_blocks(&mut self, ids: &[BlockId], kv: &KvChunk) -> Result<(), BackendError> {
        self.inner.import_blocks(ids, kv)
    }
}

fn engine(fail: fn() -> BackendError) -> super::EngineHandle {
    engine_on(Box::new(Failing {
        inner: mock(32, 8),
        fail,
    }))
}

fn run_one(h: &super::EngineHandle) -> Finish {
    let mut sub = h
        .submit(GenRequest {
            prompt: vec![1, 2, 3],
            max_new_tokens: 4,
            sampling: Default::default(),
            stop_token_ids: Vec::new(),
            ignore_eos: false,
            top_logprobs: None,
            priority: 3,
            json: None,
        })
        .expect("submit");
    loop {
        if let TokenEvent::Finished { finish, .. } = sub.events.blocking_recv().expect("an end") {
            return finish;
        }
    }
}

#[test]
fn a_lost_device_fails_the_step_and_turns_health_abnormal() {
    let h = engine(|| BackendError::DeviceLost("NPU 0 stopped answering".into()));
    let finish = run_one(&h);
    assert!(
        matches!(&finish, Finish::Error(m) if m.contains("device lost")),
        "{finish:?}"
    );
    let st = status_when_free(&h);
    assert!(!st.ready, "{st:?}");
    assert!(
        st.reason.as_deref().is_some_and(|r| r.contains("NPU 0")),
        "{st:?}"
    );
    assert_eq!(st.free_npu_blocks, st.total_npu_blocks, "{st:?}");
    // Later requests still end, with an error, never a hang.
    assert!(matches!(run_one(&h), Finish::Error(_)));
}

#[test]
fn a_bad_step_fails_its_requests_but_the_engine_stays_ready() {
    let h = engine(|| BackendError::InvalidBatch("position out of range".into()));
    assert!(matches!(run_one(&h), Finish::Error(_)));
    let st = status_when_free(&h);
    assert!(st.ready, "{st:?}");
    assert_eq!(st.free_npu_blocks, st.total_npu_blocks, "{st:?}");
}
