//! The `controller` subcommand: MindIE-Motor's Controller (SPEC-CLUSTER §1–2, SPEC-PD §3.4).

use std::process::ExitCode;

/// Entry point of `mindieservice_daemon controller`.
pub fn main() -> ExitCode {
    eprintln!("mindieservice_daemon controller: not built yet");
    ExitCode::FAILURE
}
