//! The protocol-neutral engine as the planes see it: its state snapshot for status and health.
