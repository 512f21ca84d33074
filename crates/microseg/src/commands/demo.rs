//! `microseg demo`: a synthetic bicycle shop, imported and summarised end to end.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result};
use clap::Args;
use microseg_core::condition::parse;
use microseg_core::time::TimeFormat;
use microseg_core::{Timestamp, Value};
use microseg_store::{
    EventImport, EventName, FileOptions, ImportSummary, ProfileImport, Store, Tables, Workspace,
};
use microseg_synth::{email_test, generate, ShopConfig, DEMO_END};

use super::import::print_summary;
use super::{print_json, Context};
use crate::failure::usage;
use crate::output::{money, percent, print_table, thousands};
use crate::progress::Bar;

/// Generate a realistic bicycle shop, import it, compute metrics, and summarise it.
///
/// Customers have age, gender, country and city, income band, cycling discipline
/// (mountain/road/city), skill (beginner/amateur/pro), interests, consent flags, e-mail and
/// phone; over two years they visit, view pages (including the winter-accessories pages),
/// add to cart and order, in ways that depend on who they are. The same seed always gives
/// the same shop. Data ends at 2026-11-01, the demo's as-of date.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// The workspace to create (default: --data).
    dir: Option<PathBuf>,
    /// Number of customers.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    customers: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Replace the workspace's store even if it holds data the demo did not write.
    #[arg(long)]
    force: bool,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

const DEMO_CONFIG: &str = r#"# microseg workspace config (written by `microseg demo`).

[metrics]
order_events = ["order_completed"]
session_event = "session_started"
session_gap_minutes = 30

[traits.interests]
type = "string_set"
separators = ";"

[traits.phone]
type = "string"

[activation]
global_control = 0.05
exploration = 0.05
caps = { email = "2/7d", all = "4/7d" }
quiet_hours = "21:00-08:00"

[activation.exploration_message.email]
subject = "What's new this season, {{ first_name }}"
text = "New bikes, new trails and the gear for them: see what is in the shop."

# The demo's e-mails go to a file instead of an SMTP relay.
[channels.email]
file = "demo/sent-email.ndjson"
unsubscribe_url = "https://shop.example/v1/unsubscribe"
"#;

/// The winter-accessories scenario's campaigns (issue 20): a one-shot mailing to the
/// female amateur mountain bikers, and the trigger campaign for who looked at winter
/// accessories and did not order.
const DEMO_CAMPAIGNS: [(&str, &str); 2] = [
    (
        "mtb_mailing.json",
        r#"{
  "name": "mtb_mailing",
  "segment": "female_amateur_mtb",
  "channel": "email",
  "priority": 5,
  "holdout": 0.10,
  "variants": [
    {"name": "trails", "weight": 1.0, "message": {
      "subject": "{{ first_name }}, new trails near {{ city }}",
      "text": "Hi {{ first_name }}, the autumn trail guide for {{ city }} is out, with the mountain bikes and kit for it."}},
    {"name": "kit", "weight": 1.0, "message": {
      "subject": "{{ first_name }}, your kit for the mountain",
      "text": "Hi {{ first_name }}, {{ orders }} orders with us so far: here is what riders like you pick next."}}
  ],
  "cost_per_message": 0.002
}"#,
    ),
    (
        "winter_gloves.json",
        r#"{
  "name": "winter_gloves",
  "segment": "winter_no_order",
  "exclude": ["buys_anyway"],
  "channel": "email",
  "priority": 10,
  "holdout": 0.10,
  "offer": {"kind": "discount", "value": 0.15, "valid_for": "48h", "code": "unique"},
  "variants": [{"name": "a", "weight": 1.0, "message": {
    "subject": "{{ first_name }}, 15% off winter gloves",
    "text": "Code {{ offer.code }}, valid until {{ offer.valid_until }}."}}],
  "trigger": {"on_enter": "winter_no_order"},
  "cost_per_message": 0.002
}"#,
    ),
];

pub fn run(ctx: &Context, args: DemoArgs) -> Result<()> {
    if args.customers == 0 {
        return Err(usage("--customers must be at least 1"));
    }
    let dir = args.dir.clone().unwrap_or_else(|| ctx.data.clone());
    prepare(&dir, args.force)?;
    let (ws, _) = Workspace::init(&dir)?;
    let mut store = Store::open(&ws)?;
    let files = dir.join("demo");
    std::fs::create_dir_all(&files).with_context(|| files.display().to_string())?;
    let config = ShopConfig {
        customers: args.customers,
        seed: args.seed,
        end: DEMO_END,
    };
    let (profiles_csv, events_csv) = write_shop(&config, &files)?;
    let profiles = store.import_profiles(
        &ws,
        &ProfileImport {
            file: FileOptions::new(&profiles_csv),
            id_column: "id".into(),
            types: BTreeMap::new(),
            skip_columns: Vec::new(),
        },
        &Bar::new("profiles"),
    )?;
    let events = store.import_events(
        &ws,
        &EventImport {
            file: FileOptions::new(&events_csv),
            profile_column: "user_id".into(),
            time_column: "time".into(),
            time_format: TimeFormat::Auto,
            name: EventName::Column("event".into()),
            revenue_column: Some("revenue".into()),
        },
        &Bar::new("events"),
    )?;
    let mut tables = Tables::open(&ws, &store, DEMO_END)?;
    tables.need_all_traits()?;
    tables.metrics()?;
    let segments = demo_segments(&mut tables)?;
    let data = tables.dataset();
    let summary = Summary::new(
        data.metrics.expect("computed"),
        data.profiles,
        profiles,
        events,
    );
    drop(tables);
    for (name, description, condition, _) in &segments.saved {
        let condition = parse(condition).expect("printed conditions parse");
        store.save_segment(name, &condition, Some(description), true)?;
    }
    if args.json {
        let mut doc = summary.to_json();
        doc["segments"] = segments.to_json();
        print_json(&doc)
    } else {
        summary.print();
        segments.print();
        models(&dir, &files.join("email_test.csv"))?;
        campaigns(&dir, &files)?;
        winter(&dir, &files, args.seed)?;
        report(&dir, &files)?;
        print_next(&dir);
        Ok(())
    }
}

/// The segments the demo saves, as (name, description, condition).
const DEMO_SEGMENTS: [(&str, &str, &str); 2] = [
    (
        "female_amateur_mtb",
        "female amateur mountain bikers: the campaign's audience",
        r#"gender = "f" and discipline = "mountain" and skill = "amateur""#,
    ),
    (
        "winter_no_order",
        "viewed winter accessories in the last 2 weeks, then no order within 3 days",
        r#"page_viewed where category = "winter_accessories" then not order_completed within 3d, within 14d"#,
    ),
];

/// The drill-down and the demo's saved segments.
struct DemoSegments {
    tree: microseg_engine::analytics::TreeNode,
    saved: Vec<(String, String, String, u64)>,
    total: u64,
}

/// The demo's segments with their sizes (saved by the caller), and the drill-down.
fn demo_segments(tables: &mut Tables<'_>) -> Result<DemoSegments> {
    let conditions: Vec<_> = DEMO_SEGMENTS
        .iter()
        .map(|(_, _, c)| parse(c).expect("the demo's conditions parse"))
        .collect();
    tables.need(&conditions.iter().collect::<Vec<_>>(), &[])?;
    let data = tables.dataset();
    let mut saved = Vec::new();
    for ((name, description, _), condition) in DEMO_SEGMENTS.iter().zip(&conditions) {
        let size = data.evaluate(condition)?.len();
        saved.push((
            name.to_string(),
            description.to_string(),
            condition.to_string(),
            size,
        ));
    }
    let dims = ["discipline", "skill", "gender"].map(String::from);
    let tree = microseg_engine::analytics::drill_down(&data, tables.everyone(), &dims)?;
    Ok(DemoSegments {
        tree,
        saved,
        total: tables.len() as u64,
    })
}

impl DemoSegments {
    fn print(&self) {
        println!("\nDrill-down: discipline, then skill, then gender (customers)");
        for d in &self.tree.children {
            let line: Vec<String> = d
                .children
                .iter()
                .map(|s| {
                    let genders: Vec<String> = s
                        .children
                        .iter()
                        .map(|g| format!("{} {}", value_text(g), thousands(g.members.len())))
                        .collect();
                    format!(
                        "{} {} ({})",
                        value_text(s),
                        thousands(s.members.len()),
                        genders.join(", ")
                    )
                })
                .collect();
            println!(
                "  {:<9} {:>7}: {}",
                value_text(d),
                thousands(d.members.len()),
                line.join("; ")
            );
        }
        println!("\nSaved segments (microseg segment list)");
        for (name, description, condition, size) in &self.saved {
            println!(
                "  {name}: {} customers ({}), {description}\n    {condition}",
                thousands(*size),
                percent(*size, self.total)
            );
        }
    }

    fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Array(
            self.saved
                .iter()
                .map(|(name, description, condition, size)| {
                    serde_json::json!({
                        "name": name, "description": description,
                        "condition": condition, "size": size,
                    })
                })
                .collect(),
        )
    }
}

/// The models on the demo shop, by running the commands a user would type (each prints
/// its own output under a heading with the command line).
fn models(dir: &Path, email_test: &Path) -> Result<()> {
    let data = dir.display().to_string();
    let test = email_test.display().to_string();
    let steps: [(&str, Vec<&str>); 7] = [
        (
            "Lifetime value: BG/NBD + Gamma-Gamma on the orders",
            vec!["clv", "fit", "--unit", "week", "--as-of", "2026-11-01"],
        ),
        (
            "Personas: k-means on behaviour",
            vec![
                "cluster",
                "--k",
                "4",
                "--features",
                "visits,orders,revenue,tenure_days",
                "--log",
                "visits,orders,revenue",
                "--as-of",
                "2026-11-01",
                "--save-as",
                "persona",
            ],
        ),
        (
            "Micro-segments that bought in the last 90 days more than the base",
            vec![
                "discover",
                "--target",
                "count(order_completed, within 90d) >= 1",
                "--dims",
                "discipline,skill,gender,income_band,city,age,persona",
                "--min-support",
                "200",
                "--top",
                "8",
                "--as-of",
                "2026-11-01",
            ],
        ),
        (
            "A past e-mail test (discount vs new-season e-mail vs none)",
            vec![
                "experiment",
                "import",
                &test,
                "--id",
                "id",
                "--arm",
                "arm",
                "--control",
                "no_email",
                "--outcomes",
                "visit,conversion,spend",
                "--name",
                "email_test",
            ],
        ),
        (
            "Its lift report, and by skill",
            vec![
                "experiment",
                "report",
                "email_test",
                "--by",
                "skill",
                "--as-of",
                "2026-11-01",
            ],
        ),
        (
            "Where the discount works, does nothing (they buy anyway), or backfires",
            vec![
                "experiment",
                "discover",
                "email_test",
                "--arm",
                "discount_email",
                "--outcome",
                "conversion",
                "--dims",
                "skill,discipline,persona,income_band",
                "--max-depth",
                "2",
                "--min-support",
                "300",
                "--top",
                "4",
                "--save-exclusion",
                "buys_anyway",
                "--as-of",
                "2026-11-01",
            ],
        ),
        (
            "Who to send the discount to: everyone in non-overlapping groups",
            vec![
                "experiment",
                "discover",
                "email_test",
                "--arm",
                "discount_email",
                "--outcome",
                "conversion",
                "--dims",
                "skill,discipline,persona,income_band",
                "--min-support",
                "300",
                "--partition",
                "--as-of",
                "2026-11-01",
            ],
        ),
    ];
    // A tiny shop cannot support every model: a step says why and the others go on.
    run_steps(&data, steps)
}

/// The winter-accessories scenario, first half: the two campaigns saved, their dry runs'
/// counts, and two people's decisions with the reasons.
fn campaigns(dir: &Path, files: &Path) -> Result<()> {
    let data = dir.display().to_string();
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for (file, body) in DEMO_CAMPAIGNS {
        let path = files.join(file);
        std::fs::write(&path, body).with_context(|| path.display().to_string())?;
        steps.push((
            format!("Campaign from {file}"),
            vec![
                "campaign".into(),
                "create".into(),
                "--file".into(),
                path.display().to_string(),
            ],
        ));
    }
    for name in ["mtb_mailing", "winter_gloves"] {
        steps.push((
            format!("Who {name} would reach (a dry run: nothing is queued)"),
            [
                "campaign",
                "run",
                name,
                "--dry-run",
                "--as-of",
                "2026-11-01T10:00:00Z",
            ]
            .map(String::from)
            .to_vec(),
        ));
    }
    run_steps(&data, steps)?;
    // Two people: the first the mailing would reach, and the first customer.
    let ws = Workspace::open(dir)?;
    let mut store = Store::open(&ws)?;
    let as_of = microseg_core::time::parse_timestamp("2026-11-01T10:00:00Z").expect("a time");
    let first_member = match store.campaign("mtb_mailing") {
        Ok(stored) => microseg_activate::run(&ws, &mut store, &stored, as_of, true)
            .ok()
            .and_then(|outcome| outcome.messages.first().map(|m| m.profile.clone())),
        Err(_) => None,
    };
    let mut steps: Vec<(String, Vec<String>)> = Vec::new();
    for id in first_member.into_iter().chain(["c0000001".to_string()]) {
        steps.push((
            format!("What {id} gets by e-mail now, and why not the others"),
            [
                "decide",
                &id,
                "--channel",
                "email",
                "--as-of",
                "2026-11-01T10:00:00Z",
            ]
            .map(String::from)
            .to_vec(),
        ));
    }
    run_steps(&data, steps)?;
    Ok(())
}

/// When the winter trigger's messages go out in the demo: the shop's last morning.
const WINTER_SEND: &str = "2026-11-01T10:00:00Z";
/// The trigger fires in the demo for who entered its segment in the week before.
const WINTER_WEEK_BEFORE: &str = "2026-10-25T10:00:00Z";

/// The winter-accessories scenario, second half: the trigger campaign fired for who
/// entered its segment in the week before the send (what `serve` would have fired, one by
/// one, as each person's 3 days without an order ran out) and delivered to the e-mail file
/// sink, a week of simulated orders from the people
/// it treated and held out (`microseg_synth::winter_order`), and the campaign's report.
fn winter(dir: &Path, files: &Path, seed: u64) -> Result<()> {
    let data = dir.display().to_string();
    run_steps(
        &data,
        [
            (
                "The winter trigger fires for who entered its segment in the week up to the send (what serve would have fired)".to_string(),
                vec![
                    "campaign", "run", "winter_gloves", "--entered-since", WINTER_WEEK_BEFORE,
                    "--as-of", WINTER_SEND,
                ],
            ),
            (
                "Delivered (to the e-mail file sink demo/sent-email.ndjson)".to_string(),
                vec!["deliver"],
            ),
        ],
    )?;
    // A week of orders, treated and held out alike, drawn by segment.
    let ws = Workspace::open(dir)?;
    let store = Store::open(&ws)?;
    let members = store.campaign_members("winter_gloves")?;
    let mut tables = Tables::open(
        &ws,
        &store,
        microseg_core::time::parse_timestamp(WINTER_SEND)?,
    )?;
    tables.need(&[], &["skill", "orders"])?;
    let data_set = tables.dataset();
    let skills = data_set.profiles.columns.get("skill");
    let orders_path = files.join("winter_orders.csv");
    let mut w =
        csv::Writer::from_path(&orders_path).with_context(|| orders_path.display().to_string())?;
    w.write_record(["id", "event", "time", "revenue"])?;
    for (p, arm, at) in &members {
        let skill = match skills.and_then(|c| c.get(*p)) {
            Some(microseg_core::Value::Str(s)) => s.to_string(),
            _ => String::new(),
        };
        let orders = data_set
            .metrics
            .and_then(|m| m.value("orders", *p))
            .and_then(|v| v.as_f64())
            .unwrap_or(0.0) as u32;
        let id = tables.external_id(*p);
        if let Some((t, revenue)) =
            microseg_synth::winter_order(seed, id, &skill, orders, arm == "treated", *at)
        {
            w.write_record([
                id,
                "order_completed",
                &microseg_core::Timestamp(t).to_string(),
                &revenue.to_string(),
            ])?;
        }
    }
    w.flush()?;
    drop(tables);
    let orders_file = orders_path.display().to_string();
    run_steps(
        &data,
        [
            (
                "A week of orders from the people the campaign treated and held out (simulated)"
                    .to_string(),
                vec![
                    "import",
                    "events",
                    orders_file.as_str(),
                    "--profile",
                    "id",
                    "--time",
                    "time",
                    "--name",
                    "event",
                    "--revenue",
                    "revenue",
                ],
            ),
            (
                "What the winter campaign earned: lift over its holdout, ROI, and by skill"
                    .to_string(),
                vec![
                    "campaign",
                    "report",
                    "winter_gloves",
                    "--by",
                    "skill",
                    "--as-of",
                    "2026-11-09T10:00:00Z",
                ],
            ),
        ],
    )
}

/// The shareable HTML report of the shop after the winter campaign, in `files`.
fn report(dir: &Path, files: &Path) -> Result<()> {
    let out = files.join("report.html");
    let out_text = out.display().to_string();
    run_steps(
        &dir.display().to_string(),
        [(
            format!("The shareable report (open {out_text} in a browser; it needs no network)"),
            vec![
                "report",
                "--out",
                out_text.as_str(),
                "--as-of",
                "2026-11-09T10:00:00Z",
                "--discover",
                "orders >= 2",
                "--dims",
                "discipline,skill,gender,income_band,age",
                "--title",
                "microseg demo: the bicycle shop",
            ],
        )],
    )?;
    println!("\nReport: {out_text}");
    Ok(())
}

/// Runs each command as a user would type it, under a heading with its command line; a
/// step the shop cannot support says why and the others go on.
fn run_steps<T: std::fmt::Display, A: AsRef<str>>(
    data: &str,
    steps: impl IntoIterator<Item = (T, Vec<A>)>,
) -> Result<()> {
    for (title, args) in steps {
        let args: Vec<&str> = args.iter().map(AsRef::as_ref).collect();
        println!("\n== {title}\n$ microseg {}", args.join(" "));
        let mut argv = vec!["microseg", "--data", data];
        argv.extend(args);
        let cli = <super::Cli as clap::Parser>::try_parse_from(argv)?;
        if let Err(e) = super::run(cli) {
            println!("(skipped: {e:#})");
        }
    }
    Ok(())
}

/// What to try after the demo.
fn print_next(dir: &Path) {
    let data = dir.display();
    println!("\nNext: microseg --data {data} segment tree --by discipline,skill,gender --as-of 2026-11-01");
    println!("      microseg --data {data} segment members winter_no_order --as-of 2026-11-01");
    println!("      microseg --data {data} profile show c0000001 --as-of 2026-11-01");
}

fn value_text(n: &microseg_engine::analytics::TreeNode) -> String {
    n.value
        .as_ref()
        .map_or_else(|| "(missing)".to_string(), |v| v.to_string())
}

/// Refuses to overwrite a workspace with data unless forced.
fn prepare(dir: &Path, force: bool) -> Result<()> {
    if let Ok(ws) = Workspace::open(dir) {
        let (profiles, events) = Store::open(&ws)?.counts()?;
        if profiles + events > 0 {
            // A workspace the demo made itself is replaced; anything else needs --force.
            if !force && !dir.join("demo").is_dir() {
                return Err(usage(format!(
                    "{} already holds {profiles} profiles and {events} events; \
                     use another directory or --force to replace it",
                    dir.display()
                )));
            }
            for name in ["store.sqlite", "store.sqlite-wal", "store.sqlite-shm"] {
                let path = dir.join(name);
                if path.exists() {
                    std::fs::remove_file(&path).with_context(|| path.display().to_string())?;
                }
            }
        }
        std::fs::write(dir.join("microseg.toml"), DEMO_CONFIG)?;
    } else {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
        std::fs::write(dir.join("microseg.toml"), DEMO_CONFIG)
            .with_context(|| dir.display().to_string())?;
    }
    Ok(())
}

/// Write the demo shop's files without importing them.
///
/// Writes DIR/profiles.csv and DIR/events.csv exactly as `microseg demo` generates them,
/// for benchmarks and for trying imports by hand.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write the files.
    dir: PathBuf,
    /// Number of customers.
    #[arg(long, default_value_t = 50_000, value_name = "N")]
    customers: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

pub fn run_generate(args: GenerateArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| args.dir.display().to_string())?;
    let config = ShopConfig {
        customers: args.customers,
        seed: args.seed,
        end: DEMO_END,
    };
    let (profiles, events) = write_shop(&config, &args.dir)?;
    println!(
        "wrote {}, {} and {} (a past e-mail test)",
        profiles.display(),
        events.display(),
        args.dir.join("email_test.csv").display()
    );
    Ok(())
}

/// Writes `profiles.csv` and `events.csv`.
fn write_shop(config: &ShopConfig, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let profiles_path = dir.join("profiles.csv");
    let events_path = dir.join("events.csv");
    let test_path = dir.join("email_test.csv");
    let mut test =
        csv::Writer::from_path(&test_path).with_context(|| test_path.display().to_string())?;
    test.write_record(["id", "arm", "visit", "conversion", "spend"])?;
    let mut profiles = csv::Writer::from_path(&profiles_path)
        .with_context(|| profiles_path.display().to_string())?;
    let mut events =
        csv::Writer::from_path(&events_path).with_context(|| events_path.display().to_string())?;
    profiles.write_record([
        "id",
        "email",
        "phone",
        "first_name",
        "age",
        "gender",
        "country",
        "city",
        "income_band",
        "discipline",
        "skill",
        "interests",
        "consent_email",
        "consent_sms",
        "consent_push",
        "signup_at",
    ])?;
    events.write_record([
        "user_id", "time", "event", "revenue", "path", "category", "price", "items",
    ])?;
    let bar = Bar::new("generate");
    microseg_store::Progress::start(&bar, config.customers as u64);
    let mut failure: Option<csv::Error> = None;
    let mut done = 0u64;
    generate(config, |c, evs| {
        if failure.is_some() {
            return;
        }
        let result = (|| -> Result<(), csv::Error> {
            profiles.write_record([
                c.id.as_str(),
                &c.email,
                &c.phone,
                c.first_name,
                &c.age.to_string(),
                c.gender,
                c.country,
                c.city,
                c.income_band,
                c.discipline,
                c.skill,
                &c.interests.join(";"),
                bool_text(c.consent_email),
                bool_text(c.consent_sms),
                bool_text(c.consent_push),
                &c.signup_at.to_string(),
            ])?;
            let orders = evs.iter().filter(|e| e.name == "order_completed").count() as u32;
            let row = email_test(config.seed, c, orders);
            test.write_record([
                row.id.as_str(),
                row.arm,
                if row.visit { "1" } else { "0" },
                if row.conversion { "1" } else { "0" },
                &format!("{:.2}", row.spend),
            ])?;
            for e in evs {
                events.write_record([
                    c.id.as_str(),
                    &e.time.to_string(),
                    e.name,
                    &e.revenue.map(|r| format!("{r:.2}")).unwrap_or_default(),
                    e.path.unwrap_or_default(),
                    e.category.unwrap_or_default(),
                    &e.price.map(|p| format!("{p:.2}")).unwrap_or_default(),
                    &e.items.map(|i| i.to_string()).unwrap_or_default(),
                ])?;
            }
            Ok(())
        })();
        if let Err(e) = result {
            failure = Some(e);
        }
        done += 1;
        if done % 1024 == 0 {
            microseg_store::Progress::update(&bar, done);
        }
    });
    microseg_store::Progress::finish(&bar);
    if let Some(e) = failure {
        return Err(e).context(format!("writing {}", dir.display()));
    }
    profiles.flush()?;
    events.flush()?;
    test.flush()?;
    Ok((profiles_path, events_path))
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

/// What a marketer wants to see first.
struct Summary {
    as_of: Timestamp,
    customers: u64,
    events: u64,
    buyers: u64,
    orders: u64,
    revenue: f64,
    visits: u64,
    rf_grid: [[u64; 5]; 5],
    rfm_cells: Vec<(String, u64, f64)>,
    cities: Vec<(String, u64, u64, f64)>,
    disciplines: Vec<(String, u64, u64, f64)>,
    imports: [ImportSummary; 2],
}

impl Summary {
    fn new(
        m: &microseg_engine::Metrics,
        table: &microseg_engine::ProfileTable,
        profiles: ImportSummary,
        events: ImportSummary,
    ) -> Summary {
        let n = table.len();
        let mut rf_grid = [[0u64; 5]; 5];
        let mut cells: BTreeMap<String, (u64, f64)> = BTreeMap::new();
        for p in 0..n {
            if let Some([r, f, mm]) = m.rfm[p] {
                rf_grid[r as usize - 1][f as usize - 1] += 1;
                let cell = cells.entry(format!("{r}{f}{mm}")).or_default();
                cell.0 += 1;
                cell.1 += m.revenue[p];
            }
        }
        let mut rfm_cells: Vec<(String, u64, f64)> =
            cells.into_iter().map(|(k, (n, r))| (k, n, r)).collect();
        rfm_cells.sort_by(|a, b| b.2.total_cmp(&a.2));
        rfm_cells.truncate(5);
        let group_by = |trait_name: &str| {
            let mut groups: BTreeMap<String, (u64, u64, f64)> = BTreeMap::new();
            if let Some(column) = table.columns.get(trait_name) {
                for p in 0..n {
                    let key = match column.get(p as u32) {
                        Some(Value::Str(s)) => s,
                        _ => "(unknown)".to_string(),
                    };
                    let g = groups.entry(key).or_default();
                    g.0 += 1;
                    g.1 += (m.orders[p] > 0) as u64;
                    g.2 += m.revenue[p];
                }
            }
            let mut rows: Vec<(String, u64, u64, f64)> = groups
                .into_iter()
                .map(|(k, (a, b, c))| (k, a, b, c))
                .collect();
            rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
            rows
        };
        let mut cities = group_by("city");
        cities.truncate(8);
        Summary {
            as_of: m.as_of.unwrap_or(DEMO_END),
            customers: n as u64,
            events: events.imported,
            buyers: m.orders.iter().filter(|&&o| o > 0).count() as u64,
            orders: m.orders.iter().map(|&o| o as u64).sum(),
            revenue: m.revenue.iter().sum(),
            visits: m.visits.iter().map(|&v| v as u64).sum(),
            rf_grid,
            rfm_cells,
            cities,
            disciplines: group_by("discipline"),
            imports: [profiles, events],
        }
    }

    fn print(&self) {
        for s in &self.imports {
            print_summary(s);
        }
        println!();
        println!("Bicycle shop as of {}", self.as_of);
        println!(
            "  {} customers, {} buyers ({}), {} orders, revenue {}, average order value {}",
            thousands(self.customers),
            thousands(self.buyers),
            percent(self.buyers, self.customers),
            thousands(self.orders),
            money(self.revenue),
            money(self.revenue / self.orders.max(1) as f64),
        );
        println!(
            "  {} events, {} visits ({:.1} per customer)",
            thousands(self.events),
            thousands(self.visits),
            self.visits as f64 / self.customers.max(1) as f64
        );
        println!("\nBuyers by recency (R, 5 = ordered most recently) and frequency (F) score");
        let header = ["R \\ F", "1", "2", "3", "4", "5"];
        let rows: Vec<Vec<String>> = (0..5)
            .rev()
            .map(|r| {
                let mut row = vec![format!("R{}", r + 1)];
                row.extend(self.rf_grid[r].iter().map(|&c| thousands(c)));
                row
            })
            .collect();
        print_table(&header, &rows);
        println!("\nTop RFM cells by revenue");
        let rows: Vec<Vec<String>> = self
            .rfm_cells
            .iter()
            .map(|(cell, n, revenue)| vec![cell.clone(), thousands(*n), money(*revenue)])
            .collect();
        print_table(&["rfm", "buyers", "revenue"], &rows);
        let group_rows = |groups: &[(String, u64, u64, f64)]| -> Vec<Vec<String>> {
            groups
                .iter()
                .map(|(k, customers, buyers, revenue)| {
                    vec![
                        k.clone(),
                        thousands(*customers),
                        percent(*buyers, *customers),
                        money(*revenue),
                        money(revenue / (*customers).max(1) as f64),
                    ]
                })
                .collect()
        };
        let header = ["", "customers", "buying", "revenue", "per customer"];
        println!("\nTop cities");
        print_table(&header, &group_rows(&self.cities));
        println!("\nBy discipline");
        print_table(&header, &group_rows(&self.disciplines));
    }

    fn to_json(&self) -> serde_json::Value {
        let groups = |g: &[(String, u64, u64, f64)]| -> Vec<serde_json::Value> {
            g.iter()
                .map(|(k, customers, buyers, revenue)| {
                    serde_json::json!({
                        "value": k, "customers": customers, "buyers": buyers, "revenue": revenue,
                    })
                })
                .collect()
        };
        serde_json::json!({
            "as_of": self.as_of.to_string(),
            "customers": self.customers,
            "events": self.events,
            "buyers": self.buyers,
            "orders": self.orders,
            "revenue": self.revenue,
            "visits": self.visits,
            "rf_grid": self.rf_grid,
            "top_rfm_cells": self.rfm_cells.iter()
                .map(|(c, n, r)| serde_json::json!({"rfm": c, "buyers": n, "revenue": r}))
                .collect::<Vec<_>>(),
            "cities": groups(&self.cities),
            "disciplines": groups(&self.disciplines),
            "imports": self.imports,
        })
    }
}
