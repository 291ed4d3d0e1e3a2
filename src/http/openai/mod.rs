//! OpenAI-compatible routes (SPEC §1). Model listing lives in [`models`].

pub mod models;
