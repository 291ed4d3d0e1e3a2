//! Prefill/decode disaggregation (`inferMode: "dmi"`, SPEC-PD): the protocol pieces that need
//! no gRPC.
//!
//! - [`frames`]: the `/dresult` frame format, both ways.
//! - [`dresult`]: [`dresult::DresultHub`], the one `GET /dresult` reader of a decode instance,
//!   with replacement, heartbeat and back-pressure.
//! - [`headers`]: the `req-type`/`req-id`/`d-target`/`is-recompute` headers on a prefill
//!   instance's inference routes.
//! - [`role`]: role posts, the role status and the links to peers (through a
//!   [`role::Linker`]), and the PD parts of `/v1/status`.
//!
//! The management routes that drive [`role`] are in `mgmt::role`.

pub mod dresult;
pub mod frames;
pub mod headers;
pub mod role;
