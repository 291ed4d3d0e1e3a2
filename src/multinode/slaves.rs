//! The master's book of its slaves (SPEC-PD §5): which node of the ranktable holds which
//! layers, whether it is registered, loading, ready or down, its link (the outbound half of
//! its `RegisterAndCommunicate` stream and the steps waiting for its answers), and when it
//! last spoke. The pipeline backend runs stages through it ([`SlaveSet::run_stage`]); health,
//! the business gate and `/v1/status` read it.
//!
//! A slave is *down* when its stream ends or fails, when it sends nothing for [`STALE_AFTER`]
//! (it reports every [`HEARTBEAT`]), or when a step gets no answer within the step timeout.
//! Going down fails its waiting steps at once. A slave that registers again is sent the model
//! init again; each init bumps the KV epoch, which makes the engine forget KV made before.

use super::proto::mindie_rs::pipeline::v1 as pl;
use super::proto::model_execute_data as med;
use prost::bytes::Bytes;
use serde::Serialize;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, RecvTimeoutError, SyncSender};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::UnboundedSender;
use tokio::sync::Notify;
use tonic::Status;

/// How often a slave reports (its `npu_util_report`).
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Silence after which the master counts a slave as down (MindIE: 7 s).
pub const STALE_AFTER: Duration = Duration::from_secs(7);

/// The outbound half of a slave's stream.
pub type Outbound = UnboundedSender<Result<med::MasterToSlaveMsg, Status>>;

/// A slave of the ranktable and its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaveSpec {
    pub addr: IpAddr,
    /// 1 = the first stage after the master.
    pub stage: usize,
    pub layers: Range<usize>,
}

/// What every slave's init shares: the model as the master sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFacts {
    pub model_name: String,
    pub num_layers: usize,
    pub hidden: usize,
    pub dtype: String,
    pub block_size: usize,
}

/// Where a slave stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "state", content = "reason")]
pub enum Phase {
    /// Never registered.
    Waiting,
    /// Registered; loading its layers.
    Loading,
    Ready,
    Down(String),
}

/// A slave as `/v1/status` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct SlaveView {
    pub addr: String,
    pub stage: usize,
    pub layers: [usize; 2],
    #[serde(flatten)]
    pub phase: Phase,
    pub weight_bytes: u64,
    pub kv_blocks: u64,
    pub rss_bytes: u64,
    pub device: String,
    pub registrations: u64,
}

type StepWaiter = SyncSender<Result<Bytes, String>>;

struct Link {
    id: u64,
    tx: Outbound,
    steps: HashMap<u64, StepWaiter>,
}

struct SlotState {
    phase: Phase,
    link: Option<Link>,
    ready: Option<pl::StageReady>,
    last_seen: Instant,
    registrations: u64,
}

struct Slot {
    spec: SlaveSpec,
    st: Mutex<SlotState>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, SlotState> {
        // Every mutation under this lock is a few assignments; a poisoned lock's data is whole.
        self.st.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// See the module docs.
pub struct SlaveSet {
    slots: Vec<Slot>,
    facts: ModelFacts,
    num_stages: usize,
    step_timeout: Duration,
    epoch: AtomicU64,
    next_id: AtomicU64,
    changed: Notify,
    traffic: Traffic,
}

/// What the stages moved: steps sent to slaves and activation bytes each way (the encoded
/// hidden states, without gRPC and TLS framing).
#[derive(Debug, Default)]
struct Traffic {
    stages: AtomicU64,
    sent: AtomicU64,
    received: AtomicU64,
}

/// [`SlaveSet::traffic`]'s numbers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct TrafficView {
    /// Stage runs (one per slave per engine step).
    pub stages: u64,
    pub bytes_sent: u64,
    pub bytes_received: u64,
}

fn envelope(target: usize, req: med::ExecuteRequest) -> med::MasterToSlaveMsg {
    med::MasterToSlaveMsg {
        source_dp_rank: 0,
        target_dp_rank: target as i32,
        execute_request: Some(req),
    }
}

impl SlaveSet {
    pub fn new(slaves: Vec<SlaveSpec>, facts: ModelFacts, step_timeout: Duration) -> Self {
        let num_stages = slaves.len() + 1;
        let slots = slaves
            .into_iter()
            .map(|spec| Slot {
                spec,
                st: Mutex::new(SlotState {
                    phase: Phase::Waiting,
                    link: None,
                    ready: None,
                    last_seen: Instant::now(),
                    registrations: 0,
                }),
            })
            .collect();
        Self {
            slots,
            facts,
            num_stages,
            step_timeout,
            epoch: AtomicU64::new(0),
            next_id: AtomicU64::new(1),
            changed: Notify::new(),
            traffic: Traffic::default(),
        }
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    pub fn step_timeout(&self) -> Duration {
        self.step_timeout
    }

    /// The slot of the slave at `addr`.
    pub fn find(&self, addr: IpAddr) -> Option<usize> {
        self.slots.iter().position(|s| s.spec.addr == addr)
    }

    /// The slaves' addresses, for messages.
    pub fn addrs(&self) -> Vec<String> {
        self.slots.iter().map(|s| s.spec.addr.to_string()).collect()
    }

    /// Counts (re)initialisations of slaves: KV made under an older epoch is gone somewhere.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A slave registered on a new stream (`tx`): any older link is dropped (its steps fail),
    /// and the model init with its share goes out. Returns the link's id.
    pub fn attach(&self, idx: usize, tx: Outbound) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let slot = &self.slots[idx];
        let init = self.init_request(&slot.spec, id);
        let mut st = slot.lock();
        if let Some(old) = st.link.take() {
            fail_steps(old, "the slave registered again");
        }
        let _ = tx.send(Ok(envelope(slot.spec.stage, init)));
        st.link = Some(Link {
            id,
            tx,
            steps: HashMap::new(),
        });
        st.phase = Phase::Loading;
        st.last_seen = Instant::now();
        st.registrations += 1;
        drop(st);
        tracing::info!(slave = %slot.spec.addr, layers = ?slot.spec.layers, "multi-node: slave registered; sending its model init");
        self.changed.notify_waiters();
        id
    }

    fn init_request(&self, spec: &SlaveSpec, link: u64) -> med::ExecuteRequest {
        let f = &self.facts;
        let mut pd_info = HashMap::new();
        pd_info.insert("infer_mode".to_string(), "standard".to_string());
        pd_info.insert("role".to_string(), "standard".to_string());
        pd_info.insert("local_instance_id".to_string(), "0".to_string());
        med::ExecuteRequest {
            execute_type: med::ExecuteType::RemoteModelInit as i32,
            request: Some(med::execute_request::Request::RemoteModelInitRequest(
                med::RemoteModelInitRequest { pd_info },
            )),
            mindie_rs_stage_assignment: Some(pl::StageAssignment {
                first_layer: spec.layers.start as u32,
                end_layer: spec.layers.end as u32,
                num_layers: f.num_layers as u32,
                model_name: f.model_name.clone(),
                block_size: f.block_size as u32,
                stage: spec.stage as u32,
                num_stages: self.num_stages as u32,
                // The link id: the init reply names it, so a stale reply is ignored.
                epoch: link,
                hidden_size: f.hidden as u32,
                dtype: f.dtype.clone(),
            }),
            ..Default::default()
        }
    }

    /// A message from the slave on link `link`.
    pub fn on_message(&self, idx: usize, link: u64, msg: med::SlaveToMasterMsg) {
        use med::slave_to_master_msg::Result as R;
        let slot = &self.slots[idx];
        let mut st = slot.lock();
        if st.link.as_ref().map(|l| l.id) != Some(link) {
            return;
        }
        st.last_seen = Instant::now();
        let Some(R::ExecuteResponse(resp)) = msg.result else {
            return;
        };
        if resp.msg_type == med::ExecuteType::RemoteModelInit as i32 {
            let ready = resp.mindie_rs_stage_ready.unwrap_or_default();
            if ready.epoch != link {
                return;
            }
            if resp.status != 0 || !ready.error.is_empty() {
                let why = format!("its model init failed: {}", ready.error);
                tracing::error!(slave = %slot.spec.addr, "multi-node: {why}");
                st.phase = Phase::Down(why);
            } else if (ready.first_layer as usize, ready.end_layer as usize)
                != (slot.spec.layers.start, slot.spec.layers.end)
            {
                let why = format!(
                    "it loaded layers {}..{} instead of {:?}",
                    ready.first_layer, ready.end_layer, slot.spec.layers
                );
                tracing::error!(slave = %slot.spec.addr, "multi-node: {why}");
                st.phase = Phase::Down(why);
            } else {
                tracing::info!(
                    slave = %slot.spec.addr, kv_blocks = ready.kv_blocks,
                    weight_mib = ready.weight_bytes >> 20, "multi-node: slave ready"
                );
                st.phase = Phase::Ready;
                st.ready = Some(ready);
                self.epoch.fetch_add(1, Ordering::AcqRel);
            }
            drop(st);
            self.changed.notify_waiters();
            return;
        }
        if resp.msg_type == med::ExecuteType::ModelInfer as i32 {
            let Some(result) = resp.mindie_rs_stage_result else {
                return;
            };
            let Some(waiter) = st.link.as_mut().and_then(|l| l.steps.remove(&result.step)) else {
                return;
            };
            let answer = if resp.status == 0 {
                Ok(result.hidden)
            } else {
                let why = match resp.result {
                    Some(med::execute_response::Result::ExecuteModelResponse(m)) => {
                        m.err_msg.unwrap_or_default()
                    }
                    _ => String::new(),
                };
                Err(format!("slave {} failed the step: {why}", slot.spec.addr))
            };
            let _ = waiter.try_send(answer);
        }
    }

    /// The stream of link `link` ended (`why`): the slave is down until it registers again.
    pub fn detach(&self, idx: usize, link: u64, why: &str) {
        let slot = &self.slots[idx];
        let mut st = slot.lock();
        if st.link.as_ref().map(|l| l.id) != Some(link) {
            return;
        }
        if let Some(old) = st.link.take() {
            fail_steps(old, why);
        }
        st.phase = Phase::Down(why.to_string());
        drop(st);
        tracing::error!(slave = %slot.spec.addr, "multi-node: slave down: {why}");
        self.changed.notify_waiters();
    }

    /// Marks silent slaves down (run every second or so).
    pub fn check_heartbeats(&self) {
        for (idx, slot) in self.slots.iter().enumerate() {
            let (link, silent) = {
                let st = slot.lock();
                (st.link.as_ref().map(|l| l.id), st.last_seen.elapsed())
            };
            if let (Some(link), true) = (link, silent >= STALE_AFTER) {
                let why = format!(
                    "no message for {:.1} s (heartbeat every {} s)",
                    silent.as_secs_f64(),
                    HEARTBEAT.as_secs()
                );
                self.detach(idx, link, &why);
            }
        }
    }

    /// `Ok` when every slave is ready, else why not (the first one that is not).
    pub fn all_ready(&self) -> Result<(), String> {
        for slot in &self.slots {
            let st = slot.lock();
            let why = match &st.phase {
                Phase::Ready => continue,
                Phase::Waiting => "has not registered".to_string(),
                Phase::Loading => "is loading its layers".to_string(),
                Phase::Down(why) => format!("is down: {why}"),
            };
            return Err(format!("multi-node slave {} {why}", slot.spec.addr));
        }
        Ok(())
    }

    /// Waits until every slave is ready, logging who is missing every `log_every`.
    pub async fn wait_all_ready(&self, log_every: Duration) {
        loop {
            let changed = self.changed.notified();
            let Err(why) = self.all_ready() else {
                return;
            };
            if tokio::time::timeout(log_every, changed).await.is_err() {
                tracing::info!("waiting for the ranktable's slaves: {why}");
            }
        }
    }

    /// The fewest KV blocks any ready slave has.
    pub fn min_kv_blocks(&self) -> Option<u64> {
        self.slots
            .iter()
            .filter_map(|s| s.lock().ready.as_ref().map(|r| r.kv_blocks))
            .min()
    }

    /// Sends `req` (a MODEL_INFER for `step`) to slave `idx` and waits for its hidden states,
    /// `want` f32 values, at most the step timeout. A silent slave is marked down.
    pub fn run_stage(
        &self,
        idx: usize,
        step: u64,
        req: med::ExecuteRequest,
        want: usize,
    ) -> Result<Vec<f32>, String> {
        let slot = &self.slots[idx];
        let (tx, rx) = sync_channel(1);
        let link = {
            let mut st = slot.lock();
            if st.phase != Phase::Ready {
                drop(st);
                return Err(self.all_ready().err().unwrap_or_default());
            }
            let Some(link) = st.link.as_mut() else {
                return Err(format!("multi-node slave {} has no link", slot.spec.addr));
            };
            link.steps.insert(step, tx);
            if let Some(st) = &req.mindie_rs_stage_step {
                self.traffic.stages.fetch_add(1, Ordering::Relaxed);
                self.traffic
                    .sent
                    .fetch_add(st.hidden.len() as u64, Ordering::Relaxed);
            }
            if link.tx.send(Ok(envelope(slot.spec.stage, req))).is_err() {
                link.steps.remove(&step);
                return Err(format!(
                    "multi-node slave {}: its stream is closed",
                    slot.spec.addr
                ));
            }
            link.id
        };
        match rx.recv_timeout(self.step_timeout) {
            Ok(Ok(bytes)) => {
                self.traffic
                    .received
                    .fetch_add(bytes.len() as u64, Ordering::Relaxed);
                super::wire::bytes_f32(&bytes, want).map_err(|e| e.to_string())
            }
            Ok(Err(why)) => Err(why),
            Err(RecvTimeoutError::Timeout) => {
                let why = format!(
                    "step {step} got no answer within {:.1} s",
                    self.step_timeout.as_secs_f64()
                );
                self.detach(idx, link, &why);
                Err(format!("multi-node slave {} {why}", slot.spec.addr))
            }
            Err(RecvTimeoutError::Disconnected) => Err(format!(
                "multi-node slave {}: link lost during step {step}",
                slot.spec.addr
            )),
        }
    }

    /// Tells every linked slave to stop (MODEL_FINALIZE), e.g. when the master stops.
    pub fn finalize_all(&self) {
        for slot in &self.slots {
            let st = slot.lock();
            if let Some(link) = &st.link {
                let req = med::ExecuteRequest {
                    execute_type: med::ExecuteType::ModelFinalize as i32,
                    ..Default::default()
                };
                let _ = link.tx.send(Ok(envelope(slot.spec.stage, req)));
            }
        }
    }

    /// Activation traffic since start.
    pub fn traffic(&self) -> TrafficView {
        let t = &self.traffic;
        TrafficView {
            stages: t.stages.load(Ordering::Relaxed),
            bytes_sent: t.sent.load(Ordering::Relaxed),
            bytes_received: t.received.load(Ordering::Relaxed),
        }
    }

    /// The slaves as `/v1/status` shows them.
    pub fn views(&self) -> Vec<SlaveView> {
        self.slots
            .iter()
            .map(|s| {
                let st = s.lock();
                let r = st.ready.clone().unwrap_or_default();
                SlaveView {
                    addr: s.spec.addr.to_string(),
                    stage: s.spec.stage,
                    layers: [s.spec.layers.start, s.spec.layers.end],
                    phase: st.phase.clone(),
                    weight_bytes: r.weight_bytes,
                    kv_blocks: r.kv_blocks,
                    rss_bytes: r.rss_bytes,
                    device: r.device,
                    registrations: st.registrations,
                }
            })
            .collect()
    }
}

fn fail_steps(link: Link, why: &str) {
    for (_, waiter) in link.steps {
        let _ = waiter.try_send(Err(format!("multi-node slave link lost: {why}")));
    }
}

#[cfg(test)]
#[path = "slaves_tests.rs"]
mod tests;
