//! Ranges and cross-field rules of `config.json`, reported all at once.

use super::{ConfigError, Env, Loaded};
use std::path::Path;

pub fn load(_path: &Path, _home: &Path, _env: &Env) -> Result<Loaded, ConfigError> {
    unimplemented!("config::validate::load")
}
