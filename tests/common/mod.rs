//! Shared test support: the daemon launcher, an HTTP(S) client, and a test PKI.

pub mod client;
pub mod daemon;
