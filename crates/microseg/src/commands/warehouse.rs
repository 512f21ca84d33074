//! `microseg warehouse`: the workspace as Parquet, loaded into PostgreSQL, DuckDB or
//! Spark, and segments run there with their member lists brought back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_store::sql::{compile, SqlContext};
use microseg_warehouse::{connect, Engine};
use roaring::RoaringBitmap;

use super::{as_of, print_json, Context};
use crate::failure::{bad_input, not_found, usage};
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

/// A compile error, explained when it names a trait the SQL layout leaves out.
pub(super) fn left_out(
    e: microseg_engine::EvalError,
    store: &microseg_store::Store,
) -> anyhow::Error {
    if let microseg_engine::EvalError::UnknownName(name) = &e {
        if store.schema().is_ok_and(|s| s.contains_key(name)) {
            return bad_input(format!(
                "trait '{name}' is not in the SQL layout: its name is a layout column (id, \
                 merged_into) or differs from another trait's only in case, which DuckDB and \
                 Spark do not tell apart (docs/warehouse.md)"
            ));
        }
    }
    e.into()
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
    let saved = store.segment_conditions()?;
    let names: Vec<String> = match &args.segment {
        Some(name) if saved.contains_key(name) => vec![name.clone()],
        Some(name) => {
            return Err(not_found(format!(
                "no saved segment '{name}' (warehouse run takes saved segments)"
            )))
        }
        None => saved.keys().cloned().collect(),
    };
    let traits = store.layout_traits()?.into_iter().collect();
    let metrics = ws.config.metrics_config();
    let sql_ctx = SqlContext {
        traits: &traits,
        segments: &saved,
        metrics: &metrics,
        as_of: at,
        dialect: engine.dialect(),
    };
    let dense: HashMap<String, u32> = store
        .external_ids()?
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i as u32))
        .collect();
    let mut session = connect(&ws, engine)?;
    let mut results = Vec::new();
    for name in &names {
        let sql = compile(&saved[name], &sql_ctx)
            .map_err(|e| left_out(e, &store))
            .with_context(|| format!("compiling segment '{name}' for {}", engine.name()))?;
        let start = Instant::now();
        let ids = session
            .ids(&sql)
            .with_context(|| format!("running segment '{name}' on {}", engine.name()))?;
        let seconds = start.elapsed().as_secs_f64();
        let mut members = RoaringBitmap::new();
        let mut unknown = 0u64;
        for id in &ids {
            match dense.get(id) {
                Some(&p) => {
                    members.insert(p);
                }
                None => unknown += 1,
            }
        }
        if unknown > 0 {
            return Err(bad_input(format!(
                "{}: segment '{name}' returned {unknown} ids that are not profiles of this \
                 workspace: load the workspace's data with `microseg warehouse load --engine {}`",
                engine.name(),
                engine.name()
            )));
        }
        let version = store.segment_version(name)?.unwrap_or(1);
        store.save_warehouse_members(name, version, engine.name(), at.0, &members)?;
        if let Some(out) = &args.out {
            let mut w = csv::Writer::from_path(out)
                .with_context(|| format!("writing {}", out.display()))?;
            w.write_record(["id"])?;
            for id in &ids {
                w.write_record([id])?;
            }
            w.flush()?;
        }
        if !args.json {
            eprintln!(
                "{name}: {} members from {} in {seconds:.3} s (as of {at})",
                members.len(),
                engine.name()
            );
        }
        results.push(serde_json::json!({
            "segment": name,
            "engine": engine.name(),
            "size": members.len(),
            "seconds": seconds,
        }));
    }
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
