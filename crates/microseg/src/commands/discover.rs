//! `microseg discover`: micro-segments whose target rate or mean differs from the base.

use anyhow::{Context as _, Result};
use clap::Args;
use microseg_core::condition::Condition;
use microseg_engine::models::discover::{
    discover, items, partition, Discovery, Estimate, Group, Item, Measure, Partition, Settings,
    Target, Verdict,
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
/// controlled with Benjamini–Hochberg over every candidate tested. The survivors, ranked by
/// the near end of their interval (what the data support, not the point estimate), print
/// as conditions ready for `microseg segment create`. --partition splits everyone into
/// non-overlapping groups instead.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  microseg discover --target 'orders >= 2' --dims gender,discipline,skill,city --max-depth 3
  microseg discover --target revenue --within cyclists --min-support 200 --value
  microseg discover --target 'orders >= 2' --dims skill,income_band,discipline --partition")]
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
    /// Rank by expected value, support × (value − base), instead of by the interval's
    /// near end.
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
    /// Also split everyone into non-overlapping groups (a tree of --max-depth ≤ 3 levels,
    /// each group at least --min-support): the table shows the groups instead of the
    /// ranked segments, the JSON adds them as `partition`.
    #[arg(long)]
    pub partition: bool,
}

impl SearchArgs {
    /// The engine's settings, validated.
    pub fn settings(&self) -> Result<Settings> {
        if !(1..=5).contains(&self.max_depth) {
            return Err(usage(format!("--max-depth {}: use 1 to 5", self.max_depth)));
        }
        if self.partition && self.max_depth > 3 {
            return Err(usage(format!(
                "--max-depth {} with --partition: a partition has at most 3 levels",
                self.max_depth
            )));
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
            tables.search_dimensions(exclude)
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
    let (target, exclude) = Target::named(
        &tables.dataset(),
        target_condition.as_ref(),
        &args.target,
        &base,
    )
    .with_context(|| format!("--target {}", args.target))?;
    let dims = args.search.dimensions(&tables, &exclude)?;
    let started = std::time::Instant::now();
    let items = search_items(&mut tables, &dims, &base, &settings)?;
    let mut found = discover(&items, &base, &target, &settings);
    let groups = args.search.partition.then(|| {
        partition(
            &items,
            &base,
            Measure::Target(&target),
            &settings,
            settings.max_depth,
        )
    });
    let seconds = started.elapsed().as_secs_f64();
    if args.value {
        let base_value = found.base;
        found.segments.sort_by(|a, b| {
            let gain = |f: &microseg_engine::models::discover::Finding| {
                f.estimate.support as f64 * (f.estimate.value - base_value)
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
        add_search_fields(&mut doc, &found, &dims, &settings, seconds, groups.as_ref());
        return print_json(&doc);
    }
    if let Some(groups) = &groups {
        println!(
            "base: {} {} over {} profiles; {} groups, depth <= {}, each >= {} ({seconds:.2} s)",
            kind,
            show(kind, groups.base),
            thousands(groups.base_size),
            groups.groups.len(),
            settings.max_depth,
            settings.min_support,
        );
        print_partition(groups, kind, false);
        return Ok(());
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
/// was tested, the settings, the time, the segments and, when asked for, the partition.
pub fn add_search_fields(
    doc: &mut serde_json::Value,
    found: &Discovery,
    dims: &[String],
    settings: &Settings,
    seconds: f64,
    groups: Option<&Partition>,
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
    let fields = match (fields, groups) {
        (serde_json::Value::Object(mut fields), Some(p)) => {
            fields.insert(
                "partition".into(),
                json!({"depth": settings.max_depth, "groups": p.groups}),
            );
            serde_json::Value::Object(fields)
        }
        (fields, _) => fields,
    };
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
    // Uplift: the best of each verdict; otherwise the best overall.
    let mut shown = std::collections::HashMap::new();
    let rows: Vec<Vec<String>> = found
        .segments
        .iter()
        .filter(|f| {
            let slot = shown
                .entry(if uplift {
                    Some(f.estimate.verdict)
                } else {
                    None
                })
                .or_insert(0);
            *slot += 1;
            *slot <= top
        })
        .map(|f| {
            let mut row = cells(&f.condition.to_string(), &f.estimate, kind, uplift);
            row.push(format!("{:.2e}", f.q_value));
            row
        })
        .collect();
    let mut header = header("segment", kind, uplift);
    header.push("q");
    print_table(&header, &rows);
    if rows.len() < found.segments.len() {
        println!(
            "... {} more (--top N, or --json for all)",
            found.segments.len() - rows.len()
        );
    }
}

/// A table's columns for estimates: the verdict, `what`, the support and the numbers.
fn header<'a>(what: &'a str, kind: &'a str, uplift: bool) -> Vec<&'a str> {
    if uplift {
        vec![
            "verdict",
            what,
            "support",
            "control",
            "treated",
            "effect",
            "95% interval",
        ]
    } else {
        vec!["verdict", what, "support", kind, "lift", "95% interval"]
    }
}

/// One row of [`header`]'s columns.
fn cells(name: &str, e: &Estimate, kind: &str, uplift: bool) -> Vec<String> {
    let effect = |x: f64| {
        if kind == "rate" {
            format!("{:+.2} pts", x * 100.0)
        } else {
            format!("{x:+.2}")
        }
    };
    let mut row = vec![
        verdict_text(e.verdict).to_string(),
        name.to_string(),
        thousands(e.support),
    ];
    if uplift {
        row.push(show(kind, e.control_value.unwrap_or(f64::NAN)));
        row.push(show(kind, e.value));
        row.push(effect(e.lift));
        row.push(format!("{} to {}", effect(e.ci_low), effect(e.ci_high)));
    } else {
        row.push(show(kind, e.value));
        row.push(format!("{:.2}x", e.lift));
        row.push(format!(
            "{} to {}",
            show(kind, e.ci_low),
            show(kind, e.ci_high)
        ));
    }
    row
}

/// A verdict as the tables print it.
fn verdict_text(v: Verdict) -> &'static str {
    match v {
        Verdict::Above => "above",
        Verdict::Below => "below",
        Verdict::Works => "works",
        Verdict::NoEffect => "no effect",
        Verdict::Backfires => "backfires",
        Verdict::AsBase => "as base",
    }
}

/// Prints a partition's groups as a table; for uplift, then who to send to and who not.
pub fn print_partition(p: &Partition, kind: &str, uplift: bool) {
    let name = |g: &Group| {
        g.condition.as_ref().map_or_else(
            || "(everyone: no split differs)".to_string(),
            |c| c.to_string(),
        )
    };
    let rows: Vec<Vec<String>> = p
        .groups
        .iter()
        .map(|g| cells(&name(g), &g.estimate, kind, uplift))
        .collect();
    print_table(&header("group", kind, uplift), &rows);
    if uplift {
        let (send, hold): (Vec<_>, Vec<_>) = p
            .groups
            .iter()
            .partition(|g| g.estimate.verdict == Verdict::Works);
        let people = |gs: &[&Group]| thousands(gs.iter().map(|g| g.estimate.support).sum());
        let list = |gs: &[&Group]| {
            gs.iter()
                .map(|g| format!("\n  {}", name(g)))
                .collect::<String>()
        };
        if send.is_empty() {
            println!("\nsend to nobody: no group's effect interval is above zero");
        } else if hold.is_empty() {
            println!("\nsend to everyone: every group's effect interval is above zero");
        } else if send.len() <= hold.len() {
            println!(
                "\nsend to {} people in the experiment, {}:{}\nhold back the other {}",
                people(&send),
                if send.len() == 1 {
                    "this group"
                } else {
                    "these groups"
                },
                list(&send),
                people(&hold)
            );
        } else {
            println!(
                "\nhold back {} people in the experiment, {}:{}\nsend to the other {}",
                people(&hold),
                if hold.len() == 1 {
                    "this group"
                } else {
                    "these groups"
                },
                list(&hold),
                people(&send)
            );
        }
    }
}
