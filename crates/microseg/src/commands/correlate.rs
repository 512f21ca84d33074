//! `microseg correlate`: how numeric traits and metrics move together.

use anyhow::Result;
use clap::Args;
use microseg_core::TraitType;
use microseg_engine::analytics::{correlations, Correlations};
use microseg_store::Tables;
use roaring::RoaringBitmap;

use super::{as_of, print_json, Context};
use crate::failure::not_found;
use crate::output::print_table;

/// Pearson and Spearman correlation matrices over numeric traits and metrics.
///
/// Each pair uses the profiles that have both values (n is shown); a correlation is empty
/// when a side has no variance or fewer than 2 pairs exist.
#[derive(Debug, Args)]
pub struct CorrelateArgs {
    /// Only the members of this segment (default everyone).
    #[arg(long, value_name = "SEGMENT")]
    within: Option<String>,
    /// Traits and metrics to correlate (default: every numeric trait and visits, orders,
    /// revenue, aov, recency_days, tenure_days).
    #[arg(long, value_delimiter = ',', value_name = "A,B,...")]
    metrics: Vec<String>,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: CorrelateArgs) -> Result<()> {
    let (ws, store) = ctx.open()?;
    let at = as_of(args.as_of.as_deref())?;
    let within = match &args.within {
        Some(name) => Some(
            store
                .segments()?
                .into_iter()
                .find(|s| &s.name == name)
                .ok_or_else(|| not_found(format!("no segment named '{name}'")))?,
        ),
        None => None,
    };
    let conditions: Vec<_> = within.iter().map(|s| &s.condition).collect();
    let mut tables = Tables::open(&ws, &store, at)?;
    let names: Vec<String> = if args.metrics.is_empty() {
        let mut names: Vec<String> = tables
            .schema()
            .iter()
            .filter(|(_, spec)| matches!(spec.ty, TraitType::Integer | TraitType::Float))
            .map(|(n, _)| n.clone())
            .collect();
        names.extend(microseg_engine::metrics::KEY_METRICS.map(String::from));
        names
    } else {
        args.metrics.clone()
    };
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    tables.need(&conditions, &name_refs)?;
    let data = tables.dataset();
    let members: RoaringBitmap = match &within {
        Some(s) => data.evaluate(&s.condition)?,
        None => tables.everyone(),
    };
    let Correlations {
        n,
        pearson: pe,
        spearman: sp,
    } = correlations(&data, &members, &names)?;
    if args.json {
        return print_json(&serde_json::json!({
            "as_of": at.to_string(),
            "within": args.within,
            "metrics": names,
            "n": n,
            "pearson": pe,
            "spearman": sp,
        }));
    }
    let title = args.within.as_deref().unwrap_or("all profiles");
    println!("{title}: {} profiles as of {at}", members.len());
    for (label, matrix) in [("pearson", &pe), ("spearman", &sp)] {
        let mut header = vec![label];
        header.extend(names.iter().map(String::as_str));
        let rows: Vec<Vec<String>> = names
            .iter()
            .zip(matrix.iter())
            .map(|(name, row)| {
                let mut r = vec![name.clone()];
                r.extend(
                    row.iter()
                        .map(|c| c.map(|c| format!("{c:.3}")).unwrap_or_default()),
                );
                r
            })
            .collect();
        println!();
        print_table(&header, &rows);
    }
    let mut header = vec!["n (pairs)"];
    header.extend(names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = names
        .iter()
        .zip(n.iter())
        .map(|(name, row)| {
            let mut r = vec![name.clone()];
            r.extend(row.iter().map(u64::to_string));
            r
        })
        .collect();
    println!();
    print_table(&header, &rows);
    Ok(())
}
