//! Triton-style routes (SPEC §1): server and model metadata (`GET /v2`,
//! `/v2/models/{model}`, `/v2/models/{model}/config`), text generation (`POST
//! /v2/models/{model}/generate` and `/generate_stream`), token inference on UINT32 tensors
//! (`POST /v2/models/{model}/infer`) and cancel by id (`POST /v2/models/{model}/stopInfer`). `{m}`
//! must be the served model (else 404 `Model {m} not found.`).

mod generate;
mod infer;

use crate::config::Loaded;
use crate::http::error::{ApiError, ErrorStyle};
use crate::http::extract::{Body, Flavour, MindIe, Reply};
use crate::http::fields::{FieldError, Fields};
use crate::http::session::Serving;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;

const STYLE: ErrorStyle = MindIe::STYLE;

/// What the Triton routes share.
#[derive(Clone)]
pub struct Triton {
    pub inf: Arc<Serving>,
    pub config: Arc<Loaded>,
}

pub fn router(state: Triton) -> Router {
    Router::new()
        .route("/v2", get(server_meta))
        .route("/v2/models/{model}", get(model_meta))
        .route("/v2/models/{model}/config", get(model_config))
        .route("/v2/models/{model}/generate", post(generate::generate))
        .route(
            "/v2/models/{model}/generate_stream",
            post(generate::generate_stream),
        )
        .route("/v2/models/{model}/infer", post(infer::infer))
        .route("/v2/models/{model}/stopInfer", post(stop_infer))
        .with_state(state)
}

/// 404 unless `m` is the served model.
fn check_model(inf: &Serving, m: &str) -> Result<(), ApiError> {
    if m == inf.model_name {
        Ok(())
    } else {
        Err(ApiError::new(StatusCode::NOT_FOUND, format!("Model {m} not found.")).style(STYLE))
    }
}

/// The path's `{model}`, checked to be the served model (404 `Model {m} not found.`
/// otherwise) before the body is read.
pub struct ServedModel(pub String);

impl FromRequestParts<Triton> for ServedModel {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, t: &Triton) -> Result<Self, Response> {
        let Path(m) = Path::<String>::from_request_parts(parts, t)
            .await
            .map_err(IntoResponse::into_response)?;
        check_model(&t.inf, &m).map_err(IntoResponse::into_response)?;
        Ok(Self(m))
    }
}

/// A client request id: at most 256 of `[A-Za-z0-9_-]`.
fn request_id(f: &Fields<'_>) -> Result<Option<String>, FieldError> {
    let Some(id) = f.str("id")? else {
        return Ok(None);
    };
    let ok = !id.is_empty()
        && id.len() <= 256
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(FieldError::new(
            "id",
            format!("{id:?} is not allowed: 1 to 256 characters of letters, digits, '_' and '-'"),
        ));
    }
    Ok(Some(id.to_string()))
}

async fn server_meta(State(t): State<Triton>) -> Json<serde_json::Value> {
    let c = &t.config.config;
    Json(json!({
        "name": "MindIE Server",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": {
            "max_iter_times": c.backend_config.schedule_config.max_iter_times,
            "max_seq_len": c.backend_config.model_deploy_config.max_seq_len,
            "max_input_token_len": c.effective_max_input_token_len(),
            "max_batch_size": c.backend_config.schedule_config.max_batch_size,
        },
    }))
}

async fn model_meta(ServedModel(m): ServedModel) -> Json<serde_json::Value> {
    Json(json!({
        "name": m,
        "versions": [],
        "platform": "MindIE Server",
        "inputs": [{ "name": "input0", "datatype": "UINT32", "shape": [-1] }],
        "outputs": [{ "name": "output0", "datatype": "UINT32", "shape": [-1] }],
    }))
}

async fn model_config(State(t): State<Triton>, ServedModel(m): ServedModel) -> Response {
    let c = &t.config.config;
    let model = c.model();
    Json(json!({
        "name": m,
        "backend": model.map(|m| m.backend_type.clone()),
        "modelWeightPath": model.map(|m| m.model_weight_path.clone()),
        "maxSeqLen": c.backend_config.model_deploy_config.max_seq_len,
        "maxInputTokenLen": c.effective_max_input_token_len(),
        "maxIterTimes": c.backend_config.schedule_config.max_iter_times,
        "maxBatchSize": c.backend_config.schedule_config.max_batch_size,
        "cacheBlockSize": c.backend_config.schedule_config.cache_block_size,
        "input": [{ "name": "input0", "data_type": "TYPE_UINT32", "dims": [-1] }],
        "output": [{ "name": "output0", "data_type": "TYPE_UINT32", "dims": [-1] }],
    }))
    .into_response()
}

async fn stop_infer(State(t): State<Triton>, _: ServedModel, body: Body<MindIe>) -> Reply<MindIe> {
    let id = Fields::new(&body.map).required_str("id", "is required")?;
    let running = t.inf.registry.find(id);
    let hooked = t.inf.stop_hook.as_ref().is_some_and(|h| h.stop(id));
    if running.is_empty() && !hooked {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("no running request with id {id:?}"),
        )
        .style(STYLE)
        .into());
    }
    for engine_id in running {
        t.inf.engine.cancel(engine_id);
    }
    Ok(Json(json!({ "id": id, "result": "stopped" })).into_response())
}
