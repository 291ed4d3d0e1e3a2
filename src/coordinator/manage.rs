//! The manage port (for the Controller; SPEC-CLUSTER §5): `POST /v1/instances/refresh` (the
//! instance list; new decode instances get their `/dresult` opened before the answer, and a
//! refresh whose new decode instance cannot be reached is answered 400), `POST
//! /v1/instances/offline|online` (`{"ids":[…]}`), `GET /v1/instances/tasks?id=…` and `POST
//! /v1/instances/query_tasks` (requests in flight per instance, -1 for unknown ids), `GET
//! /v1/coordinator_info`.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::dresult_reader;
use super::out::text;
use super::shared::Shared;
use crate::motor::instances::Refresh;

/// The manage port's router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/instances/refresh", post(refresh))
        .route("/v1/instances/offline", post(offline))
        .route("/v1/instances/online", post(online))
        .route("/v1/instances/tasks", get(tasks))
        .route("/v1/instances/query_tasks", post(query_tasks))
        .route("/v1/coordinator_info", get(info))
        .with_state(shared)
}

async fn refresh(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    let r: Refresh = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("refresh body is not the instance list: {e}"),
            )
        }
    };
    if r.ids.len() != r.instances.len() || r.ids.iter().zip(&r.instances).any(|(id, i)| *id != i.id)
    {
        return text(
            StatusCode::BAD_REQUEST,
            "refresh body: `ids` must list the instances' ids in the same order",
        );
    }
    let changes = match s.registry.apply(&r) {
        Ok(c) => c,
        Err(e) => return text(StatusCode::BAD_REQUEST, &e.to_string()),
    };
    for id in &changes.gone {
        if !changes.new_decoders.contains(id) {
            dresult_reader::close(&s, *id);
        }
    }
    let opened = futures_util::future::join_all(
        changes
            .new_decoders
            .iter()
            .map(|id| async { (*id, dresult_reader::open(&s, *id).await) }),
    )
    .await;
    let failed: Vec<u64> = opened
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(id, _)| *id)
        .collect();
    if !changes.gone.is_empty() || !changes.new_decoders.is_empty() {
        let (p, d) = s.registry.counts();
        tracing::info!(
            added = ?changes.new_decoders, gone = ?changes.gone, prefill = p, decode = d,
            "instance list refreshed"
        );
    }
    if failed.is_empty() {
        StatusCode::OK.into_response()
    } else {
        text(
            StatusCode::BAD_REQUEST,
            &format!("cannot open /dresult to decode instance(s) {failed:?}"),
        )
    }
}

#[derive(Deserialize)]
struct Ids {
    ids: Vec<u64>,
}

async fn offline(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    set_offline(&s, &body, true)
}

async fn online(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    set_offline(&s, &body, false)
}

fn set_offline(s: &Shared, body: &[u8], offline: bool) -> Response {
    let ids: Ids = match serde_json::from_slice(body) {
        Ok(i) => i,
        Err(e) => {
            return text(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"ids\":[…]}}: {e}"),
            )
        }
    };
    let unknown = s.registry.set_offline(&ids.ids, offline);
    if unknown.is_empty() {
        StatusCode::OK.into_response()
    } else {
        text(
            StatusCode::BAD_REQUEST,
            &format!("unknown instance id(s) {unknown:?}"),
        )
    }
}

fn task_counts(s: &Shared, ids: &[u64]) -> Vec<i64> {
    ids.iter()
        .map(|id| s.registry.get(*id).map(|m| m.load() as i64).unwrap_or(-1))
        .collect()
}

async fn tasks(State(s): State<Arc<Shared>>, RawQuery(q): RawQuery) -> Response {
    let ids: Vec<u64> = q
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.strip_prefix("id="))
        .map(|v| v.parse().unwrap_or(u64::MAX))
        .collect();
    Json(json!({ "tasks": task_counts(&s, &ids) })).into_response()
}

async fn query_tasks(State(s): State<Arc<Shared>>, body: Bytes) -> Response {
    match serde_json::from_slice::<Ids>(&body) {
        Ok(ids) => Json(json!({ "tasks": task_counts(&s, &ids.ids) })).into_response(),
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            &format!("expected {{\"ids\":[…]}}: {e}"),
        ),
    }
}

async fn info(State(s): State<Arc<Shared>>) -> Response {
    let schedule: Vec<_> = s
        .registry
        .all()
        .iter()
        .map(|m| json!({"id": m.id, "allocated_slots": m.load(), "allocated_blocks": 0}))
        .collect();
    Json(json!({
        "schedule_info": schedule,
        "request_num": s.in_flight.load(Ordering::Relaxed),
    }))
    .into_response()
}
