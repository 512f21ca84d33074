//! PostgreSQL through the `postgres` crate: `COPY` for loads, one query per segment.

use std::io::Write;

use microseg_core::TraitType;
use microseg_store::Store;

use crate::parquet::Cell;
use crate::{Session, WarehouseError};

/// A connection to a PostgreSQL database.
pub struct Postgres {
    client: postgres::Client,
}

fn engine_err(e: impl std::fmt::Display) -> WarehouseError {
    // The driver's "db error" hides the server's message behind `source()`.
    WarehouseError::Engine {
        engine: "postgres",
        reason: e.to_string(),
    }
}

fn db_err(e: postgres::Error) -> WarehouseError {
    match e.as_db_error() {
        Some(db) => engine_err(format!("{}: {}", db.code().code(), db.message())),
        None => engine_err(e),
    }
}

impl Postgres {
    /// Connects to `url`, with `schema` first on the search path when given. TLS as the
    /// URL's `sslmode` says (`disable`, `prefer` by default, `require`), the server's
    /// certificate always checked: against the public roots, or the PEM `ca_file`.
    pub fn connect(
        url: &str,
        schema: Option<&str>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Postgres, WarehouseError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| WarehouseError::Config(format!("[warehouse.postgres] url: {e}")))?;
        let hosts: Vec<String> = config
            .get_hosts()
            .iter()
            .zip(config.get_ports().iter().chain(std::iter::repeat(&5432)))
            .map(|(h, port)| match h {
                postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                postgres::config::Host::Unix(p) => p.display().to_string(),
            })
            .collect();
        let target = format!("{}/{}", hosts.join(","), config.get_dbname().unwrap_or(""));
        let mut client = config
            .connect(tls(ca_file)?)
            .map_err(|e| WarehouseError::Connect {
                engine: "postgres",
                target,
                reason: chain(&e),
            })?;
        if let Some(name) = schema {
            let schema = microseg_store::sql::Dialect::Postgres.ident(name);
            // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` needs the right to
            // create schemas even when the schema exists, which a user who only reads
            // (views made by someone else) does not have.
            let exists = client
                .query_opt("SELECT 1 FROM pg_namespace WHERE nspname = $1", &[&name])
                .map_err(db_err)?
                .is_some();
            if !exists {
                client
                    .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                    .map_err(db_err)?;
            }
            client
                .batch_execute(&format!("SET search_path TO {schema}"))
                .map_err(db_err)?;
        }
        Ok(Postgres { client })
    }

    /// Runs statements that return nothing.
    pub fn execute(&mut self, sql: &str) -> Result<(), WarehouseError> {
        self.client.batch_execute(sql).map_err(db_err)
    }

    /// Replaces `profiles` and `events` with the workspace's data, in one transaction;
    /// returns the rows of each.
    pub fn load(
        &mut self,
        store: &Store,
        progress: &dyn microseg_store::Progress,
    ) -> Result<(u64, u64), WarehouseError> {
        let rows = std::cell::RefCell::new(crate::parquet::Rows::start(store, progress)?);
        let loaded = self.load_rows(
            &store.layout_traits()?,
            |push| {
                store.layout_profiles(|p| {
                    rows.borrow_mut().tick();
                    push(&crate::parquet::profile_row(&p))
                })
            },
            |push| {
                store.layout_events(|e| {
                    rows.borrow_mut().tick();
                    push(&crate::parquet::event_row(&e))
                })
            },
        );
        rows.into_inner().finish();
        loaded
    }

    /// [`Postgres::load`] from rows the callers push: `profiles` calls its argument once
    /// per profile row (cells as [`crate::parquet::profile_columns`]), `events` once per
    /// event row.
    pub fn load_rows(
        &mut self,
        traits: &[(String, TraitType)],
        profiles: impl FnOnce(&mut Push<'_>) -> Result<(), WarehouseError>,
        events: impl FnOnce(&mut Push<'_>) -> Result<(), WarehouseError>,
    ) -> Result<(u64, u64), WarehouseError> {
        let d = microseg_store::sql::Dialect::Postgres;
        let mut columns = vec![
            "id text PRIMARY KEY".to_string(),
            "merged_into text".to_string(),
        ];
        columns.extend(traits.iter().map(|(name, ty)| {
            let ty = match ty {
                TraitType::Bool => "boolean",
                TraitType::Integer | TraitType::Timestamp => "bigint",
                TraitType::Float => "double precision",
                TraitType::String => "text",
                TraitType::StringSet => "jsonb",
            };
            format!("{} {ty}", d.ident(name))
        }));
        let mut tx = self.client.transaction().map_err(db_err)?;
        tx.batch_execute(&format!(
            "DROP TABLE IF EXISTS events; DROP TABLE IF EXISTS profiles;
             CREATE TABLE profiles ({});
             CREATE TABLE events (profile_id text NOT NULL, time bigint NOT NULL,
                                  event text NOT NULL, revenue double precision, properties json);",
            columns.join(", ")
        ))
        .map_err(db_err)?;
        let mut kinds = vec![Column::Id, Column::Id];
        kinds.extend(traits.iter().map(|(_, ty)| match ty {
            TraitType::StringSet => Column::Json,
            _ => Column::Text,
        }));
        let profiles = copy_rows(&mut tx, "profiles", &kinds, profiles)?;
        let events = copy_rows(&mut tx, "events", &EVENT_COLUMNS, events)?;
        tx.batch_execute(
            "CREATE INDEX ON events (profile_id, time); CREATE INDEX ON events (event, time);
             CREATE INDEX ON profiles (merged_into);",
        )
        .map_err(db_err)?;
        tx.commit().map_err(db_err)?;
        self.execute("ANALYZE profiles; ANALYZE events")?;
        Ok((profiles, events))
    }
}

/// An error with its causes ("error performing TLS handshake: invalid peer certificate:
/// UnknownIssuer"), and what to do about an untrusted certificate.
fn chain(e: &postgres::Error) -> String {
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    if text.contains("certificate") {
        text.push_str(
            " (the server's TLS certificate is not trusted: set [warehouse.postgres] ca_file \
             to its CA's PEM file, or sslmode=disable in the url on a trusted network)",
        );
    }
    text
}

/// A TLS connector checking certificates against the public roots, or `ca_file`'s.
fn tls(
    ca_file: Option<&std::path::Path>,
) -> Result<tokio_postgres_rustls::MakeRustlsConnect, WarehouseError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let bad = |reason: String| {
                WarehouseError::Config(format!(
                    "[warehouse.postgres] ca_file {}: {reason}",
                    path.display()
                ))
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| bad(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(e.to_string()))?;
            if certs.is_empty() {
                return Err(bad("no certificate in it".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| bad(e.to_string()))?;
            }
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| WarehouseError::Config(e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}

/// Takes one row.
pub type Push<'p> = dyn FnMut(&[Cell<'_>]) -> Result<(), WarehouseError> + 'p;

/// What a text column holds, for how it is written (see `text_row`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    /// Text.
    Text,
    /// JSON text.
    Json,
    /// A profile's external id.
    Id,
}

/// `profile_id`, `time`, `event`, `revenue`, `properties`.
const EVENT_COLUMNS: [Column; 5] = [
    Column::Id,
    Column::Text,
    Column::Text,
    Column::Text,
    Column::Json,
];

/// `COPY table FROM STDIN` of the rows `rows` pushes, `kinds[i]` saying what text column
/// `i` holds; returns how many.
fn copy_rows(
    tx: &mut postgres::Transaction<'_>,
    table: &str,
    kinds: &[Column],
    rows: impl FnOnce(&mut Push<'_>) -> Result<(), WarehouseError>,
) -> Result<u64, WarehouseError> {
    let mut w = tx
        .copy_in(&format!("COPY {table} FROM STDIN"))
        .map_err(db_err)?;
    let (mut line, mut n) = (String::new(), 0u64);
    rows(&mut |row| {
        line.clear();
        text_row(&mut line, row, kinds);
        n += 1;
        w.write_all(line.as_bytes()).map_err(engine_err)
    })?;
    w.finish().map_err(db_err)?;
    Ok(n)
}

/// One row in `COPY`'s text format: tab-separated, `\N` for NULL, escapes for `\`, tab,
/// newline and carriage return.
///
/// PostgreSQL's `text` cannot hold a NUL character, nor can `jsonb` or a `json` value read
/// as text hold `\u0000`, and a write key can send either: one such value must not make
/// every load, or every query on a property, fail. In text they become U+FFFD (the
/// replacement character), in JSON the escape `\ufffd`. Ids must stay distinct and come
/// back as they were: there NUL is written U+FFFD `0` and U+FFFD itself doubled
/// ([`decode_id`] reverses it).
fn text_row(out: &mut String, row: &[Cell<'_>], kinds: &[Column]) {
    use std::fmt::Write as _;
    for (i, cell) in row.iter().enumerate() {
        if i > 0 {
            out.push('\t');
        }
        match cell {
            Cell::Null => out.push_str("\\N"),
            Cell::Bool(b) => out.push(if *b { 't' } else { 'f' }),
            Cell::Int(x) => {
                let _ = write!(out, "{x}");
            }
            Cell::Float(x) => {
                let _ = write!(out, "{x:?}");
            }
            Cell::Text(s) if kinds.get(i) == Some(&Column::Id) => {
                for c in s.chars() {
                    match c {
                        '\0' => out.push_str("\u{fffd}0"),
                        '\u{fffd}' => out.push_str("\u{fffd}\u{fffd}"),
                        c => copy_char(out, c),
                    }
                }
            }
            Cell::Text(s) if kinds.get(i) == Some(&Column::Json) => {
                let mut chars = s.chars();
                while let Some(c) = chars.next() {
                    if c != '\\' {
                        copy_char(out, c);
                        continue;
                    }
                    // An escape: `\u0000` becomes `\ufffd`; any other is kept whole, so
                    // an escaped backslash before `u0000` stays text.
                    if let Some(after) = chars.as_str().strip_prefix("u0000") {
                        out.push_str("\\\\ufffd");
                        chars = after.chars();
                    } else {
                        copy_char(out, '\\');
                        if let Some(next) = chars.next() {
                            copy_char(out, next);
                        }
                    }
                }
            }
            Cell::Text(s) => s.chars().for_each(|c| copy_char(out, c)),
        }
    }
    out.push('\n');
}

/// One character of a text cell, escaped for `COPY`.
fn copy_char(out: &mut String, c: char) {
    match c {
        '\\' => out.push_str("\\\\"),
        '\t' => out.push_str("\\t"),
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\0' => out.push('\u{fffd}'),
        c => out.push(c),
    }
}

/// An id as `text_row` wrote it, back as it was: U+FFFD `0` is NUL, U+FFFD U+FFFD is
/// U+FFFD (ids from tables microseg did not write have neither, or a lone U+FFFD, kept).
fn decode_id(id: String) -> String {
    if !id.contains('\u{fffd}') {
        return id;
    }
    let mut out = String::with_capacity(id.len());
    let mut chars = id.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, chars.peek()) {
            ('\u{fffd}', Some('0')) => {
                out.push('\0');
                chars.next();
            }
            ('\u{fffd}', Some('\u{fffd}')) => {
                out.push('\u{fffd}');
                chars.next();
            }
            (c, _) => out.push(c),
        }
    }
    out
}

impl Session for Postgres {
    fn ids(&mut self, sql: &str) -> Result<Vec<String>, WarehouseError> {
        let rows = self.client.query(sql, &[]).map_err(db_err)?;
        rows.iter()
            .map(|r| r.try_get::<_, String>(0).map(decode_id).map_err(db_err))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Expected lines written by hand from PostgreSQL's COPY text format
    /// (https://www.postgresql.org/docs/current/sql-copy.html, "Text Format").
    #[test]
    fn copy_text_escapes_and_replaces_nul() {
        let mut line = String::new();
        let row = [
            Cell::Text("a\tb\\c\nd\0e".into()),
            Cell::Null,
            Cell::Bool(true),
            Cell::Int(-3),
            Cell::Float(2.5),
            Cell::Text(r#"{"k":"x\u0000y","l":"\\u0000","m":"\"\\"}"#.into()),
        ];
        use Column::*;
        text_row(&mut line, &row, &[Text, Text, Text, Text, Text, Json]);
        assert_eq!(
            line,
            "a\\tb\\\\c\\nd\u{fffd}e\t\\N\tt\t-3\t2.5\t\
             {\"k\":\"x\\\\ufffdy\",\"l\":\"\\\\\\\\u0000\",\"m\":\"\\\\\"\\\\\\\\\"}\n"
        );
        // The same JSON in a text column is text: the escape stays.
        line.clear();
        text_row(&mut line, &[Cell::Text(r#"x\u0000"#.into())], &[Text]);
        assert_eq!(line, "x\\\\u0000\n");
    }

    #[test]
    fn ids_stay_distinct_and_come_back_as_they_were() {
        let ids = [
            "n\0",
            "n\u{fffd}",
            "n\u{fffd}0",
            "\u{fffd}\0\u{fffd}",
            "plain",
            "a\tb",
        ];
        let mut written = Vec::new();
        for id in ids {
            let mut line = String::new();
            text_row(&mut line, &[Cell::Text(id.into())], &[Column::Id]);
            written.push(line);
        }
        assert_eq!(written[0], "n\u{fffd}0\n");
        assert_eq!(written[1], "n\u{fffd}\u{fffd}\n");
        assert_eq!(written[2], "n\u{fffd}\u{fffd}0\n");
        assert_eq!(written[5], "a\\tb\n");
        let distinct: std::collections::HashSet<_> = written.iter().collect();
        assert_eq!(distinct.len(), ids.len());
        for (id, line) in ids.iter().zip(&written) {
            // What PostgreSQL stores: the line without COPY's escapes (none but `\t` here).
            let stored = line.trim_end_matches('\n').replace("\\t", "\t");
            assert_eq!(decode_id(stored), *id);
        }
        assert_eq!(decode_id("lone \u{fffd} kept".into()), "lone \u{fffd} kept");
    }
}
