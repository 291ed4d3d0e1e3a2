//! The external port: `GET /metrics` scrapes every listed instance's metrics port
//! concurrently and answers the merged text ([`super::metrics_merge`]) with the
//! Coordinator's own request counters; 503 when any instance fails its scrape.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::metrics_merge;
use super::out::text;
use super::shared::Shared;

/// The external port's router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .with_state(shared)
}

async fn metrics(State(s): State<Arc<Shared>>) -> Response {
    let members = s.registry.all();
    let scrapes = futures_util::future::join_all(members.iter().map(|m| {
        let client = s.management.clone();
        async move { (m.id, client.get(m.metrics, "/metrics").await) }
    }))
    .await;
    let mut texts = Vec::with_capacity(scrapes.len());
    for (id, r) in scrapes {
        match r {
            Ok(r) if r.ok() => texts.push(r.text()),
            Ok(r) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("instance {id} answered /metrics with {}", r.status),
                )
            }
            Err(e) => {
                return text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    &format!("instance {id}: {e}"),
                )
            }
        }
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    match metrics_merge::merge(&refs, &s.metrics.render()) {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4"),
            )],
            body,
        )
            .into_response(),
        Err(e) => text(StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
    }
}
