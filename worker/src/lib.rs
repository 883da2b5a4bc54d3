//! Worker SDK.
