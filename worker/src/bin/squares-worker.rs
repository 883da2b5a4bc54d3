//! The reference worker.
fn main() {}
