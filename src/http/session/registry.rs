//! Running requests by the names clients may cancel them with (`stopInfer`): a request's
//! `RequestUUID` and a client-chosen `id`.

use crate::engine::handle::RequestId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Requests `stopInfer` can end that are not (or no longer) running generations here: under
/// PD a prefill instance's KV lease waiting for its pull, a decode instance's KV transfer.
pub trait StopHook: Send + Sync {
    /// Ends what is known as `key`; false if nothing is.
    fn stop(&self, key: &str) -> bool;
}

/// Running requests by the names clients may cancel them with (`stopInfer`).
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<Mutex<HashMap<String, Vec<RequestId>>>>);

impl Registry {
    pub(super) fn insert(&self, keys: &[String], id: RequestId) {
        if keys.is_empty() {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            for k in keys {
                m.entry(k.clone()).or_default().push(id);
            }
        }
    }

    pub(super) fn remove(&self, keys: &[String], id: RequestId) {
        if keys.is_empty() {
            return;
        }
        if let Ok(mut m) = self.0.lock() {
            for k in keys {
                if let Some(ids) = m.get_mut(k) {
                    ids.retain(|&i| i != id);
                    if ids.is_empty() {
                        m.remove(k);
                    }
                }
            }
        }
    }

    /// The engine ids of the running requests known as `key` (the `n` choices of one
    /// request share its keys).
    pub fn find(&self, key: &str) -> Vec<RequestId> {
        self.0
            .lock()
            .ok()
            .and_then(|m| m.get(key).cloned())
            .unwrap_or_default()
    }
}
