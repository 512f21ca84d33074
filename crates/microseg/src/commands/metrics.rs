//! `microseg metrics`: behavioural metrics per profile.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Result;
use clap::{Args, ValueEnum};
use microseg_core::Value;
use microseg_engine::METRIC_NAMES;
use microseg_store::Tables;

use super::{as_of, Context};

/// Compute behavioural metrics per profile, one row each.
///
/// Columns: id (external id), visits, orders, revenue, aov, first_seen, last_seen,
/// last_order_at, recency_days, tenure_days, rfm_r, rfm_f, rfm_m, rfm. Only events at or
/// before --as-of count; RFM scores rank profiles with at least one order (5 = best).
/// See docs/metrics.md for the exact definitions.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// The instant the metrics describe: YYYY-MM-DD (midnight UTC) or RFC 3339.
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "table")]
    format: OutputFormat,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum OutputFormat {
    Table,
    Csv,
    Json,
}

/// A metric value as CSV / table text (empty when missing).
pub fn text(value: &Option<Value>) -> String {
    value.as_ref().map(Value::to_string).unwrap_or_default()
}

/// A metric value as JSON (`null` when missing; times as RFC 3339).
pub fn json(value: &Option<Value>) -> serde_json::Value {
    value
        .as_ref()
        .map(Value::to_json)
        .unwrap_or(serde_json::Value::Null)
}

pub fn run(ctx: &Context, args: MetricsArgs) -> Result<()> {
    let (ws, store) = ctx.open()?;
    let as_of = as_of(args.as_of.as_deref())?;
    let started = Instant::now();
    let mut tables = Tables::open(&ws, &store, as_of)?;
    tables.events(&[])?;
    let load_seconds = started.elapsed().as_secs_f64();
    let started = Instant::now();
    tables.metrics()?;
    let compute_seconds = started.elapsed().as_secs_f64();
    let data = tables.dataset();
    let m = data.metrics.expect("computed");
    let external_ids = &data.profiles.external_ids;
    eprintln!(
        "computed metrics for {} profiles as of {as_of} (load {load_seconds:.2} s, compute {compute_seconds:.3} s)",
        external_ids.len(),
    );
    let mut out = crate::output::writer(args.out.as_deref())?;
    let ids = 0..external_ids.len() as u32;
    match args.format {
        OutputFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            let mut header = vec!["id"];
            header.extend(METRIC_NAMES);
            w.write_record(&header)?;
            for p in ids {
                let mut record = vec![external_ids.get(p).to_string()];
                record.extend(METRIC_NAMES.iter().map(|n| text(&m.value(n, p))));
                w.write_record(&record)?;
            }
            w.flush()?;
        }
        OutputFormat::Json => {
            let profiles: Vec<serde_json::Value> = ids
                .map(|p| {
                    let mut o = serde_json::Map::new();
                    o.insert("id".into(), external_ids.get(p).into());
                    for n in METRIC_NAMES {
                        o.insert(n.into(), json(&m.value(n, p)));
                    }
                    o.into()
                })
                .collect();
            let doc = serde_json::json!({
                "as_of": as_of.to_string(),
                "count": profiles.len(),
                "profiles": profiles,
            });
            serde_json::to_writer_pretty(&mut out, &doc)?;
            writeln!(out)?;
        }
        OutputFormat::Table => {
            let mut widths: Vec<usize> = METRIC_NAMES.iter().map(|n| n.len().max(8)).collect();
            let id_width = external_ids.iter().map(str::len).max().unwrap_or(2).max(2);
            widths[4] = 20;
            widths[5] = 20;
            widths[6] = 20;
            write!(out, "{:<id_width$}", "id")?;
            for (n, w) in METRIC_NAMES.iter().zip(&widths) {
                write!(out, "  {n:>w$}")?;
            }
            writeln!(out)?;
            for p in ids {
                write!(out, "{:<id_width$}", external_ids.get(p))?;
                for (n, w) in METRIC_NAMES.iter().zip(&widths) {
                    let v = match m.value(n, p) {
                        Some(Value::Float(x)) => format!("{x:.2}"),
                        Some(Value::Time(t)) => t.to_string(),
                        other => text(&other),
                    };
                    write!(out, "  {v:>w$}")?;
                }
                writeln!(out)?;
            }
        }
    }
    Ok(())
}
