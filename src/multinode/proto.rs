//! Generated gRPC code for multi-node inference (built from `proto/` by `build.rs`):
//! [`model_execute_data`], MindIE's master/slave vocabulary (`MasterService`), and
//! [`mindie_rs::pipeline::v1`], this project's extension for the CPU pipeline split, carried
//! on fields numbered from 1000. This module owns nothing else.

/// `package model_execute_data` (MindIE's master/slave messages, the subset used here).
#[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
pub mod model_execute_data {
    include!(concat!(env!("OUT_DIR"), "/model_execute_data.rs"));
}

/// `package mindie_rs.pipeline.v1` (the pipeline split's stage messages).
pub mod mindie_rs {
    pub mod pipeline {
        #[allow(clippy::all, clippy::pedantic, missing_docs, unreachable_pub)]
        pub mod v1 {
            include!(concat!(env!("OUT_DIR"), "/mindie_rs.pipeline.v1.rs"));
        }
    }
}
