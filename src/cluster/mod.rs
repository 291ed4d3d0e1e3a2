//! The inter-instance gRPC layer for prefill/decode (PD) disaggregation (SPEC-PD §1.1, §6):
//! one tonic server per instance on `interCommPort` carrying MindIE's `DecodeService` and
//! `PrefillService` and this project's `KvTransfer`, over the plane's own rustls config
//! (mutual TLS with CRLs) or plain h2c.
//!
//! - [`proto`]: the generated messages, clients and servers.
//! - [`transport`]: serving and dialling over our rustls, server settings, [`LinkError`].
//! - [`kv`]: the services behind [`kv::routes`] ([`kv::DecodeHandler`] and [`kv::KvSource`]
//!   are what the PD layer implements) and the client calls (`hello`, `pull`, `release`,
//!   `decode_request`).
//!
//! What a request's hand-off means (which engine command, which role, when to release) is
//! the PD layer's business; this module only carries it.

pub mod kv;
pub mod proto;
pub mod transport;

pub use transport::LinkError;

#[cfg(test)]
mod tests;
