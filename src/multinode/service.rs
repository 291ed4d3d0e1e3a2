//! The master's `MasterService.RegisterAndCommunicate` (SPEC-PD §5): a slave opens the
//! bidirectional stream and registers with its IP first; the master checks that the IP is a
//! slave of its ranktable and that the connection comes from that address (with mutual TLS
//! the certificate was checked by the listener, CRL included), attaches the stream to the
//! slave's slot in [`SlaveSet`] and from then on routes the slave's messages there. The
//! stream's end, or a failure, is the slave going down.

use super::proto::model_execute_data as med;
use super::proto::model_execute_data::master_service_server::{MasterService, MasterServiceServer};
use super::slaves::SlaveSet;
use crate::cluster::transport::PeerInfo;
use futures_util::Stream;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tonic::service::Routes;
use tonic::{Request, Response, Status, Streaming};

/// Largest message either side sends (MindIE: 256 MiB): a prefill step's hidden states.
pub const MAX_MESSAGE_BYTES: usize = 256 << 20;
/// How long a fresh stream may take to send its registration.
const REGISTER_WAIT: Duration = Duration::from_secs(10);

/// The gRPC routes of the master's interNode listener.
pub fn routes(set: Arc<SlaveSet>) -> Routes {
    Routes::new(
        MasterServiceServer::new(Master { set })
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES),
    )
}

struct Master {
    set: Arc<SlaveSet>,
}

type Outgoing = Pin<Box<dyn Stream<Item = Result<med::MasterToSlaveMsg, Status>> + Send>>;

#[tonic::async_trait]
impl MasterService for Master {
    type RegisterAndCommunicateStream = Outgoing;

    async fn register_and_communicate(
        &self,
        request: Request<Streaming<med::SlaveToMasterMsg>>,
    ) -> Result<Response<Outgoing>, Status> {
        let peer = request
            .extensions()
            .get::<PeerInfo>()
            .map(|p| p.remote_addr.ip());
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(REGISTER_WAIT, inbound.message()).await {
            Err(_) => return Err(Status::deadline_exceeded("no register_request within 10 s")),
            Ok(Err(e)) => return Err(e),
            Ok(Ok(None)) => return Err(Status::cancelled("stream closed before registering")),
            Ok(Ok(Some(m))) => m,
        };
        let Some(med::slave_to_master_msg::Result::RegisterRequest(reg)) = first.result else {
            return Err(Status::invalid_argument(
                "the first message must be register_request",
            ));
        };
        let ip: IpAddr = reg.slave_ip.trim().parse().map_err(|_| {
            Status::invalid_argument(format!("slave_ip {:?} is not an IP address", reg.slave_ip))
        })?;
        let Some(idx) = self.set.find(ip) else {
            tracing::warn!(%ip, "multi-node: refused a registration from an address outside the ranktable");
            return Err(Status::permission_denied(format!(
                "{ip} is not a slave in this master's ranktable (slaves: {})",
                self.set.addrs().join(", ")
            )));
        };
        if let Some(peer) = peer.filter(|p| *p != ip) {
            tracing::warn!(%ip, %peer, "multi-node: refused a registration whose slave_ip is not the connection's address");
            return Err(Status::permission_denied(format!(
                "registered as {ip} but connected from {peer}"
            )));
        }
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let link = self.set.attach(idx, tx);
        let set = self.set.clone();
        tokio::spawn(async move {
            let why = loop {
                match inbound.message().await {
                    Ok(Some(m)) => set.on_message(idx, link, m),
                    Ok(None) => break "the slave closed its stream".to_string(),
                    Err(e) => break format!("its stream failed: {}", e.message()),
                }
            };
            set.detach(idx, link, &why);
        });
        let out = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Response::new(Box::pin(out)))
    }
}
