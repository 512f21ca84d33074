//! Events on their way into the `events` table, shared by the file importer and the
//! tracking ingestor: rows with their texts (properties JSON, message id) back to back
//! in one string, inserted many rows per statement so SQLite runs one statement per
//! [`EventInserter::ROWS`] events instead of one per event.

use microseg_core::ProfileId;

use crate::error::StoreError;

/// One validated event.
pub(crate) struct EventRow {
    pub(crate) profile: ProfileId,
    pub(crate) time: i64,
    pub(crate) name: u32,
    pub(crate) revenue: Option<f64>,
    /// Range of the properties JSON in the rows' text; empty when none.
    pub(crate) properties: (u32, u32),
    /// Range of the message id in the rows' text; empty when none.
    pub(crate) message_id: (u32, u32),
}

/// Events and their texts.
#[derive(Default)]
pub(crate) struct EventRows {
    pub(crate) rows: Vec<EventRow>,
    /// The texts of all rows, back to back.
    pub(crate) text: String,
}

impl EventRows {
    /// Appends `s` to the text; returns its range.
    pub(crate) fn push_text(&mut self, s: &str) -> (u32, u32) {
        let start = self.text.len() as u32;
        self.text.push_str(s);
        (start, self.text.len() as u32)
    }

    /// Forgets every row, keeping the allocations.
    pub(crate) fn clear(&mut self) {
        self.rows.clear();
        self.text.clear();
    }
}

/// The two prepared statements: [`Self::ROWS`] rows, and one row for the remainder.
pub(crate) struct EventInserter<'c> {
    many: rusqlite::CachedStatement<'c>,
    one: rusqlite::CachedStatement<'c>,
}

impl<'c> EventInserter<'c> {
    const ROWS: usize = 64;
    const COLUMNS: usize = 6;
    const SQL: &'static str =
        "INSERT INTO events(profile_id, time, name_id, revenue, properties, message_id) VALUES ";

    /// Prepares the statements on `conn` (inside the caller's transaction).
    pub(crate) fn new(conn: &'c rusqlite::Connection) -> Result<EventInserter<'c>, StoreError> {
        let values = vec!["(?,?,?,?,?,?)"; Self::ROWS].join(",");
        Ok(EventInserter {
            many: conn.prepare_cached(&format!("{}{values}", Self::SQL))?,
            one: conn.prepare_cached(&format!("{}(?,?,?,?,?,?)", Self::SQL))?,
        })
    }

    /// Inserts every row of `events`.
    pub(crate) fn insert(&mut self, events: &EventRows) -> Result<(), StoreError> {
        let mut chunks = events.rows.chunks_exact(Self::ROWS);
        for chunk in &mut chunks {
            for (i, e) in chunk.iter().enumerate() {
                Self::bind(&mut self.many, i * Self::COLUMNS, e, &events.text)?;
            }
            self.many.raw_execute()?;
        }
        for e in chunks.remainder() {
            Self::bind(&mut self.one, 0, e, &events.text)?;
            self.one.raw_execute()?;
        }
        Ok(())
    }

    fn bind(
        stmt: &mut rusqlite::CachedStatement<'_>,
        at: usize,
        e: &EventRow,
        text: &str,
    ) -> Result<(), StoreError> {
        let range = |(a, b): (u32, u32)| (a < b).then(|| &text[a as usize..b as usize]);
        stmt.raw_bind_parameter(at + 1, e.profile)?;
        stmt.raw_bind_parameter(at + 2, e.time)?;
        stmt.raw_bind_parameter(at + 3, e.name)?;
        stmt.raw_bind_parameter(at + 4, e.revenue)?;
        stmt.raw_bind_parameter(at + 5, range(e.properties))?;
        stmt.raw_bind_parameter(at + 6, range(e.message_id))?;
        Ok(())
    }
}
