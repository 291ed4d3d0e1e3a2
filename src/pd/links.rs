//! Outgoing gRPC channels to peer instances (interComm), one per address, dialled on first
//! use over the interComm plane's mutual TLS (or plain h2c when `interCommTLSEnabled` is
//! false) and dropped after a failure so the next use dials afresh. Every connection a channel
//! opens uses the plane's current client material (SIGHUP reload).

use crate::cluster::transport::{self, LinkError};
use crate::security::reload::LiveClient;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;
use tonic::transport::Channel;

/// How long dialling a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Channels to peers by address.
pub struct Links {
    tls: Option<LiveClient>,
    channels: Mutex<HashMap<SocketAddr, Channel>>,
}

impl Links {
    pub fn new(tls: Option<LiveClient>) -> Self {
        Self {
            tls,
            channels: Mutex::new(HashMap::new()),
        }
    }

    /// The channel to `addr`, dialled now if there is none.
    pub async fn channel(&self, addr: SocketAddr) -> Result<Channel, LinkError> {
        if let Some(c) = self
            .channels
            .lock()
            .ok()
            .and_then(|m| m.get(&addr).cloned())
        {
            return Ok(c);
        }
        let c = transport::dial_from_live(addr, None, self.tls.clone(), CONNECT_TIMEOUT).await?;
        if let Ok(mut m) = self.channels.lock() {
            m.insert(addr, c.clone());
        }
        Ok(c)
    }

    /// Drops the channel to `addr` (after a failure on it).
    pub fn forget(&self, addr: SocketAddr) {
        if let Ok(mut m) = self.channels.lock() {
            m.remove(&addr);
        }
    }
}
