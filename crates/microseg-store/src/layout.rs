//! The workspace in the SQL layout of docs/warehouse.md (what `warehouse export` and
//! `warehouse load` write), and the member lists a warehouse sends back.
//!
//! `profiles(id, merged_into, <one column per trait>)`: live and merged profiles, erased
//! people left out; `merged_into` is the external id at the end of the profile's chain of
//! merges. `events(profile_id, time, event, revenue, properties)` with the external id of
//! the profile the event was recorded on and the properties as JSON text.

use microseg_core::{TraitType, Value};
use roaring::RoaringBitmap;
use rusqlite::{params, OptionalExtension};

use crate::store::{now_ms, Store};
use crate::StoreError;

/// One row of `profiles`.
pub struct LayoutProfile<'a> {
    /// External id.
    pub id: &'a str,
    /// The live profile it was merged into, if any.
    pub merged_into: Option<&'a str>,
    /// One value per column of [`Store::layout_traits`], in that order.
    pub traits: &'a [Option<Value>],
}

/// One row of `events`.
pub struct LayoutEvent<'a> {
    /// External id of the profile it was recorded on.
    pub profile_id: &'a str,
    /// UTC milliseconds.
    pub time: i64,
    /// The event's name.
    pub event: &'a str,
    /// Its revenue.
    pub revenue: Option<f64>,
    /// Its properties, a JSON object as text.
    pub properties: Option<&'a str>,
}

/// The member list a warehouse run brought back for a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct WarehouseMembers {
    /// The segment's version the SQL was compiled from.
    pub version: i64,
    /// The engine that ran it (`postgres`, `duckdb`, `spark`).
    pub engine: String,
    /// The as-of instant compiled into the SQL (UTC milliseconds).
    pub as_of: i64,
    /// When it was imported (UTC milliseconds).
    pub imported_at: i64,
    /// Dense ids of the members.
    pub members: RoaringBitmap,
}

impl Store {
    /// The trait columns of `profiles`: every declared or inferred trait, by name, but
    /// `id` and `merged_into` (the layout's own columns) and a name equal to an earlier one
    /// but for case (DuckDB and Spark do not tell `Age` from `age`): a write key can send
    /// any trait name, and none may make a load fail.
    pub fn layout_traits(&self) -> Result<Vec<(String, TraitType)>, StoreError> {
        let mut seen = std::collections::HashSet::new();
        Ok(self
            .schema()?
            .into_iter()
            .filter(|(name, _)| {
                let folded = name.to_lowercase();
                folded != "id" && folded != "merged_into" && seen.insert(folded)
            })
            .map(|(name, spec)| (name, spec.ty))
            .collect())
    }

    /// Calls `f` with every row of `profiles`, in dense-id order.
    pub fn layout_profiles<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(LayoutProfile<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let columns = self.layout_traits()?;
        let ids = self.external_ids()?;
        let survivors = self.survivors(ids.len())?;
        let mut stmt = self
            .conn
            .prepare("SELECT id, traits FROM profiles WHERE erased_at IS NULL ORDER BY id")
            .map_err(StoreError::from)?;
        let mut rows = stmt.query([]).map_err(StoreError::from)?;
        let mut values: Vec<Option<Value>> = vec![None; columns.len()];
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            let id: u32 = row.get(0).map_err(StoreError::from)?;
            let traits: String = row.get(1).map_err(StoreError::from)?;
            let parsed: serde_json::Map<String, serde_json::Value> =
                serde_json::from_str(&traits).unwrap_or_default();
            for ((name, ty), slot) in columns.iter().zip(values.iter_mut()) {
                *slot = parsed.get(name).and_then(|v| Value::from_json(*ty, v));
            }
            let survivor = survivors.get(id as usize).copied().unwrap_or(id);
            f(LayoutProfile {
                id: &ids[id as usize],
                merged_into: (survivor != id).then(|| ids[survivor as usize].as_str()),
                traits: &values,
            })?;
        }
        Ok(())
    }

    /// Calls `f` with every row of `events`, in the order they were stored.
    pub fn layout_events<E: From<StoreError>>(
        &self,
        mut f: impl FnMut(LayoutEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let ids = self.external_ids()?;
        let names: Vec<(i64, String)> = {
            let mut stmt = self
                .conn
                .prepare("SELECT id, name FROM event_names")
                .map_err(StoreError::from)?;
            let rows = stmt
                .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(StoreError::from)?;
            rows.collect::<Result<_, _>>().map_err(StoreError::from)?
        };
        let name_of: std::collections::HashMap<i64, &str> =
            names.iter().map(|(i, n)| (*i, n.as_str())).collect();
        let mut stmt = self
            .conn
            .prepare(
                "SELECT profile_id, time, name_id, revenue, properties FROM events ORDER BY id",
            )
            .map_err(StoreError::from)?;
        let mut rows = stmt.query([]).map_err(StoreError::from)?;
        while let Some(row) = rows.next().map_err(StoreError::from)? {
            let profile: u32 = row.get(0).map_err(StoreError::from)?;
            let name_id: i64 = row.get(2).map_err(StoreError::from)?;
            let properties = row.get_ref(4).map_err(StoreError::from)?;
            let properties = match properties {
                rusqlite::types::ValueRef::Text(t) => std::str::from_utf8(t).ok(),
                _ => None,
            };
            let (Some(profile_id), Some(event)) =
                (ids.get(profile as usize), name_of.get(&name_id))
            else {
                return Err(StoreError::Invalid(format!(
                    "an event names profile {profile} or event name {name_id}, which do not exist"
                ))
                .into());
            };
            f(LayoutEvent {
                profile_id,
                time: row.get(1).map_err(StoreError::from)?,
                event,
                revenue: row.get(3).map_err(StoreError::from)?,
                properties,
            })?;
        }
        Ok(())
    }

    /// Keeps `members` as what a warehouse returned for version `version` of `segment`,
    /// replacing an earlier list.
    pub fn save_warehouse_members(
        &mut self,
        segment: &str,
        version: i64,
        engine: &str,
        as_of: i64,
        members: &RoaringBitmap,
    ) -> Result<(), StoreError> {
        let mut blob = Vec::with_capacity(members.serialized_size());
        members
            .serialize_into(&mut blob)
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        self.conn.execute(
            "INSERT OR REPLACE INTO warehouse_members(segment, version, engine, as_of, imported_at, size, members)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![segment, version, engine, as_of, now_ms(), members.len() as i64, blob],
        )?;
        Ok(())
    }

    /// What a warehouse returned for `segment`, if it still matches the segment's current
    /// version (a changed definition makes the list stale).
    pub fn warehouse_members(&self, segment: &str) -> Result<Option<WarehouseMembers>, StoreError> {
        let Some(current) = self.segment_version(segment)? else {
            return Ok(None);
        };
        let row: Option<(i64, String, i64, i64, Vec<u8>)> = self
            .conn
            .query_row(
                "SELECT version, engine, as_of, imported_at, members FROM warehouse_members WHERE segment = ?1",
                [segment],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .optional()?;
        let Some((version, engine, as_of, imported_at, blob)) = row else {
            return Ok(None);
        };
        if version != current {
            return Ok(None);
        }
        let members = RoaringBitmap::deserialize_from(&blob[..])
            .map_err(|e| StoreError::Invalid(format!("warehouse members of {segment}: {e}")))?;
        Ok(Some(WarehouseMembers {
            version,
            engine,
            as_of,
            imported_at,
            members,
        }))
    }

    /// Forgets what a warehouse returned for `segment`; true when there was a list.
    pub fn forget_warehouse_members(&mut self, segment: &str) -> Result<bool, StoreError> {
        Ok(self.conn.execute(
            "DELETE FROM warehouse_members WHERE segment = ?1",
            [segment],
        )? > 0)
    }
}
