//! Certificate inspection for `check` and start-up: chain, validity window, key match, key size.
