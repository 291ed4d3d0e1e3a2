//! A slave node (SPEC-PD §5): it dials the master's `MasterService` on
//! `<master ip>:multiNodesInferPort` (mutual TLS per `interNodeTLSEnabled`), registers with
//! its IP, loads the layers the master's init names (its KV cache for those layers only),
//! then runs each MODEL_INFER step on the hidden states it is sent and answers with its
//! layers' output. It reports every [`HEARTBEAT`]. MODEL_FINALIZE stops it.
//!
//! Dialling is retried every second for [`join_window`] (MindIE: 1 s × 120); when the stream
//! is lost the slave dials again for another window, keeping its loaded layers (the master
//! re-sends the init and starts a new KV epoch). A master unreachable for a whole window
//! ends the slave with an error.

use super::proto::mindie_rs::pipeline::v1 as pl;
use super::proto::model_execute_data as med;
use super::proto::model_execute_data::master_service_client::MasterServiceClient;
use super::service::MAX_MESSAGE_BYTES;
use super::slaves::HEARTBEAT;
use super::wire;
use crate::backend::cpu::{CpuBackend, CpuOptions, LayerShare, Stage, StageInput, StageOutput};
use crate::backend::Backend;
use crate::cluster::transport;
use crate::config::Env;
use serde::Serialize;
use std::net::{IpAddr, SocketAddr};
use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};
use tokio::sync::mpsc::{unbounded_channel, UnboundedSender};
use tokio_util::sync::CancellationToken;

/// Env var: seconds a slave keeps dialling an unreachable master (default 120, MindIE's).
pub const JOIN_ENV: &str = "MINDIE_MULTINODE_JOIN_SECONDS";
const DIAL_TIMEOUT: Duration = Duration::from_secs(5);
const RETRY: Duration = Duration::from_secs(1);

/// How long a slave dials before giving up ([`JOIN_ENV`]).
pub fn join_window(env: &Env) -> Result<Duration, String> {
    match env.get(JOIN_ENV).map(str::trim).filter(|v| !v.is_empty()) {
        None => Ok(Duration::from_secs(120)),
        Some(v) => match v.parse::<u64>() {
            Ok(s) if (1..=86_400).contains(&s) => Ok(Duration::from_secs(s)),
            _ => Err(format!(
                "{JOIN_ENV} = {v:?}: must be whole seconds in [1, 86400]"
            )),
        },
    }
}

/// What a slave needs to run.
pub struct SlaveSettings {
    pub local_ip: IpAddr,
    pub master: SocketAddr,
    /// The interNode client TLS; each (re)join dials with its current material (SIGHUP reload).
    pub tls: Option<crate::security::reload::LiveClient>,
    pub model_dir: PathBuf,
    pub model_name: String,
    /// KV budget, block size and knobs; the share comes from the master.
    pub options: CpuOptions,
    pub join_window: Duration,
}

/// The slave as its management plane shows it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SlaveState {
    pub joined: bool,
    pub master: String,
    pub layers: Option<[usize; 2]>,
    pub weight_bytes: u64,
    pub kv_blocks: u64,
    pub device: String,
    pub steps: u64,
    pub last_error: Option<String>,
}

/// Shared view of a running slave.
pub type SlaveStatus = Arc<Mutex<SlaveState>>;

fn edit(status: &SlaveStatus, f: impl FnOnce(&mut SlaveState)) {
    f(&mut status.lock().unwrap_or_else(PoisonError::into_inner));
}

/// How a session with the master ended.
enum Ended {
    /// MODEL_FINALIZE: stop.
    Finalized,
    /// The local stop token fired.
    Stopped,
    /// Never got a stream (dial, TLS or registration refused).
    NotJoined(String),
    /// The stream ended after joining.
    Lost(String),
}

/// The loaded share, kept across sessions.
struct Loaded {
    layers: Range<usize>,
    backend: Arc<Mutex<CpuBackend>>,
    hidden: usize,
}

/// Runs the slave until finalised or stopped (`Ok`), or until the master stays unreachable
/// for a whole join window (`Err`). `on_join` runs once, when it first joined and loaded.
pub async fn run(
    s: SlaveSettings,
    status: SlaveStatus,
    stop: CancellationToken,
    on_join: impl FnOnce() + Send,
) -> Result<(), String> {
    let mut loaded: Option<Loaded> = None;
    let mut on_join = Some(on_join);
    let mut window_start = Instant::now();
    let mut attempts = 0u64;
    edit(&status, |st| st.master = s.master.to_string());
    loop {
        let ended = session(&s, &mut loaded, &status, &stop, &mut on_join).await;
        match ended {
            Ended::Finalized => {
                tracing::info!("multi-node: the master finalised this slave; stopping");
                return Ok(());
            }
            Ended::Stopped => return Ok(()),
            Ended::Lost(why) => {
                tracing::error!(master = %s.master, "multi-node: link to the master lost: {why}; dialling again");
                edit(&status, |st| {
                    st.joined = false;
                    st.last_error = Some(why);
                });
                window_start = Instant::now();
                attempts = 0;
            }
            Ended::NotJoined(why) => {
                attempts += 1;
                if attempts == 1 || attempts.is_multiple_of(10) {
                    tracing::warn!(master = %s.master, attempts, "multi-node: cannot join the master yet: {why}");
                }
                edit(&status, |st| st.last_error = Some(why.clone()));
                if window_start.elapsed() >= s.join_window {
                    return Err(format!(
                        "multi-node: the master {} stayed unreachable for {} s ({JOIN_ENV}): {why}",
                        s.master,
                        s.join_window.as_secs()
                    ));
                }
            }
        }
        tokio::select! {
            () = stop.cancelled() => return Ok(()),
            () = tokio::time::sleep(RETRY) => {}
        }
    }
}

fn reply(
    tx: &UnboundedSender<med::SlaveToMasterMsg>,
    resp: med::ExecuteResponse,
) -> Result<(), ()> {
    tx.send(med::SlaveToMasterMsg {
        result: Some(med::slave_to_master_msg::Result::ExecuteResponse(resp)),
        ..Default::default()
    })
    .map_err(|_| ())
}

async fn session(
    s: &SlaveSettings,
    loaded: &mut Option<Loaded>,
    status: &SlaveStatus,
    stop: &CancellationToken,
    on_join: &mut Option<impl FnOnce() + Send>,
) -> Ended {
    let channel =
        match transport::dial_from_live(s.master, Some(s.local_ip), s.tls.clone(), DIAL_TIMEOUT)
            .await
        {
            Ok(c) => c,
            Err(e) => return Ended::NotJoined(e.to_string()),
        };
    let mut client = MasterServiceClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (tx, mut rx) = unbounded_channel::<med::SlaveToMasterMsg>();
    let _ = tx.send(med::SlaveToMasterMsg {
        result: Some(med::slave_to_master_msg::Result::RegisterRequest(
            med::RegisterRequestMsg {
                slave_ip: s.local_ip.to_string(),
            },
        )),
        ..Default::default()
    });
    let outbound = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let mut inbound = match client.register_and_communicate(outbound).await {
        Ok(r) => r.into_inner(),
        Err(e) => return Ended::NotJoined(format!("{:?}: {}", e.code(), e.message())),
    };
    let beat = tx.clone();
    let heartbeat = tokio::spawn(async move {
        let mut tick = tokio::time::interval(HEARTBEAT);
        loop {
            tick.tick().await;
            let msg = med::SlaveToMasterMsg {
                result: Some(med::slave_to_master_msg::Result::NpuUtilReport(
                    med::NpuUtilizationReport {
                        max_aicore_utilization_percent: 0,
                    },
                )),
                ..Default::default()
            };
            if beat.send(msg).is_err() {
                return;
            }
        }
    });
    let ended = loop {
        let msg = tokio::select! {
            () = stop.cancelled() => break Ended::Stopped,
            m = inbound.message() => m,
        };
        let req = match msg {
            Ok(Some(m)) => match m.execute_request {
                Some(r) => r,
                None => continue,
            },
            Ok(None) => break Ended::Lost("the master closed the stream".into()),
            Err(e) => break Ended::Lost(format!("{:?}: {}", e.code(), e.message())),
        };
        let kind = med::ExecuteType::try_from(req.execute_type).ok();
        let sent = match kind {
            Some(med::ExecuteType::RemoteModelInit) => {
                let resp = init(s, loaded, status, req).await;
                let ok = resp.status == 0;
                let sent = reply(&tx, resp);
                if ok {
                    edit(status, |st| st.joined = true);
                    if let Some(f) = on_join.take() {
                        f();
                    }
                }
                sent
            }
            Some(med::ExecuteType::ModelInfer) => {
                let resp = infer(loaded.as_ref(), req).await;
                edit(status, |st| st.steps += 1);
                reply(&tx, resp)
            }
            Some(med::ExecuteType::ModelFinalize) => break Ended::Finalized,
            other => {
                tracing::warn!(kind = ?other, code = req.execute_type, "multi-node: command not handled by a CPU slave; answering with an error");
                reply(
                    &tx,
                    med::ExecuteResponse {
                        msg_type: req.execute_type,
                        status: 1,
                        ..Default::default()
                    },
                )
            }
        };
        if sent.is_err() {
            break Ended::Lost("the outbound stream closed".into());
        }
    };
    heartbeat.abort();
    ended
}

async fn init(
    s: &SlaveSettings,
    loaded: &mut Option<Loaded>,
    status: &SlaveStatus,
    req: med::ExecuteRequest,
) -> med::ExecuteResponse {
    let fail = |epoch: u64, error: String| {
        tracing::error!("multi-node: model init failed: {error}");
        med::ExecuteResponse {
            msg_type: med::ExecuteType::RemoteModelInit as i32,
            status: 1,
            mindie_rs_stage_ready: Some(pl::StageReady {
                error,
                epoch,
                ..Default::default()
            }),
            ..Default::default()
        }
    };
    let Some(a) = req.mindie_rs_stage_assignment else {
        return fail(0, "REMOTE_MODEL_INIT without the mindie_rs_stage_assignment extension (field 1000); a CPU slave needs to know its layers".into());
    };
    let layers = a.first_layer as usize..a.end_layer as usize;
    if a.model_name != s.model_name {
        return fail(
            a.epoch,
            format!(
                "the master serves model {:?}, this node's ModelConfig.modelName is {:?}",
                a.model_name, s.model_name
            ),
        );
    }
    if a.block_size as usize != s.options.block_size {
        return fail(
            a.epoch,
            format!(
                "the master's cacheBlockSize is {}, this node's {}",
                a.block_size, s.options.block_size
            ),
        );
    }
    if loaded.as_ref().map(|l| &l.layers) != Some(&layers) {
        *loaded = None;
        let mut options = s.options.clone();
        options.share = Some(LayerShare {
            layers: layers.clone(),
            ends: false,
        });
        let dir = s.model_dir.clone();
        tracing::info!(?layers, "multi-node: loading this node's layers");
        let built = tokio::task::spawn_blocking(move || CpuBackend::load(&dir, options)).await;
        let backend = match built {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => return fail(a.epoch, format!("model {}: {e}", s.model_dir.display())),
            Err(e) => return fail(a.epoch, format!("loader thread: {e}")),
        };
        let spec = backend.spec();
        if spec.layers != a.num_layers as usize || spec.hidden != a.hidden_size as usize {
            return fail(
                a.epoch,
                format!(
                    "this node's model has {} layers of hidden size {}; the master's has {} of {}",
                    spec.layers, spec.hidden, a.num_layers, a.hidden_size
                ),
            );
        }
        let dtype = spec.torch_dtype.clone().unwrap_or_default();
        if !a.dtype.is_empty() && !dtype.is_empty() && a.dtype != dtype {
            return fail(
                a.epoch,
                format!("this node's model is {dtype}; the master's is {}", a.dtype),
            );
        }
        let hidden = spec.hidden;
        *loaded = Some(Loaded {
            layers: layers.clone(),
            backend: Arc::new(Mutex::new(backend)),
            hidden,
        });
    }
    let Some(l) = loaded.as_ref() else {
        return fail(a.epoch, "no layers loaded".into());
    };
    let info = l
        .backend
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .info()
        .clone();
    let ready = pl::StageReady {
        first_layer: layers.start as u32,
        end_layer: layers.end as u32,
        weight_bytes: info.weight_bytes,
        kv_blocks: info.num_blocks as u64,
        bytes_per_block: info.bytes_per_block as u64,
        device: info.device.clone(),
        rss_bytes: crate::mgmt::process::rss_bytes(),
        error: String::new(),
        epoch: a.epoch,
    };
    edit(status, |st| {
        st.layers = Some([layers.start, layers.end]);
        st.weight_bytes = info.weight_bytes;
        st.kv_blocks = info.num_blocks as u64;
        st.device = info.device.clone();
    });
    tracing::info!(
        ?layers,
        kv_blocks = info.num_blocks,
        weight_mib = info.weight_bytes >> 20,
        "multi-node: this node's layers are loaded"
    );
    med::ExecuteResponse {
        msg_type: med::ExecuteType::RemoteModelInit as i32,
        status: 0,
        result: Some(med::execute_response::Result::RemoteModelInitResults(
            med::RemoteModelInitResults {
                cpu_block_num: 0,
                max_position_embeddings: info.max_position as i32,
                kv_cache_descs: vec![med::KvCacheDesc {
                    npu_block_num: info.num_blocks as i32,
                    block_size: info.block_size as i32,
                    compression_ratio: 1,
                    cache_type: 0,
                }],
            },
        )),
        mindie_rs_stage_ready: Some(ready),
        ..Default::default()
    }
}

async fn infer(loaded: Option<&Loaded>, req: med::ExecuteRequest) -> med::ExecuteResponse {
    let step = req.mindie_rs_stage_step.as_ref().map_or(0, |s| s.step);
    let fail = |why: String| {
        tracing::error!(step, "multi-node: step failed: {why}");
        med::ExecuteResponse {
            msg_type: med::ExecuteType::ModelInfer as i32,
            status: 1,
            result: Some(med::execute_response::Result::ExecuteModelResponse(
                med::ExecuteModelResponse {
                    err_msg: Some(why),
                    ..Default::default()
                },
            )),
            mindie_rs_stage_result: Some(pl::StageResult {
                step,
                hidden: Default::default(),
            }),
            ..Default::default()
        }
    };
    let Some(l) = loaded else {
        return fail("MODEL_INFER before the model init".into());
    };
    let input = match wire::read_infer(&req, l.hidden) {
        Ok(i) => i,
        Err(e) => return fail(e.to_string()),
    };
    let backend = l.backend.clone();
    let layers = l.layers.clone();
    let started = Instant::now();
    let ran = tokio::task::spawn_blocking(move || {
        let mut b = backend.lock().unwrap_or_else(PoisonError::into_inner);
        b.step_stage(
            &input.batch,
            Stage {
                layers,
                input: StageInput::Hidden(&input.hidden),
                logits: false,
            },
        )
    })
    .await;
    let hidden = match ran {
        Ok(Ok(StageOutput::Hidden(h))) => h,
        Ok(Ok(StageOutput::Logits(_))) => return fail("a middle stage gave logits".into()),
        Ok(Err(e)) => return fail(e.to_string()),
        Err(e) => return fail(format!("step thread: {e}")),
    };
    let secs = started.elapsed().as_secs_f32();
    med::ExecuteResponse {
        msg_type: med::ExecuteType::ModelInfer as i32,
        status: 0,
        result: Some(med::execute_response::Result::ExecuteModelResponse(
            med::ExecuteModelResponse {
                model_forward_time: Some(secs * 1e3),
                model_execute_time: Some(secs * 1e3),
                err_msg: None,
            },
        )),
        mindie_rs_stage_result: Some(pl::StageResult {
            step,
            hidden: wire::f32_bytes(&hidden),
        }),
        ..Default::default()
    }
}
