//! Start-up of a multi-node instance (`BackendConfig.multiNodesInferEnabled`, SPEC-PD §5):
//! the ranktable decides whether this process is the master (the holder of rank 0: it serves
//! every plane and `MasterService` on `<its ip>:multiNodesInferPort`) or a slave (it serves
//! only its management plane and joins the master). The interNode plane's TLS files are
//! permission-checked and loaded like every other plane's. The layer assignment is made here
//! from the model's `config.json` ([`split`]), before any weight is read.

use super::StartError;
use crate::backend::cpu::{layer_weight_bytes, CpuBackend, HfModelConfig, LayerShare};
use crate::backend::{Backend, BackendKind};
use crate::config::{Env, Loaded, Plane};
use crate::engine::EngineHandle;
use crate::http::server;
use crate::multinode::monitor::LocalShare;
use crate::multinode::ranktable::{self, Placement};
use crate::multinode::slaves::{ModelFacts, SlaveSet, SlaveSpec};
use crate::multinode::{pipeline::PipelineBackend, service, slave, split};
use crate::security::perms::PermChecker;
use crate::security::reload::{LiveServer, Reloader};
use std::net::SocketAddr;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Env var: seconds the master waits for a slave's answer to one step (default 60).
pub const STEP_TIMEOUT_ENV: &str = "MINDIE_MULTINODE_STEP_TIMEOUT";
const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// What this process is in the ranktable.
pub enum NodeRole {
    /// `multiNodesInferEnabled` is false.
    Single,
    Master(MasterPrep),
    Slave(slave::SlaveSettings),
}

/// A master ready to serve `MasterService` and load its share.
pub struct MasterPrep {
    listener: TcpListener,
    tls: Option<LiveServer>,
    pub set: Arc<SlaveSet>,
    pub local_layers: Range<usize>,
    pub addr: SocketAddr,
    pub num_layers: usize,
    pub world_size: usize,
}

fn err(e: impl std::fmt::Display) -> StartError {
    StartError::Setting(format!("multi-node: {e}"))
}

fn step_timeout(env: &Env) -> Result<Duration, StartError> {
    match env
        .get(STEP_TIMEOUT_ENV)
        .map(str::trim)
        .filter(|v| !v.is_empty())
    {
        None => Ok(DEFAULT_STEP_TIMEOUT),
        Some(v) => match v.parse::<f64>() {
            Ok(s) if s.is_finite() && (0.1..=3600.0).contains(&s) => Ok(Duration::from_secs_f64(s)),
            _ => Err(err(format!(
                "{STEP_TIMEOUT_ENV} = {v:?}: must be seconds in [0.1, 3600]"
            ))),
        },
    }
}

/// The layer ranges of every node, master first ([`split::LAYERS_ENV`] or balanced by bytes).
fn plan(spec: &HfModelConfig, nodes: usize, env: &Env) -> Result<Vec<Range<usize>>, StartError> {
    if let Some(v) = env.get(split::LAYERS_ENV).filter(|v| !v.trim().is_empty()) {
        return split::from_counts(v, spec.layers, nodes).map_err(err);
    }
    // Every tensor has the checkpoint's one dtype, so f32 sizes give the same proportions.
    let (layer, ends) = layer_weight_bytes(spec, crate::backend::DType::F32);
    split::balanced(spec.layers, nodes, layer, ends).map_err(err)
}

/// Reads the ranktable and prepares this node's part (`Single` when multi-node is off).
pub async fn prepare(
    loaded: &Loaded,
    env: &Env,
    checker: &mut PermChecker,
    reloader: &Reloader,
) -> Result<NodeRole, StartError> {
    let c = &loaded.config;
    let b = &c.backend_config;
    if !b.multi_nodes_infer_enabled {
        if let Some(w) = ranktable::warn_if_unused(env) {
            tracing::warn!("{w}");
        }
        return Ok(NodeRole::Single);
    }
    if c.server_config.infer_mode == "dmi" {
        return Err(err("inferMode \"dmi\" with multiNodesInferEnabled is not supported by this daemon yet; run PD instances on single nodes"));
    }
    let model = c.model().ok_or_else(|| err("ModelConfig is empty"))?;
    if BackendKind::of(model) != BackendKind::Cpu {
        return Err(err(format!(
            "the pipeline split runs on the CPU backend only (ModelConfig.backendType \"cpu\", modelInstanceType \"Standard\"); this model is {:?}",
            BackendKind::of(model)
        )));
    }
    let placement: Placement = ranktable::from_env(env, checker).map_err(err)?;
    tracing::info!(
        world_size = placement.world_size(),
        devices = ?placement.local_device_ids(),
        "multi-node: worldSize and this node's npuDeviceIds come from the ranktable (the CPU \
         backend runs one pipeline stage per node)"
    );
    let port = b.multi_nodes_infer_port;
    let master = SocketAddr::new(placement.master_addr(), port);
    let tls_files = c.tls_files(Plane::InterNode, &loaded.home);
    if tls_files.is_none() {
        tracing::warn!("BackendConfig.interNodeTLSEnabled is false: the master/slave link carries model activations in PLAIN gRPC without authentication; anyone who reaches {master} can join or read it. Use only on an isolated network");
    }
    let tls_err = |source| StartError::Tls {
        plane: "interNode".into(),
        source,
    };
    let dir = crate::config::paths::resolve(&loaded.home, &model.model_weight_path);
    let spec =
        HfModelConfig::load(&dir).map_err(|e| err(format!("model {}: {e}", dir.display())))?;
    let nodes = placement.table.servers.len();
    if !placement.is_master() {
        let client = match &tls_files {
            Some(f) => Some(
                reloader
                    .client("interNode", f.clone(), checker)
                    .map_err(tls_err)?,
            ),
            None => None,
        };
        tracing::info!(%master, local = %placement.local_addr(), "multi-node: this node is a slave");
        return Ok(NodeRole::Slave(slave::SlaveSettings {
            local_ip: placement.local_addr(),
            master,
            tls: client,
            model_dir: dir,
            model_name: model.model_name.clone(),
            options: super::engine::cpu_options(c, model, env),
            join_window: slave::join_window(env).map_err(err)?,
        }));
    }
    let server_tls = match &tls_files {
        Some(f) => Some(
            reloader
                .server("interNode", f.clone(), checker)
                .map_err(tls_err)?,
        ),
        None => None,
    };
    let ranges = plan(&spec, nodes, env)?;
    // One step's activations travel in one message: the largest step (a full prefill plus a
    // decode token for every other sequence of the batch) must fit.
    let sched = &c.backend_config.schedule_config;
    let max_tokens = sched.max_prefill_tokens as usize + sched.max_batch_size as usize;
    let step_bytes = max_tokens.saturating_mul(spec.hidden).saturating_mul(4);
    if step_bytes > service::MAX_MESSAGE_BYTES - (1 << 20) {
        return Err(err(format!(
            "ScheduleConfig.maxPrefillTokens + maxBatchSize = {max_tokens}: a step of that many tokens carries {} MiB of hidden states (hidden size {}) between nodes, over the {} MiB message limit; keep the sum at most {}",
            step_bytes >> 20,
            spec.hidden,
            service::MAX_MESSAGE_BYTES >> 20,
            (service::MAX_MESSAGE_BYTES - (1 << 20)) / (spec.hidden * 4)
        )));
    }
    let slaves = placement
        .slaves()
        .into_iter()
        .enumerate()
        .map(|(i, idx)| SlaveSpec {
            addr: placement.table.servers[idx].addr(),
            stage: i + 1,
            layers: ranges[i + 1].clone(),
        })
        .collect();
    let facts = ModelFacts {
        model_name: model.model_name.clone(),
        num_layers: spec.layers,
        hidden: spec.hidden,
        dtype: spec.torch_dtype.clone().unwrap_or_default(),
        block_size: c.backend_config.schedule_config.cache_block_size as usize,
    };
    let set = Arc::new(SlaveSet::new(slaves, facts, step_timeout(env)?));
    let listener = server::bind("interNode", master).await?;
    tracing::info!(%master, layers = ?ranges, "multi-node: this node is the master; layer assignment (master first)");
    Ok(NodeRole::Master(MasterPrep {
        listener,
        tls: server_tls,
        set,
        local_layers: ranges[0].clone(),
        addr: master,
        num_layers: spec.layers,
        world_size: placement.world_size(),
    }))
}

/// A master once `MasterService` serves.
pub struct MasterNode {
    pub set: Arc<SlaveSet>,
    pub layers: Range<usize>,
    pub addr: SocketAddr,
    pub num_layers: usize,
    pub world_size: usize,
}

impl MasterPrep {
    /// Serves `MasterService` (until the process ends: the slaves are finalised over it after
    /// the drain) and checks the slaves' heartbeats every second.
    pub fn serve(self) -> MasterNode {
        let routes = service::routes(self.set.clone());
        let scheme = if self.tls.is_some() {
            "grpcs"
        } else {
            "grpc (plain)"
        };
        tracing::info!(plane = "interNode", "listening on {scheme}://{}", self.addr);
        let forever = CancellationToken::new();
        tokio::spawn(async move {
            if let Err(e) =
                crate::cluster::transport::serve_live(self.listener, self.tls, routes, forever)
                    .await
            {
                tracing::error!("multi-node: MasterService stopped: {e}");
            }
        });
        let set = self.set.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                set.check_heartbeats();
            }
        });
        MasterNode {
            set: self.set,
            layers: self.local_layers,
            addr: self.addr,
            num_layers: self.num_layers,
            world_size: self.world_size,
        }
    }
}

/// Loads the master's share, waits for every slave to be ready, and starts the engine on the
/// pipeline. Blocks start-up until the whole ranktable has joined (as MindIE does).
pub async fn start_master_engine(
    loaded: &Loaded,
    source: super::engine::ModelSource,
    env: &Env,
    set: Arc<SlaveSet>,
    layers: Range<usize>,
) -> Result<(EngineHandle, crate::tokenizer::Tokenizer, LocalShare), StartError> {
    let config = loaded.config.clone();
    let model = config
        .model()
        .ok_or_else(|| err("ModelConfig is empty"))?
        .clone();
    let mut options = super::engine::cpu_options(&config, &model, env);
    options.share = Some(LayerShare {
        layers: layers.clone(),
        ends: true,
    });
    let dir = source.dir.clone();
    let local = tokio::task::spawn_blocking(move || {
        let tok = crate::tokenizer::Tokenizer::load(&dir)
            .map_err(|e| StartError::Model(e.to_string()))?;
        let backend = CpuBackend::load(&dir, options)
            .map_err(|e| StartError::Model(format!("model {}: {e}", dir.display())))?;
        Ok::<_, StartError>((tok, backend))
    })
    .await
    .map_err(|e| StartError::Model(e.to_string()))??;
    let (tok, backend) = local;
    tracing::info!(
        slaves = set.len(),
        "multi-node: master's layers loaded; waiting for every slave of the ranktable to register and load"
    );
    set.wait_all_ready(Duration::from_secs(10)).await;
    let local_blocks = backend.info().num_blocks;
    let num_blocks = set
        .min_kv_blocks()
        .map_or(local_blocks, |m| local_blocks.min(m as usize));
    let share = LocalShare {
        addr: String::new(),
        layers,
        weight_bytes: backend.info().weight_bytes,
        kv_blocks: num_blocks,
    };
    let pipeline = PipelineBackend::new(backend, set, num_blocks);
    let handle = super::engine::spawn_engine(&config, BackendKind::Cpu, Box::new(pipeline))?;
    Ok((handle, tok, share))
}
