//! Cancels on instances: `POST /v2/models/{model}/stopInfer {"id": req-id}` to the prefill
//! and the decode instance at once (SPEC-PD §2.7), when the user hangs up, a timeout expires
//! or the request failed half-way. Best effort: answers are logged, never awaited by the user.

use std::sync::Arc;

use serde_json::json;

use super::registry::Member;
use super::shared::Shared;

/// Sends `stopInfer` for `req_id` to every instance in `to`, concurrently, in the background.
pub fn stop_infer(shared: &Arc<Shared>, req_id: &str, to: &[&Member]) {
    for m in to {
        let client = shared.business.clone();
        let addr = m.business;
        let model = if m.model_name.is_empty() {
            "model".to_string()
        } else {
            m.model_name.clone()
        };
        let id = req_id.to_string();
        let instance = m.id;
        tokio::spawn(async move {
            let path = format!("/v2/models/{}/stopInfer", percent_path(&model));
            match client.post_json(addr, &path, &json!({ "id": id })).await {
                Ok(r) if r.ok() || r.status == 404 => {
                    tracing::debug!(instance, req_id = %id, status = r.status, "stopInfer sent")
                }
                Ok(r) => {
                    tracing::warn!(instance, req_id = %id, status = r.status, body = %r.text(), "stopInfer refused")
                }
                Err(e) => tracing::warn!(instance, req_id = %id, "stopInfer failed: {e}"),
            }
        });
    }
}

/// A model name as one path segment.
fn percent_path(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
