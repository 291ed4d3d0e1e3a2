//! MindIE's `config.json`: where it is ([`paths`]), what it may contain ([`schema`], with the
//! key table in `fields`), which environment variables override it ([`env`]), whether it is
//! acceptable ([`validate`], with `walk` for types and ranges and `rules` for cross-field rules),
//! and the effective values derived from it ([`view`]).
//! [`load`] is the one entry point: it reads, parses, overrides and validates, returning every
//! problem at once.

pub mod env;
mod fields;
pub mod paths;
mod rules;
pub mod schema;
pub mod validate;
pub mod view;
mod walk;

#[cfg(test)]
mod tests;

pub use env::Env;
pub use paths::{locate, Located};
pub use schema::*;
pub use view::HttpSocket;

use std::path::{Path, PathBuf};

/// A plane (or inter-process link) that may carry its own TLS settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Plane {
    Business,
    Management,
    Metrics,
    InterComm,
    InterNode,
}

/// A loaded, validated configuration and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// The config file that was read.
    pub path: PathBuf,
    /// The install home: relative paths in the config resolve against it.
    pub home: PathBuf,
    /// Non-fatal findings (unknown keys, ignored KMC keys, deprecated keys), one line each.
    pub warnings: Vec<String>,
}

impl Loaded {
    /// The model to load and its folder resolved against the home; `None` when no model
    /// folder is used (`StandardMock`) or no model is configured.
    pub fn model_dir(&self) -> Option<(&ModelConfig, PathBuf)> {
        let model = self.config.model()?;
        crate::backend::BackendKind::of(model)
            .runs_a_model()
            .then(|| (model, paths::resolve(&self.home, &model.model_weight_path)))
    }
}

/// One problem found in the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON path, e.g. `BackendConfig.ScheduleConfig.maxBatchSize`.
    pub path: String,
    /// The value found, rendered as JSON (or a description when absent).
    pub value: String,
    /// What is allowed.
    pub allowed: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} = {}: {}", self.path, self.value, self.allowed)
    }
}

/// Why a configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("config file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path} is {size} bytes: allowed (0, 10 MB]")]
    Size { path: PathBuf, size: u64 },
    #[error("config file {path} is not valid JSON: {message}")]
    Json {
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// serde_json's message (it names the line and column too).
        message: String,
    },
    #[error("config file {path} has {} problem(s):\n  {}", .problems.len(), .problems.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("\n  "))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
    #[error("cannot determine the install home: {0}")]
    Home(String),
}

/// Reads, parses, applies env overrides to and validates the config at `path`.
/// `home` is the install home used to resolve relative paths.
pub fn load(path: &Path, home: &Path, env: &Env) -> Result<Loaded, ConfigError> {
    validate::load(path, home, env)
}
