//! HTTP for every plane. Transport: listeners with their own TLS ([`server`]), admission
//! control for the business plane — `maxLinkNum`, `maxRequestLength`, stopping, the
//! `RequestUUID` tag — ([`admission`]), the two error shapes clients expect ([`error`]) and
//! streaming replies ([`sse`]). Requests: the generic JSON field reader ([`fields`]), the
//! `parameters{}` object of TGI, MindIE-native and Triton ([`gen_parameters`]) and the
//! per-request session every flavour drives ([`session`]). The flavours are thin wire ⇄
//! engine conversions: [`openai`], [`tgi`], [`vllm`], [`native`], [`triton`], [`tokenize`].

pub mod admission;
pub mod error;
pub mod fields;
pub mod gen_parameters;
pub mod native;
pub mod openai;
pub mod server;
pub mod session;
pub mod sse;
pub mod tgi;
pub mod tokenize;
pub mod triton;
pub mod vllm;

/// The names a request can be cancelled by (`stopInfer`): its `RequestUUID`.
pub fn request_keys(parts: &axum::http::request::Parts) -> Vec<String> {
    parts
        .extensions
        .get::<admission::RequestUuid>()
        .map(|r| vec![r.0.clone()])
        .unwrap_or_default()
}

/// Header MindIE puts on every reply.
pub const REQUEST_UUID: &str = "RequestUUID";
