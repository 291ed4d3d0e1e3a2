//! What MindIE-Motor's Controller and Coordinator share: their JSON config files read with
//! Motor's permission rules ([`files`]), the `tls_config` items ([`tls_items`]), an HTTP(S)
//! client toward instances and each other ([`client`]), and the instance list the Controller
//! pushes to the Coordinator's `POST /v1/instances/refresh` ([`instances`]).

pub mod client;
pub mod files;
pub mod instances;
pub mod tls_items;
