//! Batch and streaming must agree: random event streams (out of order within the lateness
//! horizon, some dated after the clock), random segments over every leaf kind, trait
//! changes and profile merges; at many clocks the streaming membership of every segment
//! must equal the batch evaluator's at as-of = clock over the events observed so far.

use std::collections::{BTreeMap, HashMap};

use microseg_core::condition::{parse, Condition};
use microseg_core::{ProfileId, Schema, Timestamp, TraitSpec, TraitType, Value};
use roaring::RoaringBitmap;

use super::*;
use crate::columnar::{EventTableBuilder, PropertyValue};
use crate::evaluate::Dataset;
use crate::metrics::compute;

const HOUR: i64 = 3_600_000;
const DAY: i64 = 24 * HOUR;
/// 2024-01-01T00:00Z.
const T0: i64 = 1_704_067_200_000;

/// SplitMix64: small, seeded, good enough for test data.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

const WINDOWS: [&str; 6] = [
    "",
    ", within 1h",
    ", within 1d",
    ", within 3d",
    ", within 7d",
    ", between @2024-01-03 and @2024-01-08",
];

fn window(rng: &mut Rng) -> &'static str {
    WINDOWS[rng.below(WINDOWS.len() as u64) as usize]
}

/// An event filter: a name, sometimes with a `where`.
fn filter(rng: &mut Rng) -> String {
    let options = [
        "page_viewed",
        r#"page_viewed where path starts_with "/winter""#,
        r#"page_viewed where path = "/bikes" or path contains "gloves""#,
        "order_completed",
        r#"order_completed where category = "bikes""#,
        "order_completed where revenue >= 100",
        r#"order_completed where tags has "sale""#,
        "cart_viewed",
        "session_started",
        "order_completed where items * 2 > 4",
    ];
    rng.pick(&options).to_string()
}

fn behavioural(rng: &mut Rng) -> String {
    let w = window(rng);
    let n = rng.below(4);
    let op = rng.pick(&[">=", ">", "=", "<", "!="]);
    match rng.below(9) {
        0 | 1 => format!("count({}{w}) {op} {n}", filter(rng)),
        2 => {
            let f = rng.pick(&["sum", "avg", "min", "max"]);
            let prop = rng.pick(&["revenue", "items"]);
            let event = rng.pick(&[
                "order_completed",
                r#"order_completed where category = "bikes""#,
            ]);
            format!("{f}({prop} of {event}{w}) {op} {}", rng.below(300))
        }
        3 => format!("did({}){}", filter(rng), w.replacen(',', "", 1)),
        4 => format!("last({}) before {}h ago", filter(rng), 1 + rng.below(72)),
        5 => {
            let w = rng.pick(&[
                " within 1d",
                " within 3d",
                " between @2024-01-02 and @2024-01-05",
            ]);
            format!("first({}){w}", filter(rng))
        }
        6 | 7 => {
            let not = if rng.chance(50) { "not " } else { "" };
            let d = rng.pick(&["1h", "6h", "1d", "3d"]);
            format!("{} then {not}{} within {d}{w}", filter(rng), filter(rng))
        }
        _ => format!("count({}{w}) = 0", filter(rng)),
    }
}

fn profile_leaf(rng: &mut Rng) -> String {
    let options = [
        "age >= 30".to_string(),
        r#"city = "Budapest""#.into(),
        r#"city in ("Vienna", "Bern")"#.into(),
        r#"city starts_with "B""#.into(),
        r#"city matches "^V""#.into(),
        "vip = true".into(),
        r#"tags has "mtb""#.into(),
        "age exists".into(),
        format!("orders >= {}", rng.below(4)),
        format!("revenue > {}", rng.below(400)),
        format!("aov between 50 and {}", 60 + rng.below(300)),
        format!("visits >= {}", 1 + rng.below(5)),
        format!("recency_days <= {}", rng.below(6)),
        format!("tenure_days > {}", rng.below(6)),
        "last_order_at exists".into(),
        "first_seen >= @2024-01-04".into(),
        "revenue / orders > 80".into(),
        "age not in (25, 34)".into(),
    ];
    rng.pick(&options).clone()
}

fn condition(rng: &mut Rng, earlier: &[String], depth: u32) -> String {
    if depth > 0 && rng.chance(45) {
        let (a, b) = (
            condition(rng, earlier, depth - 1),
            condition(rng, earlier, depth - 1),
        );
        return match rng.below(3) {
            0 => format!("({a}) and ({b})"),
            1 => format!("({a}) or ({b})"),
            _ => format!("not ({a})"),
        };
    }
    if !earlier.is_empty() && rng.chance(8) {
        return format!("in_segment(\"{}\")", rng.pick(earlier));
    }
    if rng.chance(65) {
        behavioural(rng)
    } else {
        profile_leaf(rng)
    }
}

fn schema() -> Schema {
    let mut schema = Schema::new();
    for (name, ty) in [
        ("age", TraitType::Integer),
        ("city", TraitType::String),
        ("vip", TraitType::Bool),
        ("tags", TraitType::StringSet),
    ] {
        schema.insert(name.into(), TraitSpec::new(ty));
    }
    schema
}

fn random_traits(rng: &mut Rng) -> Vec<(&'static str, TraitType, Option<Value>)> {
    let city = ["Budapest", "Vienna", "Bern", "Graz"];
    vec![
        (
            "age",
            TraitType::Integer,
            rng.chance(80)
                .then(|| Value::Int(*rng.pick(&[25, 30, 34, 41]))),
        ),
        (
            "city",
            TraitType::String,
            rng.chance(85)
                .then(|| Value::Str(rng.pick(&city).to_string())),
        ),
        (
            "vip",
            TraitType::Bool,
            rng.chance(70).then(|| Value::Bool(rng.chance(30))),
        ),
        (
            "tags",
            TraitType::StringSet,
            rng.chance(70).then(|| {
                Value::Set(
                    ["mtb", "road", "kids"]
                        .iter()
                        .filter(|_| rng.chance(40))
                        .map(|s| s.to_string())
                        .collect(),
                )
            }),
        ),
    ]
}

/// One random event of `p` at about `clock`.
fn random_event(rng: &mut Rng, clock: i64) -> StreamEvent {
    // Mostly now-ish; some late (within the 1-day horizon), some dated ahead of the clock.
    let time = match rng.below(10) {
        0 => clock - rng.below(20 * HOUR as u64) as i64,
        1 => clock + rng.below(3 * HOUR as u64) as i64,
        // Same instant as the clock: ties between events.
        2 => clock,
        _ => clock - rng.below(HOUR as u64) as i64,
    };
    let time = time - time % 60_000;
    let (name, revenue, properties) = match rng.below(10) {
        0..=3 => {
            let path = rng.pick(&["/winter/gloves", "/winter/jackets", "/bikes", "/home"]);
            (
                "page_viewed",
                None,
                vec![("path".to_string(), EventValue::Text(path.to_string()))],
            )
        }
        4..=5 => {
            let mut props = vec![(
                "category".to_string(),
                EventValue::Text(rng.pick(&["bikes", "winter", "parts"]).to_string()),
            )];
            if rng.chance(70) {
                props.push((
                    "items".into(),
                    EventValue::Number((1 + rng.below(4)) as f64),
                ));
            }
            if rng.chance(30) {
                props.push(("tags".into(), EventValue::Text(r#"["sale","new"]"#.into())));
            }
            // Whole amounts keep sums exact in any order.
            let revenue = rng.chance(90).then(|| (10 * (1 + rng.below(30))) as f64);
            ("order_completed", revenue, props)
        }
        6 => ("session_started", None, vec![]),
        _ => ("cart_viewed", None, vec![]),
    };
    StreamEvent {
        time,
        name: name.into(),
        revenue,
        properties,
    }
}

/// The events as the batch evaluator's table.
fn table(events: &[(ProfileId, StreamEvent)], profiles: usize) -> EventTable {
    let mut b = EventTableBuilder::default();
    for (p, e) in events {
        let row = b.push(*p, e.time, &e.name, e.revenue);
        for (k, v) in &e.properties {
            match v {
                EventValue::Number(x) => b.set_property(row, k, PropertyValue::Number(*x)),
                EventValue::Text(s) => b.set_property(row, k, PropertyValue::Text(s)),
            }
        }
    }
    b.finish(profiles)
}

/// The batch evaluator's members of every segment over `events` at `as_of`.
fn batch(
    profiles: &ProfileTable,
    events: &[(ProfileId, StreamEvent)],
    segments: &BTreeMap<String, Condition>,
    retired: &RoaringBitmap,
    as_of: Timestamp,
) -> BTreeMap<String, RoaringBitmap> {
    let table = table(events, profiles.len());
    let metrics = compute(
        &table,
        &profiles.external_ids,
        as_of,
        &MetricsConfig::default(),
    );
    let data = Dataset {
        profiles,
        metrics: Some(&metrics),
        events: Some(&table),
        as_of,
        segments: Some(segments),
    };
    segments
        .iter()
        .map(|(name, c)| {
            let members = data.evaluate(c).unwrap_or_else(|e| panic!("{name}: {e}"));
            (name.clone(), members - retired)
        })
        .collect()
}

/// How the segments come into being.
#[derive(Clone, Copy, PartialEq)]
enum Definitions {
    /// All from the start.
    AtStart,
    /// A third from the start, more added and some edited along the way with
    /// [`Streaming::redefine`], backfilled from the events taken in so far.
    Redefined,
}

/// A redefinition planned and backfilled, waiting to be installed: the new definitions,
/// the plan, the backfill, what was taken in since, and the step of the install.
type Pending = (
    BTreeMap<String, Condition>,
    Redefinition,
    Backfill,
    Vec<Replay>,
    usize,
);

fn run(seed: u64, definitions: Definitions) -> (usize, usize) {
    let mut rng = Rng(seed);
    let n_profiles = 30;
    let mut profiles = ProfileTable::with_schema(&schema());
    for i in 0..n_profiles {
        profiles.push(&format!("p{i:02}"), &HashMap::new());
        for (name, ty, v) in random_traits(&mut rng) {
            profiles.set_trait(i, name, ty, v.as_ref());
        }
    }
    let mut texts: Vec<(String, String)> = Vec::new();
    for i in 0..24 {
        let earlier: Vec<String> = texts.iter().map(|(n, _)| n.clone()).collect();
        texts.push((format!("s{i}"), condition(&mut rng, &earlier, 2)));
    }
    let parsed = |texts: &[(String, String)]| -> BTreeMap<String, Condition> {
        texts
            .iter()
            .map(|(n, t)| (n.clone(), parse(t).unwrap_or_else(|e| panic!("{t}: {e}"))))
            .collect()
    };
    // With redefinitions: the first third at the start; at each stage a third more
    // (references only ever name earlier segments) and one earlier segment edited.
    let stages = match definitions {
        Definitions::AtStart => vec![texts.len()],
        Definitions::Redefined => vec![6, 12, 18, 24],
    };
    let mut segments = parsed(&texts[..stages[0]]);
    let list: Vec<(String, Condition)> = segments.clone().into_iter().collect();
    let config = StreamConfig::default();

    // History before the stream starts, loaded by backfill.
    let mut observed: Vec<(ProfileId, StreamEvent)> = Vec::new();
    let mut clock = T0 + DAY;
    for _ in 0..150 {
        clock += rng.below(40 * 60_000) as i64;
        let p = rng.below(n_profiles as u64) as ProfileId;
        observed.push((p, random_event(&mut rng, clock)));
    }
    let mut stream = Streaming::new(&list, &profiles, config, Timestamp(T0)).unwrap();
    stream.backfill(
        &profiles,
        n_profiles,
        &table(&observed, n_profiles as usize),
        Timestamp(clock),
    );

    let mut retired = RoaringBitmap::new();
    let (mut checks, mut changes) = (0, 0);
    let mut check = |stream: &Streaming,
                     segments: &BTreeMap<String, Condition>,
                     profiles: &ProfileTable,
                     observed: &[(ProfileId, StreamEvent)],
                     retired: &RoaringBitmap| {
        let as_of = stream.clock();
        let expected = batch(profiles, observed, segments, retired, as_of);
        for (name, members) in &expected {
            let got = stream.members(name).unwrap();
            if got != members {
                let diff: Vec<u32> = (got ^ members).iter().collect();
                let p = diff[0];
                let mut evs: Vec<&StreamEvent> = observed
                    .iter()
                    .filter(|(q, _)| *q == p)
                    .map(|(_, e)| e)
                    .collect();
                evs.sort_by_key(|e| e.time);
                panic!(
                    "seed {seed}, as of {as_of}: segment {name} = {}\nbatch {:?}\nstreaming {:?}\nprofile {p} events: {:?}",
                    segments[name],
                    members.iter().collect::<Vec<_>>(),
                    got.iter().collect::<Vec<_>>(),
                    evs.iter().map(|e| (Timestamp(e.time).to_string(), &e.name, e.revenue, &e.properties)).collect::<Vec<_>>()
                );
            }
        }
        checks += 1;
    };
    check(&stream, &segments, &profiles, &observed, &retired);

    let mut pending: Option<Pending> = None;
    for step in 0..600 {
        let stage = step / 150 + 1;
        if step % 150 == 0 && stage < stages.len() {
            // Add the next third and edit an earlier segment; the backfill sees exactly
            // the events taken in, the clock moves on before the change is installed.
            let edited = format!("s{}", rng.below(stages[stage - 1] as u64));
            let earlier: Vec<String> = texts[..edited[1..].parse::<usize>().unwrap()]
                .iter()
                .map(|(n, _)| n.clone())
                .collect();
            let at = texts.iter().position(|(n, _)| *n == edited).unwrap();
            texts[at].1 = condition(&mut rng, &earlier, 2);
            let next = parsed(&texts[..stages[stage]]);
            let list: Vec<(String, Condition)> = next.clone().into_iter().collect();
            let plan = stream.redefine(&list, &profiles).unwrap();
            let backfill = plan.backfill(
                &table(&observed, n_profiles as usize),
                n_profiles,
                stream.clock(),
            );
            // Installed after a few more steps taken in with the old definitions (none,
            // sometimes), which the install replays; the clock moves on meanwhile
            // (sometimes within the hours events are dated ahead, sometimes past them).
            let span = *rng.pick(&[1, 2 * HOUR as u64, 6 * HOUR as u64]);
            clock += rng.below(span) as i64;
            changes += stream.advance(&profiles, Timestamp(clock)).len();
            pending = Some((
                next,
                plan,
                backfill,
                Vec::new(),
                step + rng.below(25) as usize,
            ));
        }
        if pending.as_ref().is_some_and(|p| p.4 == step) {
            let (next, plan, mut backfill, replay, _) = pending.take().unwrap();
            // Sometimes most of what came since is fed to the backfill first (as the
            // server's backfill thread does), the rest at the install.
            let taken = match rng.below(2) {
                0 => plan.catch_up(&mut backfill, &replay, stream.clock()),
                _ => 0,
            };
            let rest = replay[taken..].to_vec();
            changes += stream.install(&profiles, plan, backfill, rest).len();
            segments = next;
            check(&stream, &segments, &profiles, &observed, &retired);
        }
        clock += rng.below(50 * 60_000) as i64;
        changes += stream.advance(&profiles, Timestamp(clock)).len();
        let live: Vec<u32> = (0..n_profiles).filter(|p| !retired.contains(*p)).collect();
        let p = *rng.pick(&live);
        match rng.below(40) {
            0 => {
                let all = random_traits(&mut rng);
                let (name, ty, v) = rng.pick(&all).clone();
                profiles.set_trait(p, name, ty, v.as_ref());
                changes += stream.traits_changed(&profiles, p).len();
            }
            // A merge is exact when the merged profile's events are all within the
            // lateness horizon (an anonymous visit that just logged in).
            1 if live.len() > 10
                && observed
                    .iter()
                    .all(|(q, e)| *q != p || e.time >= clock - DAY) =>
            {
                let into = *rng.pick(&live);
                if into != p {
                    changes += stream.merge(&profiles, p, into).len();
                    if let Some(pending) = &mut pending {
                        pending.3.push(Replay::Merge { from: p, into });
                    }
                    retired.insert(p);
                    for (q, _) in observed.iter_mut() {
                        if *q == p {
                            *q = into;
                        }
                    }
                }
            }
            _ => {
                let e = random_event(&mut rng, clock);
                observed.push((p, e.clone()));
                if let Some(pending) = &mut pending {
                    pending.3.push(Replay::Event(p, e.clone()));
                }
                changes += stream.observe(&profiles, p, e).len();
            }
        }
        if step % 7 == 0 {
            check(&stream, &segments, &profiles, &observed, &retired);
        }
        // Quiet stretches: time alone must move memberships (windows, deadlines).
        if step % 50 == 25 {
            for _ in 0..6 {
                clock += rng.below(20 * HOUR as u64) as i64;
                changes += stream.advance(&profiles, Timestamp(clock)).len();
                check(&stream, &segments, &profiles, &observed, &retired);
            }
        }
    }
    (checks, changes)
}

#[test]
fn streaming_membership_equals_batch_at_every_checkpoint() {
    let mut total_changes = 0;
    for seed in 0..12 {
        let (checks, changes) = run(seed, Definitions::AtStart);
        assert!(checks > 100, "seed {seed}: {checks} checks");
        total_changes += changes;
    }
    // The streams moved memberships back and forth (the test is not comparing empties).
    assert!(total_changes > 1000, "{total_changes} changes");
}

/// Segments added and edited while events stream in (backfilled from history into the
/// new leaves only, installed after the clock moved on) equal the batch evaluator's
/// at every checkpoint after, as if they had been there from the start.
#[test]
fn redefined_segments_equal_batch_at_every_checkpoint() {
    for seed in 100..160 {
        let (checks, _) = run(seed, Definitions::Redefined);
        assert!(checks > 100, "seed {seed}: {checks} checks");
    }
}
