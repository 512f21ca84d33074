//! `microseg profile show` and `profile delete`: one person, everything microseg knows,
//! and its erasure.

use anyhow::Result;
use clap::{Args, Subcommand};
use microseg_engine::METRIC_NAMES;

use microseg_store::Tables;

use super::metrics::{json, text};
use super::{as_of, print_json, Context};

/// Look at single profiles.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    Show(ShowArgs),
    Delete(DeleteArgs),
}

/// Erase a person everywhere: the profile and those merged into it, their events,
/// identities and experiment records; its row stays as a tombstone with a random id.
/// Refused while `microseg serve` runs on the workspace (use `DELETE /v1/profiles/ID`).
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The profile's external id.
    id: String,
    /// Print as JSON: `{"erased", "profiles", "events", "identities"}`.
    #[arg(long)]
    json: bool,
}

/// Show a profile: identities, traits, metrics and its latest events.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The profile's external id.
    id: String,
    /// The instant metrics and events are shown as of (default: now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// How many of the latest events to show.
    #[arg(long, default_value_t = 10, value_name = "N")]
    events: usize,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, cmd: ProfileCommand) -> Result<()> {
    match cmd {
        ProfileCommand::Show(args) => show(ctx, args),
        ProfileCommand::Delete(args) => delete(ctx, args),
    }
}

fn delete(ctx: &Context, args: DeleteArgs) -> Result<()> {
    let (ws, mut store, _lock) = ctx.open_for_writing("microseg profile delete")?;
    let erased = store.erase_profile(&args.id)?;
    erased.forget_copies(&ws);
    store.truncate_log()?;
    if args.json {
        return print_json(&serde_json::json!({
            "erased": true,
            "profiles": erased.profiles.len(),
            "events": erased.events,
            "identities": erased.identities,
        }));
    }
    println!(
        "erased 1 person: {} profile(s), {} events, {} other identities",
        erased.profiles.len(),
        erased.events,
        erased.identities
    );
    Ok(())
}

/// Delete the events older than `[limits] retention_days` (or --days): what a retention
/// policy promises. Run it from cron; `microseg serve` applies it when it starts.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Keep this many days instead of the workspace's setting.
    #[arg(long, value_name = "N")]
    days: Option<u32>,
    /// Print as JSON: `{"before", "deleted"}`.
    #[arg(long)]
    json: bool,
}

/// `microseg prune`.
pub fn prune(ctx: &Context, args: PruneArgs) -> Result<()> {
    let (ws, mut store, _lock) = ctx.open_for_writing("microseg prune")?;
    let days = args.days.unwrap_or(ws.config.limits.retention_days);
    if days == 0 {
        return Err(crate::failure::usage(
            "no retention: set [limits] retention_days in microseg.toml or pass --days N",
        ));
    }
    let before = microseg_core::Timestamp(as_of(None)?.0 - i64::from(days) * microseg_core::DAY_MS);
    let deleted = store.delete_events_before(&ws, before)?;
    store.truncate_log()?;
    if args.json {
        return print_json(&serde_json::json!({"before": before.to_string(), "deleted": deleted}));
    }
    println!("deleted {deleted} events dated before {before} ({days} days of retention)");
    Ok(())
}

fn show(ctx: &Context, args: ShowArgs) -> Result<()> {
    let (ws, store) = ctx.open()?;
    let as_of = as_of(args.as_of.as_deref())?;
    let profile = store.profile(&args.id)?;
    let mut tables = Tables::open(&ws, &store, as_of)?;
    let computed = tables.metrics()?;
    let metrics: Vec<(&str, Option<microseg_core::Value>)> = METRIC_NAMES
        .iter()
        .map(|n| (*n, computed.value(n, profile.id)))
        .collect();
    let events = store.recent_events(profile.id, as_of, args.events)?;
    if args.json {
        let doc = serde_json::json!({
            "id": profile.external_id,
            "as_of": as_of.to_string(),
            "identities": profile.identities.iter()
                .map(|(k, v)| serde_json::json!({"kind": k, "value": v}))
                .collect::<Vec<_>>(),
            "traits": profile.traits.iter()
                .map(|(k, v)| (k.clone(), v.to_json()))
                .collect::<serde_json::Map<_, _>>(),
            "metrics": metrics.iter()
                .map(|(k, v)| (k.to_string(), json(v)))
                .collect::<serde_json::Map<_, _>>(),
            "events": events.iter().map(|e| serde_json::json!({
                "time": e.time.to_string(),
                "name": e.name,
                "revenue": e.revenue,
                "properties": e.properties,
            })).collect::<Vec<_>>(),
        });
        return print_json(&doc);
    }
    println!("profile {}  (as of {as_of})", profile.external_id);
    println!("\nidentities");
    for (kind, value) in &profile.identities {
        println!("  {kind:<22} {value}");
    }
    println!("\ntraits");
    for (name, value) in &profile.traits {
        println!("  {name:<22} {value}");
    }
    println!("\nmetrics");
    for (name, value) in &metrics {
        let shown = match value {
            Some(microseg_core::Value::Float(x)) => format!("{x:.2}"),
            None => "-".into(),
            v => text(v),
        };
        println!("  {name:<22} {shown}");
    }
    println!("\nlatest events");
    if events.is_empty() {
        println!("  (none)");
    }
    for e in &events {
        let revenue = e
            .revenue
            .map(|r| format!("  revenue {r:.2}"))
            .unwrap_or_default();
        let props = if e.properties.is_empty() {
            String::new()
        } else {
            format!("  {}", serde_json::Value::Object(e.properties.clone()))
        };
        println!("  {}  {}{revenue}{props}", e.time, e.name);
    }
    Ok(())
}
