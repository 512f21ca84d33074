//! `warehouse export`: the workspace as `profiles.parquet` and `events.parquet`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use microseg_core::{TraitType, Value};
use microseg_store::layout::{LayoutEvent, LayoutProfile};
use microseg_store::{Progress, Store};
use parquet::basic::{LogicalType, Repetition, Type as Physical};
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use parquet::schema::types::Type;

use crate::WarehouseError;

/// Rows buffered per row group.
const GROUP_ROWS: usize = 1 << 18;

/// A column's Parquet type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// BOOLEAN.
    Bool,
    /// INT64.
    Int,
    /// DOUBLE.
    Float,
    /// BYTE_ARRAY (UTF8).
    Text,
}

impl Kind {
    /// The column kind of a trait type: timestamps are UTC milliseconds, string sets
    /// JSON arrays.
    pub fn of(ty: TraitType) -> Kind {
        match ty {
            TraitType::Bool => Kind::Bool,
            TraitType::Integer | TraitType::Timestamp => Kind::Int,
            TraitType::Float => Kind::Float,
            TraitType::String | TraitType::StringSet => Kind::Text,
        }
    }
}

/// One cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell<'a> {
    /// NULL.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A float.
    Float(f64),
    /// Text.
    Text(std::borrow::Cow<'a, str>),
}

impl<'a> Cell<'a> {
    /// A trait value as its layout cell.
    pub fn of(value: &'a Option<Value>) -> Cell<'a> {
        match value {
            None => Cell::Null,
            Some(Value::Bool(b)) => Cell::Bool(*b),
            Some(Value::Int(i)) => Cell::Int(*i),
            Some(Value::Float(x)) => Cell::Float(*x),
            Some(Value::Str(s)) => Cell::Text(s.into()),
            Some(Value::Time(t)) => Cell::Int(t.0),
            Some(Value::Set(items)) => Cell::Text(
                serde_json::to_string(items)
                    .unwrap_or_else(|_| "[]".into())
                    .into(),
            ),
        }
    }
}

enum Buffer {
    Bool(Vec<bool>),
    Int(Vec<i64>),
    Float(Vec<f64>),
    Text(Vec<ByteArray>),
}

/// A Parquet file written a row at a time, in row groups.
pub struct TableWriter {
    path: PathBuf,
    writer: SerializedFileWriter<File>,
    kinds: Vec<Kind>,
    values: Vec<Buffer>,
    levels: Vec<Vec<i16>>,
    rows: usize,
    /// Rows written so far.
    pub written: u64,
}

impl TableWriter {
    /// Creates `path` with `columns` (all nullable).
    pub fn create(path: &Path, columns: &[(String, Kind)]) -> Result<TableWriter, WarehouseError> {
        let err = |e: parquet::errors::ParquetError| WarehouseError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let fields = columns
            .iter()
            .map(|(name, kind)| {
                let (physical, logical) = match kind {
                    Kind::Bool => (Physical::BOOLEAN, None),
                    Kind::Int => (Physical::INT64, None),
                    Kind::Float => (Physical::DOUBLE, None),
                    Kind::Text => (Physical::BYTE_ARRAY, Some(LogicalType::String)),
                };
                Type::primitive_type_builder(name, physical)
                    .with_repetition(Repetition::OPTIONAL)
                    .with_logical_type(logical)
                    .build()
                    .map(Arc::new)
            })
            .collect::<Result<Vec<_>, _>>()
            .map_err(err)?;
        let schema = Type::group_type_builder("schema")
            .with_fields(fields)
            .build()
            .map_err(err)?;
        let file = File::create(path).map_err(|e| WarehouseError::File {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        let props = WriterProperties::builder()
            .set_compression(parquet::basic::Compression::SNAPPY)
            .build();
        let writer =
            SerializedFileWriter::new(file, Arc::new(schema), Arc::new(props)).map_err(err)?;
        let kinds: Vec<Kind> = columns.iter().map(|c| c.1).collect();
        let values = kinds.iter().map(|k| new_buffer(*k)).collect();
        Ok(TableWriter {
            path: path.to_path_buf(),
            writer,
            levels: vec![Vec::new(); kinds.len()],
            kinds,
            values,
            rows: 0,
            written: 0,
        })
    }

    /// Appends one row (one cell per column, of the column's kind or NULL).
    pub fn push(&mut self, row: &[Cell<'_>]) -> Result<(), WarehouseError> {
        debug_assert_eq!(row.len(), self.kinds.len());
        for ((cell, values), levels) in row.iter().zip(&mut self.values).zip(&mut self.levels) {
            let present = match (cell, values) {
                (Cell::Null, _) => false,
                (Cell::Bool(b), Buffer::Bool(v)) => {
                    v.push(*b);
                    true
                }
                (Cell::Int(i), Buffer::Int(v)) => {
                    v.push(*i);
                    true
                }
                (Cell::Float(x), Buffer::Float(v)) => {
                    v.push(*x);
                    true
                }
                (Cell::Text(s), Buffer::Text(v)) => {
                    v.push(ByteArray::from(s.as_bytes().to_vec()));
                    true
                }
                _ => {
                    return Err(WarehouseError::File {
                        path: self.path.clone(),
                        reason: format!("a cell {cell:?} does not fit its column"),
                    })
                }
            };
            levels.push(i16::from(present));
        }
        self.rows += 1;
        if self.rows >= GROUP_ROWS {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), WarehouseError> {
        if self.rows == 0 {
            return Ok(());
        }
        let path = self.path.clone();
        let err = move |e: parquet::errors::ParquetError| WarehouseError::File {
            path: path.clone(),
            reason: e.to_string(),
        };
        let mut group = self.writer.next_row_group().map_err(&err)?;
        let mut i = 0;
        while let Some(mut col) = group.next_column().map_err(&err)? {
            let levels = Some(&self.levels[i][..]);
            match &mut self.values[i] {
                Buffer::Bool(v) => col.typed::<BoolType>().write_batch(v, levels, None),
                Buffer::Int(v) => col.typed::<Int64Type>().write_batch(v, levels, None),
                Buffer::Float(v) => col.typed::<DoubleType>().write_batch(v, levels, None),
                Buffer::Text(v) => col.typed::<ByteArrayType>().write_batch(v, levels, None),
            }
            .map_err(&err)?;
            col.close().map_err(&err)?;
            self.values[i] = new_buffer(self.kinds[i]);
            self.levels[i].clear();
            i += 1;
        }
        group.close().map_err(&err)?;
        self.written += self.rows as u64;
        self.rows = 0;
        Ok(())
    }

    /// Writes what is buffered and the footer; returns the rows written.
    pub fn finish(mut self) -> Result<u64, WarehouseError> {
        self.flush()?;
        let path = self.path.clone();
        self.writer.close().map_err(|e| WarehouseError::File {
            path,
            reason: e.to_string(),
        })?;
        Ok(self.written)
    }
}

fn new_buffer(kind: Kind) -> Buffer {
    match kind {
        Kind::Bool => Buffer::Bool(Vec::new()),
        Kind::Int => Buffer::Int(Vec::new()),
        Kind::Float => Buffer::Float(Vec::new()),
        Kind::Text => Buffer::Text(Vec::new()),
    }
}

/// The columns of `profiles`: `id`, `merged_into`, then one per trait.
pub fn profile_columns(traits: &[(String, TraitType)]) -> Vec<(String, Kind)> {
    let mut columns = vec![
        ("id".to_string(), Kind::Text),
        ("merged_into".to_string(), Kind::Text),
    ];
    columns.extend(traits.iter().map(|(n, t)| (n.clone(), Kind::of(*t))));
    columns
}

/// The columns of `events`.
pub fn event_columns() -> Vec<(String, Kind)> {
    [
        ("profile_id", Kind::Text),
        ("time", Kind::Int),
        ("event", Kind::Text),
        ("revenue", Kind::Float),
        ("properties", Kind::Text),
    ]
    .into_iter()
    .map(|(n, k)| (n.to_string(), k))
    .collect()
}

/// A profile row's cells.
pub fn profile_row<'a>(p: &LayoutProfile<'a>) -> Vec<Cell<'a>> {
    let mut row = Vec::with_capacity(p.traits.len() + 2);
    row.push(Cell::Text(p.id.into()));
    row.push(p.merged_into.map_or(Cell::Null, |m| Cell::Text(m.into())));
    row.extend(p.traits.iter().map(Cell::of));
    row
}

/// An event row's cells.
pub fn event_row<'a>(e: &LayoutEvent<'a>) -> [Cell<'a>; 5] {
    [
        Cell::Text(e.profile_id.into()),
        Cell::Int(e.time),
        Cell::Text(e.event.into()),
        e.revenue.map_or(Cell::Null, Cell::Float),
        e.properties.map_or(Cell::Null, |p| Cell::Text(p.into())),
    ]
}

/// Rows written by an export.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exported {
    /// Rows of `profiles.parquet`.
    pub profiles: u64,
    /// Rows of `events.parquet`.
    pub events: u64,
}

/// Counts rows into a [`Progress`] (profiles and events together).
pub(crate) struct Rows<'a> {
    progress: &'a dyn Progress,
    done: u64,
}

impl<'a> Rows<'a> {
    /// Starts `progress` at the store's profiles and events.
    pub(crate) fn start(
        store: &Store,
        progress: &'a dyn Progress,
    ) -> Result<Rows<'a>, WarehouseError> {
        let (profiles, events) = store.counts()?;
        progress.start(profiles + events);
        Ok(Rows { progress, done: 0 })
    }

    /// One more row.
    pub(crate) fn tick(&mut self) {
        self.done += 1;
        if self.done % 65_536 == 0 {
            self.progress.update(self.done);
        }
    }

    /// The end.
    pub(crate) fn finish(self) {
        self.progress.finish();
    }
}

/// Writes `DIR/profiles.parquet` and `DIR/events.parquet` (creating `DIR`), telling
/// `progress` how far it is.
pub fn export(
    store: &Store,
    dir: &Path,
    progress: &dyn Progress,
) -> Result<Exported, WarehouseError> {
    std::fs::create_dir_all(dir).map_err(|e| WarehouseError::File {
        path: dir.to_path_buf(),
        reason: e.to_string(),
    })?;
    let traits = store.layout_traits()?;
    let mut profiles =
        TableWriter::create(&dir.join("profiles.parquet"), &profile_columns(&traits))?;
    let mut rows = Rows::start(store, progress)?;
    store.layout_profiles(|p| {
        rows.tick();
        profiles.push(&profile_row(&p))
    })?;
    let profiles = profiles.finish()?;
    let mut events = TableWriter::create(&dir.join("events.parquet"), &event_columns())?;
    store.layout_events(|e| {
        rows.tick();
        events.push(&event_row(&e))
    })?;
    let events = events.finish()?;
    rows.finish();
    Ok(Exported { profiles, events })
}
