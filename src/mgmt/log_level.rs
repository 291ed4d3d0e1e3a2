//! The log level at run time (SPEC §0.9). Two ways to raise or lower it for a while, both
//! ending back at the start-up level (`MINDIE_LOG_LEVEL`, default info):
//!
//! - **config.json**: the daemon polls the file's modification stamp every
//!   [`POLL`]; when `LogConfig.dynamicLogLevel` or `dynamicLogLevelValidHours` changed, the new
//!   level applies for that many hours (an empty `dynamicLogLevel` returns to the start level).
//!   The value present at start-up is not applied (MindIE applies changes, not the initial
//!   file), and the daemon never writes the file; `dynamicLogLevelValidTime` is not used.
//! - **management route** `/v1/log-level`:
//!   - `GET` → `{"level","startLevel","source","validUntil","expiresInSeconds"}`;
//!   - `POST {"level":"debug","validHours":1}` sets it (`validHours` in (0, 168], fractions
//!     allowed, default `dynamicLogLevelValidHours`) and answers the same view;
//!   - `DELETE` returns to the start level.
//!
//!   Levels are MindIE's names: debug, info, warn/warning, error, critical (and trace).
//!   Errors are 422 (or 503 when logging has no run-time control) in MindIE's error shape.

use super::MgmtState;
use crate::config::schema::LogConfig;
use crate::http::error::ApiError;
use crate::logging::{tracing_level, LogHandle};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio_util::sync::CancellationToken;

/// How often config.json's stamp is checked (and expiry looked at).
pub const POLL: Duration = Duration::from_secs(1);

/// Longest a temporary level may last (`dynamicLogLevelValidHours` ≤ 168).
const MAX_HOURS: f64 = 168.0;

/// Why a level change was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LevelError {
    #[error("level {0:?}: allowed debug, info, warn, warning, error, critical, trace")]
    Level(String),
    #[error("validHours {0}: must be a number in (0, 168]")]
    Hours(String),
    #[error("request body: {0}")]
    Body(String),
    #[error("{0}")]
    Reload(String),
}

/// Who set the level in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Start,
    Route,
    Config,
}

#[derive(Debug)]
struct Current {
    level: String,
    source: Source,
    until: Option<(Instant, SystemTime)>,
}

/// The level in force, as the route shows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    pub level: String,
    pub start_level: String,
    pub source: Source,
    /// Unix seconds when the temporary level ends.
    pub valid_until: Option<u64>,
    pub expires_in_seconds: Option<u64>,
}

/// Owns the run-time level: applies changes through the [`LogHandle`] and expires them.
pub struct LogControl {
    handle: LogHandle,
    default_valid: Duration,
    current: Mutex<Current>,
}

fn hours(h: f64) -> Result<Duration, LevelError> {
    if h.is_finite() && h > 0.0 && h <= MAX_HOURS {
        Ok(Duration::from_secs_f64(h * 3600.0))
    } else {
        Err(LevelError::Hours(h.to_string()))
    }
}

impl LogControl {
    pub fn new(handle: LogHandle, log_config: &LogConfig) -> Arc<Self> {
        let default_valid = hours(f64::from(log_config.dynamic_log_level_valid_hours))
            .unwrap_or(Duration::from_secs(2 * 3600));
        Arc::new(Self {
            current: Mutex::new(Current {
                level: handle.base().to_string(),
                source: Source::Start,
                until: None,
            }),
            handle,
            default_valid,
        })
    }

    /// Applies `level` (a MindIE name) for `valid` (default: `dynamicLogLevelValidHours`).
    pub fn set(
        &self,
        level: &str,
        valid: Option<Duration>,
        source: Source,
    ) -> Result<View, LevelError> {
        let name = tracing_level(level).ok_or_else(|| LevelError::Level(level.to_string()))?;
        let valid = valid.unwrap_or(self.default_valid);
        self.handle.set_level(name).map_err(LevelError::Reload)?;
        if let Ok(mut c) = self.current.lock() {
            *c = Current {
                level: name.to_string(),
                source,
                until: Some((Instant::now() + valid, SystemTime::now() + valid)),
            };
        }
        tracing::info!(
            level = name,
            ?source,
            valid_s = valid.as_secs(),
            "log level changed"
        );
        Ok(self.view())
    }

    /// Returns to the start-up level.
    pub fn reset(&self, why: &str) -> Result<View, LevelError> {
        self.handle.reset().map_err(LevelError::Reload)?;
        if let Ok(mut c) = self.current.lock() {
            *c = Current {
                level: self.handle.base().to_string(),
                source: Source::Start,
                until: None,
            };
        }
        tracing::info!(
            level = self.handle.base(),
            "log level back to the start level: {why}"
        );
        Ok(self.view())
    }

    pub fn view(&self) -> View {
        let now = Instant::now();
        let (level, source, until) = self
            .current
            .lock()
            .map(|c| (c.level.clone(), c.source, c.until))
            .unwrap_or_else(|_| (self.handle.base().to_string(), Source::Start, None));
        View {
            level,
            start_level: self.handle.base().to_string(),
            source,
            valid_until: until.map(|(_, at)| {
                at.duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
            }),
            expires_in_seconds: until.map(|(t, _)| t.saturating_duration_since(now).as_secs()),
        }
    }

    fn source(&self) -> Source {
        self.current
            .lock()
            .map(|c| c.source)
            .unwrap_or(Source::Start)
    }

    /// Resets an expired temporary level.
    fn expire(&self) {
        let due = self
            .current
            .lock()
            .map(|c| matches!(c.until, Some((t, _)) if Instant::now() >= t))
            .unwrap_or(false);
        if due {
            if let Err(e) = self.reset("validity expired") {
                tracing::warn!("{e}");
            }
        }
    }

    /// Watches `config` for `LogConfig` changes and expires temporary levels until `stop`.
    pub fn spawn(
        self: &Arc<Self>,
        config: PathBuf,
        stop: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut watch = ConfigWatch::new(config).await;
            let mut tick = tokio::time::interval(POLL);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => {}
                }
                this.expire();
                if let Some(change) = watch.poll().await {
                    this.apply_config(change);
                }
            }
        })
    }

    fn apply_config(&self, (level, valid_hours): (String, f64)) {
        if level.trim().is_empty() {
            if self.source() == Source::Config {
                if let Err(e) = self.reset("LogConfig.dynamicLogLevel emptied in config.json") {
                    tracing::warn!("{e}");
                }
            }
            return;
        }
        let applied =
            hours(valid_hours).and_then(|valid| self.set(&level, Some(valid), Source::Config));
        if let Err(e) = applied {
            tracing::warn!("config.json LogConfig.dynamicLogLevel not applied: {e}");
        }
    }
}

/// `LogConfig`'s dynamic level and validity in a config document.
fn dynamic_level(doc: &Value) -> (String, f64) {
    let lc = doc.get("LogConfig");
    let level = lc
        .and_then(|l| l.get("dynamicLogLevel"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let hours = lc
        .and_then(|l| l.get("dynamicLogLevelValidHours"))
        .and_then(Value::as_f64)
        .unwrap_or(2.0);
    (level, hours)
}

/// Notices config.json edits by modification time and size.
struct ConfigWatch {
    path: PathBuf,
    stamp: Option<(SystemTime, u64)>,
    /// The last `LogConfig` values seen (changes only are applied).
    seen: Option<(String, f64)>,
    /// A stamp whose content did not parse (warned once).
    bad: Option<(SystemTime, u64)>,
}

impl ConfigWatch {
    async fn new(path: PathBuf) -> Self {
        let mut w = Self {
            path,
            stamp: None,
            seen: None,
            bad: None,
        };
        // The state at start-up is the baseline, not a change.
        w.stamp = w.stamp_now().await;
        w.seen = w.read().await.ok();
        w
    }

    async fn stamp_now(&self) -> Option<(SystemTime, u64)> {
        let m = tokio::fs::metadata(&self.path).await.ok()?;
        Some((m.modified().ok()?, m.len()))
    }

    async fn read(&self) -> Result<(String, f64), String> {
        let bytes = tokio::fs::read(&self.path)
            .await
            .map_err(|e| e.to_string())?;
        let doc: Value = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
        Ok(dynamic_level(&doc))
    }

    /// The new `LogConfig` values when the file changed and they differ.
    async fn poll(&mut self) -> Option<(String, f64)> {
        let stamp = self.stamp_now().await;
        if stamp.is_none() || stamp == self.stamp || stamp == self.bad {
            return None;
        }
        match self.read().await {
            Ok(values) => {
                self.stamp = stamp;
                self.bad = None;
                if self.seen.as_ref() == Some(&values) {
                    return None;
                }
                self.seen = Some(values.clone());
                Some(values)
            }
            Err(e) => {
                // Maybe caught mid-write: retried when the stamp moves again.
                self.bad = stamp;
                tracing::warn!(path = %self.path.display(), "config.json changed but cannot be read: {e}");
                None
            }
        }
    }
}

fn unavailable() -> Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "the log level cannot be changed at run time: logging was not set up by the daemon",
    )
    .into_response()
}

fn refused(e: LevelError) -> Response {
    let status = match e {
        LevelError::Reload(_) => StatusCode::INTERNAL_SERVER_ERROR,
        _ => StatusCode::UNPROCESSABLE_ENTITY,
    };
    ApiError::new(status, e.to_string()).into_response()
}

/// GET `/v1/log-level`.
pub async fn get_level(State(s): State<MgmtState>) -> Response {
    match &s.log {
        Some(c) => Json(c.view()).into_response(),
        None => unavailable(),
    }
}

/// The body of POST `/v1/log-level`.
fn parse_body(body: &[u8]) -> Result<(String, Option<Duration>), LevelError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| LevelError::Body(e.to_string()))?;
    let level = v
        .get("level")
        .and_then(Value::as_str)
        .ok_or_else(|| LevelError::Body("\"level\" (a string) is required".into()))?;
    let valid = match v.get("validHours") {
        None | Some(Value::Null) => None,
        Some(h) => Some(hours(
            h.as_f64().ok_or_else(|| LevelError::Hours(h.to_string()))?,
        )?),
    };
    Ok((level.to_string(), valid))
}

/// POST `/v1/log-level` `{"level":"debug","validHours":1}`.
pub async fn set_level(
    State(s): State<MgmtState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let Some(c) = &s.log else {
        return unavailable();
    };
    // An unreadable or oversized body (axum's 2 MB default) is answered as JSON like every
    // other refusal, not with axum's plain-text rejection.
    let body = match body {
        Ok(b) => b,
        Err(e) => {
            return ApiError::new(e.status(), format!("request body: {}", e.body_text()))
                .into_response()
        }
    };
    match parse_body(&body).and_then(|(level, valid)| c.set(&level, valid, Source::Route)) {
        Ok(view) => Json(view).into_response(),
        Err(e) => refused(e),
    }
}

/// DELETE `/v1/log-level`: back to the start level.
pub async fn reset_level(State(s): State<MgmtState>) -> Response {
    let Some(c) = &s.log else {
        return unavailable();
    };
    match c.reset("reset through /v1/log-level") {
        Ok(view) => Json(view).into_response(),
        Err(e) => refused(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bodies() {
        assert_eq!(
            parse_body(br#"{"level":"debug","validHours":0.5}"#),
            Ok(("debug".into(), Some(Duration::from_secs(1800))))
        );
        assert_eq!(
            parse_body(br#"{"level":"info"}"#),
            Ok(("info".into(), None))
        );
        assert!(matches!(parse_body(b"{"), Err(LevelError::Body(_))));
        assert!(matches!(
            parse_body(br#"{"validHours":1}"#),
            Err(LevelError::Body(_))
        ));
        assert!(matches!(
            parse_body(br#"{"level":"debug","validHours":0}"#),
            Err(LevelError::Hours(_))
        ));
        assert!(matches!(
            parse_body(br#"{"level":"debug","validHours":"1"}"#),
            Err(LevelError::Hours(_))
        ));
    }

    #[test]
    fn config_values() {
        let doc =
            json!({"LogConfig": {"dynamicLogLevel": "debug", "dynamicLogLevelValidHours": 3}});
        assert_eq!(dynamic_level(&doc), ("debug".into(), 3.0));
        assert_eq!(dynamic_level(&json!({})), (String::new(), 2.0));
    }
}
