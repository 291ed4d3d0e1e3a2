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
    /// MindIE-Motor's Controller: roles from the global ranktable, health, re-assignment
    /// (`ms_controller.json`: `$MINDIE_MS_CONTROLLER_CONFIG_FILE_PATH`, else `./conf/ms_controller.json`).
    Controller,
    /// MindIE-Motor's Coordinator: the users' entry point of a PD cluster
    /// (`ms_coordinator.json`: `$MINDIE_MS_COORDINATOR_CONFIG_FILE_PATH`).
    Coordinator {
        /// Overrides `http_config.predict_ip` (the predict port's address).
        predict_ip: Option<String>,
        /// Overrides `http_config.manage_ip` (the manage, status and external ports' address).
        manage_ip: Option<String>,
    },
    /// MindIE's gen_cert: a new RSA key and certificate signed by your CA, as `gen_cert.json` says.
    GenCert {
        /// The `gen_cert.json` file (ca_cert, ca_key, ca_key_pwd, cert_config, output_path).
        config: std::path::PathBuf,
        /// Extra IP subject alternative names, comma-separated: `--ip=10.0.0.3,127.0.0.1`.
        #[arg(long = "ip", value_delimiter = ',')]
        ip: Vec<String>,
    },
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
        Some(Command::Controller) => mindie::controller::main(),
        Some(Command::Coordinator {
            predict_ip,
            manage_ip,
        }) => mindie::coordinator::main(predict_ip, manage_ip),
        Some(Command::GenCert { config, ip }) => mindie::security::certgen::main(&config, &ip),
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
