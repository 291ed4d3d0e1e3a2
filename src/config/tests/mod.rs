//! Unit tests of the config module: loading the stock MindIE file, broken variants of it,
//! warnings, environment overrides, file location and TLS file mapping.

mod broken_keys;
mod broken_rules;
mod env_paths;
mod load;
mod support;
mod view;
