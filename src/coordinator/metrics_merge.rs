//! Placeholder until the merge lands (replaced by the coord-metrics branch).

/// Why texts could not be merged.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct MergeError(String);

/// Placeholder: concatenation.
pub fn merge(instances: &[&str], own: &str) -> Result<String, MergeError> {
    let mut out = String::from(own);
    for t in instances {
        out.push_str(t);
    }
    Ok(out)
}
