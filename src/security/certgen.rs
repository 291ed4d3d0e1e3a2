//! The `gen-cert` subcommand: MindIE's gen_cert tool (SPEC-CLUSTER §6).

use std::path::Path;
use std::process::ExitCode;

/// Entry point of `mindieservice_daemon gen-cert <gen_cert.json> [--ip=IP1,IP2]`.
pub fn main(_config: &Path, _ips: &[String]) -> ExitCode {
    eprintln!("mindieservice_daemon gen-cert: not built yet");
    ExitCode::FAILURE
}
