//! `microseg bench segments`: the segment benchmarks of docs/benchmarks.md on generated
//! data held in memory, with the data exported for a peer (bench/segments.py runs DuckDB
//! on the same columns and compares).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_core::condition::{parse, Condition};
use microseg_core::{Schema, Timestamp, TraitSpec, TraitType};
use microseg_engine::analytics::overlaps;
use microseg_engine::columnar::{Column, Dictionary, PropertyValue, NO_CODE};
use microseg_engine::{Dataset, EventTable, EventTableBuilder, ProfileTable};
use microseg_synth::Rng;
use roaring::RoaringBitmap;
use serde_json::json;

use super::print_json;

/// Benchmarks on generated data (see docs/benchmarks.md).
#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    Segments(SegmentsArgs),
    Ingest(super::load::IngestArgs),
    /// Ask a running server for decisions (`GET /v1/decide`) for a bounded time.
    Decide(super::load::DecideArgs),
}

/// Time a 5-leaf trait segment and 190 overlaps on N profiles, and a behavioural segment
/// on M profiles' events; medians of --runs.
#[derive(Debug, Args)]
pub struct SegmentsArgs {
    /// Profiles for the trait segment and the overlaps.
    #[arg(long, default_value_t = 10_000_000)]
    profiles: usize,
    /// Profiles that have events, for the behavioural segment.
    #[arg(long, default_value_t = 1_000_000)]
    event_profiles: usize,
    /// Events over those profiles.
    #[arg(long, default_value_t = 50_000_000)]
    events: usize,
    /// Timed runs per measurement (the median is reported).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Seed of the generated data.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Write the generated columns here (raw little-endian arrays and manifest.json) for
    /// a peer to load.
    #[arg(long, value_name = "DIR")]
    export: Option<PathBuf>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// The 5-leaf trait segment.
pub const FIVE_LEAVES: &str = r#"gender = "f" and age between 25 and 44 and city in ("Budapest", "Wien", "Praha", "Berlin") and skill != "pro" and consent_email = true"#;

/// The behavioural segment: a window and a property filter.
pub const BEHAVIOURAL: &str =
    r#"count(page_viewed where category = "winter_accessories", within 30d) >= 2"#;

/// The 20 segments whose 190 pairwise overlaps are timed.
pub const TWENTY: [&str; 20] = [
    r#"city = "Budapest""#,
    r#"city = "Wien""#,
    r#"city = "Berlin""#,
    r#"city = "Praha""#,
    r#"city in ("Paris", "Lyon", "Marseille")"#,
    r#"discipline = "road""#,
    r#"discipline = "mountain""#,
    r#"discipline = "city""#,
    r#"discipline = "gravel""#,
    r#"discipline = "track""#,
    r#"skill = "beginner""#,
    r#"skill = "amateur""#,
    r#"skill = "pro""#,
    r#"gender = "f""#,
    r#"gender = "m""#,
    "age < 30",
    "age between 30 and 49",
    "age >= 50",
    "consent_email = true",
    "income > 60000",
];

const CITIES: [&str; 24] = [
    "Budapest",
    "Wien",
    "Berlin",
    "Praha",
    "Paris",
    "Lyon",
    "Marseille",
    "München",
    "Hamburg",
    "Köln",
    "Zürich",
    "Genève",
    "Milano",
    "Torino",
    "Roma",
    "Madrid",
    "Barcelona",
    "Lisboa",
    "Amsterdam",
    "Bruxelles",
    "København",
    "Stockholm",
    "Oslo",
    "Warszawa",
];
const CATEGORIES: [&str; 12] = [
    "bikes",
    "winter_accessories",
    "helmets",
    "apparel",
    "parts",
    "tools",
    "lights",
    "locks",
    "nutrition",
    "shoes",
    "bags",
    "sale",
];
/// 2026-11-01T00:00:00Z.
const AS_OF: Timestamp = Timestamp(1_793_491_200_000);

pub fn run(cmd: BenchCommand) -> Result<()> {
    match cmd {
        BenchCommand::Segments(args) => segments(args),
        BenchCommand::Ingest(args) => super::load::ingest(args),
        BenchCommand::Decide(args) => super::load::decide(args),
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// Runs `f` `runs` times; the median seconds and the last result.
fn timed<T>(runs: usize, mut f: impl FnMut() -> T) -> (f64, T) {
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let started = Instant::now();
        last = Some(std::hint::black_box(f()));
        times.push(started.elapsed().as_secs_f64());
    }
    (median(times), last.expect("at least one run"))
}

fn log(msg: &str) {
    eprintln!("bench: {msg}");
}

fn segments(args: SegmentsArgs) -> Result<()> {
    let started = Instant::now();
    log(&format!("generating {} profiles", args.profiles));
    let table = generate_profiles(args.profiles, args.seed);
    log(&format!(
        "generated in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let data = Dataset {
        profiles: &table,
        metrics: None,
        events: None,
        as_of: AS_OF,
        segments: None,
    };
    let five = parse(FIVE_LEAVES)?;
    // Cold: the first evaluation builds the bitmap indexes of the columns it reads.
    let (cold, _) = timed(1, || data.evaluate(&five));
    let (five_s, members) = timed(args.runs, || data.evaluate(&five));
    let members = members?;
    let five_size = members.len();
    log(&format!(
        "5-leaf segment: {five_size} members, median {:.2} ms (first run, building indexes: {:.0} ms)",
        five_s * 1e3,
        cold * 1e3
    ));

    let twenty: Vec<Condition> = TWENTY.iter().map(|c| parse(c)).collect::<Result<_, _>>()?;
    let (segments_s, bitmaps) = timed(args.runs, || {
        twenty
            .iter()
            .map(|c| data.evaluate(c))
            .collect::<Result<Vec<RoaringBitmap>, _>>()
    });
    let bitmaps = bitmaps?;
    let (overlaps_s, matrix) = timed(args.runs, || overlaps(&bitmaps));
    log(&format!(
        "20 segments evaluated in {:.1} ms; 190 overlaps in {:.2} ms",
        segments_s * 1e3,
        overlaps_s * 1e3
    ));

    if let Some(dir) = &args.export {
        export_profiles(dir, &table)?;
    }
    drop(table);

    log(&format!(
        "generating {} events over {} profiles",
        args.events, args.event_profiles
    ));
    let started = Instant::now();
    let (event_profiles, events) = generate_events(args.event_profiles, args.events, args.seed);
    log(&format!(
        "generated in {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let behavioural = parse(BEHAVIOURAL)?;
    let edata = Dataset {
        profiles: &event_profiles,
        metrics: None,
        events: Some(&events),
        as_of: AS_OF,
        segments: None,
    };
    let (behaviour_s, behaviour_members) = timed(args.runs, || edata.evaluate(&behavioural));
    let behaviour_size = behaviour_members?.len();
    log(&format!(
        "behavioural segment: {behaviour_size} members, median {:.1} ms",
        behaviour_s * 1e3
    ));
    if let Some(dir) = &args.export {
        export_events(dir, &events)?;
    }

    let pairs: Vec<serde_json::Value> = (0..TWENTY.len())
        .flat_map(|i| (i + 1..TWENTY.len()).map(move |j| (i, j)))
        .map(|(i, j)| json!({"a": i, "b": j, "intersection": matrix[i][j].intersection}))
        .collect();
    let report = json!({
        "profiles": args.profiles,
        "event_profiles": args.event_profiles,
        "events": events.len(),
        "runs": args.runs,
        "as_of": AS_OF.to_string(),
        "five_leaf": {
            "condition": FIVE_LEAVES, "size": five_size,
            "median_ms": five_s * 1e3, "first_run_ms": cold * 1e3,
        },
        "overlaps": {
            "segments": TWENTY, "sizes": bitmaps.iter().map(RoaringBitmap::len).collect::<Vec<_>>(),
            "pairs": pairs, "median_ms": overlaps_s * 1e3,
            "segments_median_ms": segments_s * 1e3,
        },
        "behavioural": {
            "condition": BEHAVIOURAL, "size": behaviour_size, "median_ms": behaviour_s * 1e3,
        },
    });
    if args.json {
        return print_json(&report);
    }
    println!(
        "5-leaf trait segment, {} profiles: {:.2} ms (median of {}), {} members",
        args.profiles,
        five_s * 1e3,
        args.runs,
        five_size
    );
    println!(
        "190 overlaps of 20 segments: {:.2} ms (the 20 segments: {:.1} ms)",
        overlaps_s * 1e3,
        segments_s * 1e3
    );
    println!(
        "behavioural segment, {} profiles / {} events: {:.1} ms, {} members",
        args.event_profiles,
        events.len(),
        behaviour_s * 1e3,
        behaviour_size
    );
    Ok(())
}

fn pick_weighted(rng: &mut Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = rng.f64() * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

fn dictionary(values: &[&str]) -> Dictionary {
    let mut dict = Dictionary::default();
    for v in values {
        dict.intern(v);
    }
    dict
}

/// `n` profiles with categorical, numeric, boolean and time traits (no missing values).
fn generate_profiles(n: usize, seed: u64) -> ProfileTable {
    let mut rng = Rng::for_stream(seed, 101);
    let schema: Schema = [
        ("gender", TraitType::String),
        ("age", TraitType::Integer),
        ("city", TraitType::String),
        ("skill", TraitType::String),
        ("discipline", TraitType::String),
        ("consent_email", TraitType::Bool),
        ("income", TraitType::Float),
        ("signup_at", TraitType::Timestamp),
    ]
    .into_iter()
    .map(|(name, ty)| (name.to_string(), TraitSpec::new(ty)))
    .collect();
    let mut table = ProfileTable::with_schema(&schema);
    let city_weights: Vec<f64> = (0..CITIES.len()).map(|i| 1.0 / (i as f64 + 2.0)).collect();
    let (mut gender, mut age, mut city, mut skill, mut discipline) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut consent, mut income, mut signup) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for _ in 0..n {
        gender.push(pick_weighted(&mut rng, &[0.48, 0.48, 0.04]) as u32);
        age.push(Some(18 + rng.below(63) as i64));
        city.push(pick_weighted(&mut rng, &city_weights) as u32);
        skill.push(pick_weighted(&mut rng, &[0.4, 0.45, 0.15]) as u32);
        discipline.push(pick_weighted(&mut rng, &[0.3, 0.25, 0.25, 0.15, 0.05]) as u32);
        consent.push(Some(rng.f64() < 0.7));
        income.push(Some(
            ((10.5 + 0.6 * rng.normal()).exp() * 100.0).round() / 100.0,
        ));
        signup.push(Some(
            AS_OF.0 - (rng.below(5 * 365 * 24 * 3600) as i64) * 1000,
        ));
    }
    table.external_ids = (1..=n).map(|i| format!("c{i:08}")).collect();
    let columns = &mut table.columns;
    columns.insert(
        "gender".into(),
        Column::Str {
            dict: dictionary(&["f", "m", "x"]),
            codes: gender,
        },
    );
    columns.insert("age".into(), Column::Int(age));
    columns.insert(
        "city".into(),
        Column::Str {
            dict: dictionary(&CITIES),
            codes: city,
        },
    );
    columns.insert(
        "skill".into(),
        Column::Str {
            dict: dictionary(&["beginner", "amateur", "pro"]),
            codes: skill,
        },
    );
    columns.insert(
        "discipline".into(),
        Column::Str {
            dict: dictionary(&["road", "mountain", "city", "gravel", "track"]),
            codes: discipline,
        },
    );
    columns.insert("consent_email".into(), Column::Bool(consent));
    columns.insert("income".into(), Column::Float(income));
    columns.insert("signup_at".into(), Column::Time(signup));
    table.indexes.clear();
    table
}

const EVENT_NAMES: [&str; 5] = [
    "page_viewed",
    "product_viewed",
    "add_to_cart",
    "order_completed",
    "session_started",
];

/// About `events` events over `profiles` profiles in the year before as-of; page and
/// product views carry a `category`.
fn generate_events(profiles: usize, events: usize, seed: u64) -> (ProfileTable, EventTable) {
    let mut rng = Rng::for_stream(seed, 202);
    let mut table = ProfileTable::with_schema(&Schema::new());
    table.external_ids = (1..=profiles).map(|i| format!("c{i:08}")).collect();
    let mut builder = EventTableBuilder::with_capacity(events);
    let year = 365 * 86_400_000_i64;
    let category_weights: Vec<f64> = (0..CATEGORIES.len())
        .map(|i| if i == 1 { 0.08 } else { 0.92 / 11.0 })
        .collect();
    let mean = events as f64 / profiles.max(1) as f64;
    let mut times = Vec::new();
    for p in 0..profiles as u32 {
        // Activity varies by person: between a fifth and twice the mean, remainder last.
        let left = events.saturating_sub(builder.len());
        let n = if p as usize + 1 == profiles {
            left
        } else {
            ((mean * (0.2 + 1.8 * rng.f64())) as usize).min(left)
        };
        times.clear();
        times.extend((0..n).map(|_| AS_OF.0 - rng.below(year as u64) as i64));
        times.sort_unstable();
        for &t in &times {
            let name = EVENT_NAMES[pick_weighted(&mut rng, &[0.6, 0.2, 0.1, 0.05, 0.05])];
            let revenue = (name == "order_completed").then(|| 20.0 + rng.below(2000) as f64);
            let row = builder.push(p, t, name, revenue);
            if matches!(name, "page_viewed" | "product_viewed") {
                let c = CATEGORIES[pick_weighted(&mut rng, &category_weights)];
                builder.set_property(row, "category", PropertyValue::Text(c));
            }
        }
    }
    (table, builder.finish(profiles))
}

fn write_raw<T: Copy>(path: &Path, values: &[T], bytes: impl Fn(T) -> Vec<u8>) -> Result<()> {
    let file = std::fs::File::create(path).with_context(|| path.display().to_string())?;
    let mut w = std::io::BufWriter::with_capacity(1 << 20, file);
    for &v in values {
        w.write_all(&bytes(v))?;
    }
    w.flush()?;
    Ok(())
}

fn dict_values(dict: &Dictionary) -> Vec<&str> {
    (0..dict.len() as u32).map(|c| dict.value(c)).collect()
}

/// Writes each profile column as a raw array (`NAME.i32` codes, `.i64`, `.f64`, `.u8`) and
/// the dictionaries to `profiles.json`.
fn export_profiles(dir: &Path, table: &ProfileTable) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    let mut manifest = BTreeMap::new();
    for (name, column) in &table.columns {
        let entry = match column {
            Column::Str { dict, codes } => {
                write_raw(&dir.join(format!("{name}.i32")), codes, |c| {
                    (if c == NO_CODE { -1 } else { c as i32 })
                        .to_le_bytes()
                        .to_vec()
                })?;
                json!({"type": "codes", "file": format!("{name}.i32"), "values": dict_values(dict)})
            }
            Column::Int(v) | Column::Time(v) => {
                write_raw(&dir.join(format!("{name}.i64")), v, |x| {
                    x.unwrap_or(i64::MIN).to_le_bytes().to_vec()
                })?;
                let ty = if matches!(column, Column::Time(_)) {
                    "time_ms"
                } else {
                    "i64"
                };
                json!({"type": ty, "file": format!("{name}.i64")})
            }
            Column::Float(v) => {
                write_raw(&dir.join(format!("{name}.f64")), v, |x| {
                    x.unwrap_or(f64::NAN).to_le_bytes().to_vec()
                })?;
                json!({"type": "f64", "file": format!("{name}.f64")})
            }
            Column::Bool(v) => {
                write_raw(&dir.join(format!("{name}.u8")), v, |x| {
                    vec![x.map_or(2, u8::from)]
                })?;
                json!({"type": "bool", "file": format!("{name}.u8")})
            }
            Column::Set { .. } | Column::Sparse(_) => continue,
        };
        manifest.insert(name.clone(), entry);
    }
    let manifest = json!({"rows": table.len(), "columns": manifest});
    std::fs::write(
        dir.join("profiles.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(())
}

/// Writes the events as `event_profile.u32`, `event_time.i64`, `event_name.i32`,
/// `event_category.i32` and `events.json`.
fn export_events(dir: &Path, events: &EventTable) -> Result<()> {
    let offsets = events.offsets();
    let mut profile = Vec::with_capacity(events.len());
    for p in 0..offsets.len() - 1 {
        profile.extend(std::iter::repeat_n(
            p as u32,
            (offsets[p + 1] - offsets[p]) as usize,
        ));
    }
    write_raw(&dir.join("event_profile.u32"), &profile, |p| {
        p.to_le_bytes().to_vec()
    })?;
    write_raw(&dir.join("event_time.i64"), &events.time, |t| {
        t.to_le_bytes().to_vec()
    })?;
    write_raw(&dir.join("event_name.i32"), &events.name, |c| {
        (c as i32).to_le_bytes().to_vec()
    })?;
    let category = events
        .properties
        .get("category")
        .context("events have no category")?;
    write_raw(&dir.join("event_category.i32"), &category.texts, |c| {
        (if c == NO_CODE { -1 } else { c as i32 })
            .to_le_bytes()
            .to_vec()
    })?;
    let manifest = json!({
        "rows": events.len(),
        "names": dict_values(&events.names),
        "categories": dict_values(&category.dict),
    });
    std::fs::write(
        dir.join("events.json"),
        serde_json::to_vec_pretty(&manifest)?,
    )?;
    Ok(())
}
