//! `microseg cluster`: personas by k-means on standardised features.

use anyhow::Result;
use clap::Args;
use microseg_engine::models::personas::{personas, PersonaSettings};
use microseg_store::Tables;
use roaring::RoaringBitmap;
use serde_json::json;

use super::segment::{check_name, named_or_parsed};
use super::{as_of, print_json, Context};
use crate::failure::usage;
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
    if let Some(prefix) = &args.save_as {
        check_name(prefix)?;
    }
    let k = match args.k.as_str() {
        "auto" => None,
        k => Some(
            k.parse::<usize>()
                .ok()
                .filter(|&k| k >= 1)
                .ok_or_else(|| usage(format!("--k {k}: give a number of clusters or auto")))?,
        ),
    };
    let settings = PersonaSettings {
        k,
        features: args.features.clone(),
        log: args.log.clone(),
        restarts: args.restarts,
        seed: args.seed,
    };
    let saved = store.segment_conditions()?;
    let within = args
        .within
        .as_deref()
        .map(|w| named_or_parsed(&saved, w).map(|c| c.1))
        .transpose()?;
    let mut tables = Tables::open(&ws, &store, at)?;
    let features: Vec<&str> = args.features.iter().map(String::as_str).collect();
    tables.need(&within.iter().collect::<Vec<_>>(), &features)?;
    // Personas are described by the categorical traits they over-index on: all of them.
    tables.need_all_traits()?;
    let base = match &within {
        Some(c) => tables.dataset().evaluate(c)?,
        None => tables.everyone(),
    };
    let started = std::time::Instant::now();
    let found = personas(&tables.dataset(), &base, &settings)?;
    let seconds = started.elapsed().as_secs_f64();
    drop(tables);
    let n = found.profiles;
    let mut saved_segments = Vec::new();
    if let Some(prefix) = &args.save_as {
        let members: Vec<RoaringBitmap> =
            found.clusters.iter().map(|c| c.members.clone()).collect();
        let description = format!("k-means on {}", args.features.join(", "));
        saved_segments = store.save_clusters(prefix, &members, &description)?;
    }
    let clusters: Vec<serde_json::Value> = found
        .clusters
        .iter()
        .map(|c| {
            let centroid: serde_json::Map<String, serde_json::Value> = args
                .features
                .iter()
                .zip(&c.centroid)
                .map(|(f, x)| (f.clone(), json!(x)))
                .collect();
            json!({
                "cluster": c.cluster,
                "size": c.members.len(),
                "share": c.members.len() as f64 / n as f64,
                "centroid": centroid,
                "over_indexes": c.over_indexes.iter().map(|o| json!({
                    "trait": o.name, "value": o.value, "share": o.share, "lift": o.lift,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    if args.json {
        return print_json(&json!({
            "k": found.k,
            "inertia": found.inertia,
            "profiles": n,
            "left_out": found.left_out,
            "features": args.features,
            "log": args.log,
            "restarts": args.restarts,
            "seed": args.seed,
            "silhouette": found.silhouette.iter().map(|(k, s)| json!({"k": k, "silhouette": s})).collect::<Vec<_>>(),
            "clusters": clusters,
            "segments": saved_segments,
            "seconds": seconds,
        }));
    }
    println!(
        "{} clusters of {} profiles ({} left out for a missing feature), inertia {:.1} on standardised {}{}",
        found.k,
        thousands(n as u64),
        thousands(found.left_out),
        found.inertia,
        args.features.join(", "),
        if args.log.is_empty() { String::new() } else { format!(" (ln(1+x) of {})", args.log.join(", ")) },
    );
    if !found.silhouette.is_empty() {
        let list: Vec<String> = found
            .silhouette
            .iter()
            .map(|(k, s)| format!("k={k}: {s:.3}"))
            .collect();
        println!("silhouette by k: {}", list.join(", "));
    }
    let mut header = vec!["cluster".to_string(), "size".into(), "share".into()];
    header.extend(args.features.iter().cloned());
    header.push("over-indexes on".into());
    let rows: Vec<Vec<String>> = found
        .clusters
        .iter()
        .map(|c| {
            let mut row = vec![
                c.cluster.to_string(),
                thousands(c.members.len()),
                percent(c.members.len(), n as u64),
            ];
            row.extend(c.centroid.iter().map(|x| format!("{x:.2}")));
            row.push(
                c.over_indexes
                    .iter()
                    .map(|o| format!("{}={} ({:.1}x)", o.name, o.value, o.lift))
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
