//! Importing profiles and events into the durable store.
//!
//! An import is one SQLite transaction: after `kill -9` the store holds either the whole
//! previous state or the whole import. Bad rows (missing id, wrong type, unparsable time,
//! wrong number of fields) do not stop it: each is written with its line number and reason
//! to `logs/import-N-rejects.csv` and counted in the summary. A file that cannot be read at
//! all imports nothing.
//!
//! Events are read and validated on one thread and written on another, so parsing and
//! SQLite share the two cores.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Instant;

use microseg_core::time::TimeFormat;
use microseg_core::value::{parse_float, parse_text, TypeGuess};
use microseg_core::{ProfileId, Schema, TraitSpec, TraitType, Value};
use rusqlite::{params, OptionalExtension as _, TransactionBehavior};
use rustc_hash::FxHashMap;

use crate::error::StoreError;
use crate::event_rows::{EventInserter, EventRow, EventRows};
use crate::reader::{self, Cell, Delimiter, Format, Row, RowReader};
use crate::store::{now_ms, Store};
use crate::workspace::Workspace;

/// Reports how far an import is; the CLI draws a progress bar with it.
pub trait Progress: Sync {
    /// The total, in the unit of [`RowReader::position`].
    fn start(&self, total: u64);
    /// How far the import is.
    fn update(&self, done: u64);
    /// The import is over.
    fn finish(&self);
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _: u64) {}
    fn update(&self, _: u64) {}
    fn finish(&self) {}
}

/// How an import file is read.
#[derive(Debug, Clone)]
pub struct FileOptions {
    /// The file.
    pub path: PathBuf,
    /// Its format (default from the extension).
    pub format: Format,
    /// The field delimiter of text files.
    pub delimiter: Delimiter,
    /// Column names of a delimited text file without a header row.
    pub columns: Option<Vec<String>>,
    /// Import even when a file with the same content was imported before (its events
    /// would then count twice).
    pub force: bool,
}

impl FileOptions {
    /// Options for `path` with the format guessed from its extension and `,` (or tab for
    /// `.tsv`) as delimiter.
    pub fn new(path: &Path) -> FileOptions {
        let tsv = path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("tsv"));
        FileOptions {
            path: path.to_path_buf(),
            format: Format::from_path(path),
            delimiter: Delimiter::Byte(if tsv { b'\t' } else { b',' }),
            columns: None,
            force: false,
        }
    }
}

/// Where an event's name comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventName {
    /// A column of the file.
    Column(String),
    /// The same name for every row.
    Fixed(String),
}

/// Settings of an event import.
#[derive(Debug, Clone)]
pub struct EventImport {
    /// The file.
    pub file: FileOptions,
    /// Column with the profile's external id.
    pub profile_column: String,
    /// Column with the event time.
    pub time_column: String,
    /// How times are written.
    pub time_format: TimeFormat,
    /// The event name.
    pub name: EventName,
    /// Column with the revenue, if any.
    pub revenue_column: Option<String>,
}

/// Settings of a profile import.
#[derive(Debug, Clone)]
pub struct ProfileImport {
    /// The file.
    pub file: FileOptions,
    /// Column with the external id.
    pub id_column: String,
    /// Types declared for this import (they win over inference, not over stored types).
    pub types: BTreeMap<String, TraitSpec>,
    /// Columns that are not traits (an experiment's arm and outcomes).
    pub skip_columns: Vec<String>,
}

/// What an import did.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct ImportSummary {
    /// `profiles` or `events`.
    pub kind: &'static str,
    /// The file imported.
    pub file: PathBuf,
    /// Data rows read.
    pub rows: u64,
    /// Rows stored.
    pub imported: u64,
    /// Rows rejected.
    pub rejected: u64,
    /// Profiles created by the import.
    pub new_profiles: u64,
    /// Wall time in seconds.
    pub seconds: f64,
    /// Rows read per second.
    pub rows_per_second: f64,
    /// The rejects file, when rows were rejected.
    pub rejects_file: Option<PathBuf>,
}

/// Writes rejected rows to `logs/import-N-rejects.csv`, creating it on the first reject.
struct Rejects {
    path: PathBuf,
    writer: Option<csv::Writer<std::fs::File>>,
    count: u64,
}

impl Rejects {
    fn new(workspace: &Workspace, import_id: i64) -> Result<Rejects, StoreError> {
        Ok(Rejects {
            path: workspace
                .logs_dir()?
                .join(format!("import-{import_id}-rejects.csv")),
            writer: None,
            count: 0,
        })
    }

    fn add(&mut self, line: u64, reason: &str, raw: &str) -> Result<(), StoreError> {
        let io = |e: csv::Error| StoreError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        };
        if self.writer.is_none() {
            let mut w = csv::Writer::from_path(&self.path).map_err(io)?;
            w.write_record(["line", "reason", "record"]).map_err(io)?;
            self.writer = Some(w);
        }
        let w = self.writer.as_mut().expect("created above");
        w.write_record([line.to_string().as_str(), reason, raw])
            .map_err(io)?;
        self.count += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<Option<PathBuf>, StoreError> {
        match self.writer.take() {
            Some(mut w) => {
                w.flush().map_err(|source| StoreError::Io {
                    path: self.path.clone(),
                    source,
                })?;
                Ok(Some(self.path))
            }
            None => Ok(None),
        }
    }
}

fn column_index(
    reader: &dyn RowReader,
    path: &Path,
    column: &str,
) -> Result<Option<usize>, StoreError> {
    let columns = reader.columns();
    match columns.iter().position(|c| c == column) {
        Some(i) => Ok(Some(i)),
        // NDJSON learns its columns while reading: a key may appear later.
        None if columns.is_empty() => Ok(None),
        None => Err(StoreError::MissingColumn {
            path: path.to_path_buf(),
            column: column.to_string(),
            available: columns.join(", "),
        }),
    }
}

/// Text of an id cell (integers are written out).
fn id_text(cell: &Cell) -> Option<std::borrow::Cow<'_, str>> {
    use std::borrow::Cow;
    match cell {
        Cell::Text(s) => {
            let t = s.trim();
            (!t.is_empty()).then_some(Cow::Borrowed(t))
        }
        Cell::Int(i) => Some(Cow::Owned(i.to_string())),
        _ => None,
    }
}

/// A batch from the reading thread to the writing one.
#[derive(Default)]
struct Batch {
    new_profiles: Vec<(ProfileId, String)>,
    new_names: Vec<(u32, String)>,
    /// The events, with their properties JSON back to back.
    events: EventRows,
    rejects: Vec<(u64, String, String)>,
    rows: u64,
    position: u64,
}

const BATCH_ROWS: usize = 16_384;

/// Reads, validates and resolves profile ids on the calling thread; sends batches.
struct EventReader {
    reader: Box<dyn RowReader + Send>,
    settings: EventImport,
    ids: FxHashMap<String, ProfileId>,
    next_id: ProfileId,
    names: FxHashMap<String, u32>,
}

impl EventReader {
    fn run(mut self, tx: mpsc::SyncSender<Result<Batch, StoreError>>) {
        if let Err(e) = self.read_all(&tx) {
            let _ = tx.send(Err(e));
        }
    }

    fn read_all(
        &mut self,
        tx: &mpsc::SyncSender<Result<Batch, StoreError>>,
    ) -> Result<(), StoreError> {
        let path = self.settings.file.path.clone();
        let reader = &*self.reader;
        let mut profile_col = column_index(reader, &path, &self.settings.profile_column)?;
        let mut time_col = column_index(reader, &path, &self.settings.time_column)?;
        let mut name_col = match &self.settings.name {
            EventName::Column(c) => column_index(reader, &path, c)?,
            EventName::Fixed(_) => None,
        };
        let mut revenue_col = match &self.settings.revenue_column {
            Some(c) => column_index(reader, &path, c)?,
            None => None,
        };
        let mut batch = Batch::default();
        let fixed_name = match self.settings.name.clone() {
            EventName::Fixed(name) => Some(self.name_code(&name, &mut batch)),
            EventName::Column(_) => None,
        };
        let mut row = Row::default();
        let mut known_columns = self.reader.columns().len();
        while self.reader.next_row(&mut row)? {
            batch.rows += 1;
            if self.reader.columns().len() != known_columns {
                // NDJSON: new keys appeared; look the mapped columns up again.
                known_columns = self.reader.columns().len();
                let find = |name: &str| self.reader.columns().iter().position(|c| c == name);
                profile_col = find(&self.settings.profile_column);
                time_col = find(&self.settings.time_column);
                if let EventName::Column(c) = &self.settings.name {
                    name_col = find(c);
                }
                if let Some(c) = &self.settings.revenue_column {
                    revenue_col = find(c);
                }
            }
            let mapped = [profile_col, time_col, name_col, revenue_col];
            match self.validate(&row, mapped, fixed_name, &mut batch) {
                Ok(event) => batch.events.rows.push(event),
                Err(reason) => {
                    batch.rejects.push((row.line, reason, self.reader.raw()));
                }
            }
            if batch.rows as usize >= BATCH_ROWS {
                batch.position = self.reader.position().0;
                if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return Ok(()); // the writer stopped; it reports why
                }
            }
        }
        batch.position = self.reader.position().0;
        let _ = tx.send(Ok(batch));
        Ok(())
    }

    /// The id of event name `name`, registering it in `batch` when new.
    fn name_code(&mut self, name: &str, batch: &mut Batch) -> u32 {
        if let Some(&code) = self.names.get(name) {
            return code;
        }
        let code = self.names.len() as u32;
        self.names.insert(name.to_string(), code);
        batch.new_names.push((code, name.to_string()));
        code
    }

    fn validate(
        &mut self,
        row: &Row,
        [profile_col, time_col, name_col, revenue_col]: [Option<usize>; 4],
        fixed_name: Option<u32>,
        batch: &mut Batch,
    ) -> Result<EventRow, String> {
        if let Some(problem) = &row.problem {
            return Err(problem.clone());
        }
        let s = &self.settings;
        let cell = |i: Option<usize>| i.and_then(|i| row.cells.get(i)).unwrap_or(&Cell::Null);
        let external = id_text(cell(profile_col))
            .ok_or_else(|| format!("missing profile id (column '{}')", s.profile_column))?;
        let time = match cell(time_col) {
            Cell::Null => return Err(format!("missing time (column '{}')", s.time_column)),
            Cell::Time(ms) => *ms,
            Cell::Int(i) if s.time_format == TimeFormat::UnixMillis => *i,
            Cell::Int(i) if s.time_format == TimeFormat::UnixSeconds => i.saturating_mul(1000),
            Cell::Text(t) if s.time_format == TimeFormat::UnixSeconds && is_digits(t) => t
                .parse::<i64>()
                .map_or(i64::MAX, |x| x.saturating_mul(1000)),
            other => {
                let text = other.as_text().unwrap_or_default();
                s.time_format
                    .parse(&text)
                    .map_err(|e| format!("column '{}': {e}", s.time_column))?
                    .0
            }
        };
        let name = match (&s.name, fixed_name) {
            (_, Some(code)) => code,
            (EventName::Column(c), None) => {
                let text = id_text(cell(name_col))
                    .ok_or_else(|| format!("missing event name (column '{c}')"))?;
                match self.names.get(text.as_ref()) {
                    Some(&code) => code,
                    None => {
                        let text = text.into_owned();
                        let code = self.names.len() as u32;
                        self.names.insert(text.clone(), code);
                        batch.new_names.push((code, text));
                        code
                    }
                }
            }
            (EventName::Fixed(_), None) => unreachable!("fixed names are resolved up front"),
        };
        let revenue = match cell(revenue_col) {
            Cell::Null => None,
            Cell::Int(i) => Some(*i as f64),
            Cell::Float(x) if x.is_finite() => Some(*x),
            Cell::Text(t) => Some(parse_float(t.trim()).ok_or_else(|| {
                format!(
                    "column '{}': expected a number, found '{t}'",
                    s.revenue_column.as_deref().unwrap_or_default()
                )
            })?),
            other => {
                return Err(format!(
                    "column '{}': expected a number, found {other:?}",
                    s.revenue_column.as_deref().unwrap_or_default()
                ))
            }
        };
        let props = &mut batch.events.text;
        let start = props.len();
        let columns = self.reader.columns();
        for (i, c) in row.cells.iter().enumerate() {
            let mapped = [profile_col, time_col, name_col, revenue_col];
            if matches!(c, Cell::Null) || mapped.contains(&Some(i)) {
                continue;
            }
            props.push(if props.len() == start { '{' } else { ',' });
            write_json_string(props, &columns[i]);
            props.push(':');
            write_json_cell(props, c);
        }
        if props.len() > start {
            props.push('}');
        }
        let properties = (start as u32, props.len() as u32);
        let profile = match self.ids.get(external.as_ref()) {
            Some(&id) => id,
            None => {
                let id = self.next_id;
                self.next_id += 1;
                let external = external.into_owned();
                self.ids.insert(external.clone(), id);
                batch.new_profiles.push((id, external));
                id
            }
        };
        Ok(EventRow {
            profile,
            time,
            name,
            revenue,
            properties,
            message_id: (0, 0),
        })
    }
}

/// True for a non-empty run of ASCII digits.
fn is_digits(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit())
}

/// Writes `s` as a JSON string literal.
fn write_json_string(out: &mut String, s: &str) {
    out.push('"');
    if !s.bytes().any(|b| b == b'"' || b == b'\\' || b < 0x20) {
        out.push_str(s);
        out.push('"');
        return;
    }
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// True for text that is a plain decimal number and would not change when printed back:
/// `12`, `-3.5`, but not `007` (an id or zip code) or `+1`.
fn is_plain_number(t: &str) -> bool {
    let digits = t.strip_prefix('-').unwrap_or(t);
    let leading_zero = digits.len() > 1 && digits.starts_with('0') && !digits[1..].starts_with('.');
    !digits.is_empty()
        && digits.as_bytes()[0].is_ascii_digit()
        && !leading_zero
        && parse_float(t).is_some()
}

/// Writes a property cell as JSON: text that is a plain number or `true`/`false` becomes
/// a number or boolean, other text a string.
fn write_json_cell(out: &mut String, cell: &Cell) {
    match cell {
        Cell::Null => out.push_str("null"),
        Cell::Text(t) if is_plain_number(t) => out.push_str(t),
        Cell::Text(t) if t == "true" || t == "false" => out.push_str(t),
        Cell::Text(t) => write_json_string(out, t),
        Cell::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Cell::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Cell::Float(x) if x.is_finite() => {
            let _ = write!(out, "{x}");
        }
        Cell::Float(_) => out.push_str("null"),
        Cell::Time(ms) => write_json_string(out, &microseg_core::Timestamp(*ms).to_string()),
        Cell::List(items) => out.push_str(&serde_json::to_string(items).unwrap_or_default()),
        Cell::Json(v) => out.push_str(&v.to_string()),
    }
}

impl Store {
    /// Imports events: one row per event, every column that is not mapped becomes an
    /// event property. Unknown profile ids create profiles.
    pub fn import_events(
        &mut self,
        workspace: &Workspace,
        settings: &EventImport,
        progress: &dyn Progress,
    ) -> Result<ImportSummary, StoreError> {
        let summary = self.bulk_write(|store| store.write_events(workspace, settings, progress))?;
        self.refresh_snapshots(workspace);
        Ok(summary)
    }

    /// Brings the columnar snapshots up to date after an import committed, so the next
    /// command opens current files. The import stands either way: a snapshot that could
    /// not be written is caught up by the next command that reads it.
    fn refresh_snapshots(&self, workspace: &Workspace) {
        let _ = crate::tables::refresh(workspace, self);
    }

    fn write_events(
        &mut self,
        workspace: &Workspace,
        settings: &EventImport,
        progress: &dyn Progress,
    ) -> Result<ImportSummary, StoreError> {
        let started = Instant::now();
        let file = &settings.file;
        let sha256 = file_sha256(&file.path)?;
        check_new(&self.conn, "events", file, &sha256)?;
        let reader = open_send(file)?;
        // Check the mapped columns before any work (NDJSON learns them while reading).
        for column in [&settings.profile_column, &settings.time_column]
            .into_iter()
            .chain(match &settings.name {
                EventName::Column(c) => Some(c),
                EventName::Fixed(_) => None,
            })
            .chain(settings.revenue_column.as_ref())
        {
            column_index(&*reader, &file.path, column)?;
        }
        progress.start(reader.position().1);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let store = StoreTx(&tx);
        let import_id = store.next_import_id()?;
        let mut rejects = Rejects::new(workspace, import_id)?;
        let event_reader = EventReader {
            reader,
            settings: settings.clone(),
            ids: store.profile_ids()?,
            next_id: store.next_profile_id()?,
            names: store.event_name_ids()?,
        };
        let (send, receive) = mpsc::sync_channel(4);
        let reading = std::thread::spawn(move || event_reader.run(send));
        let (mut rows, mut imported, mut new_profiles) = (0u64, 0u64, 0u64);
        let created = now_ms();
        let mut version = None;
        {
            let mut insert_profile = tx.prepare_cached(
                "INSERT INTO profiles(id, external_id, traits, created_at, updated_at, version)
                 VALUES (?1, ?2, '{}', ?3, ?3, ?4)",
            )?;
            let mut insert_name =
                tx.prepare_cached("INSERT INTO event_names(id, name) VALUES (?1, ?2)")?;
            let mut insert_events = EventInserter::new(&tx)?;
            for batch in receive {
                let batch = batch?;
                rows += batch.rows;
                for (id, name) in &batch.new_names {
                    // Names are numbered densely from 0: id `limit` is one too many. The
                    // transaction rolls back, so nothing of the file is stored.
                    let limit = workspace.config.limits.event_names;
                    if *id as usize >= limit {
                        return Err(StoreError::Refused(format!(
                            "{}: more than {limit} event names in the workspace with this \
                             file ([limits] event_names in microseg.toml); nothing was imported",
                            settings.file.path.display(),
                        )));
                    }
                    insert_name.execute(params![id, name])?;
                }
                for (id, external) in &batch.new_profiles {
                    let v = match version {
                        Some(v) => v,
                        None => *version.insert(store.bump_profiles_version()?),
                    };
                    insert_profile.execute(params![id, external, created, v as i64])?;
                }
                new_profiles += batch.new_profiles.len() as u64;
                insert_events.insert(&batch.events)?;
                imported += batch.events.rows.len() as u64;
                for (line, reason, raw) in &batch.rejects {
                    rejects.add(*line, reason, raw)?;
                }
                progress.update(batch.position);
            }
        }
        reading
            .join()
            .map_err(|_| StoreError::Invalid("the reading thread panicked".into()))?;
        let rejected = rejects.count;
        store.record_import(
            import_id, "events", &file.path, &sha256, created, rows, rejected,
        )?;
        store.bump_events_version()?;
        tx.commit()?;
        progress.finish();
        Ok(summary(
            "events",
            file,
            rows,
            imported,
            rejected,
            new_profiles,
            started,
            rejects.finish()?,
        ))
    }

    /// Imports profiles: one row per profile, every other column a trait. Types come from
    /// the store (earlier imports), then `settings.types`, then the config, then
    /// inference over the file. Re-importing a profile updates the traits in the file and
    /// keeps the others; empty cells change nothing.
    ///
    /// The file is streamed twice at most: once to infer the types it needs (skipped when
    /// every column has a type), once to import, with reading and typing on one thread and
    /// SQLite on the other. Memory does not grow with the file.
    pub fn import_profiles(
        &mut self,
        workspace: &Workspace,
        settings: &ProfileImport,
        progress: &dyn Progress,
    ) -> Result<ImportSummary, StoreError> {
        let summary =
            self.bulk_write(|store| store.write_profiles(workspace, settings, progress))?;
        self.refresh_snapshots(workspace);
        Ok(summary)
    }

    fn write_profiles(
        &mut self,
        workspace: &Workspace,
        settings: &ProfileImport,
        progress: &dyn Progress,
    ) -> Result<ImportSummary, StoreError> {
        let started = Instant::now();
        let file = &settings.file;
        let sha256 = file_sha256(&file.path)?;
        check_new(&self.conn, "profiles", file, &sha256)?;
        let reader = open_send(file)?;
        column_index(&*reader, &file.path, &settings.id_column)?;
        // Types: stored, then declared for this import, then config, then inferred.
        let stored = self.stored_schema()?;
        let known = |name: &str| {
            stored
                .get(name)
                .or_else(|| settings.types.get(name))
                .or_else(|| self.declared.get(name))
                .cloned()
        };
        // Every new column is a trait for every profile: a file cannot add more than
        // `[limits] traits` allows (a one-row CSV with 100,000 columns took 12.9 GB).
        let limit = workspace.config.limits.traits;
        let check_limit = |names: &mut dyn Iterator<Item = &String>| {
            let new = names
                .filter(|c| {
                    *c != &settings.id_column
                        && !settings.skip_columns.contains(c)
                        && !stored.contains_key(*c)
                })
                .count();
            if new > 0 && stored.len() + new > limit {
                return Err(StoreError::Refused(format!(
                    "{}: {new} new columns would make {} trait names; at most {limit} \
                     ([limits] traits in microseg.toml)",
                    file.path.display(),
                    stored.len() + new
                )));
            }
            Ok(())
        };
        check_limit(&mut reader.columns().iter())?;
        let needs_scan = reader.columns().is_empty()
            || reader.columns().iter().any(|c| {
                c != &settings.id_column && !settings.skip_columns.contains(c) && known(c).is_none()
            });
        let mut schema = Schema::new();
        let reader = if needs_scan {
            let guesses = infer_types(reader, progress)?;
            for (name, guess) in guesses {
                let spec = known(&name).unwrap_or_else(|| TraitSpec::new(guess.result()));
                schema.insert(name, spec);
            }
            open_send(file)?
        } else {
            for name in reader.columns() {
                if let Some(spec) = known(name) {
                    schema.insert(name.clone(), spec);
                }
            }
            reader
        };
        schema.remove(&settings.id_column);
        for skipped in &settings.skip_columns {
            schema.remove(skipped);
        }
        check_limit(&mut schema.keys())?;
        progress.start(reader.position().1);
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)?;
        let store = StoreTx(&tx);
        let import_id = store.next_import_id()?;
        let mut rejects = Rejects::new(workspace, import_id)?;
        let profile_reader = ProfileReader {
            reader,
            id_column: settings.id_column.clone(),
            schema: schema.clone(),
            ids: store.profile_ids()?,
            next_id: store.next_profile_id()?,
        };
        let (send, receive) = mpsc::sync_channel(4);
        let reading = std::thread::spawn(move || profile_reader.run(send));
        let created = now_ms();
        let version = store.bump_profiles_version()?;
        let (mut rows, mut imported, mut new_profiles) = (0u64, 0u64, 0u64);
        {
            let mut insert_type = tx.prepare_cached(
                "INSERT OR IGNORE INTO trait_types(name, type, separators) VALUES (?1, ?2, ?3)",
            )?;
            for (name, spec) in &schema {
                insert_type.execute(params![name, spec.ty.name(), spec.separators])?;
            }
            let mut insert = tx.prepare_cached(
                "INSERT INTO profiles(id, external_id, traits, created_at, updated_at, version)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5)",
            )?;
            let mut select = tx.prepare_cached("SELECT traits FROM profiles WHERE id = ?1")?;
            let mut update = tx.prepare_cached(
                "UPDATE profiles SET traits = ?2, updated_at = ?3, version = ?4 WHERE id = ?1",
            )?;
            let mut identity = tx.prepare_cached(
                "INSERT OR IGNORE INTO identities(kind, value, profile_id) VALUES (?1, ?2, ?3)",
            )?;
            for batch in receive {
                let batch = batch?;
                rows += batch.rows;
                for p in &batch.profiles {
                    let traits = &batch.json[p.traits.0..p.traits.1];
                    match &p.new_external_id {
                        Some(external) => {
                            insert.execute(params![
                                p.id,
                                external,
                                traits,
                                created,
                                version as i64
                            ])?;
                            new_profiles += 1;
                        }
                        None => {
                            let old: String = select.query_row([p.id], |r| r.get(0))?;
                            let mut merged: serde_json::Map<String, serde_json::Value> =
                                serde_json::from_str(&old).unwrap_or_default();
                            let new: serde_json::Map<String, serde_json::Value> =
                                serde_json::from_str(traits).unwrap_or_default();
                            merged.extend(new);
                            let merged = serde_json::Value::Object(merged).to_string();
                            update.execute(params![p.id, merged, created, version as i64])?;
                        }
                    }
                    for (kind, value) in &p.identities {
                        identity.execute(params![kind, value, p.id])?;
                    }
                }
                imported += batch.profiles.len() as u64;
                for (line, reason, raw) in &batch.rejects {
                    rejects.add(*line, reason, raw)?;
                }
                progress.update(batch.position);
            }
        }
        reading
            .join()
            .map_err(|_| StoreError::Invalid("the reading thread panicked".into()))?;
        let rejected = rejects.count;
        store.record_import(
            import_id, "profiles", &file.path, &sha256, created, rows, rejected,
        )?;
        tx.commit()?;
        progress.finish();
        Ok(summary(
            "profiles",
            file,
            rows,
            imported,
            rejected,
            new_profiles,
            started,
            rejects.finish()?,
        ))
    }
}

/// Streams a profile file once and infers a type for every column it has.
fn infer_types(
    mut reader: Box<dyn RowReader + Send>,
    progress: &dyn Progress,
) -> Result<Vec<(String, TypeGuess)>, StoreError> {
    progress.start(reader.position().1);
    let mut guesses: Vec<TypeGuess> = Vec::new();
    let mut row = Row::default();
    let mut n = 0u64;
    while reader.next_row(&mut row)? {
        n += 1;
        if n % 8192 == 0 {
            progress.update(reader.position().0);
        }
        if row.problem.is_some() {
            continue;
        }
        guesses.resize(reader.columns().len(), TypeGuess::default());
        for (guess, cell) in guesses.iter_mut().zip(&row.cells) {
            match cell {
                Cell::Text(t) => guess.observe(t),
                Cell::Bool(_) => guess.observe_type(TraitType::Bool),
                Cell::Int(_) => guess.observe_type(TraitType::Integer),
                Cell::Float(_) => guess.observe_type(TraitType::Float),
                Cell::Time(_) => guess.observe_type(TraitType::Timestamp),
                Cell::List(_) => guess.observe_type(TraitType::StringSet),
                Cell::Json(_) => guess.observe_type(TraitType::String),
                Cell::Null => {}
            }
        }
    }
    guesses.resize(reader.columns().len(), TypeGuess::default());
    Ok(reader.columns().iter().cloned().zip(guesses).collect())
}

/// One typed profile on its way to the store.
struct ProfileRow {
    id: ProfileId,
    /// The external id, when the profile is new.
    new_external_id: Option<String>,
    /// Range of the traits JSON object in [`ProfileBatch::json`].
    traits: (usize, usize),
    identities: Vec<(&'static str, String)>,
}

/// A batch from the profile reading thread to the writing one.
#[derive(Default)]
struct ProfileBatch {
    profiles: Vec<ProfileRow>,
    json: String,
    rejects: Vec<(u64, String, String)>,
    rows: u64,
    position: u64,
}

/// Reads and types profile rows and resolves their ids on its own thread.
struct ProfileReader {
    reader: Box<dyn RowReader + Send>,
    id_column: String,
    schema: Schema,
    ids: FxHashMap<String, ProfileId>,
    next_id: ProfileId,
}

impl ProfileReader {
    fn run(mut self, tx: mpsc::SyncSender<Result<ProfileBatch, StoreError>>) {
        if let Err(e) = self.read_all(&tx) {
            let _ = tx.send(Err(e));
        }
    }

    fn read_all(
        &mut self,
        tx: &mpsc::SyncSender<Result<ProfileBatch, StoreError>>,
    ) -> Result<(), StoreError> {
        let mut batch = ProfileBatch::default();
        let mut row = Row::default();
        let mut specs: Vec<Option<TraitSpec>> = Vec::new();
        let mut id_col = None;
        let mut traits: Vec<(usize, Value)> = Vec::new();
        while self.reader.next_row(&mut row)? {
            batch.rows += 1;
            let columns = self.reader.columns();
            if specs.len() != columns.len() {
                // NDJSON keys seen for the first time (CSV and Parquet: the first row).
                specs = columns
                    .iter()
                    .map(|c| self.schema.get(c).cloned())
                    .collect();
                id_col = columns.iter().position(|c| c == &self.id_column);
            }
            let typed = match (&row.problem, id_col) {
                (Some(problem), _) => Err(problem.clone()),
                (None, None) => Err(format!("missing id (column '{}')", self.id_column)),
                (None, Some(id_col)) => {
                    traits.clear();
                    type_row(&row.cells, columns, id_col, &specs, &mut traits)
                }
            };
            let external = match typed {
                Ok(external) => external,
                Err(reason) => {
                    let raw = match row.problem {
                        Some(_) => self.reader.raw(),
                        None => raw_of(&row.cells),
                    };
                    batch.rejects.push((row.line, reason, raw));
                    continue;
                }
            };
            let start = batch.json.len();
            batch.json.push('{');
            let mut identities = Vec::new();
            for (n, (i, value)) in traits.iter().enumerate() {
                if n > 0 {
                    batch.json.push(',');
                }
                write_json_string(&mut batch.json, &columns[*i]);
                batch.json.push(':');
                write_value_json(&mut batch.json, value);
                match (columns[*i].as_str(), value) {
                    ("email", Value::Str(v)) => identities.push(("email", v.clone())),
                    ("phone", Value::Str(v)) => identities.push(("phone", v.clone())),
                    _ => {}
                }
            }
            batch.json.push('}');
            let (id, new_external_id) = match self.ids.get(external.as_str()) {
                Some(&id) => (id, None),
                None => {
                    let id = self.next_id;
                    self.next_id += 1;
                    self.ids.insert(external.clone(), id);
                    (id, Some(external))
                }
            };
            batch.profiles.push(ProfileRow {
                id,
                new_external_id,
                traits: (start, batch.json.len()),
                identities,
            });
            if batch.rows as usize >= BATCH_ROWS / 4 {
                batch.position = self.reader.position().0;
                if tx.send(Ok(std::mem::take(&mut batch))).is_err() {
                    return Ok(());
                }
            }
        }
        batch.position = self.reader.position().0;
        let _ = tx.send(Ok(batch));
        Ok(())
    }
}

/// Store queries that must run inside an import's transaction.
struct StoreTx<'a>(&'a rusqlite::Transaction<'a>);

impl StoreTx<'_> {
    fn next_import_id(&self) -> Result<i64, StoreError> {
        Ok(self
            .0
            .query_row("SELECT coalesce(max(id), 0) + 1 FROM imports", [], |r| {
                r.get(0)
            })?)
    }

    fn next_profile_id(&self) -> Result<ProfileId, StoreError> {
        Ok(self
            .0
            .query_row("SELECT coalesce(max(id) + 1, 0) FROM profiles", [], |r| {
                r.get(0)
            })?)
    }

    fn event_name_ids(&self) -> Result<FxHashMap<String, u32>, StoreError> {
        let mut stmt = self.0.prepare("SELECT id, name FROM event_names")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, u32>(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn profile_ids(&self) -> Result<FxHashMap<String, ProfileId>, StoreError> {
        let mut stmt = self.0.prepare("SELECT id, external_id FROM profiles")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(1)?, r.get::<_, u32>(0)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Marks the events as changed (keys the columnar cache); every transaction that writes
    /// events calls it.
    fn bump_events_version(&self) -> Result<(), StoreError> {
        crate::store::bump_events_version(self.0).map(|_| ())
    }

    /// The profiles version of this import (moved once: every profile it writes gets it).
    fn bump_profiles_version(&self) -> Result<u64, StoreError> {
        crate::store::bump(self.0, crate::store::Counter::Profiles)
    }

    #[allow(clippy::too_many_arguments)]
    fn record_import(
        &self,
        id: i64,
        kind: &str,
        file: &Path,
        sha256: &str,
        started: i64,
        rows: u64,
        rejected: u64,
    ) -> Result<(), StoreError> {
        self.0.execute(
            "INSERT INTO imports(id, kind, file, sha256, started_at, finished_at, rows, rejected)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                id,
                kind,
                file.display().to_string(),
                sha256,
                started,
                now_ms(),
                rows as i64,
                rejected as i64
            ],
        )?;
        Ok(())
    }
}

/// Refuses a file whose content was imported before as `kind` (unless `force`).
fn check_new(
    conn: &rusqlite::Connection,
    kind: &str,
    file: &FileOptions,
    sha256: &str,
) -> Result<(), StoreError> {
    if file.force {
        return Ok(());
    }
    let before: Option<(i64, String, i64)> = conn
        .query_row(
            "SELECT id, file, finished_at FROM imports WHERE kind = ?1 AND sha256 = ?2
             ORDER BY id LIMIT 1",
            params![kind, sha256],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .optional()?;
    match before {
        None => Ok(()),
        Some((id, path, at)) => Err(StoreError::Refused(format!(
            "{}: the same content was imported before (import {id} of {path}, at {}): \
             importing it again would count its {kind} twice; use --force to import it \
             anyway",
            file.path.display(),
            microseg_core::Timestamp(at)
        ))),
    }
}

/// The SHA-256 of a file's bytes, in hex (how a repeated import is recognised).
fn file_sha256(path: &Path) -> Result<String, StoreError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(microseg_core::hex(&hasher.finalize()))
}

/// Writes a trait value as JSON, as [`Value::to_json`] would.
fn write_value_json(out: &mut String, value: &Value) {
    match value {
        Value::Str(s) => write_json_string(out, s),
        Value::Int(i) => {
            let _ = write!(out, "{i}");
        }
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Time(t) => write_json_string(out, &t.to_string()),
        other => out.push_str(&other.to_json().to_string()),
    }
}

/// Types one profile row: its external id and the traits it sets, by column index.
fn type_row(
    cells: &[Cell],
    columns: &[String],
    id_col: usize,
    specs: &[Option<TraitSpec>],
    traits: &mut Vec<(usize, Value)>,
) -> Result<String, String> {
    let external = cells
        .get(id_col)
        .and_then(id_text)
        .ok_or_else(|| format!("missing id (column '{}')", columns[id_col]))?;
    for (i, cell) in cells.iter().enumerate() {
        if i == id_col {
            continue;
        }
        let name = &columns[i];
        let Some(spec) = specs.get(i).and_then(Option::as_ref) else {
            continue;
        };
        let value = match (spec.ty, cell) {
            (_, Cell::Null) => continue,
            (_, Cell::Text(t)) if t.trim().is_empty() => continue,
            (ty, Cell::Text(t)) => parse_text(ty, t, &spec.separator_chars())
                .map_err(|e| format!("column '{name}': {e}"))?,
            (TraitType::Bool, Cell::Bool(b)) => Value::Bool(*b),
            (TraitType::Integer, Cell::Int(i)) => Value::Int(*i),
            (TraitType::Float, Cell::Int(i)) => Value::Float(*i as f64),
            (TraitType::Float, Cell::Float(x)) if x.is_finite() => Value::Float(*x),
            (TraitType::Timestamp, Cell::Time(ms)) => Value::Time(microseg_core::Timestamp(*ms)),
            (TraitType::StringSet, Cell::List(items)) => {
                let mut items = items.clone();
                items.sort();
                items.dedup();
                Value::Set(items)
            }
            (TraitType::String, Cell::Json(v)) => Value::Str(v.to_string()),
            (TraitType::String, other) => {
                Value::Str(other.as_text().map(|t| t.into_owned()).unwrap_or_default())
            }
            (ty, other) => {
                return Err(format!("column '{name}': expected {ty}, found {other:?}"));
            }
        };
        traits.push((i, value));
    }
    Ok(external.into_owned())
}

/// A row's cells as comma-separated text, for the rejects file.
fn raw_of(cells: &[Cell]) -> String {
    let texts: Vec<String> = cells
        .iter()
        .map(|c| match c {
            Cell::Null => String::new(),
            Cell::List(items) => items.join(";"),
            Cell::Time(ms) => microseg_core::Timestamp(*ms).to_string(),
            Cell::Json(v) => v.to_string(),
            other => other.as_text().map(|t| t.into_owned()).unwrap_or_default(),
        })
        .collect();
    texts.join(",")
}

fn open_send(file: &FileOptions) -> Result<Box<dyn RowReader + Send>, StoreError> {
    reader::open(
        &file.path,
        file.format,
        file.delimiter,
        file.columns.as_deref(),
    )
}

#[allow(clippy::too_many_arguments)]
fn summary(
    kind: &'static str,
    file: &FileOptions,
    rows: u64,
    imported: u64,
    rejected: u64,
    new_profiles: u64,
    started: Instant,
    rejects_file: Option<PathBuf>,
) -> ImportSummary {
    let seconds = started.elapsed().as_secs_f64();
    ImportSummary {
        kind,
        file: file.path.clone(),
        rows,
        imported,
        rejected,
        new_profiles,
        seconds,
        rows_per_second: if seconds > 0.0 {
            rows as f64 / seconds
        } else {
            0.0
        },
        rejects_file,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_numbers_only() {
        for yes in ["0", "12", "-3.5", "0.25", "1e3"] {
            assert!(is_plain_number(yes), "{yes}");
        }
        for no in ["007", "+1", "-", "", "1.2.3", "NaN", "inf", "0x10", "-01"] {
            assert!(!is_plain_number(no), "{no}");
        }
    }

    #[test]
    fn json_strings_escape_controls() {
        let mut s = String::new();
        write_json_string(&mut s, "a\"b\\c\nd\u{1}");
        assert_eq!(s, r#""a\"b\\c\nd\u0001""#);
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        assert_eq!(v, "a\"b\\c\nd\u{1}");
    }
}
