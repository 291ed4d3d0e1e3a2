//! The `coordinator` subcommand: MindIE-Motor's Coordinator (SPEC-CLUSTER §3, §5; SPEC-PD §4).

pub mod metrics_merge;

use std::process::ExitCode;

/// Entry point of `mindieservice_daemon coordinator [predict_ip [manage_ip]]`.
pub fn main(_predict_ip: Option<String>, _manage_ip: Option<String>) -> ExitCode {
    eprintln!("mindieservice_daemon coordinator: not built yet");
    ExitCode::FAILURE
}
