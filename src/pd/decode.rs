//! The decode instance's side of one request (SPEC-PD §2.5–2.6): `DecodeRequestChannel`
//! checks and accepts; then, on its own task, the KV is pulled from `pNodeAddr` within
//! `kv_trans_timeout`, the prefill instance is told to release it (success or not), and the
//! client's request is replayed through the business routes inside a PD [`Scope`] whose
//! runner is a [`DecodeRun`]. The reply's chunks after those the prefill instance already
//! sent go out on `/dresult` as `data:` frames, the last one as `lastData:`; a failure ends
//! the request with an `error:` frame. Nothing is dropped silently: a request that cannot be
//! framed (no `/dresult` reader) is refused at the RPC.

use super::context::Scope;
use super::decode_run::DecodeRun;
use super::frames::{Frame, FrameKind};
use super::handoff_msg::{self, Incoming};
use super::node::PdNode;
use crate::cluster::kv::{self as kv_client, DecodeHandler};
use crate::cluster::proto::{kv as kvwire, pd as wire};
use crate::http::admission::RequestUuid;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use futures_util::future::BoxFuture;
use http_body::Body as _;
use http_body_util::BodyExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tower::ServiceExt;

/// MindIE's `error:` texts for a failed pull.
pub const PULL_FAILED_REVERSIBLY: &str = "Pull kv failed reversibly.";

/// The `DecodeService` of a dmi instance.
pub struct DecodeSide(pub Arc<PdNode>);

impl DecodeHandler for DecodeSide {
    fn decode_request(
        &self,
        p: wire::DecodeParameters,
    ) -> BoxFuture<'static, wire::DecodeRequestResponse> {
        let node = self.0.clone();
        Box::pin(async move {
            match accept(&node, &p) {
                Ok(inc) => {
                    tokio::spawn(decode_one(node, inc));
                    wire::DecodeRequestResponse {
                        is_valid_decode_parameters: true,
                        error_message: String::new(),
                    }
                }
                Err(msg) => {
                    tracing::warn!(req_id = %p.req_id, "DecodeRequestChannel refused: {msg}");
                    wire::DecodeRequestResponse {
                        is_valid_decode_parameters: false,
                        error_message: msg,
                    }
                }
            }
        })
    }
}

fn accept(node: &PdNode, p: &wire::DecodeParameters) -> Result<Incoming, String> {
    if !super::gate::takes_decode(&node.role.view()) {
        return Err("this instance is not a decode instance".into());
    }
    if !node.hub.connected() {
        return Err("no GET /dresult reader is connected to this decode instance".into());
    }
    handoff_msg::incoming(p).map_err(|e| e.to_string())
}

/// Where the prefill instance serves its KV: `pNodeAddr` is `ip` or `ip;port`.
fn p_node(addr: &str, default_port: u16) -> Result<SocketAddr, String> {
    let (ip, port) = match addr.split_once(';') {
        Some((ip, port)) => (
            ip,
            port.parse::<u16>()
                .map_err(|_| format!("pNodeAddr {addr:?}: bad port"))?,
        ),
        None => (addr, default_port),
    };
    let ip: IpAddr = ip
        .parse()
        .map_err(|_| format!("pNodeAddr {addr:?}: not an IP address"))?;
    Ok(SocketAddr::new(ip, port))
}

/// Sends one frame; false when no reader took it.
async fn send(node: &PdNode, req_id: &str, kind: FrameKind, payload: String) -> bool {
    let ok = node
        .hub
        .send(&Frame::new(req_id, kind, payload))
        .await
        .is_ok();
    if !ok {
        tracing::warn!(
            req_id,
            "no /dresult reader took the frame; the request ends here"
        );
    }
    ok
}

/// Pulls, releases, replays and relays one handed-over request.
async fn decode_one(node: Arc<PdNode>, inc: Incoming) {
    let req_id = inc.req_id.clone();
    let cancelled = node.transfers.start(&req_id);
    let pulled = tokio::select! {
        r = pull(&node, &inc) => r,
        _ = cancelled.cancelled() => Err("cancelled (stopInfer) during the KV transfer".to_string()),
    };
    node.transfers.finish(&req_id);
    let kv = match pulled {
        Ok(kv) => kv,
        Err(msg) => {
            tracing::warn!(req_id = %req_id, "{msg}");
            if let Some(m) = &node.metrics {
                m.pd_kv_transfer_failed
                    .with_label_values(&[m.model()])
                    .inc();
            }
            send(
                &node,
                &req_id,
                FrameKind::Error,
                PULL_FAILED_REVERSIBLY.to_string(),
            )
            .await;
            return;
        }
    };
    let run = DecodeRun::new(
        node.engine.clone(),
        inc.prompt.clone(),
        inc.first.clone(),
        kv,
    );
    let ended = run.ended();
    let scope = Scope::with_seed(run, inc.rs.identity.clone(), inc.rs.seed);
    let Some(router) = node.replay.get().cloned() else {
        send(
            &node,
            &req_id,
            FrameKind::Error,
            "decode instance is not ready".into(),
        )
        .await;
        return;
    };
    let mut req = Request::post(&inc.rs.path);
    if let Some(ct) = &inc.rs.content_type {
        req = req.header(header::CONTENT_TYPE, ct);
    }
    let mut req = match req.body(Body::from(inc.rs.body.clone())) {
        Ok(r) => r,
        Err(e) => {
            send(
                &node,
                &req_id,
                FrameKind::Error,
                format!("replaying the request: {e}"),
            )
            .await;
            return;
        }
    };
    // `stopInfer {"id": <req-id>}` finds the replayed request by its req-id.
    req.extensions_mut().insert(RequestUuid(req_id.clone()));
    let resp = match scope.run(router.oneshot(req)).await {
        Ok(r) => r,
        Err(never) => match never {},
    };
    relay(&node, &req_id, inc.rs.sent_chunks, resp, &ended).await;
}

/// Pulls the request's KV from its prefill instance, then tells it to release the blocks.
async fn pull(node: &PdNode, inc: &Incoming) -> Result<crate::engine::KvExport, String> {
    let addr = p_node(&inc.p_node_addr, node.settings.inter_comm_port)?;
    let req = kvwire::PullBlocksRequest {
        req_id: inc.req_id.clone(),
        p_instance_id: inc.p_instance_id,
        dp_rank: 0,
        src_block_ids: inc.src_blocks.clone(),
        num_tokens: inc.prompt.len() as u64,
    };
    pull_from(node, addr, req).await
}

/// Pulls `req` from the prefill instance at `addr` within `kv_trans_timeout`, then tells it
/// to release the blocks (success or not), and counts the transfer.
pub(super) async fn pull_from(
    node: &PdNode,
    addr: SocketAddr,
    req: kvwire::PullBlocksRequest,
) -> Result<crate::engine::KvExport, String> {
    let req_id = req.req_id.clone();
    let started = Instant::now();
    let result = async {
        let ch = node
            .links
            .channel(addr)
            .await
            .map_err(|e| format!("KV pull from {addr}: {e}"))?;
        kv_client::pull(ch, req, node.settings.kv_trans_timeout)
            .await
            .map_err(|e| {
                node.links.forget(addr);
                format!("KV pull from {addr}: {e}")
            })
    }
    .await;
    // Success or not, the prefill instance frees its blocks now.
    let release = async {
        let ch = node.links.channel(addr).await.map_err(|e| e.to_string())?;
        kv_client::release(ch, &req_id, kv_client::RELEASE_DEADLINE)
            .await
            .map_err(|e| e.to_string())
    };
    if let Err(e) = release.await {
        tracing::warn!(req_id = %req_id, "ReleaseKVCacheChannel to {addr}: {e} (the prefill instance frees the blocks when its lease expires)");
    }
    let (kv, stats) = result?;
    if let Some(m) = &node.metrics {
        m.kv_transfer(stats.bytes, started.elapsed());
    }
    tracing::info!(req_id = %req_id, bytes = stats.bytes, ms = started.elapsed().as_millis() as u64, "KV pulled from {addr}");
    Ok(kv)
}

/// Writes the replayed reply to `/dresult`: the chunks after the first `skip` as `data:`,
/// the last as `lastData:`; a complete (non-streamed) reply as one `lastData:`; an error
/// reply as `error:`.
async fn relay(
    node: &PdNode,
    req_id: &str,
    skip: usize,
    resp: axum::response::Response,
    ended: &AtomicBool,
) {
    let status = resp.status();
    let complete = resp.body().size_hint().exact().is_some();
    let mut body = resp.into_body();
    if status != StatusCode::OK {
        let text = collect(body).await;
        send(node, req_id, FrameKind::Error, text).await;
        return;
    }
    if complete {
        let text = collect(body).await;
        send(node, req_id, FrameKind::LastData, text).await;
        return;
    }
    let mut seen = 0usize;
    // Once the generation ended, each chunk waits for the next (or the end) to know
    // whether it is the last; before that, chunks go out as they come.
    let mut held: Option<Bytes> = None;
    loop {
        let frame = body.frame().await;
        let data = match frame {
            Some(Ok(f)) => match f.into_data() {
                Ok(d) => d,
                Err(_) => continue,
            },
            Some(Err(e)) => {
                tracing::warn!(req_id, "replayed reply failed: {e}");
                send(
                    node,
                    req_id,
                    FrameKind::Error,
                    format!("decode instance: {e}"),
                )
                .await;
                return;
            }
            None => break,
        };
        seen += 1;
        if seen <= skip {
            continue;
        }
        if let Some(prev) = held.take() {
            if !send(node, req_id, FrameKind::Data, text_of(&prev)).await {
                return;
            }
        }
        if ended.load(Ordering::Acquire) {
            held = Some(data);
        } else if !send(node, req_id, FrameKind::Data, text_of(&data)).await {
            return;
        }
    }
    match held {
        Some(last) => {
            send(node, req_id, FrameKind::LastData, text_of(&last)).await;
        }
        None => {
            send(
                node,
                req_id,
                FrameKind::Error,
                "the decode instance's reply ended without a last chunk".into(),
            )
            .await;
        }
    }
}

fn text_of(b: &Bytes) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn collect(body: Body) -> String {
    match body.collect().await {
        Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
        Err(e) => format!("reading the reply: {e}"),
    }
}
