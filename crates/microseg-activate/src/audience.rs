//! Audiences for ad platforms: a segment's members without the people who must stay
//! unexposed (the global control, and each active marketing campaign's holdout among its
//! own audience), as a plain list or in the platforms' customer-list formats, numbered and
//! remembered so the next export can list who was added and who was removed.
//!
//! The platforms normalise differently before SHA-256 (their customer-list guides):
//! - Meta: e-mail trimmed and lower-cased; phone as digits only, with the country code
//!   (no `+`, no leading zeros).
//! - Google: e-mail trimmed and lower-cased, and for `gmail.com` / `googlemail.com` the
//!   dots before the `@` removed; phone in E.164 with its `+`.
//!
//! A phone without its country code (written neither `+CC...` nor `00CC...`) cannot be
//! normalised for either and is left empty (counted), as is a value that is no e-mail.

use microseg_core::{Timestamp, Value};
use microseg_store::{Store, StoreError, Tables, Workspace};
use roaring::RoaringBitmap;
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::run::RunError;
use crate::{assign, Campaign, Kind, Settings};

/// How an audience is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `id` and the chosen traits.
    Csv,
    /// The same columns as Parquet (text).
    Parquet,
    /// Meta's customer list: `email`, `phone`, each SHA-256 of the normalised value.
    Meta,
    /// Google Customer Match: `Email`, `Phone`, each SHA-256 of the normalised value.
    Google,
}

impl Format {
    /// Reads `csv`, `parquet`, `meta` or `google`.
    pub fn from_name(name: &str) -> Option<Format> {
        Some(match name {
            "csv" => Format::Csv,
            "parquet" => Format::Parquet,
            "meta" => Format::Meta,
            "google" => Format::Google,
            _ => return None,
        })
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Parquet => "parquet",
            Format::Meta => "meta",
            Format::Google => "google",
        }
    }
}

fn sha256(text: &str) -> String {
    microseg_core::hex(&Sha256::digest(text.as_bytes()))
}

/// An e-mail as Meta hashes it: trimmed, lower-cased; `None` when it is no address.
pub fn meta_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    let (local, domain) = e.split_once('@')?;
    (!local.is_empty() && domain.contains('.') && !e.contains(char::is_whitespace)).then_some(e)
}

/// An e-mail as Google hashes it: as for Meta, and the dots before the `@` of Gmail
/// addresses removed.
pub fn google_email(raw: &str) -> Option<String> {
    let e = meta_email(raw)?;
    let (local, domain) = e.split_once('@')?;
    if domain == "gmail.com" || domain == "googlemail.com" {
        Some(format!("{}@{domain}", local.replace('.', "")))
    } else {
        Some(e)
    }
}

/// The digits of an international phone number (country code first), from `+CC...` or
/// `00CC...`; `None` without a country code or with too few or many digits.
fn international_digits(raw: &str) -> Option<String> {
    let t = raw.trim();
    let digits: String = t.chars().filter(char::is_ascii_digit).collect();
    let digits = if t.starts_with('+') {
        digits
    } else {
        digits.strip_prefix("00")?.to_string()
    };
    let digits = digits.trim_start_matches('0').to_string();
    (8..=15).contains(&digits.len()).then_some(digits)
}

/// A phone as Meta hashes it: digits with the country code, no `+`.
pub fn meta_phone(raw: &str) -> Option<String> {
    international_digits(raw)
}

/// A phone as Google hashes it: E.164, `+` and digits.
pub fn google_phone(raw: &str) -> Option<String> {
    international_digits(raw).map(|d| format!("+{d}"))
}

/// A platform's normalisation of one identifier (`None`: not usable).
type Normalise = fn(&str) -> Option<String>;

/// What an export wrote and left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct ExportCounts {
    /// The export's number (for a later `--diff-since`).
    pub export: i64,
    /// The segment.
    pub segment: String,
    /// The format.
    pub format: String,
    /// Members of the segment as of the export.
    pub members: u64,
    /// Left out: in the global control.
    pub global_control: u64,
    /// Left out: in the holdout of an active campaign whose audience they are in.
    pub holdout: u64,
    /// Rows written (all exported people, or with `--diff-since` the added).
    pub rows: u64,
    /// With `--diff-since`: people added since that export.
    pub added: Option<u64>,
    /// With `--diff-since`: people removed since that export (still known).
    pub removed: Option<u64>,
    /// Platform formats: people with neither a usable e-mail nor phone (not written).
    pub unmatchable: u64,
}

/// An audience ready to write: the header and the rows, and for a diff the removed rows.
#[derive(Debug, Clone, Default)]
pub struct Audience {
    /// Column names.
    pub header: Vec<String>,
    /// The rows (the exported people, or with a diff the added ones).
    pub rows: Vec<Vec<String>>,
    /// With a diff: the removed people's rows.
    pub removed: Option<Vec<Vec<String>>>,
    /// The counts.
    pub counts: ExportCounts,
}

/// People who must stay unexposed among `members`: the global control, and the holdout of
/// every active marketing campaign whose target they are in (and not excluded from).
fn unexposed(
    tables: &mut Tables<'_>,
    store: &Store,
    settings: &Settings,
    members: &RoaringBitmap,
    counts: &mut ExportCounts,
) -> Result<RoaringBitmap, RunError> {
    let mut out = RoaringBitmap::new();
    for p in members {
        if assign::in_global_control(tables.external_id(p), settings.global_control) {
            out.insert(p);
        }
    }
    counts.global_control = out.len();
    let saved = store.segment_conditions()?;
    let mut held = RoaringBitmap::new();
    for stored in store.campaigns()? {
        if stored.status != "active" {
            continue;
        }
        let Ok(c) = Campaign::from_json(&stored.body).and_then(|c| c.check(&saved)) else {
            continue;
        };
        if c.campaign.kind != Kind::Marketing || c.campaign.holdout <= 0.0 {
            continue;
        }
        let mut theirs = tables.evaluate(&c.target)? & members;
        for e in &c.exclude {
            theirs -= tables.evaluate(e)?;
        }
        for p in &theirs - &out {
            if assign::in_holdout(&c.campaign.name, tables.external_id(p), c.campaign.holdout) {
                held.insert(p);
            }
        }
    }
    counts.holdout = held.len();
    out |= held;
    Ok(out)
}

/// Exports the members of `segment` (a saved segment or a condition) as of `as_of` in
/// `format` (`traits`: the columns after `id` for csv and parquet), numbers the export
/// and remembers who was in it; with `since`, the rows are who was added since that
/// export and `removed` who left.
///
/// # Errors
///
/// [`RunError`]: a refused setting, an unknown segment or trait, an unknown export
/// number, a store failure.
pub fn export(
    ws: &Workspace,
    store: &mut Store,
    segment: &str,
    format: Format,
    traits: &[String],
    since: Option<i64>,
    as_of: Timestamp,
) -> Result<Audience, RunError> {
    let settings = Settings::from_config(&ws.config.activation)?;
    let saved = store.segment_conditions()?;
    let condition = match saved.get(segment) {
        Some(c) => c.clone(),
        None => microseg_core::condition::parse(segment).map_err(|e| crate::CampaignError {
            field: "segment".into(),
            reason: format!("'{segment}' is neither a saved segment nor a condition ({e})"),
        })?,
    };
    let before = since.map(|n| store.audience_export(n)).transpose()?;
    let mut tables = Tables::open(ws, store, as_of)?;
    tables.need_all_traits()?;
    let members = tables.evaluate(&condition)?;
    let mut counts = ExportCounts {
        segment: segment.to_string(),
        format: format.name().to_string(),
        members: members.len(),
        ..ExportCounts::default()
    };
    let exported = &members - &unexposed(&mut tables, store, &settings, &members, &mut counts)?;
    let columns: Vec<String> = match format {
        Format::Csv | Format::Parquet => {
            for t in traits {
                if !tables.profiles().columns.contains_key(t) {
                    return Err(StoreError::Invalid(format!("--traits: no trait '{t}'")).into());
                }
            }
            std::iter::once("id".to_string())
                .chain(traits.iter().cloned())
                .collect()
        }
        Format::Meta => vec!["email".into(), "phone".into()],
        Format::Google => vec!["Email".into(), "Phone".into()],
    };
    let profiles = tables.profiles();
    let text = |p: u32, name: &str| -> Option<String> {
        match profiles.columns.get(name)?.get(p)? {
            Value::Str(s) => Some(s.to_string()),
            other => Some(other.to_json().to_string().trim_matches('"').to_string()),
        }
    };
    let mut unmatchable = 0;
    let mut row = |p: u32| -> Option<Vec<String>> {
        match format {
            Format::Csv | Format::Parquet => Some(
                std::iter::once(tables.external_id(p).to_string())
                    .chain(traits.iter().map(|t| text(p, t).unwrap_or_default()))
                    .collect(),
            ),
            Format::Meta | Format::Google => {
                let (email, phone): (Normalise, Normalise) = if format == Format::Meta {
                    (meta_email, meta_phone)
                } else {
                    (google_email, google_phone)
                };
                let e = text(p, "email").and_then(|v| email(&v)).map(|v| sha256(&v));
                let ph = text(p, "phone").and_then(|v| phone(&v)).map(|v| sha256(&v));
                if e.is_none() && ph.is_none() {
                    unmatchable += 1;
                    return None;
                }
                Some(vec![e.unwrap_or_default(), ph.unwrap_or_default()])
            }
        }
    };
    let (rows, removed) = match &before {
        None => (exported.iter().filter_map(&mut row).collect(), None),
        Some(old) => {
            let added = &exported - old;
            // People erased or merged since have no identifiers left to list.
            let gone = (old - &exported) - &profiles.retired;
            counts.added = Some(added.len());
            counts.removed = Some(gone.len());
            let added_rows: Vec<Vec<String>> = added.iter().filter_map(&mut row).collect();
            let removed_rows = gone.iter().filter_map(&mut row).collect();
            (added_rows, Some(removed_rows))
        }
    };
    counts.unmatchable = unmatchable;
    counts.rows = rows.len() as u64;
    drop(tables);
    counts.export = store.save_audience_export(segment, format.name(), &exported)?;
    Ok(Audience {
        header: columns,
        rows,
        removed,
        counts,
    })
}

/// Writes `rows` under `header` as CSV.
///
/// # Errors
///
/// An I/O failure.
pub fn write_csv(
    out: impl std::io::Write,
    header: &[String],
    rows: &[Vec<String>],
) -> Result<(), csv::Error> {
    let mut w = csv::Writer::from_writer(out);
    w.write_record(header)?;
    for r in rows {
        w.write_record(r)?;
    }
    w.flush()?;
    Ok(())
}

/// Writes `rows` under `header` as a Parquet file of text columns (empty cells as null).
///
/// # Errors
///
/// An I/O or encoding failure, as text.
pub fn write_parquet(
    path: &std::path::Path,
    header: &[String],
    rows: &[Vec<String>],
) -> Result<(), String> {
    use parquet::data_type::{ByteArray, ByteArrayType};
    use parquet::file::properties::WriterProperties;
    use parquet::file::writer::SerializedFileWriter;
    use parquet::schema::parser::parse_message_type;
    let fields: Vec<String> = header
        .iter()
        .map(|h| {
            format!(
                "OPTIONAL BYTE_ARRAY {} (UTF8);",
                h.replace(|c: char| !c.is_ascii_alphanumeric() && c != '_', "_")
            )
        })
        .collect();
    let schema = parse_message_type(&format!("message audience {{ {} }}", fields.join(" ")))
        .map_err(|e| e.to_string())?;
    let file = std::fs::File::create(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let props = std::sync::Arc::new(WriterProperties::builder().build());
    let mut writer = SerializedFileWriter::new(file, std::sync::Arc::new(schema), props)
        .map_err(|e| e.to_string())?;
    let mut group = writer.next_row_group().map_err(|e| e.to_string())?;
    let mut i = 0;
    while let Some(mut col) = group.next_column().map_err(|e| e.to_string())? {
        let mut values = Vec::new();
        let mut levels = Vec::with_capacity(rows.len());
        for r in rows {
            let cell = &r[i];
            if cell.is_empty() {
                levels.push(0);
            } else {
                levels.push(1);
                values.push(ByteArray::from(cell.as_str()));
            }
        }
        col.typed::<ByteArrayType>()
            .write_batch(&values, Some(&levels), None)
            .map_err(|e| e.to_string())?;
        col.close().map_err(|e| e.to_string())?;
        i += 1;
    }
    group.close().map_err(|e| e.to_string())?;
    writer.close().map_err(|e| e.to_string())?;
    Ok(())
}

/// The removed people's file next to `out`: `NAME.removed.EXT`, and the added ones'
/// `NAME.added.EXT`.
pub fn diff_paths(out: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let stem = out
        .file_stem()
        .and_then(|s| s.to_str())
        .unwrap_or("audience");
    let ext = out.extension().and_then(|s| s.to_str()).unwrap_or("csv");
    let dir = out.parent().unwrap_or(std::path::Path::new("."));
    (
        dir.join(format!("{stem}.added.{ext}")),
        dir.join(format!("{stem}.removed.{ext}")),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platforms_normalise_as_they_document() {
        assert_eq!(
            meta_email("  Anna.Kiss@GMail.com "),
            Some("anna.kiss@gmail.com".into())
        );
        assert_eq!(
            google_email("  Anna.Kiss@GMail.com "),
            Some("annakiss@gmail.com".into())
        );
        assert_eq!(
            google_email("a.b@googlemail.com"),
            Some("ab@googlemail.com".into())
        );
        assert_eq!(
            google_email("a.b@example.com"),
            Some("a.b@example.com".into())
        );
        assert_eq!(meta_email("not an address"), None);
        assert_eq!(meta_phone("+36 (30) 123-4567"), Some("36301234567".into()));
        assert_eq!(
            google_phone("+36 (30) 123-4567"),
            Some("+36301234567".into())
        );
        assert_eq!(
            google_phone("0036 30 123 4567"),
            Some("+36301234567".into())
        );
        // No country code: cannot be matched.
        assert_eq!(meta_phone("030 123 4567"), None);
        // SHA-256 of "annakiss@gmail.com": printf 'annakiss@gmail.com' | sha256sum
        assert_eq!(
            sha256("annakiss@gmail.com"),
            "71c3b03d599f1081a507b0c822f115adc7449ef3d7cdcf6a9acdb9132fe79e19"
        );
    }
}
