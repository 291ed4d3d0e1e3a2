//! Helpers shared by the config tests.
