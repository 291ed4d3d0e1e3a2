//! The prefill instance's side of one request (SPEC-PD §2.3–2.4): the client's request runs
//! through its unchanged route handler inside a PD [`Scope`] whose runner is a
//! [`PrefillRun`]; the reply chunks written up to the first token are kept; then the request
//! is handed to the decode instance (`DecodeRequestChannel`) and the Coordinator gets
//! `{"reqId","isStream","isLastResp"?,"output"?}`. A request that ends at its first token,
//! or asks for several choices, is answered whole here with `isLastResp: true`.

use super::context::Scope;
use super::handoff_msg::{self, Outgoing, RsHandoff, VERSION};
use super::headers::DmiHeaders;
use super::node::PdNode;
use super::prefill::{AfterFirst, Handoff, PrefillRun};
use super::route::{wants_several_choices, RouteKind};
use crate::cluster::kv as kv_client;
use crate::http::admission::RequestUuid;
use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use futures_util::FutureExt;
use http_body::Body as _;
use http_body_util::BodyExt;
use serde_json::json;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

/// How the client's request left the prefill instance's handler.
enum Ended {
    /// Answered whole here (ended at its first token, several choices, or an error reply).
    Whole(Response),
    /// Handed on after the first token; `sent` are the reply chunks written so far.
    Handed {
        handoff: Handoff,
        sent: Vec<Bytes>,
        stream: bool,
    },
}

/// Serves one inference request on a prefill instance (see the module docs).
pub async fn prefill(
    node: Arc<PdNode>,
    kind: RouteKind,
    dmi: DmiHeaders,
    req: Request,
    next: Next,
) -> Response {
    let (mut parts, body) = req.into_parts();
    let bytes = match super::gate::read_body(&node, parts.uri.path(), body).await {
        Ok(b) => b,
        Err(refused) => return refused,
    };
    let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
    // `stopInfer {"id": <req-id>}` finds the request by its req-id.
    parts.extensions.insert(RequestUuid(dmi.req_id.clone()));
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| parts.uri.path().to_string());
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let req = Request::from_parts(parts, Body::from(bytes.clone()));
    let started_us = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);

    if wants_several_choices(&json) {
        tracing::info!(req_id = %dmi.req_id, "several choices: served whole on the prefill instance");
        let resp = next.run(req).await;
        return whole(&dmi.req_id, resp).await;
    }
    let (run, handoff_rx) = PrefillRun::new(
        node.engine.clone(),
        node.settings.lease_ttl(),
        AfterFirst::HandOn,
    );
    let scope = Scope::new(run, None);
    let ended = run_until_handoff(scope.clone(), req, next, handoff_rx).await;
    let (handoff, sent, stream) = match ended {
        Ended::Whole(resp) => return whole(&dmi.req_id, resp).await,
        Ended::Handed {
            handoff,
            sent,
            stream,
        } => (handoff, sent, stream),
    };
    let rs = RsHandoff {
        version: VERSION,
        path,
        body: String::from_utf8_lossy(&bytes).into_owned(),
        content_type,
        identity: scope.identity(),
        seed: scope.seed(),
        sent_chunks: sent.len(),
        first: handoff.first.clone(),
    };
    let msg_type = kind.msg_type(node.settings.vllm_openai, &json);
    match hand_on(&node, &dmi, &handoff, &rs, msg_type, stream, started_us).await {
        Ok(()) => {
            let mut answer = json!({"reqId": dmi.req_id, "isStream": stream});
            if stream {
                let output: Vec<u8> = sent.iter().flat_map(|b| b.iter().copied()).collect();
                answer["isLastResp"] = json!(false);
                answer["output"] = json!(String::from_utf8_lossy(&output));
            }
            axum::Json(answer).into_response()
        }
        Err(msg) => {
            node.leases.remove(&dmi.req_id);
            let _ = node.engine.release_kv(handoff.engine_id).await;
            tracing::warn!(req_id = %dmi.req_id, "{msg}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("[P Node] Send D request failed:{msg}"),
            )
                .into_response()
        }
    }
}

/// Runs the route handler until it answered whole or its request parked for the hand-off.
async fn run_until_handoff(
    scope: Arc<Scope>,
    req: Request,
    next: Next,
    handoff_rx: tokio::sync::oneshot::Receiver<Handoff>,
) -> Ended {
    let inner = scope.run(next.run(req));
    tokio::pin!(inner);
    // Resolves with `None` when the request ended on this instance without a hand-off.
    let handoff = async move { handoff_rx.await.ok() }.fuse();
    tokio::pin!(handoff);
    let mut waiting = true;
    let resp = loop {
        tokio::select! {
            r = &mut inner => break r,
            h = &mut handoff, if waiting => match h {
                // Non-streaming: the handler waits for the whole answer, which comes from D.
                Some(handoff) => return Ended::Handed { handoff, sent: Vec::new(), stream: false },
                None => waiting = false,
            },
        }
    };
    if resp.status() != StatusCode::OK || resp.body().size_hint().exact().is_some() {
        return Ended::Whole(resp);
    }
    // Streaming: keep the chunks until the hand-off (or the end, if it ends here).
    let (parts, mut body) = resp.into_parts();
    let mut sent = Vec::new();
    loop {
        tokio::select! {
            biased;
            f = body.frame() => match f {
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        sent.push(data);
                    }
                }
                Some(Err(_)) | None => {
                    let all: Vec<u8> = sent.iter().flat_map(|b| b.iter().copied()).collect();
                    return Ended::Whole(Response::from_parts(parts, Body::from(all)));
                }
            },
            h = &mut handoff, if waiting => match h {
                Some(handoff) => {
                    // Every chunk of the first token was queued before the request parked.
                    while let Some(Some(Ok(frame))) = body.frame().now_or_never() {
                        if let Ok(data) = frame.into_data() {
                            sent.push(data);
                        }
                    }
                    return Ended::Handed { handoff, sent, stream: true };
                }
                None => waiting = false,
            },
        }
    }
}

/// The Coordinator's answer for a request served whole here: errors relayed as they are,
/// else `{"reqId","isStream","isLastResp":true,"output":<the whole reply>}`.
async fn whole(req_id: &str, resp: Response) -> Response {
    if resp.status() != StatusCode::OK {
        return resp;
    }
    let stream = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v != HeaderValue::from_static("application/json"));
    let body = match resp.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            return (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("reading the reply: {e}"),
            )
                .into_response()
        }
    };
    axum::Json(json!({
        "reqId": req_id,
        "isStream": stream,
        "isLastResp": true,
        "output": String::from_utf8_lossy(&body),
    }))
    .into_response()
}

/// Publishes the lease under `req-id` and calls the decode instance.
async fn hand_on(
    node: &Arc<PdNode>,
    dmi: &DmiHeaders,
    handoff: &Handoff,
    rs: &RsHandoff,
    msg_type: u32,
    stream: bool,
    started_us: u64,
) -> Result<(), String> {
    let (blocks, _) = node
        .engine
        .lease_blocks(handoff.engine_id)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the prefilled KV is gone (lease expired or released)")?;
    node.leases.insert(&dmi.req_id, handoff.engine_id);
    watch_lease(node, &dmi.req_id, handoff.engine_id);
    let own_port = node.settings.inter_comm_port;
    let p_node_addr = match dmi.d_target.port {
        Some(_) => format!("{};{own_port}", node.settings.ip),
        None => node.settings.ip.to_string(),
    };
    let params = handoff_msg::outgoing(&Outgoing {
        req_id: &dmi.req_id,
        req: &handoff.req,
        msg_type,
        is_stream: stream,
        blocks: &blocks,
        p_node_addr,
        p_instance_id: node.role.snapshot().local.and_then(|l| l.id).unwrap_or(0),
        model_name: &node.settings.model_name,
        e2e_start_us: started_us,
        rs,
    })
    .map_err(|e| e.to_string())?;
    let target = SocketAddr::new(
        dmi.d_target.ip.into(),
        dmi.d_target.port.unwrap_or(own_port),
    );
    let channel = node
        .links
        .channel(target)
        .await
        .map_err(|e| format!(" cannot reach the decode instance at {target}: {e}"))?;
    let reply = kv_client::decode_request(channel, params, kv_client::DECODE_REQUEST_DEADLINE)
        .await
        .map_err(|e| {
            node.links.forget(target);
            format!(" {target}: {e}")
        })?;
    if !reply.is_valid_decode_parameters {
        return Err(format!(" {target} refused: {}", reply.error_message));
    }
    tracing::info!(req_id = %dmi.req_id, engine_id = handoff.engine_id, decode = %target, "handed to the decode instance");
    if let Some(m) = &node.metrics {
        m.pd_handoffs.with_label_values(&[m.model()]).inc();
    }
    Ok(())
}

/// Forgets a hand-off whose decode instance never released it once its lease is over (the
/// engine frees the blocks itself at the expiry), and counts it.
pub(super) fn watch_lease(
    node: &Arc<PdNode>,
    req_id: &str,
    engine_id: crate::engine::handle::RequestId,
) {
    let node = node.clone();
    let req_id = req_id.to_string();
    let ttl = node.settings.lease_ttl() + std::time::Duration::from_secs(1);
    tokio::spawn(async move {
        tokio::time::sleep(ttl).await;
        if node.leases.get(&req_id) == Some(engine_id) {
            node.leases.remove(&req_id);
            let _ = node.engine.release_kv(engine_id).await;
            tracing::warn!(req_id = %req_id, "no decode instance released this request's KV within its lease; freed");
            if let Some(m) = &node.metrics {
                m.pd_kv_leases_expired.with_label_values(&[m.model()]).inc();
            }
        }
    });
}
