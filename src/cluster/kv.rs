//! The PD services and their client calls: MindIE's `DecodeService.DecodeRequestChannel`
//! (P → D hand-off) and `PrefillService.ReleaseKVCacheChannel` (D → P release), and this
//! project's `KvTransfer` (`Hello` = the link's layout check, `PullBlocks` = D pulls a
//! request's KV from P as a stream of ≤ 4 MiB chunks).
//!
//! This module owns the wire side of the KV hand-off: [`KvLayout`] and its comparison,
//! chunking a [`KvExport`] into messages and reassembling and validating them, and mapping
//! [`KvSourceError`]s to gRPC status codes (NOT_FOUND, FAILED_PRECONDITION, INTERNAL). What
//! is exported or released, and what a hand-off starts, belongs to the implementations of
//! [`KvSource`] and [`DecodeHandler`] (the PD layer).

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;
use futures_util::Stream;
use prost::bytes::Bytes;
use tonic::service::Routes;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::proto::kv::kv_transfer_client::KvTransferClient;
use super::proto::kv::kv_transfer_server::{KvTransfer, KvTransferServer};
use super::proto::kv::{KvChunkHeader, KvChunkMsg, KvHello, KvHelloReply, PullBlocksRequest};
use super::proto::pd::decode_service_client::DecodeServiceClient;
use super::proto::pd::decode_service_server::{DecodeService, DecodeServiceServer};
use super::proto::pd::prefill_service_client::PrefillServiceClient;
use super::proto::pd::prefill_service_server::{PrefillService, PrefillServiceServer};
use super::proto::pd::{DecodeParameters, DecodeRequestResponse, RequestId};
use super::transport::{rpc_error, LinkError, PeerInfo, MAX_MESSAGE_BYTES};
use crate::backend::{BackendInfo, KvChunk};
use crate::engine::handoff::KvExport;

/// Largest `data` in one `KvChunkMsg`.
pub const MAX_CHUNK_BYTES: usize = 4 << 20;
/// Client deadline of `DecodeRequestChannel` (MindIE: 30 s).
pub const DECODE_REQUEST_DEADLINE: Duration = Duration::from_secs(30);
/// Client deadline of `ReleaseKVCacheChannel` (MindIE: 60 s).
pub const RELEASE_DEADLINE: Duration = Duration::from_secs(60);
/// The most a pull reserves up front; beyond, the buffer grows as bytes arrive (a bogus
/// `total_bytes` cannot make D allocate memory it is not sent).
const PREALLOC_LIMIT: usize = 256 << 20;

/// What two instances must agree on to exchange KV blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvLayout {
    pub model_name: String,
    pub num_layers: usize,
    pub num_kv_heads: usize,
    pub head_dim: usize,
    /// The backend's dtype name (`float32`, `bfloat16`, ...).
    pub dtype: String,
    /// Tokens per block.
    pub block_size: usize,
    pub tp_size: usize,
    /// The backend's KV layout tag ([`KvChunk::layout`]).
    pub layout: String,
    pub bytes_per_block: usize,
}

impl KvLayout {
    /// The layout of a loaded backend. `layout_tag` is what the backend writes into
    /// [`KvChunk::layout`] (e.g. the `layout` of `backend.export_blocks(&[])`).
    pub fn from_backend(
        info: &BackendInfo,
        model_name: impl Into<String>,
        tp_size: usize,
        layout_tag: impl Into<String>,
    ) -> Self {
        KvLayout {
            model_name: model_name.into(),
            num_layers: info.num_layers,
            num_kv_heads: info.num_kv_heads,
            head_dim: info.head_dim,
            dtype: info.dtype.as_str().to_string(),
            block_size: info.block_size,
            tp_size,
            layout: layout_tag.into(),
            bytes_per_block: info.bytes_per_block,
        }
    }

    /// `None` when `peer` matches; else every differing field with both values, e.g.
    /// `num_layers: local 2, peer 4; dtype: local "float32", peer "bfloat16"`.
    pub fn mismatch(&self, peer: &KvLayout) -> Option<String> {
        let mut diffs = Vec::new();
        let mut num = |name: &str, a: usize, b: usize| {
            if a != b {
                diffs.push(format!("{name}: local {a}, peer {b}"));
            }
        };
        num("num_layers", self.num_layers, peer.num_layers);
        num("num_kv_heads", self.num_kv_heads, peer.num_kv_heads);
        num("head_dim", self.head_dim, peer.head_dim);
        num("block_size", self.block_size, peer.block_size);
        num("tp_size", self.tp_size, peer.tp_size);
        num(
            "bytes_per_block",
            self.bytes_per_block,
            peer.bytes_per_block,
        );
        let mut text = |name: &str, a: &str, b: &str| {
            if a != b {
                diffs.push(format!("{name}: local {a:?}, peer {b:?}"));
            }
        };
        text("model_name", &self.model_name, &peer.model_name);
        text("dtype", &self.dtype, &peer.dtype);
        text("layout", &self.layout, &peer.layout);
        (!diffs.is_empty()).then(|| diffs.join("; "))
    }

    /// The wire form, stating `instance_id` as the sender.
    pub fn to_hello(&self, instance_id: u32) -> KvHello {
        KvHello {
            model_name: self.model_name.clone(),
            num_layers: wire_u32(self.num_layers),
            num_kv_heads: wire_u32(self.num_kv_heads),
            head_dim: wire_u32(self.head_dim),
            dtype: self.dtype.clone(),
            block_size: wire_u32(self.block_size),
            tp_size: wire_u32(self.tp_size),
            layout: self.layout.clone(),
            bytes_per_block: self.bytes_per_block as u64,
            instance_id,
        }
    }

    /// The layout a peer stated.
    pub fn from_hello(h: &KvHello) -> Self {
        KvLayout {
            model_name: h.model_name.clone(),
            num_layers: h.num_layers as usize,
            num_kv_heads: h.num_kv_heads as usize,
            head_dim: h.head_dim as usize,
            dtype: h.dtype.clone(),
            block_size: h.block_size as usize,
            tp_size: h.tp_size as usize,
            layout: h.layout.clone(),
            bytes_per_block: usize::try_from(h.bytes_per_block).unwrap_or(usize::MAX),
        }
    }
}

/// A count as a wire `uint32`; values past `u32::MAX` (never real) saturate, so they still
/// compare unequal to any sane peer's.
fn wire_u32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The peer of a successful [`hello`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvPeer {
    pub layout: KvLayout,
    /// The peer's role instance id.
    pub instance_id: u32,
}

/// Why a [`KvSource`] could not export: each maps to a gRPC status with the text as message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvSourceError {
    /// Unknown, released or expired request → NOT_FOUND.
    #[error("{0}")]
    NotFound(String),
    /// The request is known but the ask does not fit it (blocks not held for it, token
    /// count differs) → FAILED_PRECONDITION.
    #[error("{0}")]
    FailedPrecondition(String),
    /// Anything else (engine gone, backend failure) → INTERNAL.
    #[error("{0}")]
    Internal(String),
}

impl From<KvSourceError> for Status {
    fn from(e: KvSourceError) -> Status {
        match e {
            KvSourceError::NotFound(m) => Status::not_found(m),
            KvSourceError::FailedPrecondition(m) => Status::failed_precondition(m),
            KvSourceError::Internal(m) => Status::internal(m),
        }
    }
}

/// The prefill side's KV as the services see it (implemented by the PD layer over the
/// engine's KV leases).
pub trait KvSource: Send + Sync + 'static {
    /// This instance's layout, stated in `Hello` and compared with the peer's.
    fn layout(&self) -> KvLayout;
    /// This instance's role id (`KvHello.instance_id`).
    fn instance_id(&self) -> u32;
    /// The KV held for `req_id`. `src_block_ids` are the block ids P sent D (its
    /// `blockTable[0]`); `num_tokens` is how many tokens' KV D expects.
    fn export(
        &self,
        req_id: &str,
        src_block_ids: &[i64],
        num_tokens: u64,
    ) -> BoxFuture<'static, Result<KvExport, KvSourceError>>;
    /// Frees the KV held for `req_id`; `false` when nothing was held.
    fn release(&self, req_id: &str) -> BoxFuture<'static, bool>;
}

/// The decode side's acceptance of a hand-off (implemented by the PD layer).
pub trait DecodeHandler: Send + Sync + 'static {
    /// Starts (or refuses, with `is_valid_decode_parameters = false` and a message) the
    /// decode of a request P has prefilled.
    fn decode_request(&self, p: DecodeParameters) -> BoxFuture<'static, DecodeRequestResponse>;
}

/// The three services on one server: `DecodeService`, `PrefillService` and `KvTransfer`,
/// each accepting messages up to [`MAX_MESSAGE_BYTES`]. Serve with
/// [`super::transport::serve`].
pub fn routes(decode: Arc<dyn DecodeHandler>, kv: Arc<dyn KvSource>) -> Routes {
    Routes::new(
        DecodeServiceServer::new(DecodeSvc { handler: decode })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        PrefillServiceServer::new(PrefillSvc { kv: kv.clone() })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
    .add_service(
        KvTransferServer::new(KvSvc { kv })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

fn peer_of<T>(req: &Request<T>) -> String {
    req.extensions()
        .get::<PeerInfo>()
        .map(|p| p.remote_addr.to_string())
        .unwrap_or_else(|| "an unknown peer".into())
}

struct DecodeSvc {
    handler: Arc<dyn DecodeHandler>,
}

#[tonic::async_trait]
impl DecodeService for DecodeSvc {
    async fn decode_request_channel(
        &self,
        request: Request<DecodeParameters>,
    ) -> Result<Response<DecodeRequestResponse>, Status> {
        let reply = self.handler.decode_request(request.into_inner()).await;
        Ok(Response::new(reply))
    }
}

struct PrefillSvc {
    kv: Arc<dyn KvSource>,
}

#[tonic::async_trait]
impl PrefillService for PrefillSvc {
    async fn release_kv_cache_channel(
        &self,
        request: Request<RequestId>,
    ) -> Result<Response<()>, Status> {
        let peer = peer_of(&request);
        let req_id = request.into_inner().req_id;
        if !self.kv.release(&req_id).await {
            tracing::info!(
                "release of KV for request {req_id} from {peer}: nothing held (already \
                 released or expired)"
            );
        }
        Ok(Response::new(()))
    }
}

struct KvSvc {
    kv: Arc<dyn KvSource>,
}

type ChunkStream = Pin<Box<dyn Stream<Item = Result<KvChunkMsg, Status>> + Send>>;

#[tonic::async_trait]
impl KvTransfer for KvSvc {
    async fn hello(&self, request: Request<KvHello>) -> Result<Response<KvHelloReply>, Status> {
        let peer = peer_of(&request);
        let theirs = request.into_inner();
        let local = self.kv.layout();
        let mismatch = local.mismatch(&KvLayout::from_hello(&theirs));
        if let Some(reason) = &mismatch {
            tracing::warn!(
                "KV link from instance {} ({peer}) refused: layout mismatch: {reason}",
                theirs.instance_id
            );
        }
        Ok(Response::new(KvHelloReply {
            ok: mismatch.is_none(),
            reason: mismatch.unwrap_or_default(),
            hello: Some(local.to_hello(self.kv.instance_id())),
        }))
    }

    type PullBlocksStream = ChunkStream;

    async fn pull_blocks(
        &self,
        request: Request<PullBlocksRequest>,
    ) -> Result<Response<ChunkStream>, Status> {
        let peer = peer_of(&request);
        let req = request.into_inner();
        let export = self
            .kv
            .export(&req.req_id, &req.src_block_ids, req.num_tokens)
            .await
            .inspect_err(|e| {
                tracing::info!("KV pull of request {} by {peer} refused: {e}", req.req_id)
            })?;
        tracing::debug!(
            "KV pull of request {} by {peer}: {} bytes",
            req.req_id,
            export.kv.data.len()
        );
        Ok(Response::new(Box::pin(futures_util::stream::iter(
            chunk_messages(export).map(Ok),
        ))))
    }
}

/// The messages of one pull: `data` in slices of at most [`MAX_CHUNK_BYTES`] (at least one
/// message, even for no bytes), the header on the first.
pub fn chunk_messages(export: KvExport) -> impl Iterator<Item = KvChunkMsg> + Send {
    let data = Bytes::from(export.kv.data);
    let total = data.len();
    let mut header = Some(KvChunkHeader {
        total_bytes: total as u64,
        layout: export.kv.layout,
        bytes_per_block: export.kv.bytes_per_block as u64,
        kv_tokens: export.kv_tokens as u64,
        block_size: export.block_size as u64,
        rng_state: export.rng_state,
    });
    let count = total.div_ceil(MAX_CHUNK_BYTES).max(1);
    (0..count).map(move |i| {
        let start = i * MAX_CHUNK_BYTES;
        let end = (start + MAX_CHUNK_BYTES).min(total);
        KvChunkMsg {
            seq: i as u64,
            offset: start as u64,
            data: data.slice(start..end),
            header: header.take(),
        }
    })
}

/// What one [`pull`] moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PullStats {
    pub bytes: u64,
    pub chunks: u64,
    pub elapsed: Duration,
}

/// Reassembles a `PullBlocks` stream, refusing anything out of order, overlapping, past the
/// announced size, or without its header.
#[derive(Debug, Default)]
pub struct ChunkAssembler {
    header: Option<KvChunkHeader>,
    data: Vec<u8>,
    next_seq: u64,
}

impl ChunkAssembler {
    /// Adds the next message of the stream.
    pub fn push(&mut self, msg: KvChunkMsg) -> Result<(), LinkError> {
        let bad = |m: String| Err(LinkError::Protocol(m));
        if msg.seq != self.next_seq {
            return bad(format!(
                "chunk {} arrived where chunk {} was expected",
                msg.seq, self.next_seq
            ));
        }
        match (&self.header, msg.header) {
            (None, None) => return bad("the first chunk carries no header".into()),
            (Some(_), Some(_)) => return bad(format!("chunk {} repeats the header", msg.seq)),
            (None, Some(h)) => {
                if h.bytes_per_block == 0 && h.total_bytes != 0 {
                    return bad("the header announces bytes but 0 bytes per block".into());
                }
                if h.bytes_per_block != 0 && h.total_bytes % h.bytes_per_block != 0 {
                    return bad(format!(
                        "{} bytes is not a whole number of {}-byte blocks",
                        h.total_bytes, h.bytes_per_block
                    ));
                }
                let reserve = usize::try_from(h.total_bytes)
                    .unwrap_or(usize::MAX)
                    .min(PREALLOC_LIMIT);
                self.data.reserve_exact(reserve);
                self.header = Some(h);
            }
            (Some(_), None) => {}
        }
        let total = self.header.as_ref().map_or(0, |h| h.total_bytes);
        let have = self.data.len() as u64;
        if msg.offset != have {
            return bad(format!(
                "chunk {} starts at byte {}, expected {have}",
                msg.seq, msg.offset
            ));
        }
        if msg.data.len() > MAX_CHUNK_BYTES {
            return bad(format!(
                "chunk {} holds {} bytes, more than {MAX_CHUNK_BYTES}",
                msg.seq,
                msg.data.len()
            ));
        }
        if have + msg.data.len() as u64 > total {
            return bad(format!(
                "chunk {} runs past the announced {total} bytes",
                msg.seq
            ));
        }
        self.data.extend_from_slice(&msg.data);
        self.next_seq += 1;
        Ok(())
    }

    /// The export, once the stream has ended. With `expect_tokens > 0`, the KV must cover
    /// exactly that many tokens.
    pub fn finish(self, expect_tokens: u64) -> Result<KvExport, LinkError> {
        let bad = |m: String| Err(LinkError::Protocol(m));
        let Some(h) = self.header else {
            return bad("the stream ended without a chunk".into());
        };
        if self.data.len() as u64 != h.total_bytes {
            return bad(format!(
                "the stream ended after {} of {} bytes",
                self.data.len(),
                h.total_bytes
            ));
        }
        if expect_tokens != 0 && h.kv_tokens != expect_tokens {
            return bad(format!(
                "the KV covers {} tokens, {expect_tokens} were asked for",
                h.kv_tokens
            ));
        }
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        Ok(KvExport {
            kv_tokens: size(h.kv_tokens),
            block_size: size(h.block_size),
            kv: KvChunk {
                layout: h.layout,
                bytes_per_block: size(h.bytes_per_block),
                data: self.data,
            },
            rng_state: h.rng_state,
        })
    }

    /// Messages accepted so far.
    pub fn chunks(&self) -> u64 {
        self.next_seq
    }
}

/// Runs `fut` under `deadline`, as [`LinkError::Deadline`] when it runs out.
async fn within<T>(
    deadline: Duration,
    fut: impl std::future::Future<Output = Result<T, LinkError>>,
) -> Result<T, LinkError> {
    tokio::time::timeout(deadline, fut)
        .await
        .unwrap_or(Err(LinkError::Deadline(deadline)))
}

/// What the peer is told of a deadline (`grpc-timeout`) beyond the deadline itself, so that
/// the caller's own timer fires first and reports [`LinkError::Deadline`] whichever way the
/// call was going; the peer still stops working on it soon after.
const PEER_DEADLINE_GRACE: Duration = Duration::from_secs(1);

fn request<T>(msg: T, deadline: Duration) -> Request<T> {
    let mut req = Request::new(msg);
    req.set_timeout(deadline + PEER_DEADLINE_GRACE);
    req
}

/// The link check: states `local` (as instance `instance_id`) to the peer and compares its
/// answer. A mismatch seen by either side is [`LinkError::Layout`] naming the fields.
pub async fn hello(
    ch: Channel,
    local: &KvLayout,
    instance_id: u32,
    deadline: Duration,
) -> Result<KvPeer, LinkError> {
    let msg = local.to_hello(instance_id);
    within(deadline, async move {
        let reply = KvTransferClient::new(ch)
            .hello(request(msg, deadline))
            .await
            .map_err(|s| rpc_error(s, deadline))?
            .into_inner();
        let Some(theirs) = reply.hello else {
            return Err(LinkError::Layout(if reply.ok {
                "the peer stated no layout".into()
            } else {
                format!("the peer refused: {}", reply.reason)
            }));
        };
        let peer = KvLayout::from_hello(&theirs);
        if let Some(reason) = local.mismatch(&peer) {
            return Err(LinkError::Layout(reason));
        }
        if !reply.ok {
            return Err(LinkError::Layout(format!(
                "the peer refused: {}",
                reply.reason
            )));
        }
        Ok(KvPeer {
            layout: peer,
            instance_id: theirs.instance_id,
        })
    })
    .await
}

/// Pulls the KV P holds for `req.req_id`, reassembled and validated; `deadline` bounds the
/// whole stream (`kv_trans_timeout`).
pub async fn pull(
    ch: Channel,
    req: PullBlocksRequest,
    deadline: Duration,
) -> Result<(KvExport, PullStats), LinkError> {
    let start = Instant::now();
    let expect_tokens = req.num_tokens;
    within(deadline, async move {
        let mut stream = KvTransferClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .pull_blocks(request(req, deadline))
            .await
            .map_err(|s| rpc_error(s, deadline))?
            .into_inner();
        let mut asm = ChunkAssembler::default();
        while let Some(msg) = stream.message().await.map_err(|s| rpc_error(s, deadline))? {
            asm.push(msg)?;
        }
        let chunks = asm.chunks();
        let export = asm.finish(expect_tokens)?;
        let stats = PullStats {
            bytes: export.kv.data.len() as u64,
            chunks,
            elapsed: start.elapsed(),
        };
        Ok((export, stats))
    })
    .await
}

/// `ReleaseKVCacheChannel`: tells P that D no longer needs `req_id`'s KV (P answers OK
/// whether or not it still held any). MindIE's deadline is [`RELEASE_DEADLINE`].
pub async fn release(ch: Channel, req_id: &str, deadline: Duration) -> Result<(), LinkError> {
    let msg = RequestId {
        req_id: req_id.to_string(),
    };
    within(deadline, async move {
        PrefillServiceClient::new(ch)
            .release_kv_cache_channel(request(msg, deadline))
            .await
            .map(|_| ())
            .map_err(|s| rpc_error(s, deadline))
    })
    .await
}

/// `DecodeRequestChannel`: hands a prefilled request to D. MindIE's deadline is
/// [`DECODE_REQUEST_DEADLINE`]. D's refusal is an `Ok` answer with
/// `is_valid_decode_parameters = false`.
pub async fn decode_request(
    ch: Channel,
    params: DecodeParameters,
    deadline: Duration,
) -> Result<DecodeRequestResponse, LinkError> {
    within(deadline, async move {
        DecodeServiceClient::new(ch)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
            .decode_request_channel(request(params, deadline))
            .await
            .map(Response::into_inner)
            .map_err(|s| rpc_error(s, deadline))
    })
    .await
}
