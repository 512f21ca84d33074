//! `microseg warehouse`: the workspace as Parquet, loaded into PostgreSQL, DuckDB or
//! Spark, and segments run there with their member lists brought back.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_warehouse::Engine;

use super::{as_of, print_json, Context};
use crate::failure::{not_found, usage};
use crate::progress::Bar;

/// Run segments where the data lives: PostgreSQL, DuckDB or Spark (docs/warehouse.md).
#[derive(Debug, Subcommand)]
pub enum WarehouseCommand {
    /// Write the workspace as DIR/profiles.parquet and DIR/events.parquet.
    #[command(after_help = "Example:\n  microseg warehouse export --out lake/")]
    Export(ExportArgs),
    /// Put the workspace's data into an engine as tables `profiles` and `events`
    /// (replacing them), as configured in microseg.toml's [warehouse.ENGINE].
    #[command(after_help = "Example:\n  microseg warehouse load --engine postgres")]
    Load(LoadArgs),
    /// Run segments' SQL on an engine and keep the member lists as the segments'
    /// members for campaigns (until the segment changes or `warehouse forget`).
    #[command(
        after_help = "Examples:\n  microseg warehouse run winter_no_order --engine duckdb --json\n  microseg warehouse run --all --engine spark --as-of 2026-11-30"
    )]
    Run(RunArgs),
    /// Forget a segment's member list from a warehouse: campaigns evaluate it again.
    Forget(ForgetArgs),
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// The directory to write.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Print the counts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct LoadArgs {
    /// postgres, duckdb or spark.
    #[arg(long, value_name = "ENGINE")]
    engine: String,
    /// Print the counts as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The saved segment to run.
    #[arg(required_unless_present = "all", conflicts_with = "all")]
    segment: Option<String>,
    /// Every saved segment.
    #[arg(long)]
    all: bool,
    /// postgres, duckdb or spark.
    #[arg(long, value_name = "ENGINE")]
    engine: String,
    /// The instant compiled into the SQL (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Also write the members as CSV (header `id`).
    #[arg(long, value_name = "FILE", conflicts_with = "all")]
    out: Option<PathBuf>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct ForgetArgs {
    /// The segment.
    segment: String,
}

pub fn run(ctx: &Context, cmd: WarehouseCommand) -> Result<()> {
    match cmd {
        WarehouseCommand::Export(args) => export(ctx, args),
        WarehouseCommand::Load(args) => load(ctx, args),
        WarehouseCommand::Run(args) => run_segments(ctx, args),
        WarehouseCommand::Forget(args) => {
            let (_, mut store) = ctx.open()?;
            if store.forget_warehouse_members(&args.segment)? {
                eprintln!("forgot the warehouse member list of {}", args.segment);
                Ok(())
            } else {
                Err(not_found(format!(
                    "segment '{}' has no member list from a warehouse",
                    args.segment
                )))
            }
        }
    }
}

fn engine(name: &str) -> Result<Engine> {
    Engine::from_name(name).map_err(usage)
}

fn export(ctx: &Context, args: ExportArgs) -> Result<()> {
    let (_, store) = ctx.open()?;
    let start = Instant::now();
    let done = microseg_warehouse::export(&store, &args.out, &Bar::new("exporting"))?;
    let seconds = start.elapsed().as_secs_f64();
    if args.json {
        return print_json(&serde_json::json!({
            "dir": args.out.display().to_string(),
            "profiles": done.profiles,
            "events": done.events,
            "seconds": seconds,
        }));
    }
    eprintln!(
        "wrote {} profiles and {} events to {} in {seconds:.2} s",
        done.profiles,
        done.events,
        args.out.display()
    );
    Ok(())
}

fn load(ctx: &Context, args: LoadArgs) -> Result<()> {
    let engine = engine(&args.engine)?;
    let (ws, store) = ctx.open()?;
    eprintln!("loading the workspace into {} ...", engine.name());
    let done = microseg_warehouse::load(&ws, &store, engine, &Bar::new("loading"))?;
    if args.json {
        return print_json(&serde_json::json!({
            "engine": engine.name(),
            "profiles": done.profiles,
            "events": done.events,
            "seconds": done.seconds,
        }));
    }
    eprintln!(
        "loaded {} profiles and {} events into {} in {:.2} s",
        done.profiles,
        done.events,
        engine.name(),
        done.seconds
    );
    Ok(())
}

fn run_segments(ctx: &Context, args: RunArgs) -> Result<()> {
    let engine = engine(&args.engine)?;
    let (ws, mut store) = ctx.open()?;
    let at = as_of(args.as_of.as_deref())?;
    let names: Vec<String> = match &args.segment {
        Some(name) => vec![name.clone()],
        None => store.segment_conditions()?.into_keys().collect(),
    };
    let quiet = args.json;
    let ran = microseg_warehouse::run(&ws, &mut store, engine, &names, at, &mut |r| {
        if !quiet {
            eprintln!(
                "{}: {} members from {} in {:.3} s (as of {at})",
                r.segment,
                r.size,
                engine.name(),
                r.seconds
            );
        }
    })?;
    if let (Some(out), [one]) = (&args.out, &ran[..]) {
        let mut w =
            csv::Writer::from_path(out).with_context(|| format!("writing {}", out.display()))?;
        w.write_record(["id"])?;
        for id in &one.ids {
            w.write_record([id])?;
        }
        w.flush()?;
    }
    let results: Vec<serde_json::Value> = ran
        .iter()
        .map(|r| {
            serde_json::json!({
                "segment": r.segment,
                "engine": engine.name(),
                "size": r.size,
                "seconds": r.seconds,
            })
        })
        .collect();
    if args.json {
        if args.all {
            return print_json(&serde_json::json!({
                "engine": engine.name(),
                "as_of": at.to_string(),
                "segments": results,
            }));
        }
        return print_json(&results[0]);
    }
    Ok(())
}
