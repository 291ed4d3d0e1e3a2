//! The prefill side of the KV service: leases published under their `req-id` are exported on
//! a pull and freed on `ReleaseKVCacheChannel`.

use super::node::PdNode;
use crate::cluster::kv::{KvLayout, KvSource, KvSourceError};
use crate::engine::{HandoffError, KvExport};
use futures_util::future::BoxFuture;
use std::sync::Arc;

/// [`KvSource`] over a dmi instance's lease book and engine.
pub struct LeasedKv(pub Arc<PdNode>);

impl KvSource for LeasedKv {
    fn layout(&self) -> KvLayout {
        self.0.layout.clone()
    }

    fn instance_id(&self) -> u32 {
        self.0.role.snapshot().local.and_then(|l| l.id).unwrap_or(0)
    }

    fn export(
        &self,
        req_id: &str,
        src_block_ids: &[i64],
        num_tokens: u64,
    ) -> BoxFuture<'static, Result<KvExport, KvSourceError>> {
        let node = self.0.clone();
        let req_id = req_id.to_string();
        let src: Vec<i64> = src_block_ids.to_vec();
        Box::pin(async move {
            let id = node.leases.get(&req_id).ok_or_else(|| {
                KvSourceError::NotFound(format!(
                    "no KV is held for request {req_id} (never handed on, released, or its lease expired)"
                ))
            })?;
            let held = node
                .engine
                .lease_blocks(id)
                .await
                .map_err(|e| KvSourceError::Internal(e.to_string()))?;
            let Some((blocks, kv_tokens)) = held else {
                node.leases.remove(&req_id);
                return Err(KvSourceError::NotFound(format!(
                    "the KV of request {req_id} is gone (its lease expired)"
                )));
            };
            let ours: Vec<i64> = blocks.iter().map(|&b| i64::from(b)).collect();
            let wanted: Vec<i64> = src.into_iter().filter(|&b| b >= 0).collect();
            if !wanted.is_empty() && wanted != ours {
                return Err(KvSourceError::FailedPrecondition(format!(
                    "blocks {wanted:?} are not the ones held for request {req_id} ({ours:?})"
                )));
            }
            if num_tokens != 0 && num_tokens as usize != kv_tokens {
                return Err(KvSourceError::FailedPrecondition(format!(
                    "request {req_id} holds the KV of {kv_tokens} tokens, the pull expects {num_tokens}"
                )));
            }
            node.engine.export_kv(id).await.map_err(|e| match e {
                HandoffError::NoLease(_) => KvSourceError::NotFound(e.to_string()),
                other => KvSourceError::Internal(other.to_string()),
            })
        })
    }

    fn release(&self, req_id: &str) -> BoxFuture<'static, bool> {
        let node = self.0.clone();
        let req_id = req_id.to_string();
        Box::pin(async move {
            let Some(id) = node.leases.remove(&req_id) else {
                return false;
            };
            node.engine.release_kv(id).await.unwrap_or(false)
        })
    }
}
