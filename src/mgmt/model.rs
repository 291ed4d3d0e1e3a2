//! Per-model management routes (SPEC §2): GET `/info` (TGI-style server and model facts),
//! GET `/v2/models/{m}/ready` and GET `/v2/models/{m}/getSlotCount`. A model name other than
//! the served one is 404 `Model {m} not found.`.

use super::condition::Condition;
use super::MgmtState;
use crate::http::error::ApiError;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

/// The served model's name, or the 404 for another one.
fn served(s: &MgmtState, path: Result<Path<String>, PathRejection>) -> Result<(), ApiError> {
    let Path(name) = path.map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, e.body_text()))?;
    match s.config.config.model() {
        Some(m) if m.model_name == name => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            format!("Model {name} not found."),
        )),
    }
}

/// GET `/info`: MindIE's TGI-style info, with the device and dtype the engine really uses.
pub async fn info(State(s): State<MgmtState>) -> Json<Value> {
    let c = &s.config.config;
    let sched = &c.backend_config.schedule_config;
    let deploy = &c.backend_config.model_deploy_config;
    let engine = s.engine.info();
    let models: Vec<Value> = c
        .model()
        .into_iter()
        .map(|m| {
            json!({
                "model_device_type": engine.device,
                "model_dtype": engine.dtype,
                "model_id": m.model_name,
                "model_pipeline_tag": "text-generation",
                "model_sha": null,
                "max_total_tokens": deploy.max_seq_len,
            })
        })
        .collect();
    Json(json!({
        "docker_label": null,
        "max_batch_total_tokens": sched.max_prefill_tokens,
        "max_best_of": 1,
        "max_concurrent_requests": sched.max_batch_size,
        "max_input_length": c.effective_max_input_token_len(),
        "max_stop_sequences": null,
        "max_waiting_tokens": null,
        "models": models,
        "sha": null,
        "validation_workers": c.backend_config.tokenizer_process_number,
        "version": env!("CARGO_PKG_VERSION"),
        "waiting_served_ratio": null,
    }))
}

/// GET `/v2/models/{m}/ready`: 200 (empty) when the model serves requests, else 503 saying why.
pub async fn ready(
    State(s): State<MgmtState>,
    model: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(e) = served(&s, model) {
        return e.into_response();
    }
    let c = Condition::of(&s);
    if c.serving() {
        StatusCode::OK.into_response()
    } else {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, c.describe()).into_response()
    }
}

/// GET `/v2/models/{m}/getSlotCount`: batch slots and free KV room, from the engine now.
pub async fn slot_count(
    State(s): State<MgmtState>,
    model: Result<Path<String>, PathRejection>,
) -> Response {
    if let Err(e) = served(&s, model) {
        return e.into_response();
    }
    let sched = &s.config.config.backend_config.schedule_config;
    let st = s.engine.status();
    let block_size = match s.engine.info().block_size {
        0 => sched.cache_block_size as usize,
        b => b,
    };
    Json(json!({
        "total_slots": sched.max_batch_size,
        "free_slots": st.free_slots,
        "available_tokens_length": st.free_npu_blocks.saturating_mul(block_size),
    }))
    .into_response()
}
