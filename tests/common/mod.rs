//! Shared test support: the daemon launcher, an HTTP(S) client, and a test PKI made with the
//! openssl CLI.
#![allow(dead_code)]

pub mod client;
pub mod cluster;
pub mod coord;
pub mod daemon;
pub mod dot_accuracy;
pub mod emuacl;
pub mod engine_refs;
pub mod install;
pub mod multinode;
pub mod parity;
pub mod pd;
pub mod pki;
pub mod prom;
pub mod rotate;
pub mod scrape;
pub mod sse;
pub mod venv;
