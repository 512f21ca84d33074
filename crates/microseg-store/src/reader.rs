//! Row readers for import files: delimited text (CSV, `;`, tab, runs of whitespace),
//! NDJSON and Parquet, all behind one [`RowReader`] that fills a reusable [`Row`].
//!
//! A problem with one row (wrong number of fields, invalid UTF-8, a line that is not a
//! JSON object) is reported in [`Row::problem`] so the importer can reject just that row;
//! a problem with the file (cannot open, I/O error, not Parquet) is an [`Err`].

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use crate::error::StoreError;

/// One field of a row.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Empty or null.
    Null,
    /// Text, to be typed by the importer.
    Text(String),
    /// A boolean (NDJSON, Parquet).
    Bool(bool),
    /// An integer (NDJSON, Parquet).
    Int(i64),
    /// A float (NDJSON, Parquet).
    Float(f64),
    /// An instant in UTC milliseconds (Parquet dates and timestamps).
    Time(i64),
    /// A list of strings (NDJSON arrays, Parquet lists).
    List(Vec<String>),
    /// Any other JSON value (nested objects).
    Json(serde_json::Value),
}

impl Cell {
    /// The text of a [`Cell::Text`]; numbers and booleans are rendered as text.
    pub fn as_text(&self) -> Option<std::borrow::Cow<'_, str>> {
        use std::borrow::Cow;
        match self {
            Cell::Text(s) => Some(Cow::Borrowed(s)),
            Cell::Int(i) => Some(Cow::Owned(i.to_string())),
            Cell::Float(x) => Some(Cow::Owned(x.to_string())),
            Cell::Bool(b) => Some(Cow::Owned(b.to_string())),
            _ => None,
        }
    }

    fn set_text(&mut self, text: &str) {
        if text.is_empty() {
            *self = Cell::Null;
        } else if let Cell::Text(s) = self {
            s.clear();
            s.push_str(text);
        } else {
            *self = Cell::Text(text.to_string());
        }
    }
}

/// A row being read: its line (1-based, of its first line) and one cell per column.
#[derive(Debug, Clone, Default)]
pub struct Row {
    /// Line number in the file (record number for Parquet).
    pub line: u64,
    /// Cells, indexed like [`RowReader::columns`]; shorter rows are padded with nulls.
    pub cells: Vec<Cell>,
    /// Why the row cannot be used, if it cannot.
    pub problem: Option<String>,
}

/// A source of rows.
pub trait RowReader {
    /// Column names. May grow while reading (NDJSON keys seen for the first time).
    fn columns(&self) -> &[String];
    /// Reads the next row into `row`; `false` at the end of the file.
    fn next_row(&mut self, row: &mut Row) -> Result<bool, StoreError>;
    /// How far through the file the reader is, and the total, in the same unit.
    fn position(&self) -> (u64, u64);
    /// The raw text of the row read last, for the rejects file.
    fn raw(&self) -> String;
}

/// The file formats the importers read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Delimited text with a header row.
    Csv,
    /// One JSON object per line.
    Ndjson,
    /// Apache Parquet.
    Parquet,
}

impl Format {
    /// Guesses the format from a file extension (`.csv`, `.tsv`, `.txt`, `.ndjson`,
    /// `.jsonl`, `.json`, `.parquet`); text by default.
    pub fn from_path(path: &Path) -> Format {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
        {
            Some(e) if e == "ndjson" || e == "jsonl" || e == "json" => Format::Ndjson,
            Some(e) if e == "parquet" || e == "pq" => Format::Parquet,
            _ => Format::Csv,
        }
    }
}

/// How fields of delimited text are separated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delimiter {
    /// One byte (`,`, `;`, tab, `|`), with CSV quoting.
    Byte(u8),
    /// Runs of spaces and tabs; no quoting; leading and trailing blanks ignored.
    Whitespace,
}

impl Delimiter {
    /// Reads `--delimiter`: `whitespace`, `,`, `;`, `\t` (or `tab`), `|`.
    pub fn from_spec(spec: &str) -> Option<Delimiter> {
        Some(match spec {
            "whitespace" | "space" | "ws" => Delimiter::Whitespace,
            "\\t" | "tab" | "\t" => Delimiter::Byte(b'\t'),
            s if s.len() == 1 && s.is_ascii() => Delimiter::Byte(s.as_bytes()[0]),
            _ => return None,
        })
    }
}

/// Opens `path` as `format`. With `columns`, a delimited text file has no header row and
/// its columns are named by `columns` (ignored for NDJSON and Parquet, which name their own).
pub fn open(
    path: &Path,
    format: Format,
    delimiter: Delimiter,
    columns: Option<&[String]>,
) -> Result<Box<dyn RowReader + Send>, StoreError> {
    let io = |source| StoreError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io)?;
    let total = file.metadata().map_err(io)?.len();
    Ok(match (format, delimiter) {
        (Format::Csv, Delimiter::Byte(b)) => {
            Box::new(CsvReader::new(file, b, total, path, columns)?)
        }
        (Format::Csv, Delimiter::Whitespace) => Box::new(LineReader::new(
            file,
            total,
            path,
            LineKind::Whitespace,
            columns,
        )?),
        (Format::Ndjson, _) => {
            Box::new(LineReader::new(file, total, path, LineKind::Ndjson, None)?)
        }
        (Format::Parquet, _) => Box::new(ParquetReader::new(file, path)?),
    })
}

struct CsvReader {
    inner: csv::Reader<File>,
    columns: Vec<String>,
    record: csv::ByteRecord,
    total: u64,
    path: std::path::PathBuf,
    delimiter: u8,
}

impl CsvReader {
    fn new(
        file: File,
        delimiter: u8,
        total: u64,
        path: &Path,
        named: Option<&[String]>,
    ) -> Result<CsvReader, StoreError> {
        let mut inner = csv::ReaderBuilder::new()
            .delimiter(delimiter)
            .flexible(true)
            // Records end at '\n' only, so reported line numbers are exact for CRLF files
            // too (csv's CRLF handling reports a record's start before its line feed);
            // the '\r' left on the last field is removed in `next_row`.
            .terminator(csv::Terminator::Any(b'\n'))
            .has_headers(named.is_none())
            .buffer_capacity(1 << 20)
            .from_reader(file);
        let columns = match named {
            Some(names) => names.to_vec(),
            None => inner
                .byte_headers()
                .map_err(|e| csv_error(path, e))?
                .iter()
                .map(|h| {
                    String::from_utf8_lossy(h)
                        .trim()
                        .trim_start_matches('\u{feff}')
                        .to_string()
                })
                .collect::<Vec<_>>(),
        };
        if columns.iter().all(String::is_empty) {
            return Err(StoreError::Unreadable {
                path: path.to_path_buf(),
                reason: "the file is empty or has no header row".into(),
            });
        }
        Ok(CsvReader {
            inner,
            columns,
            record: csv::ByteRecord::new(),
            total,
            path: path.to_path_buf(),
            delimiter,
        })
    }
}

fn csv_error(path: &Path, e: csv::Error) -> StoreError {
    StoreError::Unreadable {
        path: path.to_path_buf(),
        reason: e.to_string(),
    }
}

impl RowReader for CsvReader {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut Row) -> Result<bool, StoreError> {
        if !self
            .inner
            .read_byte_record(&mut self.record)
            .map_err(|e| csv_error(&self.path, e))?
        {
            return Ok(false);
        }
        row.line = self.record.position().map_or(0, |p| p.line());
        row.problem = None;
        let n = self.columns.len();
        row.cells.resize(n, Cell::Null);
        if self.record.len() != n {
            row.problem = Some(format!("expected {n} fields, found {}", self.record.len()));
            return Ok(true);
        }
        for (i, (cell, field)) in row.cells.iter_mut().zip(self.record.iter()).enumerate() {
            let field = match field {
                [rest @ .., b'\r'] if i + 1 == n => rest,
                other => other,
            };
            match std::str::from_utf8(field) {
                Ok(text) => cell.set_text(text),
                Err(_) => {
                    row.problem = Some("invalid UTF-8".into());
                    return Ok(true);
                }
            }
        }
        Ok(true)
    }

    fn position(&self) -> (u64, u64) {
        (self.inner.position().byte(), self.total)
    }

    fn raw(&self) -> String {
        let fields: Vec<_> = self.record.iter().map(String::from_utf8_lossy).collect();
        let raw = fields.join(&(self.delimiter as char).to_string());
        raw.strip_suffix('\r').map(str::to_string).unwrap_or(raw)
    }
}

enum LineKind {
    Whitespace,
    Ndjson,
}

struct LineReader {
    inner: BufReader<File>,
    kind: LineKind,
    columns: Vec<String>,
    buf: Vec<u8>,
    line: u64,
    read: u64,
    total: u64,
    path: std::path::PathBuf,
}

impl LineReader {
    fn new(
        file: File,
        total: u64,
        path: &Path,
        kind: LineKind,
        named: Option<&[String]>,
    ) -> Result<LineReader, StoreError> {
        let mut r = LineReader {
            inner: BufReader::with_capacity(1 << 20, file),
            kind,
            columns: named.map(<[String]>::to_vec).unwrap_or_default(),
            buf: Vec::new(),
            line: 0,
            read: 0,
            total,
            path: path.to_path_buf(),
        };
        if matches!(r.kind, LineKind::Whitespace) && named.is_none() {
            loop {
                if !r.read_line()? {
                    return Err(StoreError::Unreadable {
                        path: path.to_path_buf(),
                        reason: "the file is empty or has no header row".into(),
                    });
                }
                let header = String::from_utf8_lossy(&r.buf).to_string();
                r.columns = header
                    .split_ascii_whitespace()
                    .map(str::to_string)
                    .collect();
                if !r.columns.is_empty() {
                    break;
                }
            }
        }
        Ok(r)
    }

    fn read_line(&mut self) -> Result<bool, StoreError> {
        self.buf.clear();
        let n = self
            .inner
            .read_until(b'\n', &mut self.buf)
            .map_err(|source| StoreError::Io {
                path: self.path.clone(),
                source,
            })?;
        self.read += n as u64;
        self.line += 1;
        while matches!(self.buf.last(), Some(b'\n' | b'\r')) {
            self.buf.pop();
        }
        Ok(n > 0)
    }

    fn column_index(&mut self, key: &str) -> usize {
        match self.columns.iter().position(|c| c == key) {
            Some(i) => i,
            None => {
                self.columns.push(key.to_string());
                self.columns.len() - 1
            }
        }
    }
}

impl RowReader for LineReader {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut Row) -> Result<bool, StoreError> {
        loop {
            if !self.read_line()? {
                return Ok(false);
            }
            if !self.buf.iter().all(u8::is_ascii_whitespace) {
                break;
            }
        }
        row.line = self.line;
        row.problem = None;
        let text = match std::str::from_utf8(&self.buf) {
            Ok(t) => t,
            Err(_) => {
                row.problem = Some("invalid UTF-8".into());
                return Ok(true);
            }
        };
        match self.kind {
            LineKind::Whitespace => {
                let n = self.columns.len();
                row.cells.resize(n, Cell::Null);
                let mut count = 0;
                for (i, field) in text.split_ascii_whitespace().enumerate() {
                    if i < n {
                        row.cells[i].set_text(field);
                    }
                    count += 1;
                }
                if count != n {
                    row.problem = Some(format!("expected {n} fields, found {count}"));
                }
            }
            LineKind::Ndjson => {
                let object = match serde_json::from_str::<serde_json::Value>(text) {
                    Ok(serde_json::Value::Object(o)) => o,
                    Ok(_) => {
                        row.problem = Some("not a JSON object".into());
                        return Ok(true);
                    }
                    Err(e) => {
                        row.problem = Some(format!("invalid JSON: {e}"));
                        return Ok(true);
                    }
                };
                row.cells.iter_mut().for_each(|c| *c = Cell::Null);
                for (key, value) in object {
                    let i = self.column_index(&key);
                    if row.cells.len() <= i {
                        row.cells.resize(i + 1, Cell::Null);
                    }
                    row.cells[i] = json_cell(value);
                }
                row.cells.resize(self.columns.len(), Cell::Null);
            }
        }
        Ok(true)
    }

    fn position(&self) -> (u64, u64) {
        (self.read, self.total)
    }

    fn raw(&self) -> String {
        String::from_utf8_lossy(&self.buf).into_owned()
    }
}

fn json_cell(value: serde_json::Value) -> Cell {
    use serde_json::Value as J;
    match value {
        J::Null => Cell::Null,
        J::Bool(b) => Cell::Bool(b),
        J::Number(n) => match n.as_i64() {
            Some(i) => Cell::Int(i),
            None => Cell::Float(n.as_f64().unwrap_or(f64::NAN)),
        },
        J::String(s) if s.is_empty() => Cell::Null,
        J::String(s) => Cell::Text(s),
        J::Array(items) if items.iter().all(|v| v.is_string()) => Cell::List(
            items
                .into_iter()
                .filter_map(|v| match v {
                    J::String(s) => Some(s),
                    _ => None,
                })
                .collect(),
        ),
        other => Cell::Json(other),
    }
}

struct ParquetReader {
    rows: parquet::record::reader::RowIter<'static>,
    columns: Vec<String>,
    done: u64,
    total: u64,
    path: std::path::PathBuf,
}

impl ParquetReader {
    fn new(file: File, path: &Path) -> Result<ParquetReader, StoreError> {
        use parquet::file::reader::FileReader;
        let unreadable = |e: parquet::errors::ParquetError| StoreError::Unreadable {
            path: path.to_path_buf(),
            reason: format!("not a readable Parquet file: {e}"),
        };
        let reader = parquet::file::reader::SerializedFileReader::new(file).map_err(unreadable)?;
        let meta = reader.metadata().file_metadata();
        let total = meta.num_rows().max(0) as u64;
        let columns = meta
            .schema_descr()
            .root_schema()
            .get_fields()
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        Ok(ParquetReader {
            rows: reader.into_iter(),
            columns,
            done: 0,
            total,
            path: path.to_path_buf(),
        })
    }
}

impl RowReader for ParquetReader {
    fn columns(&self) -> &[String] {
        &self.columns
    }

    fn next_row(&mut self, row: &mut Row) -> Result<bool, StoreError> {
        let Some(next) = self.rows.next() else {
            return Ok(false);
        };
        let record = next.map_err(|e| StoreError::Unreadable {
            path: self.path.clone(),
            reason: e.to_string(),
        })?;
        self.done += 1;
        row.line = self.done;
        row.problem = None;
        row.cells.clear();
        row.cells.resize(self.columns.len(), Cell::Null);
        for (i, (_, field)) in record.get_column_iter().enumerate() {
            if let Some(cell) = row.cells.get_mut(i) {
                *cell = parquet_cell(field);
            }
        }
        Ok(true)
    }

    fn position(&self) -> (u64, u64) {
        (self.done, self.total)
    }

    fn raw(&self) -> String {
        format!("record {}", self.done)
    }
}

fn parquet_cell(field: &parquet::record::Field) -> Cell {
    use parquet::record::Field as F;
    match field {
        F::Null => Cell::Null,
        F::Bool(b) => Cell::Bool(*b),
        F::Byte(x) => Cell::Int(*x as i64),
        F::Short(x) => Cell::Int(*x as i64),
        F::Int(x) => Cell::Int(*x as i64),
        F::Long(x) => Cell::Int(*x),
        F::UByte(x) => Cell::Int(*x as i64),
        F::UShort(x) => Cell::Int(*x as i64),
        F::UInt(x) => Cell::Int(*x as i64),
        F::ULong(x) => Cell::Int(*x as i64),
        F::Float16(x) => Cell::Float(f64::from(*x)),
        F::Float(x) => Cell::Float(*x as f64),
        F::Double(x) => Cell::Float(*x),
        F::Str(s) if s.is_empty() => Cell::Null,
        F::Str(s) => Cell::Text(s.clone()),
        F::Bytes(b) => match std::str::from_utf8(b.data()) {
            Ok(s) => Cell::Text(s.to_string()),
            Err(_) => Cell::Null,
        },
        F::Date(days) => Cell::Time(*days as i64 * microseg_core::DAY_MS),
        F::TimestampMillis(ms) => Cell::Time(*ms),
        F::TimestampMicros(us) => Cell::Time(us.div_euclid(1000)),
        F::ListInternal(list) => Cell::List(
            list.elements()
                .iter()
                .filter_map(|f| match f {
                    F::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
        ),
        other => Cell::Text(other.to_string()),
    }
}

/// Reads a whole file into memory (for small files such as configs).
pub fn read_to_string(path: &Path) -> Result<String, StoreError> {
    let mut s = String::new();
    File::open(path)
        .and_then(|mut f| f.read_to_string(&mut s))
        .map_err(|source| StoreError::Io {
            path: path.to_path_buf(),
            source,
        })?;
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(name: &str, content: &[u8], delimiter: Delimiter) -> (Vec<String>, Vec<Row>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, content).unwrap();
        let mut reader = open(&path, Format::from_path(&path), delimiter, None).unwrap();
        let mut out = Vec::new();
        let mut row = Row::default();
        while reader.next_row(&mut row).unwrap() {
            out.push(row.clone());
        }
        (reader.columns().to_vec(), out)
    }

    fn text(s: &str) -> Cell {
        Cell::Text(s.into())
    }

    #[test]
    fn csv_quotes_bom_crlf_and_empty_cells() {
        let (columns, rows) = rows(
            "a.csv",
            b"\xef\xbb\xbfid,name,city\r\n1,\"Kov\xc3\xa1cs, Anna\",\r\n2,\"say \"\"hi\"\"\",Graz\r\n",
            Delimiter::Byte(b','),
        );
        assert_eq!(columns, ["id", "name", "city"]);
        assert_eq!(rows[0].cells, [text("1"), text("Kovács, Anna"), Cell::Null]);
        assert_eq!(rows[1].cells[1], text("say \"hi\""));
        assert_eq!((rows[0].line, rows[1].line), (2, 3));
        assert!(rows.iter().all(|r| r.problem.is_none()));
    }

    #[test]
    fn whitespace_runs_crlf_blank_lines_and_field_counts() {
        let (columns, rows) = rows(
            "c.txt",
            b" id  date   n\r\n 00001 19970101  1\r\n\r\n 00002\t19970112 5 extra\r\n",
            Delimiter::Whitespace,
        );
        assert_eq!(columns, ["id", "date", "n"]);
        assert_eq!(rows.len(), 2, "blank lines are skipped");
        assert_eq!(rows[0].cells, [text("00001"), text("19970101"), text("1")]);
        assert_eq!(rows[1].line, 4);
        assert_eq!(
            rows[1].problem.as_deref(),
            Some("expected 3 fields, found 4")
        );
    }

    #[test]
    fn ndjson_learns_columns_as_keys_appear() {
        let (columns, rows) = rows(
            "e.ndjson",
            b"{\"a\": 1}\n{\"b\": \"x\", \"a\": null}\n[1]\n{\"c\": [\"p\", \"q\"], \"d\": 2.5}\n",
            Delimiter::Byte(b','),
        );
        assert_eq!(columns, ["a", "b", "c", "d"]);
        assert_eq!(rows[0].cells[0], Cell::Int(1));
        assert_eq!(rows[1].cells[..2], [Cell::Null, text("x")]);
        assert_eq!(rows[2].problem.as_deref(), Some("not a JSON object"));
        assert_eq!(rows[3].cells[2], Cell::List(vec!["p".into(), "q".into()]));
        assert_eq!(rows[3].cells[3], Cell::Float(2.5));
    }

    #[test]
    fn formats_and_delimiters_from_names() {
        assert_eq!(Format::from_path(Path::new("x.JSONL")), Format::Ndjson);
        assert_eq!(Format::from_path(Path::new("x.parquet")), Format::Parquet);
        assert_eq!(Format::from_path(Path::new("x.tsv")), Format::Csv);
        assert_eq!(Delimiter::from_spec("\\t"), Some(Delimiter::Byte(b'\t')));
        assert_eq!(
            Delimiter::from_spec("whitespace"),
            Some(Delimiter::Whitespace)
        );
        assert_eq!(Delimiter::from_spec(";;"), None);
    }

    #[test]
    fn empty_files_cannot_be_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.csv");
        std::fs::write(&path, b"").unwrap();
        let err = open(&path, Format::Csv, Delimiter::Byte(b','), None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no header row"), "{err}");
        let err = open(&path, Format::Csv, Delimiter::Whitespace, None)
            .err()
            .unwrap();
        assert!(err.to_string().contains("no header row"), "{err}");
    }

    #[test]
    fn headerless_files_take_the_given_column_names() {
        let dir = tempfile::tempdir().unwrap();
        let names = vec!["id".to_string(), "date".to_string()];
        for (file, delimiter) in [
            ("a.txt", Delimiter::Whitespace),
            ("a.csv", Delimiter::Byte(b',')),
        ] {
            let path = dir.path().join(file);
            let sep = if file.ends_with("txt") { "  " } else { "," };
            std::fs::write(&path, format!("0001{sep}19970101\n0002{sep}19970102\n")).unwrap();
            let mut reader = open(&path, Format::Csv, delimiter, Some(&names)).unwrap();
            assert_eq!(reader.columns(), names.as_slice());
            let mut row = Row::default();
            assert!(reader.next_row(&mut row).unwrap());
            assert_eq!((row.line, &row.cells[0]), (1, &text("0001")), "{file}");
            assert!(reader.next_row(&mut row).unwrap());
            assert_eq!(row.cells, [text("0002"), text("19970102")], "{file}");
            assert!(!reader.next_row(&mut row).unwrap());
        }
    }
}
