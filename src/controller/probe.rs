//! The probe server (`http_server {ip, port}`, TLS from `tls_config.http_server_*`):
//! `GET /v1/startup` and `GET /v1/health` answer 200 with an empty body, as Motor's do. It
//! listens once the config and the ranktable are loaded, while the sync loop runs; so
//! "started" means "configured and working", not "roles assigned" (Kubernetes would
//! otherwise restart a Controller that waits for slow servers).

use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;

/// The probe routes.
pub fn router() -> Router {
    Router::new()
        .route("/v1/startup", get(|| async { StatusCode::OK }))
        .route("/v1/health", get(|| async { StatusCode::OK }))
}
