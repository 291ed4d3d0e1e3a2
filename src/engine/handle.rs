//! The async side's handle on the engine thread: submit a request and get its event stream;
//! dropping the stream cancels the request within one engine step. Also the engine's state
//! snapshot for management and metrics.

use super::handoff::{HandoffError, KvExport, ReadyLease, ReadyLeases};
use super::request::{GenRequest, TokenEvent};
use super::{EngineInfo, EngineMonitor, EngineStatus};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::sync::oneshot;

/// Sequence ids are unique per process.
pub type RequestId = u64;

/// What the async side sends the engine thread.
#[derive(Debug)]
pub enum Command {
    Submit {
        id: RequestId,
        req: GenRequest,
        events: UnboundedSender<TokenEvent>,
        /// Keep the KV under a lease of this long after a normal end (PD prefill).
        kv_lease: Option<Duration>,
    },
    Cancel(RequestId),
    /// Copy out the KV of a finished request's lease.
    ExportKv {
        id: RequestId,
        reply: oneshot::Sender<Result<KvExport, HandoffError>>,
    },
    /// The blocks of a finished request's lease, in position order, and the tokens their KV
    /// holds (`None`: no lease).
    LeaseBlocks {
        id: RequestId,
        reply: oneshot::Sender<Option<(Vec<crate::backend::BlockId>, usize)>>,
    },
    /// Return a lease's blocks to the pool (`false`: there was none).
    ReleaseKv {
        id: RequestId,
        reply: oneshot::Sender<bool>,
    },
    /// Start a request whose prompt KV (`kv`) and first token come from another instance.
    SubmitPrefilled {
        id: RequestId,
        req: GenRequest,
        first_token: u32,
        kv: KvExport,
        events: UnboundedSender<TokenEvent>,
        reply: oneshot::Sender<Result<(), HandoffError>>,
    },
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
    /// Leased KV copied out by the engine: pulls read it without waiting for a step.
    ready: ReadyLeases,
}

impl EngineHandle {
    pub(crate) fn new(
        tx: SyncSender<Command>,
        status: Arc<Mutex<EngineStatus>>,
        info: EngineInfo,
        ready: ReadyLeases,
    ) -> Self {
        Self {
            tx,
            next_id: Arc::new(AtomicU64::new(1)),
            status,
            info: Arc::new(info),
            ready,
        }
    }

    /// Hands a request to the engine without blocking.
    pub fn submit(&self, req: GenRequest) -> Result<Submission, SubmitError> {
        self.submit_with(req, None)
    }

    /// Like [`EngineHandle::submit`], and when the request ends normally its KV stays under a
    /// lease of `ttl` for [`EngineHandle::export_kv`] (the prefill side of PD).
    pub fn submit_holding_kv(
        &self,
        req: GenRequest,
        ttl: Duration,
    ) -> Result<Submission, SubmitError> {
        self.submit_with(req, Some(ttl))
    }

    fn submit_with(
        &self,
        req: GenRequest,
        kv_lease: Option<Duration>,
    ) -> Result<Submission, SubmitError> {
        let id = self.next_id();
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        self.send(Command::Submit {
            id,
            req,
            events: events_tx,
            kv_lease,
        })?;
        Ok(Submission { id, events })
    }

    /// A fresh request id, for a request submitted later under it
    /// ([`EngineHandle::submit_prefilled_as`]).
    pub fn reserve_id(&self) -> RequestId {
        self.next_id()
    }

    fn next_id(&self) -> RequestId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    fn send(&self, cmd: Command) -> Result<(), SubmitError> {
        match self.tx.try_send(cmd) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(_)) => Err(SubmitError::QueueFull),
            Err(TrySendError::Disconnected(_)) => Err(SubmitError::Stopped),
        }
    }

    /// The KV of request `id`'s lease (it must have been submitted with
    /// [`EngineHandle::submit_holding_kv`] and have ended normally).
    pub async fn export_kv(&self, id: RequestId) -> Result<KvExport, HandoffError> {
        if let Some(r) = self.ready_lease(id) {
            return Ok(r.export);
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::ExportKv { id, reply })?;
        rx.await
            .map_err(|_| HandoffError::from(SubmitError::Stopped))?
    }

    /// The block ids of request `id`'s lease and the tokens they hold (`None`: no lease).
    pub async fn lease_blocks(
        &self,
        id: RequestId,
    ) -> Result<Option<(Vec<crate::backend::BlockId>, usize)>, HandoffError> {
        if let Some(r) = self.ready_lease(id) {
            return Ok(Some((r.blocks, r.export.kv_tokens)));
        }
        let (reply, rx) = oneshot::channel();
        self.send(Command::LeaseBlocks { id, reply })?;
        rx.await
            .map_err(|_| HandoffError::from(SubmitError::Stopped))
    }

    /// Request `id`'s lease as the engine copied it out, if it has not expired.
    fn ready_lease(&self, id: RequestId) -> Option<ReadyLease> {
        let m = self.ready.lock().ok()?;
        m.get(&id)
            .filter(|r| std::time::Instant::now() < r.expires)
            .cloned()
    }

    fn forget_ready(&self, id: RequestId) {
        if let Ok(mut m) = self.ready.lock() {
            m.remove(&id);
        }
    }

    /// Frees request `id`'s lease; `false` if it held none (released, expired or never made).
    pub async fn release_kv(&self, id: RequestId) -> Result<bool, HandoffError> {
        self.forget_ready(id);
        let (reply, rx) = oneshot::channel();
        self.send(Command::ReleaseKv { id, reply })?;
        rx.await
            .map_err(|_| HandoffError::from(SubmitError::Stopped))
    }

    /// Starts a request prefilled elsewhere: `req.prompt`'s KV and the prefill side's sampler
    /// state are `kv` (another instance's [`EngineHandle::export_kv`]) and `first_token` its
    /// first output token, which the events do not repeat. Sampling continues exactly where the
    /// prefill side stopped, so seeded sampling gives the tokens one instance would. Refused
    /// when the KV does not fit this backend's layout or there is no room now.
    pub async fn submit_prefilled(
        &self,
        req: GenRequest,
        first_token: u32,
        kv: KvExport,
    ) -> Result<Submission, HandoffError> {
        self.submit_prefilled_as(self.next_id(), req, first_token, kv)
            .await
    }

    /// [`EngineHandle::submit_prefilled`] under an id from [`EngineHandle::reserve_id`], so
    /// the caller can name (and cancel) the request before the engine took it.
    pub async fn submit_prefilled_as(
        &self,
        id: RequestId,
        req: GenRequest,
        first_token: u32,
        kv: KvExport,
    ) -> Result<Submission, HandoffError> {
        let (events_tx, events) = tokio::sync::mpsc::unbounded_channel();
        let (reply, rx) = oneshot::channel();
        self.send(Command::SubmitPrefilled {
            id,
            req,
            first_token,
            kv,
            events: events_tx,
            reply,
        })?;
        rx.await
            .map_err(|_| HandoffError::from(SubmitError::Stopped))??;
        Ok(Submission { id, events })
    }

    /// [`EngineHandle::release_kv`] without waiting for the answer (from synchronous code,
    /// e.g. a drop); an unknown lease is ignored.
    pub fn release_kv_detached(&self, id: RequestId) {
        self.forget_ready(id);
        let (reply, _) = oneshot::channel();
        let _ = self.tx.try_send(Command::ReleaseKv { id, reply });
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
