//! `microseg campaign ...`: campaigns from their files, and their runs.

use std::io::Write as _;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_activate::{run, Campaign, Channel, Slot};

use super::{as_of, print_json, Context};
use crate::failure::bad_input;
use crate::output::{print_table, thousands, writer};

/// Campaigns: who gets which message on which channel (docs/campaigns.md).
#[derive(Debug, Subcommand)]
pub enum CampaignCommand {
    /// Save a campaign from its file (JSON), checked first: a bad field or template is
    /// refused with the field and the reason.
    Create(FileArgs),
    /// Save a new version of a campaign from its file.
    Edit(FileArgs),
    /// Every campaign with its channel, priority and status.
    List(JsonArg),
    /// One campaign: its file as saved, version and status.
    Show(NameArgs),
    /// Stop a campaign from running (its file is kept).
    Pause(NameArgs),
    /// Let a paused campaign run again.
    Resume(NameArgs),
    /// Retire a campaign for good (kept for its results).
    Archive(NameArgs),
    /// Render a campaign as one person would get it (their variant and offer), and say
    /// whether the rules let it through now; counts nowhere.
    Preview(PreviewArgs),
    /// Compute the audience, apply the workspace's rules, render every message and queue
    /// it in the outbox (or, with --dry-run, only count).
    Run(RunArgs),
    /// What the campaign earned: the people it sent to against its holdout (conversion
    /// and revenue within the attribution window, lift with intervals), cost, incremental
    /// revenue and ROI.
    Report(ReportArgs),
}

/// `campaign report`.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The campaign.
    name: String,
    /// Also by these dimensions (traits, metrics, saved segments), comma-separated.
    #[arg(long, value_delimiter = ',')]
    by: Vec<String>,
    /// Orders count as the campaign's within this long after each person's message (or
    /// holdout assignment).
    #[arg(long, default_value = "7d", value_name = "DURATION")]
    window: String,
    /// Also save the campaign's arms and outcomes as experiment NAME, for `experiment
    /// discover NAME --arm treated --outcome conversion` (who buys anyway, to exclude
    /// next time).
    #[arg(long, value_name = "NAME")]
    save_experiment: Option<String>,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print the experiment report's document plus `{"sent", "delivered", "cost",
    /// "incremental_revenue", "roi", ...}`.
    #[arg(long)]
    json: bool,
}

/// A campaign file.
#[derive(Debug, Args)]
pub struct FileArgs {
    /// The campaign file (JSON).
    #[arg(long)]
    file: PathBuf,
    /// Print the result as JSON: `{"name", "version"}`.
    #[arg(long)]
    json: bool,
}

/// `--json` alone.
#[derive(Debug, Args)]
pub struct JsonArg {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// A campaign's name.
#[derive(Debug, Args)]
pub struct NameArgs {
    /// The campaign.
    name: String,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// `campaign preview`.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// The campaign.
    name: String,
    /// The person's external id.
    #[arg(long)]
    profile: String,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Also send it, marked as a test, to this address (e-mail), or for a webhook
    /// campaign to this URL (`-` for the configured one); counts nowhere.
    #[arg(long, value_name = "ADDRESS")]
    send_to: Option<String>,
    /// Print as JSON: `{"profile", "message": {"campaign", "variant", "channel",
    /// "content", "offer"}, "blocked_by"}`; with --send-to `{"profile", "to", "channel",
    /// "message", "idempotency_key"}`.
    #[arg(long)]
    json: bool,
}

/// `campaign run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// The campaign.
    name: String,
    /// Count and render, queue nothing.
    #[arg(long)]
    dry_run: bool,
    /// Write one NDJSON line per message (queued, or that would be).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// The audience as of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// A trigger campaign: fire it for who entered its `on_enter` segment after T (and is
    /// in it at --as-of), with the keys `serve` gives its triggers: what the server would
    /// have fired meanwhile (after downtime, or to replay history).
    #[arg(long, value_name = "T")]
    entered_since: Option<String>,
    /// Print the counts as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run_command(ctx: &Context, cmd: CampaignCommand) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    match cmd {
        CampaignCommand::Create(args) => save(&mut store, args, false),
        CampaignCommand::Edit(args) => save(&mut store, args, true),
        CampaignCommand::List(args) => {
            let campaigns = store.campaigns()?;
            let rows: Vec<(serde_json::Value, Vec<String>)> = campaigns
                .iter()
                .map(|c| {
                    let parsed = Campaign::from_json(&c.body).ok();
                    let channel = parsed.as_ref().map_or("?", |p| p.channel.name());
                    let priority = parsed.as_ref().map_or(0, |p| p.priority);
                    let segment = parsed.as_ref().map_or(String::new(), |p| p.segment.clone());
                    (
                        serde_json::json!({"name": c.name, "version": c.version, "status": c.status,
                            "channel": channel, "priority": priority, "segment": segment}),
                        vec![
                            c.name.clone(),
                            channel.to_string(),
                            priority.to_string(),
                            c.status.clone(),
                            c.version.to_string(),
                            segment,
                        ],
                    )
                })
                .collect();
            if args.json {
                let list: Vec<_> = rows.into_iter().map(|(j, _)| j).collect();
                return print_json(&serde_json::json!({ "campaigns": list }));
            }
            if rows.is_empty() {
                println!("no campaigns yet (create one with `microseg campaign create --file F`)");
                return Ok(());
            }
            let table: Vec<Vec<String>> = rows.into_iter().map(|(_, r)| r).collect();
            print_table(
                &[
                    "name", "channel", "priority", "status", "version", "segment",
                ],
                &table,
            );
            Ok(())
        }
        CampaignCommand::Show(args) => {
            let c = store.campaign(&args.name)?;
            let body: serde_json::Value = serde_json::from_str(&c.body)?;
            if args.json {
                return print_json(&serde_json::json!({"name": c.name, "version": c.version,
                    "status": c.status, "campaign": body}));
            }
            println!("campaign {} (version {}, {})", c.name, c.version, c.status);
            println!("{}", serde_json::to_string_pretty(&body)?);
            Ok(())
        }
        CampaignCommand::Pause(args) => status(&mut store, args, "paused"),
        CampaignCommand::Resume(args) => status(&mut store, args, "active"),
        CampaignCommand::Archive(args) => status(&mut store, args, "archived"),
        CampaignCommand::Preview(args) => {
            let at = as_of(args.as_of.as_deref())?;
            if let Some(to) = &args.send_to {
                let to = (to != "-").then_some(to.as_str());
                let sent =
                    microseg_activate::test_send(&ws, &store, &args.name, &args.profile, to, at)?;
                if args.json {
                    return print_json(&sent);
                }
                println!(
                    "sent {}'s {} message of {} (variant {}) to {}, marked as a test; Message-ID / Idempotency-Key {}",
                    sent.profile,
                    sent.channel,
                    sent.message.campaign,
                    sent.message.variant,
                    sent.to,
                    sent.idempotency_key
                );
                return Ok(());
            }
            let preview = microseg_activate::preview(&ws, &store, &args.name, &args.profile, at)?;
            if args.json {
                return print_json(&preview);
            }
            let m = &preview.message;
            println!(
                "{} as {} would get it (variant {}, {}):",
                m.campaign, preview.profile, m.variant, m.channel
            );
            for (field, text) in &m.content {
                println!("  {field}: {text}");
            }
            if let Some(offer) = &m.offer {
                println!("  offer: {offer}");
            }
            match &preview.blocked_by {
                None => println!("the rules let it through now"),
                Some(why) => println!("not sent now: {why}"),
            }
            Ok(())
        }
        CampaignCommand::Report(args) => {
            let at = as_of(args.as_of.as_deref())?;
            let window = microseg_core::time::parse_duration(&args.window)
                .map_err(|e| crate::failure::usage(format!("--window: {e}")))?;
            let r = microseg_activate::report::results(&ws, &store, &args.name, window, at)?;
            if let Some(name) = &args.save_experiment {
                super::segment::check_name(name).context("--save-experiment")?;
                let mut experiment = r.experiment.clone();
                experiment.name = name.clone();
                let mut store = microseg_store::Store::open(&ws)?;
                store.save_experiment(&experiment, &format!("campaign {}", args.name))?;
                eprintln!(
                    "saved as experiment {name}: experiment discover {name} --arm treated --outcome conversion"
                );
            }
            let reported = super::experiment::analyse(&ws, &store, &r.experiment, &args.by, at)?;
            if args.json {
                let mut doc = super::experiment::document(&r.experiment, &reported);
                if let (Some(map), Ok(serde_json::Value::Object(money))) =
                    (doc.as_object_mut(), serde_json::to_value(&r.money))
                {
                    map.extend(money);
                }
                doc["acquisition"] = serde_json::json!(r.acquisition(None));
                if let Some(by) = doc["by"].as_array_mut() {
                    for (entry, group) in by.iter_mut().zip(&reported.groups) {
                        entry["acquisition"] = serde_json::json!(r.acquisition(Some(group)));
                    }
                }
                return print_json(&doc);
            }
            let m = &r.money;
            let money = |x: Option<f64>| x.map_or("-".to_string(), |v| format!("{v:.2}"));
            println!(
                "campaign {}: {} treated, {} in the holdout; orders within {} days (intervals 95%)",
                args.name,
                r.experiment.members.iter().filter(|x| x.arm == 0).count(),
                r.experiment.members.iter().filter(|x| x.arm == 1).count(),
                m.window_days
            );
            super::experiment::print_reported(&r.experiment, &reported);
            println!(
                "\nsent {}, cost {:.2}, incremental conversions {}, incremental revenue {}, ROI {}, cost per added conversion {}",
                m.sent,
                m.cost,
                money(m.incremental_conversions),
                money(m.incremental_revenue),
                m.roi.map_or("-".to_string(), |v| format!("{:.1}%", v * 100.0)),
                money(m.cost_per_incremental_conversion),
            );
            // What an added customer cost against what they are predicted to be worth.
            let row = |label: String, a: microseg_activate::report::Acquisition| {
                vec![
                    label,
                    money(a.cac),
                    money(a.ltv_12m),
                    a.ltv_to_cac.map_or("-".to_string(), |x| format!("{x:.2}")),
                ]
            };
            let mut rows = vec![row("all".into(), r.acquisition(None))];
            for (label, group) in reported.group_labels().into_iter().zip(&reported.groups) {
                rows.push(row(label, r.acquisition(Some(group))));
            }
            println!();
            print_table(
                &["people", "CAC", "LTV 12m (predicted)", "LTV / CAC"],
                &rows,
            );
            Ok(())
        }
        CampaignCommand::Run(args) => {
            let stored = store.campaign(&args.name)?;
            let at = as_of(args.as_of.as_deref())?;
            let outcome = match &args.entered_since {
                Some(since) => microseg_activate::run::fire_entries(
                    &ws,
                    &mut store,
                    &stored,
                    as_of(Some(since))?,
                    at,
                    args.dry_run,
                )?,
                None => run(&ws, &mut store, &stored, at, args.dry_run)?,
            };
            if let Some(path) = &args.out {
                let mut w = writer(Some(path))?;
                for m in &outcome.messages {
                    serde_json::to_writer(&mut w, m)?;
                    w.write_all(b"\n")?;
                }
                w.flush()?;
            }
            for (why, n) in &outcome.render_errors {
                eprintln!("not rendered for {n} people: {why}");
            }
            if args.json {
                let mut doc = serde_json::to_value(&outcome.counts)?;
                if let Some(choice) = &outcome.choice {
                    doc["choice"] = serde_json::to_value(choice)?;
                }
                return print_json(&doc);
            }
            if let Some(ch) = &outcome.choice {
                let rows: Vec<Vec<String>> = (0..ch.variants.len())
                    .map(|i| {
                        vec![
                            ch.variants[i].clone(),
                            thousands(ch.n[i]),
                            thousands(ch.conversions[i]),
                            format!("{:.3}", ch.p_best[i]),
                            format!("{:.3}", ch.shares[i]),
                        ]
                    })
                    .collect();
                println!(
                    "variants chosen by results (Thompson sampling){}:",
                    if ch.stopped { ", learning stopped" } else { "" }
                );
                print_table(
                    &["variant", "people", "conversions", "P(best)", "share"],
                    &rows,
                );
            }
            let c = &outcome.counts;
            let verb = if args.dry_run {
                "would queue"
            } else {
                "queued"
            };
            println!(
                "campaign {} as of {at}: {} targeted; {} {verb}",
                stored.name,
                thousands(c.targeted),
                thousands(c.queued)
            );
            let rows: Vec<Vec<String>> = [
                ("excluded", c.excluded),
                ("left to a higher priority", c.lower_priority),
                ("suppressed", c.suppressed),
                ("global control", c.global_control),
                ("holdout", c.holdout),
                ("no consent", c.no_consent),
                ("capped", c.capped),
                ("not rendered", c.render_failed),
                ("queued before", c.already_queued),
                ("no code left in the pool", c.no_code),
                ("exploration (in queued)", c.exploration),
                ("held for quiet hours (in queued)", c.quiet_hours_held),
            ]
            .into_iter()
            .map(|(k, v)| vec![k.to_string(), thousands(v)])
            .collect();
            print_table(&["left out / note", "profiles"], &rows);
            Ok(())
        }
    }
}

fn save(store: &mut microseg_store::Store, args: FileArgs, replace: bool) -> Result<()> {
    let text =
        std::fs::read_to_string(&args.file).with_context(|| args.file.display().to_string())?;
    let saved = store.segment_conditions()?;
    let checked = Campaign::from_json(&text)
        .and_then(|c| c.check(&saved))
        .map_err(|e| bad_input(format!("{}: {e}", args.file.display())))?;
    let name = checked.campaign.name.clone();
    // A pool of codes: read (relative to the campaign file) and checked before saving.
    let codes = match checked
        .campaign
        .offer
        .as_ref()
        .and_then(|o| o.pool.as_ref())
    {
        Some(pool) => {
            let path = args
                .file
                .parent()
                .unwrap_or(std::path::Path::new("."))
                .join(pool);
            let text = std::fs::read_to_string(&path)
                .map_err(|e| bad_input(format!("{}: offer.pool: {e}", path.display())))?;
            let codes = microseg_activate::campaign::read_pool(&text)
                .map_err(|e| bad_input(format!("{}: {e}", path.display())))?;
            Some(codes)
        }
        None => None,
    };
    let body = serde_json::to_string(&checked.campaign)?;
    let version = store.save_campaign(&name, &body, replace)?;
    if let Some(codes) = codes {
        let added = store.add_offer_codes(&name, &codes)?;
        if !args.json {
            println!(
                "{added} new codes in the pool of {name} ({} in the file)",
                codes.len()
            );
        }
    }
    if args.json {
        return print_json(&serde_json::json!({"name": name, "version": version}));
    }
    println!("saved campaign {name} (version {version})");
    Ok(())
}

fn status(store: &mut microseg_store::Store, args: NameArgs, to: &str) -> Result<()> {
    store.set_campaign_status(&args.name, to)?;
    if args.json {
        return print_json(&serde_json::json!({"name": args.name, "status": to}));
    }
    println!("campaign {} is {to}", args.name);
    Ok(())
}

/// What a person gets now on a channel or a website placement, and why every other
/// campaign lost (docs/campaigns.md).
#[derive(Debug, Args)]
pub struct DecideArgs {
    /// The person's external id.
    profile: String,
    /// A channel: email, sms, push, web or webhook.
    #[arg(
        long,
        conflicts_with = "placement",
        required_unless_present = "placement"
    )]
    channel: Option<String>,
    /// A website placement (web campaigns whose message names it).
    #[arg(long)]
    placement: Option<String>,
    /// Decide as of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn decide(ctx: &Context, args: DecideArgs) -> Result<()> {
    let (ws, store) = ctx.open()?;
    let slot = match (&args.channel, &args.placement) {
        (Some(c), _) => Slot::Channel(Channel::from_name(c).ok_or_else(|| {
            crate::failure::usage(format!(
                "--channel {c}: use email, sms, push, web or webhook"
            ))
        })?),
        (None, Some(p)) => Slot::Placement(p.clone()),
        (None, None) => unreachable!("clap requires one"),
    };
    let at = as_of(args.as_of.as_deref())?;
    let decision = microseg_activate::decide(&ws, &store, &args.profile, &slot, at)?;
    if args.json {
        return print_json(&decision);
    }
    match &decision.winner {
        Some(w) => {
            println!(
                "{} gets {} (variant {}) on {}:",
                decision.profile, w.campaign, w.variant, w.channel
            );
            for (field, text) in &w.content {
                println!("  {field}: {text}");
            }
        }
        None => match &decision.fallback {
            Some(content) => println!(
                "{} gets the placement's fallback content: {content}",
                decision.profile
            ),
            None => println!("{} gets nothing now", decision.profile),
        },
    }
    let rows: Vec<Vec<String>> = decision
        .candidates
        .iter()
        .map(|c| {
            vec![
                c.campaign.clone(),
                c.outcome.to_string(),
                c.reason.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        print_table(&["campaign", "outcome", "reason"], &rows);
    }
    Ok(())
}

/// The suppression list: addresses never contacted on a channel (kept as SHA-256 only).
#[derive(Debug, Subcommand)]
pub enum SuppressCommand {
    /// Add an address (e-mail, phone, or for push/web/webhook the external id).
    Add(SuppressArgs),
    /// Remove an address.
    Remove(SuppressArgs),
    /// How many addresses each channel's list holds.
    List(JsonArg),
}

/// A channel and an address.
#[derive(Debug, Args)]
pub struct SuppressArgs {
    /// email, sms, push, web or webhook.
    channel: String,
    /// The address as the person's trait holds it (normalised before hashing).
    address: String,
    /// Why (kept with the entry).
    #[arg(long)]
    reason: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

pub fn suppress(ctx: &Context, cmd: SuppressCommand) -> Result<()> {
    let (_, mut store) = ctx.open()?;
    let channel = |name: &str| {
        Channel::from_name(name).ok_or_else(|| {
            crate::failure::usage(format!(
                "channel {name}: use email, sms, push, web or webhook"
            ))
        })
    };
    match cmd {
        SuppressCommand::Add(args) | SuppressCommand::Remove(args)
            if args.address.trim().is_empty() =>
        {
            Err(bad_input("an empty address"))
        }
        SuppressCommand::Add(args) => {
            let c = channel(&args.channel)?;
            let hash = microseg_activate::suppress::hash(c, &args.address);
            let added = store.suppress(c.name(), &hash, args.reason.as_deref())?;
            if args.json {
                return print_json(&serde_json::json!({"channel": c.name(), "added": added}));
            }
            println!(
                "{}",
                if added {
                    "suppressed"
                } else {
                    "already suppressed"
                }
            );
            Ok(())
        }
        SuppressCommand::Remove(args) => {
            let c = channel(&args.channel)?;
            let hash = microseg_activate::suppress::hash(c, &args.address);
            let removed = store.unsuppress(c.name(), &hash)?;
            if args.json {
                return print_json(&serde_json::json!({"channel": c.name(), "removed": removed}));
            }
            println!(
                "{}",
                if removed {
                    "removed"
                } else {
                    "was not suppressed"
                }
            );
            Ok(())
        }
        SuppressCommand::List(args) => {
            let counts = store.suppression_counts()?;
            if args.json {
                let map: serde_json::Map<String, serde_json::Value> =
                    counts.into_iter().map(|(c, n)| (c, n.into())).collect();
                return print_json(&serde_json::json!({ "suppressed": map }));
            }
            let rows: Vec<Vec<String>> = counts
                .into_iter()
                .map(|(c, n)| vec![c, thousands(n)])
                .collect();
            print_table(&["channel", "addresses"], &rows);
            Ok(())
        }
    }
}

/// Hand every due message in the outbox to its channel once, then exit (for cron;
/// `serve` delivers continuously). docs/campaigns.md.
#[derive(Debug, Args)]
pub struct DeliverArgs {
    /// Messages handed over at once.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// Attempts before a message goes to the dead letters.
    #[arg(long, default_value_t = 8)]
    max_attempts: i64,
    /// The first retry's delay in seconds (doubling after each failure, at most 6 h).
    #[arg(long, default_value_t = 30.0)]
    retry_seconds: f64,
    /// Print `{"sent", "failed", "pending", "dead", "cancelled"}`.
    #[arg(long)]
    json: bool,
}

pub fn deliver(ctx: &Context, args: DeliverArgs) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    let _lock = ws.lock_delivery("microseg deliver")?;
    // The message_sent events are written to the store: the writer's lock too.
    let _writer = ws.lock_writer("microseg deliver")?;
    let options = microseg_activate::deliver::DeliverOptions {
        concurrency: args.concurrency.max(1),
        max_attempts: args.max_attempts.max(1),
        retry_ms: (args.retry_seconds.max(0.0) * 1000.0) as i64,
        ..Default::default()
    };
    let delivered = microseg_activate::deliver::deliver(&ws, &mut store, options)?;
    if !delivered.events.is_empty() {
        let mut ingestor = microseg_store::ingest::Ingestor::open(store)?;
        ingestor.write(vec![delivered.events], microseg_server::now())?;
    }
    let c = delivered.counts;
    if args.json {
        return print_json(&c);
    }
    println!(
        "{} sent, {} failed (to retry), {} dead, {} cancelled; {} pending",
        c.sent, c.failed, c.dead, c.cancelled, c.pending
    );
    Ok(())
}
