//! Prefill/decode disaggregation (`inferMode: "dmi"`, SPEC-PD).
//!
//! Protocol pieces:
//! - [`frames`]: the `/dresult` frame format, both ways.
//! - [`dresult`]: [`dresult::DresultHub`], the one `GET /dresult` reader of a decode instance,
//!   with replacement, heartbeat and back-pressure.
//! - [`headers`]: the `req-type`/`req-id`/`d-target`/`is-recompute` headers on a prefill
//!   instance's inference routes.
//! - [`role`]: role posts, the role status and the links to peers (through a
//!   [`role::Linker`]), and the PD parts of `/v1/status`.
//! - [`route`]: which business routes are inference routes, and their `msgType`.
//! - [`handoff_msg`]: `DecodeParameters` as P fills them and D reads them.
//!
//! One request across two instances: the client's request runs through its unchanged route
//! handler on both, inside a per-request [`context::Scope`] that decides where its
//! generation runs.
//! - Prefill side: [`gate`] (the business plane of a dmi instance) → [`prefill_route`], which
//!   runs the handler on a [`prefill::PrefillRun`] (first token, KV under a lease), keeps the
//!   reply chunks so far and calls the decode instance; [`kv_source`] serves the leased KV to
//!   its pull and frees it on release.
//! - Decode side: [`decode`] accepts `DecodeRequestChannel`, pulls the KV, releases it on P,
//!   replays the handler on a [`decode_run::DecodeRun`] and relays the reply as `/dresult`
//!   frames.
//! - [`node::PdNode`] is what both sides share; [`links`] the gRPC channels to peers;
//!   [`linker`] the KV `Hello` that makes a role link.
//!
//! The management routes that drive [`role`] are in `mgmt::role`; start-up in `daemon::pd`.

pub mod context;
pub mod decode;
pub mod decode_run;
pub mod dresult;
pub mod frames;
pub mod gate;
pub mod handoff_msg;
pub mod headers;
pub mod kv_source;
pub mod linker;
pub mod links;
pub mod node;
pub mod prefill;
pub mod prefill_route;
pub mod role;
pub mod route;
pub mod vllm;
