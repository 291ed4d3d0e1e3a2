//! HTTP for every plane: listeners with their own TLS ([`server`]), admission control for the
//! business plane — `maxLinkNum`, `maxRequestLength`, stopping — ([`admission`]), the two
//! error shapes clients expect ([`error`]), field validation ([`params`]), one generation as
//! every flavour sees it ([`generation`]) and SSE framing ([`sse`]). Flavour folders (OpenAI,
//! TGI, ...) hang off here.

pub mod admission;
pub mod error;
pub mod generation;
pub mod openai;
pub mod params;
pub mod server;
pub mod sse;

/// Header MindIE puts on every reply.
pub const REQUEST_UUID: &str = "RequestUUID";
