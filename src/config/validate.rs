//! Loading pipeline of `config.json`: read (size in (0, 10 MiB]), parse, check every key
//! against the key table ([`walk`](super::walk)), deserialize into [`Config`], apply the
//! environment overrides, run the cross-field rules ([`rules`](super::rules)). All problems
//! are collected and reported together; warnings never stop the start.

use super::{rules, walk, Config, ConfigError, Env, Loaded, Problem};
use serde_json::Value;
use std::io::Read;
use std::path::Path;

/// Largest config file accepted: 10 MiB.
pub const MAX_CONFIG_BYTES: u64 = 10 * 1024 * 1024;

/// A config that passed every check, and the warnings found on the way.
#[derive(Debug, Clone)]
pub struct Checked {
    pub config: Config,
    pub warnings: Vec<String>,
}

/// Reads, parses, overrides and validates the config at `path`.
pub fn load(path: &Path, home: &Path, env: &Env) -> Result<Loaded, ConfigError> {
    let bytes = read_bounded(path)?;
    let doc = parse(path, &bytes)?;
    let checked = check(doc, env).map_err(|problems| ConfigError::Invalid {
        path: path.to_path_buf(),
        problems,
    })?;
    Ok(Loaded {
        config: checked.config,
        path: path.to_path_buf(),
        home: home.to_path_buf(),
        warnings: checked.warnings,
    })
}

/// Validates a parsed document: every problem at once, or the effective config (environment
/// overrides applied) with its warnings.
pub fn check(mut doc: Value, env: &Env) -> Result<Checked, Vec<Problem>> {
    let found = walk::walk(&mut doc);
    let mut problems = found.problems;
    let mut warnings = found.warnings;
    // The walk replaced every bad value with a stand-in, so this only fails if the key table
    // and the serde structs disagree: report it rather than hide it.
    let mut config: Config = match serde_json::from_value(doc) {
        Ok(c) => c,
        Err(e) => {
            problems.push(Problem {
                path: rules::ROOT.into(),
                value: "(document)".into(),
                allowed: format!("a document the daemon can read (internal: {e})"),
            });
            return Err(problems);
        }
    };
    let origins = rules::apply_env(&mut config, env);
    let bad = problems.iter().map(|p| p.path.clone()).collect();
    let (more_problems, more_warnings) = rules::check(&config, env, origins, bad);
    problems.extend(more_problems);
    warnings.extend(more_warnings);
    if problems.is_empty() {
        Ok(Checked { config, warnings })
    } else {
        Err(problems)
    }
}

fn read_bounded(path: &Path) -> Result<Vec<u8>, ConfigError> {
    let io = |source| ConfigError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let declared = file.metadata().map_err(io)?.len();
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let read = bytes.len() as u64;
    if read == 0 || read > MAX_CONFIG_BYTES {
        return Err(ConfigError::Size {
            path: path.to_path_buf(),
            size: declared.max(read),
        });
    }
    Ok(bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> Result<Value, ConfigError> {
    let bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
    serde_json::from_slice(bytes).map_err(|e| ConfigError::Json {
        path: path.to_path_buf(),
        line: e.line(),
        column: e.column(),
        message: e.to_string(),
    })
}
