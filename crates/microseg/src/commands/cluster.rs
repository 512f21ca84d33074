//! `microseg cluster`: personas by k-means on standardised features.

use anyhow::{bail, Result};
use clap::Args;
use microseg_core::condition::{Condition, Literal};
use microseg_core::{TraitSpec, TraitType, Value};
use microseg_engine::models::kmeans::{kmeans, silhouette, standardise, Points, SplitMix};
use roaring::RoaringBitmap;
use serde_json::json;

use super::dataset::Loaded;
use super::segment::{check_name, named_or_parsed};
use super::{as_of, print_json, Context};
use crate::output::{percent, print_table, thousands};

/// Personas: k-means on standardised features (traits or metrics), k-means++ seeding, the
/// best of several seeded restarts.
///
/// Each cluster is described by its size, its centroid in the features' own units (the
/// members' means) and the trait values it over-indexes on (share in the cluster over share
/// in the base). Inertia is on the standardised features, as scikit-learn reports it.
/// Profiles missing a feature are left out. `--k auto` tries 2 to 8 clusters and keeps the
/// k with the best mean silhouette on a sample of 2,000 profiles.
#[derive(Debug, Args)]
#[command(after_help = "Example:
  microseg cluster --k 4 --features recency_days,orders,revenue --log orders,revenue --save-as persona")]
pub struct ClusterArgs {
    /// Number of clusters, or `auto`.
    #[arg(long, value_name = "K|auto")]
    k: String,
    /// Numeric traits or metrics to cluster on.
    #[arg(long, value_delimiter = ',', required = true, value_name = "A,B,..")]
    features: Vec<String>,
    /// Features to transform with ln(1 + x) first (skewed counts and money).
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    log: Vec<String>,
    /// Cluster only the members of this segment or condition.
    #[arg(long, value_name = "SEG")]
    within: Option<String>,
    /// k-means++ restarts; the best by inertia is kept. Twice scikit-learn's 10: customer
    /// data often has near-equal optima that differ in a small cluster of outliers.
    #[arg(long, default_value_t = 20, value_name = "N")]
    restarts: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Store each cluster as a segment PREFIX_1, PREFIX_2, ... (through a trait PREFIX
    /// holding the cluster number).
    #[arg(long, value_name = "PREFIX")]
    save_as: Option<String>,
    /// The instant metrics are computed at (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, args: ClusterArgs) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    let at = as_of(args.as_of.as_deref())?;
    for l in &args.log {
        if !args.features.contains(l) {
            bail!("--log {l}: not one of --features");
        }
    }
    if let Some(prefix) = &args.save_as {
        check_name(prefix)?;
    }
    let saved = store.segment_conditions()?;
    let within = args
        .within
        .as_deref()
        .map(|w| named_or_parsed(&saved, w).map(|c| c.1))
        .transpose()?;
    let conditions: Vec<&Condition> = within.iter().collect();
    let loaded = Loaded::reading(&ws, &store, at, &conditions, &args.features)?;
    let dataset = loaded.dataset();
    for f in &args.features {
        let ty = dataset.type_of(f)?;
        if !matches!(ty, TraitType::Integer | TraitType::Float) {
            bail!("--features {f}: is {ty}; clustering needs numbers");
        }
    }
    let base = match &within {
        Some(c) => loaded.evaluate(c)?,
        None => (0..loaded.external_ids.len() as u32).collect(),
    };
    let d = args.features.len();
    let mut members: Vec<u32> = Vec::new();
    let mut raw: Vec<f64> = Vec::new();
    'profiles: for p in &base {
        let start = raw.len();
        for f in &args.features {
            match dataset.value_of(f, p)?.as_ref().and_then(Value::as_f64) {
                Some(x) => raw.push(x),
                None => {
                    raw.truncate(start);
                    continue 'profiles;
                }
            }
        }
        members.push(p);
    }
    let n = members.len();
    let mut values = raw.clone();
    for (j, f) in args.features.iter().enumerate() {
        if args.log.contains(f) {
            for row in values.chunks_mut(d) {
                if row[j] <= -1.0 {
                    bail!("--log {f}: a value {} is at or below -1", row[j]);
                }
                row[j] = row[j].ln_1p();
            }
        }
    }
    standardise(&mut values, d);
    let points = Points { values: &values, d };
    let started = std::time::Instant::now();
    let mut scores = Vec::new();
    let k = if args.k == "auto" {
        let mut rng = SplitMix::new(args.seed ^ 0x5117);
        let sample: Vec<usize> = if n <= 2000 {
            (0..n).collect()
        } else {
            (0..2000).map(|_| rng.below(n)).collect()
        };
        for k in 2..=8usize.min(n.saturating_sub(1)) {
            let c = kmeans(&points, k, args.restarts, args.seed);
            scores.push((k, silhouette(&points, &c.labels, k, &sample)));
        }
        scores
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|s| s.0)
            .ok_or_else(|| anyhow::anyhow!("too few profiles to choose k"))?
    } else {
        args.k
            .parse::<usize>()
            .ok()
            .filter(|&k| k >= 1)
            .ok_or_else(|| anyhow::anyhow!("--k {}: give a number of clusters or auto", args.k))?
    };
    if n < k {
        bail!("{n} profiles have every feature; k-means with k = {k} needs at least {k}");
    }
    let result = kmeans(&points, k, args.restarts, args.seed);
    let seconds = started.elapsed().as_secs_f64();
    // Clusters by size, largest first, numbered from 1.
    // Clusters come numbered by size, largest first; members and feature sums in one pass.
    let mut bitmaps = vec![RoaringBitmap::new(); k];
    let mut sums = vec![0.0; k * d];
    for (i, &l) in result.labels.iter().enumerate() {
        bitmaps[l].insert(members[i]);
        for j in 0..d {
            sums[l * d + j] += raw[i * d + j];
        }
    }
    let all: RoaringBitmap = members.iter().copied().collect();
    let traits = over_indexing(&loaded, &all, &bitmaps)?;
    let clusters: Vec<serde_json::Value> = (0..k)
        .map(|c| {
            let size = bitmaps[c].len();
            let mut centroid = serde_json::Map::new();
            for (j, f) in args.features.iter().enumerate() {
                centroid.insert(f.clone(), json!(sums[c * d + j] / size.max(1) as f64));
            }
            json!({
                "cluster": c + 1,
                "size": size,
                "share": size as f64 / n as f64,
                "centroid": centroid,
                "over_indexes": traits[c].iter().map(|(t, v, share, lift)| json!({
                    "trait": t, "value": v, "share": share, "lift": lift,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let mut saved_segments = Vec::new();
    if let Some(prefix) = &args.save_as {
        let assignments: Vec<(u32, Value)> = bitmaps
            .iter()
            .enumerate()
            .flat_map(|(c, b)| b.iter().map(move |p| (p, Value::Int(c as i64 + 1))))
            .collect();
        store.set_trait(prefix, &TraitSpec::new(TraitType::Integer), &assignments)?;
        for c in 1..=k {
            let name = format!("{prefix}_{c}");
            let condition = Condition::Compare {
                left: microseg_core::condition::Operand::Name(prefix.clone()),
                op: microseg_core::condition::CompareOp::Eq,
                right: Literal::Int(c as i64),
            };
            let description = format!(
                "persona {c} of {k} (k-means on {})",
                args.features.join(", ")
            );
            store.save_segment(&name, &condition, Some(&description), true)?;
            saved_segments.push(name);
        }
    }
    if args.json {
        return print_json(&json!({
            "k": k,
            "inertia": result.inertia,
            "profiles": n,
            "left_out": base.len() as usize - n,
            "features": args.features,
            "log": args.log,
            "restarts": args.restarts,
            "seed": args.seed,
            "silhouette": scores.iter().map(|(k, s)| json!({"k": k, "silhouette": s})).collect::<Vec<_>>(),
            "clusters": clusters,
            "segments": saved_segments,
            "seconds": seconds,
        }));
    }
    println!(
        "{k} clusters of {} profiles ({} left out for a missing feature), inertia {:.1} on standardised {}{}",
        thousands(n as u64),
        thousands(base.len() - n as u64),
        result.inertia,
        args.features.join(", "),
        if args.log.is_empty() { String::new() } else { format!(" (ln(1+x) of {})", args.log.join(", ")) },
    );
    if !scores.is_empty() {
        let list: Vec<String> = scores
            .iter()
            .map(|(k, s)| format!("k={k}: {s:.3}"))
            .collect();
        println!("silhouette by k: {}", list.join(", "));
    }
    let mut header = vec!["cluster".to_string(), "size".into(), "share".into()];
    header.extend(args.features.iter().cloned());
    header.push("over-indexes on".into());
    let rows: Vec<Vec<String>> = clusters
        .iter()
        .enumerate()
        .map(|(c, cl)| {
            let mut row = vec![
                (c + 1).to_string(),
                thousands(cl["size"].as_u64().unwrap_or(0)),
                percent(cl["size"].as_u64().unwrap_or(0), n as u64),
            ];
            for f in &args.features {
                row.push(format!(
                    "{:.2}",
                    cl["centroid"][f].as_f64().unwrap_or(f64::NAN)
                ));
            }
            row.push(
                traits[c]
                    .iter()
                    .map(|(t, v, _, lift)| format!("{t}={v} ({lift:.1}x)"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            row
        })
        .collect();
    let header: Vec<&str> = header.iter().map(String::as_str).collect();
    print_table(&header, &rows);
    if !saved_segments.is_empty() {
        println!("saved segments {}", saved_segments.join(", "));
    }
    Ok(())
}

/// Per cluster, up to 3 categorical trait values whose share in the cluster is at least
/// 1.2 times their share among everyone clustered (and at least 10% of the cluster).
#[allow(clippy::type_complexity)]
fn over_indexing(
    loaded: &Loaded,
    all: &RoaringBitmap,
    clusters: &[RoaringBitmap],
) -> Result<Vec<Vec<(String, String, f64, f64)>>> {
    let dataset = loaded.dataset();
    let mut out = vec![Vec::new(); clusters.len()];
    for (name, column) in &loaded.profiles.columns {
        if !matches!(column.trait_type(), TraitType::String | TraitType::Bool) {
            continue;
        }
        let mut values: std::collections::HashMap<String, RoaringBitmap> = Default::default();
        for p in all {
            if let Some(v) = dataset.value_of(name, p)? {
                values.entry(v.to_string()).or_default().insert(p);
            }
            if values.len() > 50 {
                break;
            }
        }
        if values.len() > 50 {
            continue;
        }
        for (value, members) in &values {
            let base_share = members.len() as f64 / all.len() as f64;
            for (c, cluster) in clusters.iter().enumerate() {
                let share = members.intersection_len(cluster) as f64 / cluster.len().max(1) as f64;
                if share >= 0.1 && share >= 1.2 * base_share {
                    out[c].push((name.clone(), value.clone(), share, share / base_share));
                }
            }
        }
    }
    for list in &mut out {
        list.sort_by(|a, b| b.3.total_cmp(&a.3));
        list.truncate(3);
    }
    Ok(out)
}
