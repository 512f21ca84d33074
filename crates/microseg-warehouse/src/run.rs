//! Segments compiled for the workspace's layout, run on an engine, and their member lists
//! kept for campaigns.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Instant;

use microseg_core::condition::Condition;
use microseg_core::{Timestamp, TraitType};
use microseg_engine::{EvalError, MetricsConfig};
use microseg_store::sql::{compile, Dialect, SqlContext};
use microseg_store::{Store, Workspace};
use roaring::RoaringBitmap;

use crate::{connect, Engine, WarehouseError};

/// What a workspace's SQL is compiled against: the traits of the layout, the saved
/// segments (for `in_segment`) and the workspace's metric settings.
pub struct SegmentSql {
    traits: BTreeMap<String, TraitType>,
    left_out: BTreeSet<String>,
    segments: BTreeMap<String, Condition>,
    metrics: MetricsConfig,
}

impl SegmentSql {
    /// Reads the layout, the saved segments and the metric settings.
    pub fn open(ws: &Workspace, store: &Store) -> Result<SegmentSql, WarehouseError> {
        let traits: BTreeMap<String, TraitType> = store.layout_traits()?.into_iter().collect();
        let left_out = store
            .schema()?
            .into_keys()
            .filter(|name| !traits.contains_key(name))
            .collect();
        Ok(SegmentSql {
            traits,
            left_out,
            segments: store.segment_conditions()?,
            metrics: ws.config.metrics_config(),
        })
    }

    /// The saved segments by name.
    pub fn segments(&self) -> &BTreeMap<String, Condition> {
        &self.segments
    }

    /// `condition` as one `SELECT` of the members' ids in `dialect`, evaluated at `at`;
    /// a condition on a trait the layout leaves out is refused saying why.
    pub fn compile(
        &self,
        condition: &Condition,
        dialect: Dialect,
        at: Timestamp,
    ) -> Result<String, WarehouseError> {
        let ctx = SqlContext {
            traits: &self.traits,
            segments: &self.segments,
            metrics: &self.metrics,
            as_of: at,
            dialect,
        };
        compile(condition, &ctx).map_err(|e| match e {
            EvalError::UnknownName(name) if self.left_out.contains(&name) => {
                WarehouseError::LeftOut(name)
            }
            e => WarehouseError::Condition(e),
        })
    }
}

/// One segment run on an engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Ran {
    /// The segment.
    pub segment: String,
    /// How many members.
    pub size: u64,
    /// Their external ids, as the engine returned them.
    pub ids: Vec<String>,
    /// Seconds the query took on the engine.
    pub seconds: f64,
}

/// Runs the saved segments `names` on `engine` as of `at`, one query each on one
/// connection, and keeps each member list as that version of the segment's members for
/// campaigns (`Store::save_warehouse_members`); `each` sees every result as it arrives.
/// Ids the workspace does not know (the engine holds other data) are refused.
pub fn run(
    ws: &Workspace,
    store: &mut Store,
    engine: Engine,
    names: &[String],
    at: Timestamp,
    each: &mut dyn FnMut(&Ran),
) -> Result<Vec<Ran>, WarehouseError> {
    let sql = SegmentSql::open(ws, store)?;
    if let Some(name) = names.iter().find(|n| !sql.segments.contains_key(*n)) {
        return Err(WarehouseError::UnknownSegment(name.clone()));
    }
    let dense: HashMap<String, u32> = store
        .external_ids()?
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i as u32))
        .collect();
    let mut session = connect(ws, engine).map_err(not_loaded)?;
    let mut done = Vec::with_capacity(names.len());
    for name in names {
        let query = sql
            .compile(&sql.segments[name], engine.dialect(), at)
            .map_err(|e| WarehouseError::Segment {
                segment: name.clone(),
                source: Box::new(e),
            })?;
        let start = Instant::now();
        let ids = session.ids(&query).map_err(|e| WarehouseError::Segment {
            segment: name.clone(),
            source: Box::new(not_loaded(e)),
        })?;
        let seconds = start.elapsed().as_secs_f64();
        let mut members = RoaringBitmap::new();
        let mut unknown = 0u64;
        for id in &ids {
            match dense.get(id) {
                Some(&p) => {
                    members.insert(p);
                }
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            return Err(WarehouseError::UnknownIds {
                engine: engine.name(),
                segment: name.clone(),
                count: unknown,
            });
        }
        let version = store.segment_version(name)?.unwrap_or(1);
        store.save_warehouse_members(name, version, engine.name(), at.0, &members)?;
        let ran = Ran {
            segment: name.clone(),
            size: members.len(),
            ids,
            seconds,
        };
        each(&ran);
        done.push(ran);
    }
    Ok(done)
}

/// An engine's error that says the layout's tables or columns are missing, as one that
/// says what to do; other errors as they are.
fn not_loaded(e: WarehouseError) -> WarehouseError {
    /// How PostgreSQL (SQLSTATE), DuckDB and Spark (error classes) say it.
    const SIGNS: [&str; 8] = [
        "42P01:",
        "42703:",
        "Catalog Error: Table with name",
        "does not have a column named",
        "database does not exist",
        "TABLE_OR_VIEW_NOT_FOUND",
        "UNRESOLVED_COLUMN",
        "SCHEMA_NOT_FOUND",
    ];
    match e {
        WarehouseError::Engine { engine, reason } if SIGNS.iter().any(|s| reason.contains(s)) => {
            WarehouseError::NotLoaded { engine, reason }
        }
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The messages are the engines' own, copied from PostgreSQL 15, DuckDB 1.5.6 and
    /// Spark 4.3 on a workspace never loaded.
    #[test]
    fn missing_tables_say_to_load() {
        for (engine, reason) in [
            ("postgres", r#"42P01: relation "profiles" does not exist"#),
            ("duckdb", "IO Error: Cannot open database \"w.duckdb\" in read-only mode: database does not exist"),
            ("duckdb", r#"Binder Error: Table "p" does not have a column named "tags""#),
            ("spark", "[SCHEMA_NOT_FOUND] The schema `cli` cannot be found."),
            ("spark", "[UNRESOLVED_COLUMN.WITH_SUGGESTION] A column, variable, or function parameter with name `p`.`tags` cannot be resolved."),
        ] {
            let e = not_loaded(WarehouseError::Engine { engine, reason: reason.into() });
            let message = e.to_string();
            assert!(
                message.contains(reason) && message.contains(&format!("microseg warehouse load --engine {engine}")),
                "{message}"
            );
        }
        let other = not_loaded(WarehouseError::Engine {
            engine: "postgres",
            reason: "57014: canceling statement due to statement timeout".into(),
        });
        assert!(!other.to_string().contains("warehouse load"), "{other}");
    }
}
