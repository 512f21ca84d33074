//! `microseg import profiles|events`: load files into the durable store.

use std::collections::BTreeMap;
use std::path::PathBuf;

use anyhow::Result;
use clap::{Args, Subcommand, ValueEnum};
use microseg_core::time::TimeFormat;
use microseg_core::{TraitSpec, TraitType};
use microseg_store::{
    Delimiter, EventImport, EventName, FileOptions, Format, ImportSummary, ProfileImport,
};

use super::{print_json, Context};
use crate::output::thousands;
use crate::progress::Bar;

/// Load profiles or events from CSV, NDJSON or Parquet.
///
/// An import is all or nothing: it is committed whole or not at all, even if the process
/// is killed. Bad rows do not stop it; each is written with its line and reason to
/// logs/import-N-rejects.csv in the workspace.
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    Profiles(ProfilesArgs),
    Events(EventsArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum FormatArg {
    Csv,
    Ndjson,
    Parquet,
}

/// How the file is read (shared by both imports).
#[derive(Debug, Args)]
pub(super) struct FileArgs {
    /// The file to import.
    pub(super) file: PathBuf,
    /// File format (default: from the extension; .ndjson/.jsonl/.json, .parquet, else csv).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
    /// Field delimiter of text files: `,` `;` `\t` `|` or `whitespace` (runs of blanks).
    #[arg(long, default_value = ",", value_name = "D")]
    delimiter: String,
    /// The file has no header row: name its columns, e.g. --columns customer_id,date,cds,amount.
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    columns: Option<Vec<String>>,
    /// Import even if a file with the same content was imported before (its rows would
    /// count twice).
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    pub(super) json: bool,
}

impl FileArgs {
    pub(super) fn options(&self) -> Result<FileOptions> {
        let mut options = FileOptions::new(&self.file);
        if let Some(f) = self.format {
            options.format = match f {
                FormatArg::Csv => Format::Csv,
                FormatArg::Ndjson => Format::Ndjson,
                FormatArg::Parquet => Format::Parquet,
            };
        }
        if self.delimiter != "," || options.delimiter == Delimiter::Byte(b',') {
            options.delimiter = Delimiter::from_spec(&self.delimiter).ok_or_else(|| {
                crate::failure::usage(format!(
                    "--delimiter '{}': use one character (, ; | \\t) or 'whitespace'",
                    self.delimiter
                ))
            })?;
        }
        options.columns = self.columns.clone();
        options.force = self.force;
        Ok(options)
    }
}

/// Import profiles: one row per profile; every other column becomes a trait.
///
/// Types are inferred (bool, integer, float, timestamp, else string) unless declared with
/// --type or in the workspace's microseg.toml; a trait keeps the type it was first given.
/// Re-importing a profile updates the traits in the file and keeps the others.
#[derive(Debug, Args)]
pub struct ProfilesArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Column holding the profile's external id.
    #[arg(long, default_value = "id", value_name = "COL")]
    id: String,
    /// Declare a trait type, e.g. --type interests=string_set --type age=integer.
    #[arg(long = "type", value_name = "TRAIT=TYPE")]
    types: Vec<String>,
}

/// Import events: one row per event; columns not mapped become event properties.
///
/// Unknown profile ids create profiles.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (the CDNOW purchase history, whitespace separated):
  microseg import events CDNOW_master.txt --delimiter whitespace \\
    --profile customer_id --time date --time-format %Y%m%d \\
    --event order_completed --revenue dollar_value"
)]
pub struct EventsArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Column holding the profile's external id.
    #[arg(long, value_name = "COL")]
    profile: String,
    /// Column holding the event time.
    #[arg(long, value_name = "COL")]
    time: String,
    /// How times are written: auto (RFC 3339 or YYYY-MM-DD), unix, unix_ms, or a strftime
    /// pattern such as %Y%m%d or "%d/%m/%Y %H:%M" (UTC unless it has an offset).
    #[arg(long, default_value = "auto", value_name = "FMT")]
    time_format: String,
    /// Column holding the event name.
    #[arg(long, value_name = "COL", conflicts_with = "event")]
    name: Option<String>,
    /// The same event name for every row (e.g. order_completed).
    #[arg(long, value_name = "NAME")]
    event: Option<String>,
    /// Column holding the event's revenue.
    #[arg(long, value_name = "COL")]
    revenue: Option<String>,
}

pub fn run(ctx: &Context, cmd: ImportCommand) -> Result<()> {
    let (ws, mut store, _lock) = ctx.open_for_writing("microseg import")?;
    let (summary, json) = match cmd {
        ImportCommand::Profiles(args) => {
            let types = parse_types(&args.types)?;
            let settings = ProfileImport {
                file: args.file.options()?,
                id_column: args.id,
                types,
                skip_columns: Vec::new(),
            };
            let bar = Bar::new("profiles");
            (store.import_profiles(&ws, &settings, &bar)?, args.file.json)
        }
        ImportCommand::Events(args) => {
            let name = match (args.name, args.event) {
                (Some(c), None) => EventName::Column(c),
                (None, Some(n)) => EventName::Fixed(n),
                (None, None) => EventName::Column("event".into()),
                (Some(_), Some(_)) => {
                    return Err(crate::failure::usage(
                        "give --name COL or --event NAME, not both",
                    ))
                }
            };
            let settings = EventImport {
                file: args.file.options()?,
                profile_column: args.profile,
                time_column: args.time,
                time_format: TimeFormat::from_spec(&args.time_format),
                name,
                revenue_column: args.revenue,
            };
            let bar = Bar::new("events");
            (store.import_events(&ws, &settings, &bar)?, args.file.json)
        }
    };
    if json {
        print_json(&summary)
    } else {
        print_summary(&summary);
        Ok(())
    }
}

/// `--type TRAIT=TYPE` declarations.
pub(super) fn parse_types(specs: &[String]) -> Result<BTreeMap<String, TraitSpec>> {
    let mut types = BTreeMap::new();
    for t in specs {
        let (name, ty) = t
            .split_once('=')
            .ok_or_else(|| crate::failure::usage(format!("--type '{t}': expected TRAIT=TYPE")))?;
        let ty = TraitType::from_name(ty).ok_or_else(|| {
            crate::failure::usage(format!(
                "--type '{t}': unknown type '{ty}' (bool, integer, float, string, string_set, timestamp)"
            ))
        })?;
        types.insert(name.to_string(), TraitSpec::new(ty));
    }
    Ok(types)
}

/// The one-line summary of an import, naming the rejects file when rows were rejected.
pub fn print_summary(s: &ImportSummary) {
    let rejects = match &s.rejects_file {
        Some(path) => format!(" (see {})", path.display()),
        None => String::new(),
    };
    println!(
        "imported {} {} from {}: {} rows, {} rejected{rejects}, {} new profiles, {:.2} s, {} rows/s",
        thousands(s.imported),
        s.kind,
        s.file.display(),
        thousands(s.rows),
        thousands(s.rejected),
        thousands(s.new_profiles),
        s.seconds,
        thousands(s.rows_per_second.round() as u64),
    );
}
