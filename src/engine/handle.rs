//! The async side's handle on the engine thread: submit a request and get its event stream;
//! dropping the stream cancels the request within one engine step. Also the engine's state
//! snapshot for management and metrics.

use super::request::{GenRequest, TokenEvent};
use super::{EngineInfo, EngineMonitor, EngineStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc::UnboundedReceiver;

/// Sequence ids are unique per process.
pub type RequestId = u64;

/// What the async side sends the engine thread.
#[derive(Debug)]
pub enum Command {
    Submit {
        id: RequestId,
        req: GenRequest,
        events: tokio::sync::mpsc::UnboundedSender<TokenEvent>,
    },
    Cancel(RequestId),
}

/// Why a request could not be handed to the engine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    #[error("the engine queue is full; retry later")]
    QueueFull,
    #[error("the engine is not running")]
    Stopped,
}

/// A submitted request: its id and events. Dropping `events` cancels it.
#[derive(Debug)]
pub struct Submission {
    pub id: RequestId,
    pub events: UnboundedReceiver<TokenEvent>,
}

/// Cloneable handle used by every HTTP flavour.
#[derive(Clone)]
pub struct EngineHandle {
    tx: SyncSender<Command>,
    next_id: Arc<AtomicU64>,
    status: Arc<Mutex<EngineStatus>>,
    info: Arc<EngineInfo>,
}

impl EngineHandle {
    pub(crate) fn new(
        tx: SyncSender<Command>,
        status: Arc<Mutex<EngineStatus>>,
        info: EngineInfo,
    ) -> Self {
        Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            status,
            info: Arc::new(info),
        }
    }

    /// Hands a request to the engine without blocking.
    pub fn submit(&self, req: GenRequest) -> Result<Submission, SubmitError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        match self.tx.try_send(Command::Submit {
            id,
            req,
            events: events_tx,
        }) {
            Ok(()) => Ok(Submission { id, events }),
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// Cancels a request by id (e.g. Triton `stopInfer`); unknown ids are ignored.
    pub fn cancel(&self, id: RequestId) {
        let _ = self.tx.try_send(Command::Cancel(id));
    }
}

impl EngineMonitor for EngineHandle {
    fn status(&self) -> EngineStatus {
        self.status.lock().map(|s| s.clone()).unwrap_or_default()
    }

    fn info(&self) -> EngineInfo {
        (*self.info).clone()
    }
}
