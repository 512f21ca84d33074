//! `microseg export audience`: a segment's members for ad platforms (docs/campaigns.md).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_activate::audience::{self, Format};

use super::{as_of, print_json, Context};

/// Export data for other systems.
#[derive(Debug, Subcommand)]
pub enum ExportCommand {
    /// A segment's members for retargeting: as a list (csv, parquet) or in Meta's or
    /// Google's customer-list format (normalised, SHA-256), without the global control and
    /// the campaigns' holdouts; numbered, so a later export can list who was added and
    /// removed (--diff-since).
    Audience(AudienceArgs),
}

/// `export audience`.
#[derive(Debug, Args)]
pub struct AudienceArgs {
    /// A saved segment's name or a condition.
    segment: String,
    /// csv, parquet, meta or google.
    #[arg(long, default_value = "csv")]
    format: String,
    /// The file (default stdout; parquet and --diff-since need one).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Traits after `id` (csv, parquet), comma-separated.
    #[arg(long, value_delimiter = ',')]
    traits: Vec<String>,
    /// Write who was added since export number N to NAME.added.EXT and who left to
    /// NAME.removed.EXT (beside --out).
    #[arg(long, value_name = "N")]
    diff_since: Option<i64>,
    /// Members as of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print the counts as JSON (`{"export", "segment", "format", "members",
    /// "global_control", "holdout", "rows", "added", "removed", "unmatchable"}`).
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, cmd: ExportCommand) -> Result<()> {
    let ExportCommand::Audience(args) = cmd;
    let format = Format::from_name(&args.format).ok_or_else(|| {
        crate::failure::usage(format!(
            "--format {}: use csv, parquet, meta or google",
            args.format
        ))
    })?;
    let needs_file = format == Format::Parquet || args.diff_since.is_some();
    if needs_file && args.out.is_none() {
        return Err(crate::failure::usage(
            "--out FILE is needed for parquet and for --diff-since",
        ));
    }
    let (ws, mut store) = ctx.open()?;
    let at = as_of(args.as_of.as_deref())?;
    let a = audience::export(
        &ws,
        &mut store,
        &args.segment,
        format,
        &args.traits,
        args.diff_since,
        at,
    )?;
    let write = |path: Option<&std::path::Path>, rows: &[Vec<String>]| -> Result<()> {
        match (format, path) {
            (Format::Parquet, Some(p)) => {
                audience::write_parquet(p, &a.header, rows).map_err(anyhow::Error::msg)
            }
            (_, p) => {
                let out = crate::output::writer(p)?;
                audience::write_csv(out, &a.header, rows)
                    .with_context(|| p.map_or("stdout".into(), |p| p.display().to_string()))
            }
        }
    };
    let mut files = Vec::new();
    match (&a.removed, &args.out) {
        (Some(removed), Some(out)) => {
            let (added_path, removed_path) = audience::diff_paths(out);
            write(Some(&added_path), &a.rows)?;
            write(Some(&removed_path), removed)?;
            files.extend([added_path, removed_path]);
        }
        _ => {
            write(args.out.as_deref(), &a.rows)?;
            files.extend(args.out.clone());
        }
    }
    let c = &a.counts;
    if args.json {
        return print_json(c);
    }
    if args.out.is_some() {
        let list: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        eprintln!(
            "export {}: {} of {} members of {} ({} in the global control, {} in a holdout left out{}){}; wrote {}",
            c.export,
            c.rows,
            c.members,
            c.segment,
            c.global_control,
            c.holdout,
            if c.unmatchable > 0 {
                format!(", {} without a usable e-mail or phone", c.unmatchable)
            } else {
                String::new()
            },
            match (c.added, c.removed) {
                (Some(a), Some(r)) => format!(
                    "; since export {}: {a} added, {r} removed",
                    args.diff_since.unwrap_or_default()
                ),
                _ => String::new(),
            },
            list.join(", ")
        );
    }
    Ok(())
}
