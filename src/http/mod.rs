//! HTTP for every plane. Transport: listeners with their own TLS ([`server`]) and their
//! limits against slow clients ([`conn_limits`], [`first_bytes`]), admission
//! control for the business plane — `maxLinkNum`, `maxRequestLength`, stopping, the
//! `RequestUUID` tag — ([`admission`]), the two error shapes clients expect ([`error`]), the body extractor and per-flavour error every
//! handler starts from ([`extract`]) and
//! streaming replies ([`sse`]). Requests: the generic JSON field reader ([`fields`]), the
//! `parameters{}` object of TGI, MindIE-native and Triton ([`gen_parameters`]) and the
//! per-request session every flavour drives ([`session`]). The flavours are thin wire ⇄
//! engine conversions: [`openai`], [`tgi`], [`vllm`], [`native`], [`triton`], [`tokenize`].
//! [`business_router`] puts the business plane's routes together.

pub mod admission;
pub mod conn_limits;
pub mod error;
pub mod extract;
pub mod fields;
pub mod first_bytes;
pub mod gen_parameters;
pub mod native;
pub mod openai;
pub mod openapi;
pub mod server;
pub mod session;
pub mod sse;
pub mod tgi;
pub mod tokenize;
pub mod triton;
pub mod vllm;

use crate::config::Loaded;
use admission::Admission;
use axum::Router;
use openai::models::ModelCard;
use session::Serving;
use std::sync::Arc;

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

/// What the business plane's routes need.
#[derive(Clone)]
pub struct BusinessState {
    /// What the inference routes of every flavour share.
    pub serving: Arc<Serving>,
    /// The served model as `/v1/models` shows it.
    pub card: Arc<ModelCard>,
    /// The loaded configuration (Triton's metadata routes show parts of it).
    pub config: Arc<Loaded>,
    /// `maxLinkNum`, `maxRequestLength` and stopping.
    pub admission: Admission,
}

/// The business plane: every flavour's routes behind admission, unknown paths answered 404 in
/// the style of their path. The `RequestUUID` tag ([`admission::tag_request_id`]) is the
/// outermost layer of each listener, added where the planes are put together.
pub fn business_router(state: BusinessState) -> Router {
    let triton = triton::Triton {
        inf: state.serving.clone(),
        config: state.config,
    };
    openai::models::router(state.card)
        .merge(openai::router(state.serving.clone()))
        .merge(tgi::router(state.serving.clone()))
        .merge(native::router(state.serving.clone()))
        .merge(tokenize::router(state.serving))
        .merge(triton::router(triton))
        .fallback(error::not_found)
        // The body's size is admission's to judge (`maxRequestLength` MB, 413 in the
        // flavour's style); axum's own 2 MB default would refuse bodies the operator allowed.
        .layer(axum::extract::DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            state.admission,
            admission::business_gate,
        ))
}
