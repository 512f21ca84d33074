//! Models fitted to the data: lifetime value, personas (k-means), micro-segment discovery
//! and experiments (lift and uplift).

pub mod clv;
pub mod discover;
pub mod experiment;
pub mod kmeans;
pub mod optimize;
pub mod personas;
