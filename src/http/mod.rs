//! HTTP for every plane: listeners with their own TLS ([`server`]), admission control for the
//! business plane — `maxLinkNum`, `maxRequestLength`, stopping — ([`admission`]), the two
//! error shapes clients expect ([`error`]), field validation ([`params`]), one generation as
//! every flavour sees it ([`generation`], [`drive`]) and streaming replies ([`sse`]). The
//! flavours are thin wire ⇄ engine conversions: [`openai`], [`tgi`], [`vllm`], [`native`],
//! [`triton`], [`tokenize`].

pub mod admission;
pub mod drive;
pub mod error;
pub mod generation;
pub mod native;
pub mod openai;
pub mod parameters;
pub mod params;
pub mod server;
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
