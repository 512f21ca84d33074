//! Differential test: random conditions on random data, the batch evaluator's members ==
//! the members SQLite returns for the compiled SQL.
//!
//! The data is built twice from one seeded description: once as the engine's columnar
//! tables (as the store would load them: JSON numbers as numbers, strings and booleans as
//! text, lists as their JSON text) and once as the SQL layout in an in-memory SQLite
//! database. About one profile in eight was merged into another by `alias` (chains
//! included), so both sides must give its events to the survivor and leave it out. Times are coarse (whole hours, many ties) so the rules for events at the same
//! instant are exercised; numbers are multiples of 0.5 so sums are exact in any order.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use microseg_core::condition::{
    AggregateFn, ArithOp, CompareOp, Condition, EventFilter, Literal, Operand, TextOp, Window,
};
use microseg_core::{Schema, Timestamp, TraitSpec, TraitType, Value, DAY_MS};
use microseg_engine::columnar::PropertyValue;
use microseg_engine::index::IndexCache;
use microseg_engine::{
    compute_metrics, Dataset, EvalError, EventTable, EventTableBuilder, Metrics, MetricsConfig,
    ProfileTable,
};
use microseg_synth::Rng;
use rusqlite::Connection;
use serde_json::{json, Value as Json};

use microseg_store::sql::{compile, Dialect, SqlContext};

use std::path::PathBuf;

use crate::duckdb::DuckDb;
use crate::parquet::{Cell, TableWriter};
use crate::postgres::Postgres;
use crate::spark::Spark;

const HOUR_MS: i64 = 3_600_000;
/// 2024-01-01T00:00:00Z.
const START: i64 = 1_704_067_200_000;
const EVENT_NAMES: [&str; 4] = ["view", "order_completed", "session_started", "cart"];
/// Lower and upper case first letters: byte order and a linguistic collation (the test
/// PostgreSQL's ICU en-US) disagree on them.
const CITIES: [&str; 7] = [
    "Budapest",
    "Berlin",
    "Bern",
    "Paris",
    "",
    "Béziers",
    "amsterdam",
];
const PATHS: [&str; 5] = ["/winter/gloves", "/winter", "/bikes", "/", "/bikes/winter"];
const TAGS: [&str; 4] = ["a", "b", "road", "x y"];
/// Property names a write key can send that JSON paths and SQL quoting must survive (a
/// backslash used to make the saved segment's SQL fail with "bad JSON path").
const ODD_NAMES: [&str; 9] = [
    "back\\slash",
    "q\"uote",
    "dot.ted",
    "br[0]",
    "$",
    "it's",
    "new\nline",
    "ünï 名",
    "a\\\"b",
];

fn pick<'a, T>(rng: &mut Rng, items: &'a [T]) -> &'a T {
    &items[rng.below(items.len() as u64) as usize]
}

fn chance(rng: &mut Rng, p: f64) -> bool {
    rng.f64() < p
}

/// A multiple of 0.5 in `[lo, hi]`.
fn half(rng: &mut Rng, lo: i64, hi: i64) -> f64 {
    (lo * 2 + rng.below(((hi - lo) * 2 + 1) as u64) as i64) as f64 / 2.0
}

struct Data {
    table: ProfileTable,
    events: EventTable,
    sql: Connection,
    /// The same profiles and events as layout rows, for the other engines.
    profile_rows: Vec<Vec<Cell<'static>>>,
    event_rows: Vec<[Cell<'static>; 5]>,
}

fn traits() -> BTreeMap<String, TraitType> {
    [
        ("age", TraitType::Integer),
        ("score", TraitType::Float),
        ("city", TraitType::String),
        ("vip", TraitType::Bool),
        ("signup", TraitType::Timestamp),
        ("tags", TraitType::StringSet),
    ]
    .into_iter()
    .map(|(n, t)| (n.to_string(), t))
    .collect()
}

fn random_properties(rng: &mut Rng) -> Json {
    let mut props = serde_json::Map::new();
    if chance(rng, 0.6) {
        let price = match rng.below(10) {
            0 => json!("12"),
            1 => json!(true),
            2 => Json::Null,
            _ => json!(half(rng, 0, 60)),
        };
        props.insert("price".into(), price);
    }
    if chance(rng, 0.6) {
        props.insert("path".into(), json!(pick(rng, &PATHS)));
    }
    if chance(rng, 0.3) {
        props.insert("flag".into(), json!(chance(rng, 0.5)));
    }
    if chance(rng, 0.3) {
        let items: Vec<&str> = TAGS.iter().copied().filter(|_| chance(rng, 0.4)).collect();
        props.insert("items".into(), json!(items));
    }
    if chance(rng, 0.15) {
        props.insert("revenue".into(), json!(half(rng, 0, 40)));
    }
    for name in ODD_NAMES {
        if chance(rng, 0.3) {
            props.insert(name.into(), json!(rng.below(3)));
        }
    }
    if chance(rng, 0.3) {
        let day = 1 + rng.below(28);
        let when = if chance(rng, 0.5) {
            format!("2024-02-{day:02}")
        } else {
            format!("2024-02-{day:02}T{:02}:30:00Z", rng.below(24))
        };
        props.insert("when".into(), json!(when));
    }
    Json::Object(props)
}

/// Random profiles and events, as engine tables and as the SQL layout.
fn random_data(seed: u64, profiles: usize) -> Data {
    let mut rng = Rng::new(seed);
    let schema: Schema = traits()
        .into_iter()
        .map(|(n, t)| (n, TraitSpec::new(t)))
        .collect();
    let mut table = ProfileTable::with_schema(&schema);
    let sql = Connection::open_in_memory().unwrap();
    sql.execute_batch(
        "CREATE TABLE profiles(id TEXT PRIMARY KEY, merged_into TEXT, age INTEGER, score REAL,
                               city TEXT, vip INTEGER, signup INTEGER, tags TEXT);
         CREATE INDEX profiles_merged ON profiles(merged_into);
         CREATE TABLE events(profile_id TEXT, time INTEGER, event TEXT, revenue REAL,
                             properties TEXT);
         CREATE INDEX events_by_profile ON events(profile_id, time);",
    )
    .unwrap();
    sql.create_scalar_function(
        "regexp",
        2,
        rusqlite::functions::FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let pattern: String = ctx.get(0)?;
            let text: Option<String> = ctx.get(1)?;
            let re = regex::Regex::new(&pattern)
                .map_err(|e| rusqlite::Error::UserFunctionError(Box::new(e)))?;
            Ok(text.map(|t| re.is_match(&t)))
        },
    )
    .unwrap();
    // Some profiles were merged into a later one by `alias` (chains included): their
    // events belong to the end of the chain and they are in no segment.
    let mut into: Vec<usize> = (0..profiles).collect();
    for (p, slot) in into.iter_mut().enumerate().take(profiles.saturating_sub(1)) {
        if chance(&mut rng, 0.12) {
            *slot = p + 1 + rng.below((profiles - p - 1) as u64) as usize;
        }
    }
    let survivor = |mut p: usize| {
        while into[p] != p {
            p = into[p];
        }
        p
    };
    let mut builder = EventTableBuilder::default();
    let mut used = BTreeSet::new();
    let mut profile_rows: Vec<Vec<Cell<'static>>> = Vec::new();
    let mut event_rows: Vec<[Cell<'static>; 5]> = Vec::new();
    for p in 0..profiles {
        // External ids whose byte order differs from the dense order (RFM tie-breaks).
        let id = loop {
            // `U2` < `u1` in bytes, not in a linguistic collation (RFM tie-breaks).
            let prefix = if chance(&mut rng, 0.3) { "U" } else { "u" };
            let id = format!("{prefix}{}", rng.below(100_000));
            if used.insert(id.clone()) {
                break id;
            }
        };
        let mut values: HashMap<&str, Value> = HashMap::new();
        if chance(&mut rng, 0.85) {
            values.insert("age", Value::Int(18 + rng.below(60) as i64));
        }
        if chance(&mut rng, 0.85) {
            values.insert("score", Value::Float(half(&mut rng, -5, 5)));
        }
        if chance(&mut rng, 0.85) {
            values.insert("city", Value::Str(pick(&mut rng, &CITIES).to_string()));
        }
        if chance(&mut rng, 0.85) {
            values.insert("vip", Value::Bool(chance(&mut rng, 0.3)));
        }
        if chance(&mut rng, 0.85) {
            let t = START + rng.below(120) as i64 * DAY_MS + rng.below(24) as i64 * HOUR_MS;
            values.insert("signup", Value::Time(Timestamp(t)));
        }
        if chance(&mut rng, 0.85) {
            let set: Vec<String> = TAGS
                .iter()
                .filter(|_| chance(&mut rng, 0.35))
                .map(|s| s.to_string())
                .collect();
            values.insert("tags", Value::Set(set));
        }
        let column = |name: &str| -> rusqlite::types::Value {
            use rusqlite::types::Value as V;
            match values.get(name) {
                None => V::Null,
                Some(Value::Int(i)) => V::Integer(*i),
                Some(Value::Float(x)) => V::Real(*x),
                Some(Value::Str(s)) => V::Text(s.clone()),
                Some(Value::Bool(b)) => V::Integer(i64::from(*b)),
                Some(Value::Time(t)) => V::Integer(t.0),
                Some(Value::Set(items)) => V::Text(serde_json::to_string(items).unwrap()),
            }
        };
        sql.execute(
            "INSERT INTO profiles VALUES (?1, NULL, ?2, ?3, ?4, ?5, ?6, ?7)",
            rusqlite::params![
                id,
                column("age"),
                column("score"),
                column("city"),
                column("vip"),
                column("signup"),
                column("tags")
            ],
        )
        .unwrap();
        let mut row = vec![Cell::Text(id.clone().into()), Cell::Null];
        for (name, _) in traits() {
            let value = values.get(name.as_str()).cloned();
            row.push(match Cell::of(&value) {
                Cell::Text(t) => Cell::Text(t.into_owned().into()),
                Cell::Null => Cell::Null,
                Cell::Bool(b) => Cell::Bool(b),
                Cell::Int(i) => Cell::Int(i),
                Cell::Float(x) => Cell::Float(x),
            });
        }
        profile_rows.push(row);
        let pid = table.push(&id, &values);
        assert_eq!(pid as usize, p);
        if survivor(p) != p {
            table.retired.insert(pid);
        }

        let n = match rng.below(5) {
            0 => 0,
            1 => 1 + rng.below(3),
            _ => rng.below(25),
        };
        for _ in 0..n {
            // Whole hours over 120 days, half-hours now and then: many same-instant ties.
            let mut time = START + rng.below(120 * 24) as i64 * HOUR_MS;
            if chance(&mut rng, 0.1) {
                time += HOUR_MS / 2;
            }
            let name = *pick(&mut rng, &EVENT_NAMES);
            let revenue = match (name, rng.below(10)) {
                ("order_completed", 0..=6) | (_, 0) => Some(half(&mut rng, 1, 80)),
                _ => None,
            };
            let properties = random_properties(&mut rng);
            let row = builder.push(survivor(p) as u32, time, name, revenue);
            for (key, value) in properties.as_object().unwrap() {
                match value {
                    Json::Number(x) => {
                        builder.set_property(row, key, PropertyValue::Number(x.as_f64().unwrap()))
                    }
                    Json::String(s) => builder.set_property(row, key, PropertyValue::Text(s)),
                    Json::Bool(b) => builder.set_property(row, key, PropertyValue::Bool(*b)),
                    Json::Null => {}
                    list => {
                        let text = list.to_string();
                        builder.set_property(row, key, PropertyValue::Text(&text))
                    }
                }
            }
            event_rows.push([
                Cell::Text(id.clone().into()),
                Cell::Int(time),
                Cell::Text(name.to_string().into()),
                revenue.map_or(Cell::Null, Cell::Float),
                Cell::Text(properties.to_string().into()),
            ]);
            sql.execute(
                "INSERT INTO events VALUES (?1, ?2, ?3, ?4, ?5)",
                rusqlite::params![id, time, name, revenue, properties.to_string()],
            )
            .unwrap();
        }
    }
    for (p, row) in profile_rows.iter_mut().enumerate() {
        if survivor(p) != p {
            row[1] = Cell::Text(
                table
                    .external_ids
                    .get(survivor(p) as u32)
                    .to_string()
                    .into(),
            );
            sql.execute(
                "UPDATE profiles SET merged_into = ?1 WHERE id = ?2",
                [
                    table.external_ids.get(survivor(p) as u32),
                    table.external_ids.get(p as u32),
                ],
            )
            .unwrap();
        }
    }
    let events = builder.finish(profiles);
    Data {
        table,
        events,
        sql,
        profile_rows,
        event_rows,
    }
}

/// Random conditions that fit the random data's names and types.
struct Gen {
    rng: Rng,
}

impl Gen {
    fn op(&mut self) -> CompareOp {
        *pick(
            &mut self.rng,
            &[
                CompareOp::Eq,
                CompareOp::Ne,
                CompareOp::Lt,
                CompareOp::Le,
                CompareOp::Gt,
                CompareOp::Ge,
            ],
        )
    }

    fn time(&mut self) -> Timestamp {
        Timestamp(START + self.rng.below(130) as i64 * DAY_MS + self.rng.below(2) as i64 * HOUR_MS)
    }

    fn window(&mut self) -> Window {
        match self.rng.below(3) {
            0 => Window::All,
            1 => Window::Within {
                ms: (1 + self.rng.below(60)) as i64 * DAY_MS,
            },
            _ => {
                let a = self.time();
                let b = Timestamp(a.0 + self.rng.below(40) as i64 * DAY_MS);
                Window::Between { from: a, to: b }
            }
        }
    }

    fn name_literal(&mut self, ty: TraitType) -> Literal {
        match ty {
            TraitType::Integer => Literal::Int(self.rng.below(90) as i64),
            TraitType::Float => Literal::Float(half(&mut self.rng, -6, 6)),
            TraitType::String => Literal::Str(pick(&mut self.rng, &CITIES).to_string()),
            TraitType::Bool => Literal::Bool(chance(&mut self.rng, 0.5)),
            TraitType::Timestamp => Literal::Time(self.time()),
            TraitType::StringSet => unreachable!("sets are tested with has"),
        }
    }

    /// A trait or metric and a literal of its type.
    fn scalar(&mut self) -> (String, Literal) {
        let rng = &mut self.rng;
        let (name, lit) = match rng.below(14) {
            0 => ("age", Literal::Int(18 + rng.below(62) as i64)),
            1 => ("score", Literal::Float(half(rng, -5, 5))),
            2 => ("city", Literal::Str(pick(rng, &CITIES).to_string())),
            3 => ("vip", Literal::Bool(chance(rng, 0.5))),
            4 => return ("signup".into(), self.name_literal(TraitType::Timestamp)),
            5 => ("visits", Literal::Int(rng.below(12) as i64)),
            6 => ("orders", Literal::Int(rng.below(6) as i64)),
            7 => ("revenue", Literal::Float(half(rng, 0, 200))),
            8 => ("aov", Literal::Int(rng.below(60) as i64)),
            9 => ("recency_days", Literal::Int(rng.below(100) as i64)),
            10 => ("tenure_days", Literal::Int(rng.below(120) as i64)),
            11 => (
                *pick(rng, &["rfm_r", "rfm_f", "rfm_m"]),
                Literal::Int(1 + rng.below(5) as i64),
            ),
            12 => (
                "rfm",
                Literal::Str(format!(
                    "{}{}{}",
                    1 + rng.below(5),
                    1 + rng.below(5),
                    1 + rng.below(5)
                )),
            ),
            _ => {
                let name = *pick(rng, &["first_seen", "last_seen", "last_order_at"]);
                return (name.into(), self.name_literal(TraitType::Timestamp));
            }
        };
        (name.to_string(), lit)
    }

    fn arith(&mut self, names: &[&str]) -> Operand {
        let leaf = |g: &mut Gen| -> Operand {
            if chance(&mut g.rng, 0.25) {
                Operand::Number(half(&mut g.rng, -3, 10))
            } else {
                Operand::Name(pick(&mut g.rng, names).to_string())
            }
        };
        let op = *pick(
            &mut self.rng,
            &[ArithOp::Add, ArithOp::Sub, ArithOp::Mul, ArithOp::Div],
        );
        Operand::Arith {
            op,
            left: Box::new(Operand::Name(pick(&mut self.rng, names).to_string())),
            right: Box::new(leaf(self)),
        }
    }

    /// A profile-level leaf.
    fn leaf(&mut self) -> Condition {
        match self.rng.below(12) {
            0..=2 => {
                let (name, right) = self.scalar();
                Condition::Compare {
                    left: Operand::Name(name),
                    op: self.op(),
                    right,
                }
            }
            3 => {
                let (name, first) = self.scalar();
                let mut values = vec![first];
                for _ in 0..self.rng.below(3) {
                    let (_, v) = loop {
                        let (n, v) = self.scalar();
                        if n == name {
                            break (n, v);
                        }
                    };
                    values.push(v);
                }
                Condition::In {
                    operand: Operand::Name(name),
                    values,
                    negated: chance(&mut self.rng, 0.5),
                }
            }
            4 => {
                let (name, low) = self.scalar();
                let high = loop {
                    let (n, v) = self.scalar();
                    if n == name {
                        break v;
                    }
                };
                Condition::Between {
                    operand: Operand::Name(name),
                    low,
                    high,
                }
            }
            5 => {
                let names = [
                    "age",
                    "city",
                    "tags",
                    "signup",
                    "aov",
                    "rfm",
                    "recency_days",
                    "vip",
                ];
                Condition::Exists {
                    name: pick(&mut self.rng, &names).to_string(),
                    negated: chance(&mut self.rng, 0.5),
                }
            }
            6 => {
                let op = *pick(
                    &mut self.rng,
                    &[
                        TextOp::Contains,
                        TextOp::StartsWith,
                        TextOp::EndsWith,
                        TextOp::Matches,
                    ],
                );
                let value = match op {
                    TextOp::Matches => pick(&mut self.rng, &["^B", "e.?n$", "[aä]r", "^$"]),
                    _ => pick(&mut self.rng, &["B", "er", "n", "", "é", "Budapest"]),
                };
                Condition::Text {
                    name: "city".into(),
                    op,
                    value: value.to_string(),
                }
            }
            7 => Condition::Has {
                name: "tags".into(),
                value: pick(&mut self.rng, &TAGS).to_string(),
            },
            8 => Condition::Compare {
                left: self.arith(&["age", "score", "orders", "revenue", "visits", "aov"]),
                op: self.op(),
                right: Literal::Float(half(&mut self.rng, -10, 80)),
            },
            9 => Condition::InSegment {
                segment: pick(&mut self.rng, &["adults", "active_adults"]).to_string(),
            },
            _ => self.behaviour(),
        }
    }

    fn event(&mut self) -> EventFilter {
        let name = pick(&mut self.rng, &EVENT_NAMES).to_string();
        let filter = chance(&mut self.rng, 0.5).then(|| Box::new(self.property_condition(2)));
        EventFilter { name, filter }
    }

    fn property_leaf(&mut self) -> Condition {
        let rng = &mut self.rng;
        let prop = *pick(rng, &["price", "path", "flag", "items", "revenue", "when"]);
        let literal = |rng: &mut Rng| match rng.below(6) {
            0 | 1 => Literal::Float(half(rng, 0, 60)),
            2 => Literal::Int(12),
            3 => Literal::Str(pick(rng, &PATHS).to_string()),
            4 => Literal::Bool(chance(rng, 0.5)),
            _ => Literal::Time(Timestamp(
                START + (31 + rng.below(29) as i64) * DAY_MS + rng.below(24) as i64 * HOUR_MS,
            )),
        };
        match rng.below(9) {
            0..=2 => Condition::Compare {
                left: Operand::Name(prop.into()),
                op: self.op(),
                right: literal(&mut self.rng),
            },
            3 => Condition::In {
                operand: Operand::Name(prop.into()),
                values: vec![literal(rng), literal(rng)],
                negated: chance(rng, 0.5),
            },
            4 => Condition::Between {
                operand: Operand::Name(prop.into()),
                low: literal(rng),
                high: literal(rng),
            },
            5 => Condition::Exists {
                name: prop.into(),
                negated: chance(rng, 0.5),
            },
            6 => Condition::Text {
                name: prop.into(),
                op: *pick(
                    rng,
                    &[
                        TextOp::Contains,
                        TextOp::StartsWith,
                        TextOp::EndsWith,
                        TextOp::Matches,
                    ],
                ),
                value: pick(rng, &["/winter", "gloves", "winter", "^/b", "a"]).to_string(),
            },
            7 => Condition::Has {
                name: prop.into(),
                value: pick(rng, &TAGS).to_string(),
            },
            _ => Condition::Compare {
                left: self.arith(&["price", "revenue"]),
                op: self.op(),
                right: Literal::Float(half(&mut self.rng, 0, 60)),
            },
        }
    }

    fn property_condition(&mut self, depth: u32) -> Condition {
        if depth == 0 || chance(&mut self.rng, 0.6) {
            return self.property_leaf();
        }
        match self.rng.below(3) {
            0 => Condition::And {
                all: vec![
                    self.property_condition(depth - 1),
                    self.property_condition(depth - 1),
                ],
            },
            1 => Condition::Or {
                any: vec![
                    self.property_condition(depth - 1),
                    self.property_condition(depth - 1),
                ],
            },
            _ => Condition::Not {
                not: Box::new(self.property_condition(depth - 1)),
            },
        }
    }

    fn behaviour(&mut self) -> Condition {
        match self.rng.below(7) {
            0 => Condition::Count {
                event: self.event(),
                window: self.window(),
                op: self.op(),
                value: self.rng.below(5) as f64,
            },
            1 => Condition::Aggregate {
                function: *pick(
                    &mut self.rng,
                    &[
                        AggregateFn::Sum,
                        AggregateFn::Avg,
                        AggregateFn::Min,
                        AggregateFn::Max,
                    ],
                ),
                property: pick(&mut self.rng, &["price", "revenue", "path"]).to_string(),
                event: self.event(),
                window: self.window(),
                op: self.op(),
                value: half(&mut self.rng, 0, 100),
            },
            2 => Condition::Did {
                event: self.event(),
                window: self.window(),
            },
            3 => Condition::LastBefore {
                event: self.event(),
                ago_ms: (1 + self.rng.below(60) as i64) * DAY_MS,
            },
            4 => Condition::First {
                event: self.event(),
                window: self.window(),
            },
            _ => Condition::Sequence {
                first: self.event(),
                then: self.event(),
                negated: chance(&mut self.rng, 0.5),
                within_ms: (1 + self.rng.below(10) as i64) * DAY_MS / 2,
                window: self.window(),
            },
        }
    }

    fn condition(&mut self, depth: u32) -> Condition {
        if depth == 0 || chance(&mut self.rng, 0.4) {
            return self.leaf();
        }
        match self.rng.below(3) {
            0 => Condition::And {
                all: (0..2 + self.rng.below(2))
                    .map(|_| self.condition(depth - 1))
                    .collect(),
            },
            1 => Condition::Or {
                any: (0..2 + self.rng.below(2))
                    .map(|_| self.condition(depth - 1))
                    .collect(),
            },
            _ => Condition::Not {
                not: Box::new(self.condition(depth - 1)),
            },
        }
    }
}

fn stored_segments() -> BTreeMap<String, Condition> {
    [
        ("adults", "age >= 30"),
        (
            "active_adults",
            r#"in_segment("adults") and did(view where path starts_with "/winter") within 30d"#,
        ),
    ]
    .into_iter()
    .map(|(n, c)| (n.to_string(), microseg_core::condition::parse(c).unwrap()))
    .collect()
}

fn batch_members(
    table: &ProfileTable,
    data: &Data,
    metrics: &Metrics,
    segments: &BTreeMap<String, Condition>,
    as_of: Timestamp,
    c: &Condition,
) -> Result<BTreeSet<String>, EvalError> {
    let dataset = Dataset {
        profiles: table,
        metrics: Some(metrics),
        events: Some(&data.events),
        as_of,
        segments: Some(segments),
    };
    Ok(dataset
        .evaluate(c)?
        .iter()
        .map(|p| data.table.external_ids.get(p).to_string())
        .collect())
}

fn sql_members(data: &Data, sql: &str) -> BTreeSet<String> {
    let mut stmt = data
        .sql
        .prepare(sql)
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    let rows = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<BTreeSet<_>, _>>()
        .unwrap_or_else(|e| panic!("{e}\n{sql}"));
    rows
}

/// Every odd property name gives the same members in batch and in SQL, for each way a
/// condition reads a property (a filter and an aggregate).
#[test]
fn odd_property_names_agree_in_batch_and_sql() {
    let segments = stored_segments();
    let traits = traits();
    let config = MetricsConfig::default();
    let data = random_data(7, 200);
    let as_of = Timestamp(START + 125 * DAY_MS);
    let metrics = compute_metrics(&data.events, &data.table.external_ids, as_of, &config);
    let ctx = SqlContext {
        traits: &traits,
        segments: &segments,
        metrics: &config,
        as_of,
        dialect: Dialect::Sqlite,
    };
    for name in ODD_NAMES {
        let filter = Some(Box::new(Condition::Compare {
            left: Operand::Name(name.into()),
            op: CompareOp::Eq,
            right: Literal::Int(1),
        }));
        let view = EventFilter {
            name: "view".into(),
            filter,
        };
        let conditions = [
            Condition::Did {
                event: view.clone(),
                window: Window::All,
            },
            Condition::Aggregate {
                function: AggregateFn::Sum,
                property: name.into(),
                event: EventFilter {
                    name: "view".into(),
                    filter: None,
                },
                window: Window::All,
                op: CompareOp::Ge,
                value: 3.0,
            },
        ];
        for c in conditions {
            let text = c.to_string();
            assert_eq!(microseg_core::condition::parse(&text).unwrap(), c, "{text}");
            let batch = batch_members(&data.table, &data, &metrics, &segments, as_of, &c).unwrap();
            let sql = compile(&c, &ctx).unwrap();
            assert_eq!(sql_members(&data, &sql), batch, "{text}\n{sql}");
            assert!(
                !batch.is_empty() && batch.len() < 200,
                "{text} splits nobody"
            );
        }
    }
}

#[test]
fn batch_and_sql_agree_on_random_conditions() {
    let segments = stored_segments();
    let traits = traits();
    let config = MetricsConfig::default();
    let mut tested = 0;
    let mut nonempty = 0;
    for seed in 0..3u64 {
        let data = random_data(seed, 150);
        let mut unindexed = data.table.clone();
        unindexed.indexes = IndexCache::disabled();
        // Every trait kept sparse (as rarely-set traits are).
        let mut sparse = data.table.clone();
        sparse.columns = std::mem::take(&mut sparse.columns)
            .into_iter()
            .map(|(name, c)| (name, c.into_sparse()))
            .collect();
        for (round, as_of) in [
            Timestamp(START + 70 * DAY_MS),
            Timestamp(START + 125 * DAY_MS + 7 * HOUR_MS),
        ]
        .into_iter()
        .enumerate()
        {
            let metrics = compute_metrics(&data.events, &data.table.external_ids, as_of, &config);
            let mut gen = Gen {
                rng: Rng::for_stream(seed, round as u64 + 1),
            };
            for _ in 0..400 {
                let c = gen.condition(3);
                // Every generated condition is in the language: it prints and parses back.
                let text = c.to_string();
                let parsed = microseg_core::condition::parse(&text)
                    .unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_eq!(parsed, c, "{text}");
                let ctx = SqlContext {
                    traits: &traits,
                    segments: &segments,
                    metrics: &config,
                    as_of,
                    dialect: Dialect::Sqlite,
                };
                let batch = batch_members(&data.table, &data, &metrics, &segments, as_of, &c);
                // The same without bitmap indexes (every leaf scans its column).
                let scanned = batch_members(&unindexed, &data, &metrics, &segments, as_of, &c);
                assert_eq!(batch, scanned, "indexed vs scanned: {text}");
                let from_sparse = batch_members(&sparse, &data, &metrics, &segments, as_of, &c);
                assert_eq!(batch, from_sparse, "dense vs sparse: {text}");
                let sql = compile(&c, &ctx);
                let (batch, sql) = match (batch, sql) {
                    (Ok(b), Ok(s)) => (b, s),
                    (Err(a), Err(b)) => {
                        assert_eq!(a, b, "{text}");
                        continue;
                    }
                    (b, s) => panic!("{text}: batch {b:?}, sql {s:?}"),
                };
                let from_sql = sql_members(&data, &sql);
                if batch != from_sql {
                    let only_batch: Vec<_> = batch.difference(&from_sql).collect();
                    let only_sql: Vec<_> = from_sql.difference(&batch).collect();
                    panic!(
                        "seed {seed}, as of {as_of}: {text}\nonly batch: {only_batch:?}\n\
                         only sql: {only_sql:?}\n{sql}"
                    );
                }
                tested += 1;
                if !batch.is_empty() && batch.len() < 150 {
                    nonempty += 1;
                }
            }
        }
    }
    eprintln!("tested {tested}, split {nonempty}");
    // The test means something only if most conditions are valid and split the profiles.
    assert!(tested >= 2000, "only {tested} conditions compared");
    assert!(
        nonempty >= tested / 3,
        "only {nonempty} of {tested} split the profiles"
    );
}

/// Conditions written by hand for the engines: every construct of the language over the
/// random data's names (sequences with and without `then not` among them).
const HAND_WRITTEN: [&str; 23] = [
    r#"view then order_completed within 2d"#,
    r#"view where path starts_with "/winter" then not order_completed within 3d"#,
    r#"view then not cart within 1d, within 30d"#,
    r#"cart then order_completed where price > 10 within 12h, between @2024-02-01 and @2024-03-15"#,
    r#"last(order_completed) before 20d ago"#,
    r#"first(order_completed) within 40d"#,
    r#"count(view, within 30d) >= 3 and not did(order_completed) within 10d"#,
    r#"count(cart) < 2"#,
    r#"sum(revenue of order_completed, within 60d) > 50"#,
    r#"sum(price of view) = 0"#,
    r#"avg(price of view where items has "road") >= 20"#,
    r#"did(view where when > @2024-02-10T12:00:00Z and flag = true)"#,
    r#"did(view where items has "x y" or path matches "^/b")"#,
    r#"did(cart where `it's` = 1 and `q"uote` >= 1)"#,
    r#"city matches "e.?n$" and tags has "road""#,
    r#"city starts_with "B" and not city ends_with "n""#,
    r#"city < "Bern" or city >= "amsterdam""#,
    r#"in_segment("active_adults") or vip = true"#,
    r#"orders >= 2 and aov > 20"#,
    r#"rfm = "555" or (rfm_r >= 4 and rfm_f <= 2)"#,
    r#"recency_days between 10 and 40 and visits > 3"#,
    r#"revenue / orders > 30 and tenure_days > 60"#,
    r#"signup > @2024-03-01 and score * 2 < 3"#,
];

/// Where the test command's engines are: the DuckDB CLI, a PostgreSQL URL and the CA of
/// its TLS certificate (the database's collation is ICU en-US, not bytes), a Spark Connect
/// URL (set by `./test`, which installs and starts them).
fn engines() -> (PathBuf, String, PathBuf, String) {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: run ./test, which installs the DuckDB CLI and starts \
                 PostgreSQL and Spark Connect for this test (tests/warehouse/)"
            )
        })
    };
    (
        PathBuf::from(var("MICROSEG_DUCKDB")),
        var("MICROSEG_POSTGRES_URL"),
        PathBuf::from(var("MICROSEG_POSTGRES_CA")),
        var("MICROSEG_SPARK_URL"),
    )
}

/// Random and hand-written conditions over the same generated data give the same members
/// in the batch evaluator as in DuckDB (over the Parquet export's layout), PostgreSQL and
/// Spark, profile by profile.
#[test]
fn batch_and_warehouses_agree_profile_by_profile() {
    let (cli, pg_url, pg_ca, spark_url) = engines();
    let segments = stored_segments();
    let traits = traits();
    let trait_list: Vec<(String, TraitType)> = traits.clone().into_iter().collect();
    let config = MetricsConfig::default();
    let data = random_data(11, 150);
    let dir = tempfile::tempdir().unwrap();
    // The layout as Parquet, as `warehouse export` writes it.
    let mut w = TableWriter::create(
        &dir.path().join("profiles.parquet"),
        &crate::parquet::profile_columns(&trait_list),
    )
    .unwrap();
    for row in &data.profile_rows {
        w.push(row).unwrap();
    }
    w.finish().unwrap();
    let mut w = TableWriter::create(
        &dir.path().join("events.parquet"),
        &crate::parquet::event_columns(),
    )
    .unwrap();
    for row in &data.event_rows {
        w.push(row).unwrap();
    }
    w.finish().unwrap();

    let mut duck = DuckDb::new(&dir.path().join("w.duckdb"), Some(&cli), false);
    duck.load(dir.path()).unwrap();
    let mut pg = Postgres::connect(&pg_url, None, Some(&pg_ca)).unwrap();
    pg.load_rows(
        &trait_list,
        |push| data.profile_rows.iter().try_for_each(|r| push(r)),
        |push| data.event_rows.iter().try_for_each(|r| push(r)),
    )
    .unwrap();
    let mut spark = Spark::connect(&spark_url).unwrap();
    spark.load(&dir.path().display().to_string()).unwrap();

    let mut conditions: Vec<Condition> = HAND_WRITTEN
        .iter()
        .map(|t| microseg_core::condition::parse(t).unwrap_or_else(|e| panic!("{t}: {e}")))
        .collect();
    let mut gen = Gen {
        rng: Rng::for_stream(11, 9),
    };
    let random = std::env::var("MICROSEG_WAREHOUSE_CONDITIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(150);
    conditions.extend((0..random).map(|_| gen.condition(3)));
    let as_of = Timestamp(START + 125 * DAY_MS + 7 * HOUR_MS);
    let metrics = compute_metrics(&data.events, &data.table.external_ids, as_of, &config);
    let (mut compared, mut split) = (0, 0);
    let mut sessions: [(Dialect, &mut dyn crate::Session); 3] = [
        (Dialect::DuckDb, &mut duck),
        (Dialect::Postgres, &mut pg),
        (Dialect::Spark, &mut spark),
    ];
    for c in &conditions {
        let text = c.to_string();
        let Ok(batch) = batch_members(&data.table, &data, &metrics, &segments, as_of, c) else {
            continue;
        };
        for (dialect, session) in sessions.iter_mut() {
            let ctx = SqlContext {
                traits: &traits,
                segments: &segments,
                metrics: &config,
                as_of,
                dialect: *dialect,
            };
            let sql = compile(c, &ctx).unwrap_or_else(|e| panic!("{text}: {e}"));
            let got: BTreeSet<String> = session
                .ids(&sql)
                .unwrap_or_else(|e| panic!("{}: {text}: {e}\n{sql}", dialect.name()))
                .into_iter()
                .collect();
            if got != batch {
                let only_batch: Vec<_> = batch.difference(&got).collect();
                let only_engine: Vec<_> = got.difference(&batch).collect();
                panic!(
                    "{}: {text}\nonly batch: {only_batch:?}\nonly {}: {only_engine:?}\n{sql}",
                    dialect.name(),
                    dialect.name()
                );
            }
            compared += 1;
        }
        if !batch.is_empty() && batch.len() < 150 {
            split += 1;
        }
    }
    eprintln!("compared {compared} (condition, engine) pairs; {split} conditions split");
    assert!(
        compared >= 3 * (HAND_WRITTEN.len() + random * 2 / 3),
        "{compared}"
    );
    assert!(
        split >= conditions.len() / 3,
        "only {split} split the profiles"
    );
}
