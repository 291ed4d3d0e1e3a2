//! GET `/health/timed` and `/health/timed-N` (SPEC §2): a real one-token inference through
//! the engine, which must finish within N seconds (1..=600, default 10). 200
//! `{"status":"healthy"}` when it does; 500 `{"status":"unhealthy","error","error_type"}`
//! saying why when it does not (timeout, engine error); 503 while stopping.
//!
//! The probe is a one-token prompt asking for one new token at the highest priority; it
//! bypasses admission and the request metrics. A probe that times out is cancelled, so a
//! stuck engine drops it as soon as it resumes.

use super::MgmtState;
use crate::engine::sampler::SamplingParams;
use crate::engine::{Finish, GenRequest, SubmitError, TokenEvent};
use crate::http::error::ApiError;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use std::time::{Duration, Instant};

/// Probe deadline without `-N`.
pub const DEFAULT_LIMIT_SECS: u64 = 10;
/// Largest N in `/health/timed-N`.
pub const MAX_LIMIT_SECS: u64 = 600;

/// Why a probe failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProbeError {
    #[error("Service is stopping")]
    Stopping,
    #[error("no engine runs in this instance")]
    NoEngine,
    #[error("the engine refused the probe: {0}")]
    Submit(#[from] SubmitError),
    #[error("the probe inference did not finish within {0} s")]
    Timeout(u64),
    #[error("the probe inference failed: {0}")]
    Engine(String),
    #[error("the probe inference was cancelled by the engine")]
    Cancelled,
}

/// Why `/health/{x}` is not a valid probe path.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitError {
    #[error("Not Found: /health/{0}")]
    NotProbe(String),
    #[error("/health/timed-{0}: the probe deadline must be a whole number of seconds in [1, {MAX_LIMIT_SECS}]")]
    BadSeconds(String),
}

/// The deadline named by a `/health/{seg}` segment (`timed-N`).
pub fn parse_limit(seg: &str) -> Result<u64, LimitError> {
    let n = seg
        .strip_prefix("timed-")
        .ok_or_else(|| LimitError::NotProbe(seg.to_string()))?;
    n.parse::<u64>()
        .ok()
        .filter(|v| (1..=MAX_LIMIT_SECS).contains(v))
        .ok_or_else(|| LimitError::BadSeconds(n.to_string()))
}

/// Runs one probe inference; returns how long it took.
pub async fn probe(s: &MgmtState, limit: Duration) -> Result<Duration, ProbeError> {
    if s.life.is_stopping() {
        return Err(ProbeError::Stopping);
    }
    let engine = s.probe.as_ref().ok_or(ProbeError::NoEngine)?;
    let t0 = Instant::now();
    let mut sub = engine.submit(GenRequest {
        // Id 0 exists in every vocabulary.
        prompt: vec![0],
        max_new_tokens: 1,
        sampling: SamplingParams::default(),
        stop_token_ids: Vec::new(),
        ignore_eos: true,
        top_logprobs: None,
        priority: 1,
        json: None,
    })?;
    let finished = tokio::time::timeout(limit, async {
        loop {
            match sub.events.recv().await {
                Some(TokenEvent::Token { .. }) => continue,
                Some(TokenEvent::Finished { finish, .. }) => return Some(finish),
                None => return None,
            }
        }
    })
    .await;
    match finished {
        Err(_) => {
            engine.cancel(sub.id);
            Err(ProbeError::Timeout(limit.as_secs()))
        }
        Ok(None) | Ok(Some(Finish::Cancelled)) => Err(ProbeError::Cancelled),
        Ok(Some(Finish::Error(e))) => Err(ProbeError::Engine(e)),
        Ok(Some(Finish::Stop | Finish::StopString(_) | Finish::Length)) => Ok(t0.elapsed()),
    }
}

async fn reply(s: &MgmtState, secs: u64) -> Response {
    match probe(s, Duration::from_secs(secs)).await {
        Ok(took) => {
            tracing::debug!(
                took_ms = took.as_millis() as u64,
                limit_s = secs,
                "health probe inference finished"
            );
            (StatusCode::OK, Json(json!({ "status": "healthy" }))).into_response()
        }
        Err(e) => {
            tracing::warn!(error = %e, "health probe failed");
            let status = if e == ProbeError::Stopping {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (
                status,
                Json(json!({
                    "status": "unhealthy",
                    "error": e.to_string(),
                    "error_type": ApiError::mindie_type(status),
                })),
            )
                .into_response()
        }
    }
}

/// GET `/health/timed`: probe with the default deadline.
pub async fn timed_default(State(s): State<MgmtState>) -> Response {
    reply(&s, DEFAULT_LIMIT_SECS).await
}

/// GET `/health/timed-N`.
pub async fn timed(
    State(s): State<MgmtState>,
    seg: Result<Path<String>, PathRejection>,
) -> Response {
    let seg = match seg {
        Ok(Path(seg)) => seg,
        Err(e) => return ApiError::new(StatusCode::BAD_REQUEST, e.body_text()).into_response(),
    };
    match parse_limit(&seg) {
        Ok(secs) => reply(&s, secs).await,
        Err(e @ LimitError::NotProbe(_)) => {
            ApiError::new(StatusCode::NOT_FOUND, e.to_string()).into_response()
        }
        Err(e) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits() {
        assert_eq!(parse_limit("timed-1"), Ok(1));
        assert_eq!(parse_limit("timed-600"), Ok(600));
        assert!(matches!(
            parse_limit("timed-0"),
            Err(LimitError::BadSeconds(_))
        ));
        assert!(matches!(
            parse_limit("timed-601"),
            Err(LimitError::BadSeconds(_))
        ));
        assert!(matches!(
            parse_limit("timed-x"),
            Err(LimitError::BadSeconds(_))
        ));
        assert!(matches!(
            parse_limit("timed-"),
            Err(LimitError::BadSeconds(_))
        ));
        assert!(matches!(parse_limit("other"), Err(LimitError::NotProbe(_))));
    }
}
