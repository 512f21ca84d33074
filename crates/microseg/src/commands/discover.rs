//! `microseg discover`: micro-segments whose target rate or mean differs from the base.

use anyhow::Result;
use clap::Args;
use microseg_core::condition::Condition;
use microseg_core::TraitType;
use microseg_engine::models::discover::{
    discover, items, Discovery, Item, Settings, Target, Verdict,
};
use microseg_store::Tables;
use roaring::RoaringBitmap;
use serde_json::json;

use super::segment::named_or_parsed;
use super::{as_of, print_json, Context};
use crate::failure::{bad_input, usage};
use crate::output::{print_table, thousands};

/// Find micro-segments: conjunctions of `dimension = value` conditions (categorical traits,
/// numeric ones binned into quantiles) whose target rate or mean differs from the base.
///
/// Each candidate with at least --min-support members gets a 95% interval (Wilson for
/// rates, t for means) and a p-value against the base; the false discovery rate is
/// controlled with Benjamini–Hochberg over every candidate tested. The survivors print as
/// conditions ready for `microseg segment create`.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  microseg discover --target 'orders >= 2' --dims gender,discipline,skill,city --max-depth 3
  microseg discover --target revenue --within cyclists --min-support 200 --value")]
pub struct DiscoverArgs {
    /// A condition or saved segment (its rate is the target), or a numeric trait or metric
    /// (its mean is the target).
    #[arg(long, value_name = "COND_OR_METRIC")]
    target: String,
    /// Search within this segment or condition only (default: everyone).
    #[arg(long, value_name = "SEG")]
    within: Option<String>,
    #[command(flatten)]
    search: SearchArgs,
    /// Rank by expected value, support × (value − base), instead of by lift.
    #[arg(long)]
    value: bool,
    /// The instant traits, metrics and events are evaluated at (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// The search options shared with `experiment discover`.
#[derive(Debug, Args)]
pub struct SearchArgs {
    /// Dimensions to combine (default: every categorical or numeric trait).
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    pub dims: Vec<String>,
    /// Most conditions in one micro-segment.
    #[arg(long, default_value_t = 3, value_name = "N")]
    pub max_depth: usize,
    /// Fewest members a candidate needs to be tested: a behaviour shared by 1 person in 10
    /// is no segment, by 100 in 1,000 it deserves a look.
    #[arg(long, default_value_t = 100, value_name = "N")]
    pub min_support: u64,
    /// False discovery rate (Benjamini–Hochberg).
    #[arg(long, default_value_t = 0.05, value_name = "Q")]
    pub fdr: f64,
    /// Quantile bins of numeric dimensions.
    #[arg(long, default_value_t = 4, value_name = "N")]
    pub bins: usize,
    /// Segments shown in the table.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub top: usize,
}

impl SearchArgs {
    /// The engine's settings, validated.
    pub fn settings(&self) -> Result<Settings> {
        if !(1..=5).contains(&self.max_depth) {
            return Err(usage(format!("--max-depth {}: use 1 to 5", self.max_depth)));
        }
        if !(self.fdr > 0.0 && self.fdr < 1.0) {
            return Err(usage(format!(
                "--fdr {}: use a rate between 0 and 1, e.g. 0.05",
                self.fdr
            )));
        }
        if !(2..=20).contains(&self.bins) {
            return Err(usage(format!("--bins {}: use 2 to 20", self.bins)));
        }
        Ok(Settings {
            max_depth: self.max_depth,
            min_support: self.min_support.max(1),
            fdr: self.fdr,
            bins: self.bins,
        })
    }

    /// The dimensions to search: those named, or every trait but timestamps and
    /// `exclude`.
    pub fn dimensions(&self, tables: &Tables<'_>, exclude: &[String]) -> Result<Vec<String>> {
        let dims: Vec<String> = if self.dims.is_empty() {
            tables
                .schema()
                .iter()
                .filter(|(name, spec)| spec.ty != TraitType::Timestamp && !exclude.contains(name))
                .map(|(name, _)| name.clone())
                .collect()
        } else {
            self.dims.clone()
        };
        if dims.is_empty() {
            return Err(usage("no dimensions to search: name them with --dims"));
        }
        Ok(dims)
    }
}

/// The candidates' items of `dims` within `base` (loading what they read).
pub fn search_items(
    tables: &mut Tables<'_>,
    dims: &[String],
    base: &RoaringBitmap,
    settings: &Settings,
) -> Result<Vec<Item>> {
    let names: Vec<&str> = dims.iter().map(String::as_str).collect();
    tables.need(&[], &names)?;
    items(&tables.dataset(), dims, base, settings)
        .map_err(|(dim, e)| bad_input(format!("--dims {dim}: {e}")))
}

pub fn run(ctx: &Context, args: DiscoverArgs) -> Result<()> {
    let (ws, store) = ctx.open()?;
    let at = as_of(args.as_of.as_deref())?;
    let settings = args.search.settings()?;
    let saved = store.segment_conditions()?;
    // A saved segment or a condition is a rate; a bare name (a trait or metric) a mean.
    let target_condition = match named_or_parsed(&saved, &args.target) {
        Ok((_, c)) => Some(c),
        Err(_) if is_name(&args.target) => None,
        Err(e) => return Err(e.context("--target")),
    };
    let within = args
        .within
        .as_deref()
        .map(|w| named_or_parsed(&saved, w).map(|c| c.1))
        .transpose()?;
    let conditions: Vec<&Condition> = target_condition.iter().chain(&within).collect();
    let mut tables = Tables::open(&ws, &store, at)?;
    let target_name = [args.target.as_str()];
    let names: &[&str] = if target_condition.is_some() {
        &[]
    } else {
        &target_name
    };
    tables.need(&conditions, names)?;
    let base = match &within {
        Some(c) => tables.dataset().evaluate(c)?,
        None => tables.everyone(),
    };
    let target = match &target_condition {
        Some(c) => Target::Rate(tables.dataset().evaluate(c)?),
        None => {
            let ty = tables.dataset().type_of(&args.target)?;
            if !matches!(ty, TraitType::Integer | TraitType::Float) {
                return Err(bad_input(format!(
                    "--target {}: is {ty}; give a condition or a numeric trait or metric",
                    args.target
                )));
            }
            Target::mean_of(&tables.dataset(), &args.target, &base)?
        }
    };
    // A target's own traits would only rediscover the target.
    let exclude = target_condition
        .as_ref()
        .map(|c| c.profile_names())
        .unwrap_or_else(|| vec![args.target.clone()]);
    let dims = args.search.dimensions(&tables, &exclude)?;
    let started = std::time::Instant::now();
    let items = search_items(&mut tables, &dims, &base, &settings)?;
    let mut found = discover(&items, &base, &target, &settings);
    let seconds = started.elapsed().as_secs_f64();
    if args.value {
        let base_value = found.base;
        found.segments.sort_by(|a, b| {
            let gain = |f: &microseg_engine::models::discover::Finding| {
                f.support as f64 * (f.value - base_value)
            };
            gain(b).total_cmp(&gain(a))
        });
    }
    let kind = if target_condition.is_some() {
        "rate"
    } else {
        "mean"
    };
    if args.json {
        let mut doc = json!({"target": args.target, "kind": kind, "as_of": at.to_string()});
        add_search_fields(&mut doc, &found, &dims, &settings, seconds);
        return print_json(&doc);
    }
    println!(
        "base: {} {} over {} profiles; {} candidates tested over {} dimensions ({} values), depth <= {}, support >= {}; {} segments at FDR {} ({seconds:.2} s)",
        kind,
        show(kind, found.base),
        thousands(found.base_size),
        thousands(found.tested as u64),
        dims.len(),
        items.len(),
        settings.max_depth,
        settings.min_support,
        thousands(found.segments.len() as u64),
        settings.fdr,
    );
    print_findings(&found, kind, args.search.top, false);
    Ok(())
}

/// The fields every discovery's JSON has (docs/cli.md): the dimensions, the base, what
/// was tested, the settings, the time and the segments.
pub fn add_search_fields(
    doc: &mut serde_json::Value,
    found: &Discovery,
    dims: &[String],
    settings: &Settings,
    seconds: f64,
) {
    let fields = json!({
        "dimensions": dims,
        "base": found.base,
        "base_size": found.base_size,
        "tested": found.tested,
        "min_support": settings.min_support,
        "fdr": settings.fdr,
        "seconds": seconds,
        "segments": found.segments,
    });
    if let (Some(doc), serde_json::Value::Object(fields)) = (doc.as_object_mut(), fields) {
        doc.extend(fields);
    }
}

/// Whether `text` is a plain name (letters, digits, `_`, `.`), as a trait or metric is.
fn is_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
}

/// A rate as a percentage, a mean with two decimals.
pub fn show(kind: &str, x: f64) -> String {
    if kind == "rate" {
        format!("{:.2}%", x * 100.0)
    } else {
        format!("{x:.2}")
    }
}

/// Prints the top findings as a table.
pub fn print_findings(found: &Discovery, kind: &str, top: usize, uplift: bool) {
    if found.segments.is_empty() {
        println!("nothing survives the false discovery rate: no micro-segment differs measurably");
        return;
    }
    let effect = |x: f64| {
        if kind == "rate" {
            format!("{:+.2} pts", x * 100.0)
        } else {
            format!("{x:+.2}")
        }
    };
    // Uplift: the best of each verdict; otherwise the best overall.
    let mut shown = [0usize; 5];
    let rows: Vec<Vec<String>> = found
        .segments
        .iter()
        .filter(|f| {
            let slot = if uplift { f.verdict as usize } else { 0 };
            shown[slot] += 1;
            shown[slot] <= top
        })
        .map(|f| {
            let mut row = vec![
                match f.verdict {
                    Verdict::Above => "above",
                    Verdict::Below => "below",
                    Verdict::Works => "works",
                    Verdict::NoEffect => "no effect",
                    Verdict::Backfires => "backfires",
                }
                .to_string(),
                f.condition.to_string(),
                thousands(f.support),
            ];
            if uplift {
                row.push(show(kind, f.control_value.unwrap_or(f64::NAN)));
                row.push(show(kind, f.value));
                row.push(effect(f.lift));
                row.push(format!("{} to {}", effect(f.ci_low), effect(f.ci_high)));
            } else {
                row.push(show(kind, f.value));
                row.push(format!("{:.2}x", f.lift));
                row.push(format!(
                    "{} to {}",
                    show(kind, f.ci_low),
                    show(kind, f.ci_high)
                ));
            }
            row.push(format!("{:.2e}", f.q_value));
            row
        })
        .collect();
    let header: &[&str] = if uplift {
        &[
            "verdict",
            "segment",
            "support",
            "control",
            "treated",
            "effect",
            "95% interval",
            "q",
        ]
    } else {
        &[
            "verdict",
            "segment",
            "support",
            kind,
            "lift",
            "95% interval",
            "q",
        ]
    };
    print_table(header, &rows);
    if rows.len() < found.segments.len() {
        println!(
            "... {} more (--top N, or --json for all)",
            found.segments.len() - rows.len()
        );
    }
}
