//! `microseg report`: the shareable HTML report.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use microseg_console::report::{report, ReportOptions};

use super::{as_of, Context};

/// Write one self-contained HTML report: the overview, RFM, segments with their weekly
/// sizes and overlaps, discovered micro-segments, personas, predicted customer value and
/// each campaign's results with its lift chart.
///
/// The file has no script and makes no request (charts are inline SVG): it can be mailed,
/// opened offline and printed.
#[derive(Debug, Args)]
#[command(after_help = "Example:
  microseg report --out report.html --as-of 2026-11-01 --discover 'orders >= 2' --dims discipline,skill,gender,income_band")]
pub struct ReportArgs {
    /// Where to write it.
    #[arg(long, default_value = "report.html", value_name = "FILE")]
    out: PathBuf,
    /// The instant the report describes (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// The discovery's target: a condition or saved segment (a rate), or a numeric metric
    /// (a mean).
    #[arg(long, default_value = "orders >= 2", value_name = "COND_OR_METRIC")]
    discover: String,
    /// The discovery's dimensions (default: every trait but timestamps).
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    dims: Vec<String>,
    /// The campaigns' attribution window, in days.
    #[arg(long, default_value_t = 7.0, value_name = "DAYS")]
    window: f64,
    /// The report's title.
    #[arg(long, default_value = "microseg report")]
    title: String,
}

pub fn run(ctx: &Context, args: ReportArgs) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    let at = as_of(args.as_of.as_deref())?;
    let started = std::time::Instant::now();
    let html = report(
        &ws,
        &mut store,
        at,
        &ReportOptions {
            title: args.title,
            discover_target: args.discover,
            dims: args.dims,
            window_days: args.window,
            ..ReportOptions::default()
        },
    )?;
    std::fs::write(&args.out, &html).with_context(|| format!("writing {}", args.out.display()))?;
    eprintln!(
        "wrote {} ({} KB) as of {at} in {:.2} s",
        args.out.display(),
        html.len() / 1024,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}
