//! `microseg correlate`: how numeric traits and metrics move together.

use anyhow::Result;
use clap::Args;
use microseg_core::{TraitType, Value};
use microseg_engine::stats::{pearson, spearman};
use roaring::RoaringBitmap;

use super::dataset::Loaded;
use super::{as_of, print_json, Context};
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
                .ok_or_else(|| anyhow::anyhow!("no segment named '{name}'"))?,
        ),
        None => None,
    };
    let conditions: Vec<_> = within.iter().map(|s| &s.condition).collect();
    let loaded = Loaded::new(&ws, &store, at, &conditions)?;
    let data = loaded.dataset();
    let names: Vec<String> = if args.metrics.is_empty() {
        let mut names: Vec<String> = loaded
            .profiles
            .columns
            .iter()
            .filter(|(_, c)| matches!(c.trait_type(), TraitType::Integer | TraitType::Float))
            .map(|(n, _)| n.clone())
            .collect();
        names.extend(
            [
                "visits",
                "orders",
                "revenue",
                "aov",
                "recency_days",
                "tenure_days",
            ]
            .map(String::from),
        );
        names
    } else {
        args.metrics.clone()
    };
    for n in &names {
        let ty = data.type_of(n)?;
        if !matches!(ty, TraitType::Integer | TraitType::Float) {
            anyhow::bail!("'{n}' is {ty}: correlations need numbers");
        }
    }
    let members: RoaringBitmap = match &within {
        Some(s) => loaded.evaluate(&s.condition)?,
        None => (0..loaded.external_ids.len() as u32).collect(),
    };
    // One column of optional numbers per name, over the members.
    let columns: Vec<Vec<Option<f64>>> = names
        .iter()
        .map(|n| {
            members
                .iter()
                .map(|p| match data.value_of(n, p) {
                    Ok(Some(Value::Int(i))) => Some(i as f64),
                    Ok(Some(Value::Float(x))) => Some(x),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let k = names.len();
    let mut n = vec![vec![0u64; k]; k];
    let mut pe = vec![vec![None; k]; k];
    let mut sp = vec![vec![None; k]; k];
    for i in 0..k {
        for j in 0..k {
            let (xs, ys): (Vec<f64>, Vec<f64>) = columns[i]
                .iter()
                .zip(&columns[j])
                .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
                .unzip();
            n[i][j] = xs.len() as u64;
            pe[i][j] = pearson(&xs, &ys);
            sp[i][j] = spearman(&xs, &ys);
        }
    }
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
