//! A snapshot of the environment variables the daemon reads (SPEC §5), so that config
//! resolution and overrides are pure functions of it and testable.

use std::collections::HashMap;

/// Environment snapshot. Values longer than 256 characters are ignored, as MindIE does.
#[derive(Debug, Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl Env {
    /// Snapshot of this process's environment.
    pub fn from_process() -> Self {
        Self::from_pairs(std::env::vars())
    }

    /// Snapshot from explicit pairs (tests).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        let vars = pairs
            .into_iter()
            .map(|(k, v)| (k.into(), v.into()))
            .filter(|(_, v)| v.len() <= 256)
            .collect();
        Self { vars }
    }

    /// The variable's value, if set, non-empty and at most 256 characters.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.vars
            .get(key)
            .map(String::as_str)
            .filter(|v| !v.is_empty())
    }

    /// Boolean-ish flag: `0`/`false`/`off` are false, anything else set is true.
    pub fn flag(&self, key: &str) -> Option<bool> {
        self.get(key).map(|v| {
            !matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "0" | "false" | "off" | "no"
            )
        })
    }
}
