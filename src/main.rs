//! `mindieservice_daemon`: command line → config → daemon. Nothing else lives here.

use clap::{Parser, Subcommand};
use mindie::daemon::{self, Options};
use std::path::PathBuf;
use std::process::ExitCode;

/// MindIE-compatible LLM inference daemon.
#[derive(Debug, Parser)]
#[command(name = "mindieservice_daemon", version, about)]
struct Cli {
    /// Path of config.json (default: $MIES_CONFIG_JSON_PATH, else <home>/conf/config.json).
    #[arg(long = "config-file", global = true)]
    config_file: Option<PathBuf>,
    /// Accepted for MindIE compatibility (expert parallelism is not supported on CPU).
    #[arg(long = "expert-parallel")]
    expert_parallel: Option<bool>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Validate config, file permissions, certificates and the model folder without starting.
    Check,
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { 255 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    let opts = Options {
        config_file: cli.config_file,
    };
    match cli.command {
        Some(Command::Check) => {
            let report = mindie::check::run(&opts, &mindie::config::Env::from_process());
            print!("{}", report.render());
            if report.errors() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        None => {
            if cli.expert_parallel == Some(true) {
                eprintln!("mindieservice_daemon: --expert-parallel true is not supported by this daemon; ignoring it");
            }
            match daemon::run(opts) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("mindieservice_daemon: failed to start: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
