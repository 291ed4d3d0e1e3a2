//! HTTP for every plane: listeners with their own TLS ([`server`]), admission control for the
//! business plane — `maxLinkNum`, `maxRequestLength`, stopping — ([`admission`]), and the two
//! error shapes clients expect ([`error`]). Flavour folders (OpenAI, TGI, ...) hang off here.

pub mod admission;
pub mod error;
pub mod openai;
pub mod server;

/// Header MindIE puts on every reply.
pub const REQUEST_UUID: &str = "RequestUUID";
