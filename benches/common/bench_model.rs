//! Where the benches find the Qwen2-0.5B-shaped bench model: `BENCH_DIR`, else
//! `target/bench-models/qwen2-0.5b-bf16` (made by `cargo bench --bench decode -- model`).

use std::path::{Path, PathBuf};

/// The bench model's folder, or an error telling how to make it.
pub fn dir() -> Result<PathBuf, String> {
    let dir: PathBuf = std::env::var_os("BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-models/qwen2-0.5b-bf16")
        });
    if dir.join("model.safetensors").exists() {
        Ok(dir)
    } else {
        Err(format!(
            "no bench model at {}: make it with `cargo bench --bench decode -- model`",
            dir.display()
        ))
    }
}
