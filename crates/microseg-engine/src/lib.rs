//! microseg's in-memory engine: columnar profile and event tables and the behavioural
//! metrics computed over them. No I/O: tables are filled by `microseg-store`.

pub mod analytics;
pub mod array;
mod behaviour;
pub mod columnar;
pub mod evaluate;
pub mod index;
pub mod metrics;
pub mod models;
pub mod special;
pub mod stats;
pub mod streaming;

pub use array::{Array, Bytes};
pub use columnar::{Column, Dictionary, EventTable, EventTableBuilder, ExternalIds, ProfileTable};
pub use evaluate::{check_references, Dataset, EvalError, Explanation};
pub use metrics::{compute as compute_metrics, Metrics, MetricsConfig, METRIC_NAMES};
