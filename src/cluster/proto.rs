//! Generated gRPC code (prost messages, tonic clients and servers), built from `proto/` by
//! `build.rs`. This module owns nothing else: conversions and behaviour live in [`super::kv`].
//!
//! - [`pd`]: `package prefillAndDecodeCommunication`, MindIE's P↔D hand-off
//!   (`DecodeService`, `PrefillService`), wire-compatible with MindIE-LLM, plus the project's
//!   extension field `DecodeParameters.mindie_rs_handoff` (number 1000).
//! - [`kv`]: `package mindie_rs.kv.v1`, this project's KV transfer (`KvTransfer`).
//!
//! `google.protobuf.Empty` is generated as `()`.

/// `package prefillAndDecodeCommunication` (MindIE's P↔D hand-off).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod pd {
    include!(concat!(
        env!("OUT_DIR"),
        "/prefill_and_decode_communication.rs"
    ));
}

/// `package mindie_rs.kv.v1` (KV transfer between this project's instances).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod kv {
    include!(concat!(env!("OUT_DIR"), "/mindie_rs.kv.v1.rs"));
}
