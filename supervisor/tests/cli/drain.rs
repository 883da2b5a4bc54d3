//! Drain, resume and signals, end to end.
