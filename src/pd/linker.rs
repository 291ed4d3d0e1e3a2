//! Linking to a peer instance (SPEC-PD §3.3, §6): a `Hello` on the project's KV service at
//! the peer's `server_ip` and this instance's own interCommPort (role bodies carry no peer
//! port), over the interComm plane's mutual TLS. The link holds when both sides find the
//! other's KV layout equal to their own; a mismatch names every differing field.

use super::links::Links;
use super::role::{Instance, Linker};
use crate::cluster::kv::{self as kv_client, KvLayout};
use futures_util::future::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// How long one `Hello` may take.
const HELLO_DEADLINE: Duration = Duration::from_secs(10);

/// [`Linker`] over the KV service.
pub struct KvLinker {
    pub links: Arc<Links>,
    pub layout: KvLayout,
    pub inter_comm_port: u16,
}

impl Linker for KvLinker {
    fn link(&self, local: &Instance, peer: &Instance) -> BoxFuture<'static, Result<(), String>> {
        let local_id = local.id.unwrap_or(0);
        let links = self.links.clone();
        let layout = self.layout.clone();
        let addr = SocketAddr::new(peer.server_ip.into(), self.inter_comm_port);
        Box::pin(async move {
            let ch = links
                .channel(addr)
                .await
                .map_err(|e| format!("{addr}: {e}"))?;
            match kv_client::hello(ch, &layout, local_id, HELLO_DEADLINE).await {
                Ok(_) => Ok(()),
                Err(e) => {
                    links.forget(addr);
                    Err(format!("{addr}: {e}"))
                }
            }
        })
    }

    fn unlink(&self, _peer_id: u32) {}
}
