//! vLLM's disaggregated-prefill protocol, as routers that speak it drive a P/D pair (e.g.
//! `vllm-router --vllm-pd-disaggregation --prefill <P> --decode <D>`): no role, no DMI
//! headers, no `/dresult` — the request body carries `kv_transfer_params`.
//!
//! - Prefill (`do_remote_decode: true`; the router asks for one token, not streamed): the
//!   request runs here with its KV kept under a lease ([`AfterFirst::Publish`]); the reply
//!   gains a top-level `kv_transfer_params` saying where the KV is (`remote_host`,
//!   `remote_port` = interCommPort, `remote_request_id`, `remote_block_ids`,
//!   `remote_engine_id`) plus, under `mindie_rs`, the first token with its logprobs and the
//!   prompt ids, which the router copies unread into the decode request.
//! - Decode (`do_remote_prefill: true`): the KV is pulled from `remote_host:remote_port`
//!   over the same gRPC service and mutual TLS as MindIE's protocol, released there, and the
//!   request runs here from P's first token ([`DecodeRun`]), answering the client directly.

use super::context::Scope;
use super::decode::pull_from;
use super::decode_run::DecodeRun;
use super::gate::refuse;
use super::node::PdNode;
use super::prefill::{AfterFirst, FirstToken, PrefillRun};
use super::prefill_route::watch_lease;
use crate::cluster::proto::kv as kvwire;
use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, request::Parts, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use http_body_util::BodyExt;
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

/// Which side of vLLM's protocol a request body asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Side {
    Prefill,
    Decode(Remote),
}

/// Where a decode request's KV is, from `kv_transfer_params`.
#[derive(Debug, Clone, PartialEq)]
pub struct Remote {
    pub addr: SocketAddr,
    pub request_id: String,
    pub block_ids: Vec<i64>,
    pub first: FirstToken,
    pub prompt: Vec<u32>,
    /// The seed P chose for a request that named none.
    pub seed: Option<u64>,
}

fn bad(field: &str, why: impl std::fmt::Display) -> String {
    format!("kv_transfer_params.{field}: {why}")
}

/// The side `body` asks for (`None`: no `kv_transfer_params`, or neither flag set).
pub fn side(body: &Value) -> Result<Option<Side>, String> {
    let Some(p) = body.get("kv_transfer_params").filter(|p| !p.is_null()) else {
        return Ok(None);
    };
    if p.get("do_remote_decode") == Some(&json!(true)) {
        return Ok(Some(Side::Prefill));
    }
    if p.get("do_remote_prefill") != Some(&json!(true)) {
        return Ok(None);
    }
    let host: IpAddr = p["remote_host"]
        .as_str()
        .ok_or_else(|| bad("remote_host", "missing"))?
        .parse()
        .map_err(|e| bad("remote_host", e))?;
    let port = p["remote_port"]
        .as_u64()
        .and_then(|v| u16::try_from(v).ok())
        .ok_or_else(|| bad("remote_port", "missing or not a port (1..65535)"))?;
    let request_id = p["remote_request_id"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| bad("remote_request_id", "missing"))?
        .to_string();
    let block_ids = p["remote_block_ids"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_i64).collect())
        .unwrap_or_default();
    let ours = &p["mindie_rs"];
    let first: FirstToken = serde_json::from_value(ours["first"].clone()).map_err(|e| {
        bad(
            "mindie_rs.first",
            format!("{e} (the prefill instance must be a mindieservice_daemon (Rust) one)"),
        )
    })?;
    let prompt: Vec<u32> =
        serde_json::from_value(ours["prompt"].clone()).map_err(|e| bad("mindie_rs.prompt", e))?;
    Ok(Some(Side::Decode(Remote {
        addr: SocketAddr::new(host, port),
        request_id,
        block_ids,
        first,
        prompt,
        seed: ours["seed"].as_u64(),
    })))
}

/// The request id vLLM's router sent (`x-request-id`), or a fresh one.
fn request_id(parts: &Parts) -> String {
    parts
        .headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(crate::http::admission::usable_request_id)
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string())
}

/// The prefill side: run, keep the KV, say where it is.
pub async fn prefill(node: Arc<PdNode>, parts: Parts, body: Body, next: Next) -> Response {
    let path = parts.uri.path().to_string();
    let req_id = request_id(&parts);
    let (run, handoff_rx) = PrefillRun::new(
        node.engine.clone(),
        node.settings.lease_ttl(),
        AfterFirst::Publish,
    );
    let scope = Scope::new(run, None);
    let resp = scope
        .clone()
        .run(next.run(Request::from_parts(parts, body)))
        .await;
    let (mut head, body) = resp.into_parts();
    let bytes = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => return refuse(StatusCode::INTERNAL_SERVER_ERROR, &path, e.to_string()),
    };
    let mut handoff_rx = handoff_rx;
    let handoff = handoff_rx.try_recv().ok();
    let reply: Option<Value> = serde_json::from_slice(&bytes).ok();
    let (Some(handoff), Some(mut reply), StatusCode::OK) = (handoff.clone(), reply, head.status)
    else {
        // An error, a streamed reply, or nothing to publish: as it is, KV freed.
        if let Some(h) = handoff {
            let _ = node.engine.release_kv(h.engine_id).await;
        }
        return Response::from_parts(head, Body::from(bytes));
    };
    let blocks = match node.engine.lease_blocks(handoff.engine_id).await {
        Ok(Some((blocks, _))) => blocks,
        _ => {
            return refuse(
                StatusCode::INTERNAL_SERVER_ERROR,
                &path,
                "the prefilled KV is gone before it could be published",
            )
        }
    };
    node.leases.insert(&req_id, handoff.engine_id);
    watch_lease(&node, &req_id, handoff.engine_id);
    if let Some(m) = &node.metrics {
        m.pd_handoffs.with_label_values(&[m.model()]).inc();
    }
    let ip = node.settings.ip;
    reply["kv_transfer_params"] = json!({
        "do_remote_prefill": true,
        "do_remote_decode": false,
        "remote_engine_id": format!("{ip}:{}", node.settings.inter_comm_port),
        "remote_block_ids": blocks,
        "remote_host": ip.to_string(),
        "remote_port": node.settings.inter_comm_port,
        "remote_request_id": req_id,
        "tp_size": 1,
        "mindie_rs": {"first": handoff.first, "prompt": handoff.req.prompt, "seed": scope.seed()},
    });
    tracing::info!(req_id = %req_id, engine_id = handoff.engine_id, "KV published for a decode instance (vLLM protocol)");
    head.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(head, Body::from(reply.to_string()))
}

/// The decode side: pull, release, run from P's first token, answer the client.
pub async fn decode(
    node: Arc<PdNode>,
    parts: Parts,
    body: Body,
    remote: Remote,
    next: Next,
) -> Response {
    let path = parts.uri.path().to_string();
    let req = kvwire::PullBlocksRequest {
        req_id: remote.request_id.clone(),
        p_instance_id: 0,
        dp_rank: 0,
        src_block_ids: remote.block_ids.clone(),
        num_tokens: remote.prompt.len() as u64,
    };
    let cancelled = node.transfers.start(&remote.request_id);
    let pulled = tokio::select! {
        r = pull_from(&node, remote.addr, req) => r,
        _ = cancelled.cancelled() => Err("cancelled during the KV transfer".into()),
    };
    node.transfers.finish(&remote.request_id);
    let kv = match pulled {
        Ok(kv) => kv,
        Err(msg) => {
            tracing::warn!(req_id = %remote.request_id, "{msg}");
            if let Some(m) = &node.metrics {
                m.pd_kv_transfer_failed
                    .with_label_values(&[m.model()])
                    .inc();
            }
            return refuse(StatusCode::BAD_GATEWAY, &path, msg);
        }
    };
    let run = DecodeRun::new(node.engine.clone(), remote.prompt, remote.first, kv);
    Scope::with_seed(run, None, remote.seed)
        .run(next.run(Request::from_parts(parts, body)))
        .await
}
