//! Domain types of microseg: the condition language, trait values and their types, the
//! trait schema, and time.
//!
//! This crate does no I/O and never reads the clock: every function that depends on "now"
//! takes an explicit `as_of` [`time::Timestamp`].

pub mod condition;
pub mod schema;
pub mod time;
pub mod value;

pub use schema::{Schema, TraitSpec};
pub use time::{Timestamp, DAY_MS};
pub use value::{TraitType, Value};

/// A dense profile id inside one workspace, assigned in first-seen order from 0, so that
/// segment members are bitmaps. External ids are what people see.
pub type ProfileId = u32;
