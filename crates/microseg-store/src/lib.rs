//! microseg's durable store and its edges to files: the workspace and its config, the
//! SQLite store (source of truth), and importers for CSV, NDJSON and Parquet.

pub mod campaigns;
pub mod delivery;
pub mod erase;
pub mod error;
mod event_rows;
pub mod import;
pub mod ingest;
pub mod keys;
pub mod layout;
pub mod models;
pub mod reader;
pub mod snapshot;
pub mod sql;
pub mod store;
pub mod tables;
pub mod tracking;
pub mod webhooks;
pub mod workspace;

#[cfg(test)]
mod fuzz;

pub use error::StoreError;
pub use import::{
    EventImport, EventName, FileOptions, ImportSummary, NoProgress, ProfileImport, Progress,
};
pub use reader::{Delimiter, Format};
pub use store::{
    Store, StoreState, StoredEvent, StoredProfile, StoredSegment, UnreadableSegment,
    MAX_DESCRIPTION,
};
pub use tables::Tables;
pub use workspace::{Config, Workspace};
