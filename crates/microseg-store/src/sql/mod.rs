//! The SQL backend: a [`Condition`] compiled to one `SELECT` over the documented
//! `profiles` / `events` layout (docs/sql.md), returning the members' external ids in a
//! column `id`.
//!
//! The SQL means exactly what the batch evaluator computes (the differential test in
//! `tests/sql_differential.rs` runs thousands of random conditions through both):
//!
//! - every leaf is wrapped in `COALESCE(.., FALSE)`, so a missing value makes a leaf false
//!   rather than NULL and `NOT` is the complement, as in the language;
//! - behavioural leaves are `p.id IN (SELECT owner ...)` over `events` (`time <= as_of`
//!   always), uncorrelated so that every engine plans them as joins: grouped with `HAVING`
//!   for counts and aggregates, a `RANGE` window for sequences;
//! - metrics come from a `WITH` clause computing them from `events` with the definitions of
//!   docs/metrics.md, only when the condition names one;
//! - `in_segment` is replaced by the segment's own condition.
//!
//! The dialects differ only in what [`Dialect`] writes (quoting, types, text and JSON
//! functions). Layout (SQLite; docs/warehouse.md for the others): `profiles(id TEXT, merged_into TEXT, <one column per trait>)`
//! with booleans as 0/1, timestamps as UTC milliseconds and string sets as JSON arrays;
//! `merged_into` is the external id of the live profile an `alias` merged this one into
//! (the end of any chain of merges), NULL for a live profile: a merged profile is in no
//! segment and its events count as the survivor's, as in the batch evaluator;
//! `events(profile_id TEXT, time INTEGER, event TEXT, revenue REAL, properties TEXT)` with
//! `time` in UTC milliseconds and `properties` a JSON object. `matches` uses the `REGEXP`
//! operator, which the `sqlite3` shell provides (applications register a function).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use microseg_core::condition::{
    AggregateFn, ArithOp, CompareOp, Condition, EventFilter, Literal, Operand, TextOp, Window,
};
use microseg_core::{Timestamp, TraitType};
use microseg_engine::columnar::json_string;
use microseg_engine::evaluate::{check_literal, EvalError};
use microseg_engine::metrics::metric_type;
use microseg_engine::models::clv::PREDICTION_NAMES;
use microseg_engine::MetricsConfig;

mod dialect;

pub use dialect::Dialect;
use dialect::Json;

/// What a condition is compiled against.
pub struct SqlContext<'a> {
    /// Trait names and types (columns of `profiles`).
    pub traits: &'a BTreeMap<String, TraitType>,
    /// Stored segments, for `in_segment`.
    pub segments: &'a BTreeMap<String, Condition>,
    /// What counts as an order and a session (for metrics).
    pub metrics: &'a MetricsConfig,
    /// The instant the condition is evaluated at.
    pub as_of: Timestamp,
    /// The SQL engine the query is for.
    pub dialect: Dialect,
}

/// Compiles `condition` to one `SELECT` in `ctx.dialect` returning the members' external
/// ids as `id`.
pub fn compile(condition: &Condition, ctx: &SqlContext<'_>) -> Result<String, EvalError> {
    let mut compiler = Compiler {
        ctx,
        d: ctx.dialect,
        path: Vec::new(),
        uses_metrics: false,
        aliases: 0,
    };
    let predicate = compiler.condition(condition)?;
    let mut sql = String::new();
    if compiler.uses_metrics {
        sql.push_str(&metrics_cte(ctx));
        sql.push_str("SELECT p.id FROM profiles p JOIN m ON m.id = p.id\n");
    } else {
        sql.push_str("SELECT p.id FROM profiles p\n");
    }
    // A profile merged into another is never a member; its events are the survivor's.
    let _ = write!(sql, "WHERE p.merged_into IS NULL AND ({predicate})");
    Ok(sql)
}

struct Compiler<'a> {
    ctx: &'a SqlContext<'a>,
    d: Dialect,
    /// Segments being inlined (to catch cycles).
    path: Vec<String>,
    uses_metrics: bool,
    /// Counter for table aliases.
    aliases: usize,
}

/// A name's column and type.
struct Source {
    sql: String,
    ty: TraitType,
}

/// The events one behavioural leaf reads: `FROM`, the survivor owning each event, `WHERE`.
struct Events {
    /// The alias of `events`.
    e: String,
    from: String,
    owner: String,
    filter: String,
    time: String,
}

impl Compiler<'_> {
    fn source(&mut self, name: &str) -> Result<Source, EvalError> {
        if let Some(&ty) = self.ctx.traits.get(name) {
            return Ok(Source {
                sql: format!("p.{}", self.d.ident(name)),
                ty,
            });
        }
        match metric_type(name) {
            Some(_) if PREDICTION_NAMES.contains(&name) => Err(EvalError::Unsupported(
                "a CLV prediction (p_alive, predicted_orders_90d, expected_aov, clv_12m) in SQL",
            )),
            Some(ty) => {
                self.uses_metrics = true;
                Ok(Source {
                    sql: format!("m.{}", self.d.ident(name)),
                    ty,
                })
            }
            None => Err(EvalError::UnknownName(name.to_string())),
        }
    }

    fn alias(&mut self) -> usize {
        self.aliases += 1;
        self.aliases
    }

    fn condition(&mut self, c: &Condition) -> Result<String, EvalError> {
        Ok(match c {
            Condition::And { all } if all.is_empty() => "TRUE".into(),
            Condition::And { all } => self.join(all, " AND ")?,
            Condition::Or { any } if any.is_empty() => "FALSE".into(),
            Condition::Or { any } => self.join(any, " OR ")?,
            Condition::Not { not } => format!("NOT {}", self.condition(not)?),
            Condition::Compare { left, op, right } => leaf(self.compare(left, *op, right)?),
            Condition::In {
                operand,
                values,
                negated,
            } => {
                let any = values
                    .iter()
                    .map(|v| self.compare(operand, CompareOp::Eq, v).map(leaf))
                    .collect::<Result<Vec<_>, _>>()?;
                let any = or_list(&any);
                if *negated {
                    format!("({} AND NOT {any})", leaf(self.present(operand)?))
                } else {
                    any
                }
            }
            Condition::Between { operand, low, high } => {
                let lo = self.compare(operand, CompareOp::Ge, low)?;
                let hi = self.compare(operand, CompareOp::Le, high)?;
                leaf(format!("{lo} AND {hi}"))
            }
            Condition::Exists { name, negated } => {
                let present = leaf(self.present(&Operand::Name(name.clone()))?);
                if *negated {
                    format!("NOT {present}")
                } else {
                    present
                }
            }
            Condition::Text { name, op, value } => {
                let source = self.source(name)?;
                if source.ty != TraitType::String {
                    return Err(EvalError::WrongType {
                        name: name.clone(),
                        ty: source.ty,
                        hint: "text tests need a string trait".into(),
                    });
                }
                leaf(text_test(self.d, &source.sql, *op, value))
            }
            Condition::Has { name, value } => {
                let source = self.source(name)?;
                if source.ty != TraitType::StringSet {
                    return Err(EvalError::WrongType {
                        name: name.clone(),
                        ty: source.ty,
                        hint: "`has` needs a string set; compare strings with = or contains".into(),
                    });
                }
                leaf(self.d.set_has(&source.sql, value))
            }
            Condition::InSegment { segment } => {
                if let Some(at) = self.path.iter().position(|p| p == segment) {
                    let mut cycle = self.path[at..].to_vec();
                    cycle.push(segment.clone());
                    return Err(EvalError::Cycle(cycle));
                }
                let inner = self
                    .ctx
                    .segments
                    .get(segment)
                    .ok_or_else(|| EvalError::UnknownSegment(segment.clone()))?;
                self.path.push(segment.clone());
                let sql = self.condition(inner)?;
                self.path.pop();
                format!("({sql})")
            }
            behavioural => format!("({})", self.behaviour(behavioural)?),
        })
    }

    fn join(&mut self, cs: &[Condition], sep: &str) -> Result<String, EvalError> {
        let parts = cs
            .iter()
            .map(|c| self.condition(c))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(format!("({})", parts.join(sep)))
    }

    /// `left OP right` as SQL that may be NULL when a value is missing.
    fn compare(
        &mut self,
        left: &Operand,
        op: CompareOp,
        right: &Literal,
    ) -> Result<String, EvalError> {
        let Operand::Name(name) = left else {
            let Some(target) = right.as_number() else {
                return Err(EvalError::WrongType {
                    name: left.to_string(),
                    ty: TraitType::Float,
                    hint: "arithmetic compares with a number".into(),
                });
            };
            return Ok(format!(
                "{} {} {}",
                self.numeric(left)?,
                compare_op(op),
                number(target)
            ));
        };
        let source = self.source(name)?;
        check_literal(name, source.ty, right)?;
        Ok(format!(
            "{} {} {}",
            source.sql,
            compare_op(op),
            literal(self.d, right)
        ))
    }

    /// SQL true when `operand` has a value.
    fn present(&mut self, operand: &Operand) -> Result<String, EvalError> {
        Ok(match operand {
            Operand::Name(name) => format!("{} IS NOT NULL", self.source(name)?.sql),
            arith => format!("{} IS NOT NULL", self.numeric(arith)?),
        })
    }

    /// Arithmetic over numeric traits and metrics, as floats (NULL when missing or / 0).
    fn numeric(&mut self, operand: &Operand) -> Result<String, EvalError> {
        Ok(match operand {
            Operand::Number(x) => float(self.d, *x),
            Operand::Name(name) => {
                let source = self.source(name)?;
                if !matches!(source.ty, TraitType::Integer | TraitType::Float) {
                    return Err(EvalError::WrongType {
                        name: name.clone(),
                        ty: source.ty,
                        hint: "arithmetic needs numbers".into(),
                    });
                }
                format!("CAST({} AS {})", source.sql, self.d.real())
            }
            Operand::Arith { op, left, right } => {
                let (l, r) = (self.numeric(left)?, self.numeric(right)?);
                arith(*op, &l, &r)
            }
        })
    }

    /// A behavioural leaf for profile `p`: `p.id` in (or not in) a set of event owners
    /// (never NULL, so no `COALESCE`).
    fn behaviour(&mut self, c: &Condition) -> Result<String, EvalError> {
        let as_of = self.ctx.as_of.0;
        Ok(match c {
            Condition::Count {
                event,
                window,
                op,
                value,
            } => {
                let ev = self.events(event, window)?;
                let test = format!("count(*) {} {}", compare_op(*op), number(*value));
                grouped(&ev, &test, holds(0.0, *op, *value))
            }
            Condition::Aggregate {
                function,
                property,
                event,
                window,
                op,
                value,
            } => {
                let ev = self.events(event, window)?;
                let x = prop_number(self.d, &ev.e, property);
                let (aggregate, zero) = match function {
                    AggregateFn::Sum => (self.d.sum_or_zero(&x), holds(0.0, *op, *value)),
                    AggregateFn::Avg => (format!("avg({x})"), false),
                    AggregateFn::Min => (format!("min({x})"), false),
                    AggregateFn::Max => (format!("max({x})"), false),
                };
                let test = format!("{aggregate} {} {}", compare_op(*op), number(*value));
                grouped(&ev, &test, zero)
            }
            Condition::Did { event, window } => {
                let ev = self.events(event, window)?;
                format!(
                    "p.id IN (SELECT {} FROM {} WHERE {})",
                    ev.owner, ev.from, ev.filter
                )
            }
            Condition::LastBefore { event, ago_ms } => {
                let ev = self.events(event, &Window::All)?;
                let test = format!("max({}) < {}", ev.time, as_of.saturating_sub(*ago_ms));
                grouped(&ev, &test, false)
            }
            Condition::First { event, window } => {
                let ev = self.events(event, &Window::All)?;
                let first = format!("min({})", ev.time);
                let test = match window {
                    Window::All => format!("{first} IS NOT NULL"),
                    Window::Within { ms } => format!("{first} >= {}", as_of.saturating_sub(*ms)),
                    Window::Between { from, to } => {
                        format!("{first} BETWEEN {} AND {}", from.0, to.0)
                    }
                };
                grouped(&ev, &test, false)
            }
            Condition::Sequence {
                first,
                then,
                negated: false,
                within_ms,
                window,
            } => {
                // Each start looks ahead (t, t + within] in its owner's events for a second.
                let starts = self.events(first, window)?;
                let (e, q) = (starts.e.clone(), self.alias());
                let seconds = self.events_as(then, &Window::All, &e, q)?;
                format!(
                    "p.id IN (SELECT owner FROM (SELECT owner, is_start, \
                     count(CASE WHEN is_then = 1 THEN 1 END) OVER (PARTITION BY owner \
                     ORDER BY time RANGE BETWEEN 1 FOLLOWING AND {within_ms} FOLLOWING) AS later \
                     FROM (SELECT {} AS owner, {e}.time AS time, \
                     CASE WHEN {} THEN 1 ELSE 0 END AS is_start, \
                     CASE WHEN {} THEN 1 ELSE 0 END AS is_then \
                     FROM {} WHERE ({}) OR ({})) x{q}) y{q} WHERE is_start = 1 AND later > 0)",
                    starts.owner,
                    starts.filter,
                    seconds.filter,
                    starts.from,
                    starts.filter,
                    seconds.filter
                )
            }
            Condition::Sequence {
                first,
                then,
                negated: true,
                within_ms,
                window,
            } => {
                // The last start, old enough for its time to be over, with no second in
                // (t, t + within].
                let starts = self.events(first, window)?;
                let seconds = self.events(then, &Window::All)?;
                let n = self.alias();
                format!(
                    "p.id IN (SELECT l{n}.owner FROM (SELECT {} AS owner, max({}) AS t1 FROM {} \
                     WHERE {} GROUP BY {}) l{n} LEFT JOIN (SELECT {} AS owner, {} AS time \
                     FROM {} WHERE {}) s{n} ON s{n}.owner = l{n}.owner AND s{n}.time > l{n}.t1 \
                     AND s{n}.time <= l{n}.t1 + {within_ms} \
                     WHERE l{n}.t1 + {within_ms} <= {as_of} GROUP BY l{n}.owner \
                     HAVING count(s{n}.owner) = 0)",
                    starts.owner,
                    starts.time,
                    starts.from,
                    starts.filter,
                    starts.owner,
                    seconds.owner,
                    seconds.time,
                    seconds.from,
                    seconds.filter
                )
            }
            _ => {
                return Err(EvalError::Unsupported(
                    "this condition as a behavioural leaf",
                ))
            }
        })
    }

    /// The visible events named by `event`, in `window`, each with the live profile that
    /// owns it (a merged profile's events are its survivor's).
    fn events(&mut self, event: &EventFilter, window: &Window) -> Result<Events, EvalError> {
        let n = self.alias();
        self.events_as(event, window, &format!("e{n}"), n)
    }

    /// [`Compiler::events`] with the events table under alias `e` (profiles under `q{n}`).
    fn events_as(
        &mut self,
        event: &EventFilter,
        window: &Window,
        e: &str,
        n: usize,
    ) -> Result<Events, EvalError> {
        let as_of = self.ctx.as_of.0;
        let q = format!("q{n}");
        let mut filter = format!(
            "{e}.event = {} AND {e}.time <= {as_of}",
            self.d.string(&event.name)
        );
        match window {
            Window::All => {}
            Window::Within { ms } => {
                let _ = write!(filter, " AND {e}.time >= {}", as_of.saturating_sub(*ms));
            }
            Window::Between { from, to } => {
                let _ = write!(filter, " AND {e}.time BETWEEN {} AND {}", from.0, to.0);
            }
        }
        if let Some(f) = &event.filter {
            let _ = write!(filter, " AND {}", property_condition(self.d, e, f)?);
        }
        Ok(Events {
            e: e.to_string(),
            from: format!("events {e} LEFT JOIN profiles {q} ON {q}.id = {e}.profile_id"),
            owner: format!("coalesce({q}.merged_into, {e}.profile_id)"),
            filter,
            time: format!("{e}.time"),
        })
    }
}

/// `p.id` among the owners whose events pass `test` (an aggregate test over a group);
/// when people without any such event pass too (`zero`), `p.id` not among those that fail.
fn grouped(ev: &Events, test: &str, zero: bool) -> String {
    let (not, test) = if zero {
        ("NOT ", format!("NOT ({test})"))
    } else {
        ("", test.to_string())
    };
    format!(
        "{not}p.id IN (SELECT {} FROM {} WHERE {} GROUP BY {} HAVING {test})",
        ev.owner, ev.from, ev.filter, ev.owner
    )
}

/// Whether `x OP value` holds.
fn holds(x: f64, op: CompareOp, value: f64) -> bool {
    match op {
        CompareOp::Eq => x == value,
        CompareOp::Ne => x != value,
        CompareOp::Lt => x < value,
        CompareOp::Le => x <= value,
        CompareOp::Gt => x > value,
        CompareOp::Ge => x >= value,
    }
}

/// A `where` condition over the properties of event alias `e`.
fn property_condition(d: Dialect, e: &str, c: &Condition) -> Result<String, EvalError> {
    Ok(match c {
        Condition::And { all } if all.is_empty() => "TRUE".into(),
        Condition::Or { any } if any.is_empty() => "FALSE".into(),
        Condition::And { all } => property_join(d, e, all, " AND ")?,
        Condition::Or { any } => property_join(d, e, any, " OR ")?,
        Condition::Not { not } => format!("NOT {}", property_condition(d, e, not)?),
        Condition::Compare { left, op, right } => leaf(property_compare(d, e, left, *op, right)),
        Condition::In {
            operand,
            values,
            negated,
        } => {
            let any: Vec<String> = values
                .iter()
                .map(|v| leaf(property_compare(d, e, operand, CompareOp::Eq, v)))
                .collect();
            let any = or_list(&any);
            if *negated {
                format!("({} AND NOT {any})", leaf(property_present(d, e, operand)))
            } else {
                any
            }
        }
        Condition::Between { operand, low, high } => leaf(format!(
            "{} AND {}",
            property_compare(d, e, operand, CompareOp::Ge, low),
            property_compare(d, e, operand, CompareOp::Le, high)
        )),
        Condition::Exists { name, negated } => {
            let present = leaf(property_present(d, e, &Operand::Name(name.clone())));
            if *negated {
                format!("NOT {present}")
            } else {
                present
            }
        }
        Condition::Text { name, op, value } => {
            leaf(text_test(d, &prop_text(d, e, name), *op, value))
        }
        Condition::Has { name, value } => {
            // A list is JSON text: look for the quoted item, as the batch evaluator does.
            let text = prop_text(d, e, name);
            leaf(format!(
                "({text} = {} OR {})",
                d.string(value),
                d.contains(&text, &json_string(value))
            ))
        }
        _ => {
            return Err(EvalError::Unsupported(
                "a behavioural condition inside `where`",
            ))
        }
    })
}

fn property_join(d: Dialect, e: &str, cs: &[Condition], sep: &str) -> Result<String, EvalError> {
    let parts = cs
        .iter()
        .map(|c| property_condition(d, e, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("({})", parts.join(sep)))
}

/// `operand OP lit` over a property: numbers with numbers, text with strings, booleans
/// with `true`/`false`, RFC 3339 text with times; other pairs are NULL (no match).
fn property_compare(
    d: Dialect,
    e: &str,
    operand: &Operand,
    op: CompareOp,
    lit: &Literal,
) -> String {
    let op = compare_op(op);
    match operand {
        Operand::Name(name) => match lit {
            Literal::Int(_) | Literal::Float(_) => {
                format!("{} {op} {}", prop_number(d, e, name), literal(d, lit))
            }
            Literal::Str(s) => format!("{} {op} {}", prop_text(d, e, name), d.ordered_string(s)),
            Literal::Bool(b) => format!(
                "(CASE {} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) {op} {}",
                prop_text(d, e, name),
                u8::from(*b)
            ),
            Literal::Time(t) => format!("{} {op} {}", d.text_time(&prop_text(d, e, name)), t.0),
        },
        arith => match lit.as_number() {
            Some(x) => format!("{} {op} {}", property_numeric(d, e, arith), number(x)),
            None => "NULL".into(),
        },
    }
}

fn property_present(d: Dialect, e: &str, operand: &Operand) -> String {
    match operand {
        Operand::Name(name) => {
            let revenue = if name == "revenue" {
                format!(" OR {e}.revenue IS NOT NULL")
            } else {
                String::new()
            };
            let json = d.property(e, name);
            format!("({} <> {}{revenue})", json.kind, json.null)
        }
        arith => format!("{} IS NOT NULL", property_numeric(d, e, arith)),
    }
}

fn property_numeric(d: Dialect, e: &str, operand: &Operand) -> String {
    match operand {
        Operand::Number(x) => float(d, *x),
        Operand::Name(name) => format!("CAST({} AS {})", prop_number(d, e, name), d.real()),
        Operand::Arith { op, left, right } => arith(
            *op,
            &property_numeric(d, e, left),
            &property_numeric(d, e, right),
        ),
    }
}

/// A property's numeric value (NULL when absent or not a number); `revenue` falls back to
/// the event's revenue when the event has no such property.
fn prop_number(d: Dialect, e: &str, name: &str) -> String {
    let Json {
        kind,
        null,
        number,
        as_number,
        ..
    } = d.property(e, name);
    let fallback = if name == "revenue" {
        format!(" WHEN {kind} = {null} THEN {e}.revenue")
    } else {
        String::new()
    };
    format!("(CASE WHEN {kind} IN {number} THEN {as_number}{fallback} END)")
}

/// A property's text value: strings, `true`/`false` for booleans, JSON text for lists and
/// objects; NULL for numbers and when absent.
fn prop_text(d: Dialect, e: &str, name: &str) -> String {
    let Json {
        kind,
        text,
        as_text,
        ..
    } = d.property(e, name);
    format!("(CASE WHEN {kind} IN {text} THEN {as_text} END)")
}

fn text_test(d: Dialect, text: &str, op: TextOp, value: &str) -> String {
    match op {
        TextOp::Contains | TextOp::StartsWith | TextOp::EndsWith if value.is_empty() => {
            format!("{text} IS NOT NULL")
        }
        TextOp::Contains => d.contains(text, value),
        TextOp::StartsWith => d.starts_with(text, value),
        TextOp::EndsWith => d.ends_with(text, value),
        TextOp::Matches => d.matches(text, value),
    }
}

fn arith(op: ArithOp, l: &str, r: &str) -> String {
    match op {
        ArithOp::Add => format!("({l} + {r})"),
        ArithOp::Sub => format!("({l} - {r})"),
        ArithOp::Mul => format!("({l} * {r})"),
        // A division by zero is missing, as in the evaluator (PostgreSQL and Spark would
        // raise an error).
        ArithOp::Div => format!("({l} / NULLIF({r}, 0))"),
    }
}

/// `(a OR b ...)`, `FALSE` for none.
fn or_list(parts: &[String]) -> String {
    if parts.is_empty() {
        "FALSE".into()
    } else {
        format!("({})", parts.join(" OR "))
    }
}

/// A leaf that is never NULL: missing values make it false.
fn leaf(sql: String) -> String {
    format!("COALESCE({sql}, FALSE)")
}

fn compare_op(op: CompareOp) -> &'static str {
    match op {
        CompareOp::Eq => "=",
        CompareOp::Ne => "<>",
        CompareOp::Lt => "<",
        CompareOp::Le => "<=",
        CompareOp::Gt => ">",
        CompareOp::Ge => ">=",
    }
}

fn literal(d: Dialect, l: &Literal) -> String {
    match l {
        Literal::Int(i) => i.to_string(),
        Literal::Float(x) => number(*x),
        Literal::Str(s) => d.ordered_string(s),
        Literal::Bool(b) => if *b { "TRUE" } else { "FALSE" }.into(),
        Literal::Time(t) => t.0.to_string(),
    }
}

/// A float literal.
fn number(x: f64) -> String {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// A float literal in arithmetic, typed as a 64-bit float (PostgreSQL and Spark read
/// `2.5` as an exact decimal, which would round differently).
fn float(d: Dialect, x: f64) -> String {
    match d {
        Dialect::Sqlite => number(x),
        _ => format!("CAST({} AS {})", number(x), d.real()),
    }
}

/// The metrics of docs/metrics.md as a `WITH` clause defining `m(id, visits, ...)`.
fn metrics_cte(ctx: &SqlContext<'_>) -> String {
    let d = ctx.dialect;
    let as_of = ctx.as_of.0;
    let order = format!(
        "({})",
        ctx.metrics
            .order_events
            .iter()
            .map(|e| d.string(e))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let session = d.string(&ctx.metrics.session_event);
    let gap = ctx.metrics.session_gap_ms;
    let revenue = d.sum_or_zero(&format!("CASE WHEN event IN {order} THEN revenue END"));
    let recency = d.int_div(&format!("{as_of} - a.last_order_at"), "86400000");
    let tenure = d.int_div(&format!("{as_of} - a.first_seen"), "86400000");
    let id = d.byte_order("id");
    let rfm = format!(
        "{} || {} || {}",
        d.to_text("r.rfm_r"),
        d.to_text("r.rfm_f"),
        d.to_text("r.rfm_m")
    );
    format!(
        "WITH o AS (\n  SELECT coalesce(q.merged_into, e.profile_id) AS profile_id, e.time, e.event, e.revenue\n  \
         FROM events e LEFT JOIN profiles q ON q.id = e.profile_id WHERE e.time <= {as_of}\n\
         ), s AS (\n  SELECT profile_id, time, event, revenue,\n    \
         CASE WHEN lag(time) OVER w IS NULL OR time - lag(time) OVER w > {gap} \
         OR event = {session} THEN 1 ELSE 0 END AS new_session\n  \
         FROM o\n  \
         WINDOW w AS (PARTITION BY profile_id ORDER BY time, \
         CASE WHEN event = {session} THEN 0 ELSE 1 END)\n\
         ), a AS (\n  SELECT profile_id, sum(new_session) AS visits,\n    \
         sum(CASE WHEN event IN {order} THEN 1 ELSE 0 END) AS orders,\n    \
         {revenue} AS revenue,\n    \
         min(time) AS first_seen, max(time) AS last_seen,\n    \
         max(CASE WHEN event IN {order} THEN time END) AS last_order_at\n  \
         FROM s GROUP BY profile_id\n\
         ), b AS (\n  SELECT p.id, coalesce(a.visits, 0) AS visits, coalesce(a.orders, 0) AS orders,\n    \
         coalesce(a.revenue, 0.0) AS revenue,\n    \
         CASE WHEN a.orders > 0 THEN a.revenue / a.orders END AS aov,\n    \
         a.first_seen, a.last_seen, a.last_order_at,\n    \
         {recency} AS recency_days,\n    \
         {tenure} AS tenure_days\n  \
         FROM profiles p LEFT JOIN a ON a.profile_id = p.id\n\
         ), r AS (\n  SELECT id, 6 - ntile(5) OVER (ORDER BY recency_days, {id}) AS rfm_r,\n    \
         ntile(5) OVER (ORDER BY orders, {id}) AS rfm_f,\n    \
         ntile(5) OVER (ORDER BY revenue, {id}) AS rfm_m\n  \
         FROM b WHERE orders > 0\n\
         ), m AS (\n  SELECT b.*, r.rfm_r, r.rfm_f, r.rfm_m,\n    \
         {rfm} AS rfm\n  FROM b LEFT JOIN r ON r.id = b.id\n)\n"
    )
}

#[cfg(test)]
mod tests {
    use microseg_core::condition::parse;

    use super::*;

    fn compile_text(text: &str) -> Result<String, EvalError> {
        let traits: BTreeMap<String, TraitType> = [
            ("age".to_string(), TraitType::Integer),
            ("city".to_string(), TraitType::String),
        ]
        .into();
        let segments: BTreeMap<String, Condition> = [
            ("a".to_string(), parse(r#"in_segment("b")"#).unwrap()),
            ("b".to_string(), parse(r#"in_segment("a")"#).unwrap()),
        ]
        .into();
        let ctx = SqlContext {
            traits: &traits,
            segments: &segments,
            metrics: &MetricsConfig::default(),
            as_of: Timestamp(0),
            dialect: Dialect::Sqlite,
        };
        compile(&parse(text).unwrap(), &ctx)
    }

    #[test]
    fn errors_are_the_evaluators() {
        assert_eq!(
            compile_text("shoe > 3"),
            Err(EvalError::UnknownName("shoe".into()))
        );
        assert!(matches!(
            compile_text("age = \"x\""),
            Err(EvalError::WrongType { .. })
        ));
        assert!(matches!(
            compile_text("city has \"x\""),
            Err(EvalError::WrongType { .. })
        ));
        assert_eq!(
            compile_text(r#"in_segment("nope")"#),
            Err(EvalError::UnknownSegment("nope".into()))
        );
        assert_eq!(
            compile_text(r#"in_segment("a")"#),
            Err(EvalError::Cycle(vec!["a".into(), "b".into(), "a".into()]))
        );
    }

    #[test]
    fn quoting_and_metrics_only_when_named() {
        let sql = compile_text(r#"city = "O'Hara""#).unwrap();
        assert!(sql.contains("'O''Hara'"), "{sql}");
        assert!(!sql.contains("WITH"), "{sql}");
        let sql = compile_text("orders >= 2").unwrap();
        assert!(sql.starts_with("WITH o AS"), "{sql}");
        assert_eq!(Dialect::from_name("spark"), Ok(Dialect::Spark));
        assert_eq!(
            Dialect::from_name("mysql").unwrap_err(),
            "unknown SQL dialect 'mysql' (use sqlite, postgres, duckdb or spark)"
        );
    }
}
