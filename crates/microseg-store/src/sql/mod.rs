//! The SQL backend: a [`Condition`] compiled to one `SELECT` over the documented
//! `profiles` / `events` layout (docs/sql.md), returning the members' external ids in a
//! column `id`.
//!
//! The SQL means exactly what the batch evaluator computes (the differential test in
//! `tests/sql_differential.rs` runs thousands of random conditions through both):
//!
//! - every leaf is wrapped in `COALESCE(.., FALSE)`, so a missing value makes a leaf false
//!   rather than NULL and `NOT` is the complement, as in the language;
//! - behavioural leaves are correlated subqueries over `events` (`time <= as_of` always);
//! - metrics come from a `WITH` clause computing them from `events` with the definitions of
//!   docs/metrics.md, only when the condition names one;
//! - `in_segment` is replaced by the segment's own condition.
//!
//! Layout (SQLite dialect): `profiles(id TEXT, merged_into TEXT, <one column per trait>)`
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

/// A SQL dialect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite 3.38 or later (JSON functions, `REGEXP` for `matches`).
    Sqlite,
}

impl Dialect {
    /// The dialect called `name` (`sqlite`), or a message naming the ones there are.
    pub fn from_name(name: &str) -> Result<Dialect, String> {
        match name {
            "sqlite" => Ok(Dialect::Sqlite),
            "postgres" | "duckdb" | "spark" => Err(format!(
                "the {name} dialect is not available yet; this version compiles to sqlite"
            )),
            other => Err(format!("unknown SQL dialect '{other}' (use sqlite)")),
        }
    }
}

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
}

/// Compiles `condition` to one SQLite `SELECT` returning the members' external ids as
/// `id` (the only [`Dialect`] so far).
pub fn compile(condition: &Condition, ctx: &SqlContext<'_>) -> Result<String, EvalError> {
    let mut compiler = Compiler {
        ctx,
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
    /// Segments being inlined (to catch cycles).
    path: Vec<String>,
    uses_metrics: bool,
    /// Counter for event-table aliases.
    aliases: usize,
}

/// A name's column and type.
struct Source {
    sql: String,
    ty: TraitType,
}

impl Compiler<'_> {
    fn source(&mut self, name: &str) -> Result<Source, EvalError> {
        if let Some(&ty) = self.ctx.traits.get(name) {
            return Ok(Source {
                sql: format!("p.{}", ident(name)),
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
                    sql: format!("m.{}", ident(name)),
                    ty,
                })
            }
            None => Err(EvalError::UnknownName(name.to_string())),
        }
    }

    fn alias(&mut self) -> String {
        self.aliases += 1;
        format!("e{}", self.aliases)
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
                leaf(text_test(&source.sql, *op, value))
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
                leaf(format!(
                    "EXISTS (SELECT 1 FROM json_each({}) WHERE value = {})",
                    source.sql,
                    string(value)
                ))
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
            behavioural => leaf(self.behaviour(behavioural)?),
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
            literal(right)
        ))
    }

    /// SQL true when `operand` has a value.
    fn present(&mut self, operand: &Operand) -> Result<String, EvalError> {
        Ok(match operand {
            Operand::Name(name) => format!("{} IS NOT NULL", self.source(name)?.sql),
            arith => format!("{} IS NOT NULL", self.numeric(arith)?),
        })
    }

    /// Arithmetic over numeric traits and metrics, as REAL (NULL when missing or / 0).
    fn numeric(&mut self, operand: &Operand) -> Result<String, EvalError> {
        Ok(match operand {
            Operand::Number(x) => number(*x),
            Operand::Name(name) => {
                let source = self.source(name)?;
                if !matches!(source.ty, TraitType::Integer | TraitType::Float) {
                    return Err(EvalError::WrongType {
                        name: name.clone(),
                        ty: source.ty,
                        hint: "arithmetic needs numbers".into(),
                    });
                }
                format!("CAST({} AS REAL)", source.sql)
            }
            Operand::Arith { op, left, right } => {
                let (l, r) = (self.numeric(left)?, self.numeric(right)?);
                arith(*op, &l, &r)
            }
        })
    }

    /// A behavioural leaf for profile `p`.
    fn behaviour(&mut self, c: &Condition) -> Result<String, EvalError> {
        let as_of = self.ctx.as_of.0;
        Ok(match c {
            Condition::Count {
                event,
                window,
                op,
                value,
            } => {
                let e = self.alias();
                let filter = self.events_of(&e, event, window)?;
                format!(
                    "(SELECT count(*) FROM events {e} WHERE {filter}) {} {}",
                    compare_op(*op),
                    number(*value)
                )
            }
            Condition::Aggregate {
                function,
                property,
                event,
                window,
                op,
                value,
            } => {
                let e = self.alias();
                let filter = self.events_of(&e, event, window)?;
                let x = prop_number(&e, property);
                let aggregate = match function {
                    AggregateFn::Sum => format!("total({x})"),
                    AggregateFn::Avg => format!("avg({x})"),
                    AggregateFn::Min => format!("min({x})"),
                    AggregateFn::Max => format!("max({x})"),
                };
                format!(
                    "(SELECT {aggregate} FROM events {e} WHERE {filter}) {} {}",
                    compare_op(*op),
                    number(*value)
                )
            }
            Condition::Did { event, window } => {
                let e = self.alias();
                let filter = self.events_of(&e, event, window)?;
                format!("EXISTS (SELECT 1 FROM events {e} WHERE {filter})")
            }
            Condition::LastBefore { event, ago_ms } => {
                let e = self.alias();
                let filter = self.events_of(&e, event, &Window::All)?;
                format!(
                    "(SELECT max({e}.time) FROM events {e} WHERE {filter}) < {}",
                    as_of.saturating_sub(*ago_ms)
                )
            }
            Condition::First { event, window } => {
                let e = self.alias();
                let filter = self.events_of(&e, event, &Window::All)?;
                let first = format!("(SELECT min({e}.time) FROM events {e} WHERE {filter})");
                match window {
                    Window::All => format!("{first} IS NOT NULL"),
                    Window::Within { ms } => format!("{first} >= {}", as_of.saturating_sub(*ms)),
                    Window::Between { from, to } => {
                        format!("{first} BETWEEN {} AND {}", from.0, to.0)
                    }
                }
            }
            Condition::Sequence {
                first,
                then,
                negated,
                within_ms,
                window,
            } => {
                let e1 = self.alias();
                let starts = self.events_of(&e1, first, window)?;
                let e2 = self.alias();
                let seconds = self.events_of(&e2, then, &Window::All)?;
                if *negated {
                    format!(
                        "EXISTS (SELECT 1 FROM (SELECT max({e1}.time) AS t1 FROM events {e1} \
                         WHERE {starts}) l WHERE l.t1 IS NOT NULL AND l.t1 + {within_ms} <= {as_of} \
                         AND NOT EXISTS (SELECT 1 FROM events {e2} WHERE {seconds} \
                         AND {e2}.time > l.t1 AND {e2}.time <= l.t1 + {within_ms}))"
                    )
                } else {
                    format!(
                        "EXISTS (SELECT 1 FROM events {e1} WHERE {starts} AND EXISTS \
                         (SELECT 1 FROM events {e2} WHERE {seconds} AND {e2}.time > {e1}.time \
                         AND {e2}.time <= {e1}.time + {within_ms}))"
                    )
                }
            }
            _ => {
                return Err(EvalError::Unsupported(
                    "this condition as a behavioural leaf",
                ))
            }
        })
    }

    /// The `WHERE` of profile `p`'s visible events named by `event`, in `window`.
    fn events_of(
        &mut self,
        e: &str,
        event: &EventFilter,
        window: &Window,
    ) -> Result<String, EvalError> {
        let as_of = self.ctx.as_of.0;
        let mut sql = format!(
            "{e}.profile_id IN (SELECT o.id FROM profiles o WHERE o.id = p.id OR o.merged_into = p.id) \
             AND {e}.event = {} AND {e}.time <= {as_of}",
            string(&event.name)
        );
        match window {
            Window::All => {}
            Window::Within { ms } => {
                let _ = write!(sql, " AND {e}.time >= {}", as_of.saturating_sub(*ms));
            }
            Window::Between { from, to } => {
                let _ = write!(sql, " AND {e}.time BETWEEN {} AND {}", from.0, to.0);
            }
        }
        if let Some(filter) = &event.filter {
            let _ = write!(sql, " AND {}", property_condition(e, filter)?);
        }
        Ok(sql)
    }
}

/// A `where` condition over the properties of event alias `e`.
fn property_condition(e: &str, c: &Condition) -> Result<String, EvalError> {
    Ok(match c {
        Condition::And { all } if all.is_empty() => "TRUE".into(),
        Condition::Or { any } if any.is_empty() => "FALSE".into(),
        Condition::And { all } => property_join(e, all, " AND ")?,
        Condition::Or { any } => property_join(e, any, " OR ")?,
        Condition::Not { not } => format!("NOT {}", property_condition(e, not)?),
        Condition::Compare { left, op, right } => leaf(property_compare(e, left, *op, right)),
        Condition::In {
            operand,
            values,
            negated,
        } => {
            let any: Vec<String> = values
                .iter()
                .map(|v| leaf(property_compare(e, operand, CompareOp::Eq, v)))
                .collect();
            let any = or_list(&any);
            if *negated {
                format!("({} AND NOT {any})", leaf(property_present(e, operand)))
            } else {
                any
            }
        }
        Condition::Between { operand, low, high } => leaf(format!(
            "{} AND {}",
            property_compare(e, operand, CompareOp::Ge, low),
            property_compare(e, operand, CompareOp::Le, high)
        )),
        Condition::Exists { name, negated } => {
            let present = leaf(property_present(e, &Operand::Name(name.clone())));
            if *negated {
                format!("NOT {present}")
            } else {
                present
            }
        }
        Condition::Text { name, op, value } => leaf(text_test(&prop_text(e, name), *op, value)),
        Condition::Has { name, value } => {
            // A list is JSON text: look for the quoted item, as the batch evaluator does.
            let text = prop_text(e, name);
            leaf(format!(
                "({text} = {} OR instr({text}, {}) > 0)",
                string(value),
                string(&json_string(value))
            ))
        }
        _ => {
            return Err(EvalError::Unsupported(
                "a behavioural condition inside `where`",
            ))
        }
    })
}

fn property_join(e: &str, cs: &[Condition], sep: &str) -> Result<String, EvalError> {
    let parts = cs
        .iter()
        .map(|c| property_condition(e, c))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(format!("({})", parts.join(sep)))
}

/// `operand OP lit` over a property: numbers with numbers, text with strings, booleans
/// with `true`/`false`, RFC 3339 text with times; other pairs are NULL (no match).
fn property_compare(e: &str, operand: &Operand, op: CompareOp, lit: &Literal) -> String {
    let op = compare_op(op);
    match operand {
        Operand::Name(name) => match lit {
            Literal::Int(_) | Literal::Float(_) => {
                format!("{} {op} {}", prop_number(e, name), literal(lit))
            }
            Literal::Str(s) => format!("{} {op} {}", prop_text(e, name), string(s)),
            Literal::Bool(b) => format!(
                "(CASE {} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END) {op} {}",
                prop_text(e, name),
                u8::from(*b)
            ),
            Literal::Time(t) => {
                let text = prop_text(e, name);
                format!(
                    "(CASE WHEN {text} GLOB '[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]*' \
                     THEN CAST(round((julianday({text}) - 2440587.5) * 86400000.0) AS INTEGER) \
                     END) {op} {}",
                    t.0
                )
            }
        },
        arith => match lit.as_number() {
            Some(x) => format!("{} {op} {}", property_numeric(e, arith), number(x)),
            None => "NULL".into(),
        },
    }
}

fn property_present(e: &str, operand: &Operand) -> String {
    match operand {
        Operand::Name(name) => {
            let revenue = if name == "revenue" {
                format!(" OR {e}.revenue IS NOT NULL")
            } else {
                String::new()
            };
            format!(
                "(coalesce(json_type({e}.properties, {}), 'null') <> 'null'{revenue})",
                json_path(name)
            )
        }
        arith => format!("{} IS NOT NULL", property_numeric(e, arith)),
    }
}

fn property_numeric(e: &str, operand: &Operand) -> String {
    match operand {
        Operand::Number(x) => number(*x),
        Operand::Name(name) => format!("CAST({} AS REAL)", prop_number(e, name)),
        Operand::Arith { op, left, right } => {
            arith(*op, &property_numeric(e, left), &property_numeric(e, right))
        }
    }
}

/// A property's numeric value (NULL when absent or not a number); `revenue` falls back to
/// the event's revenue when the event has no such property.
fn prop_number(e: &str, name: &str) -> String {
    let path = json_path(name);
    let fallback = if name == "revenue" {
        format!(" WHEN 'null' THEN {e}.revenue ELSE NULL")
    } else {
        String::new()
    };
    format!(
        "(CASE coalesce(json_type({e}.properties, {path}), 'null') \
         WHEN 'integer' THEN json_extract({e}.properties, {path}) \
         WHEN 'real' THEN json_extract({e}.properties, {path}){fallback} END)"
    )
}

/// A property's text value: strings, `true`/`false` for booleans, JSON text for lists and
/// objects; NULL for numbers and when absent.
fn prop_text(e: &str, name: &str) -> String {
    let path = json_path(name);
    format!(
        "(CASE json_type({e}.properties, {path}) WHEN 'true' THEN 'true' \
         WHEN 'false' THEN 'false' WHEN 'text' THEN json_extract({e}.properties, {path}) \
         WHEN 'array' THEN json_extract({e}.properties, {path}) \
         WHEN 'object' THEN json_extract({e}.properties, {path}) END)"
    )
}

fn text_test(text: &str, op: TextOp, value: &str) -> String {
    match op {
        TextOp::Contains | TextOp::StartsWith | TextOp::EndsWith if value.is_empty() => {
            format!("{text} IS NOT NULL")
        }
        TextOp::Contains => format!("instr({text}, {}) > 0", string(value)),
        TextOp::StartsWith => format!(
            "substr({text}, 1, {}) = {}",
            value.chars().count(),
            string(value)
        ),
        TextOp::EndsWith => format!(
            "substr({text}, -{}) = {}",
            value.chars().count(),
            string(value)
        ),
        TextOp::Matches => format!("{text} REGEXP {}", string(value)),
    }
}

fn arith(op: ArithOp, l: &str, r: &str) -> String {
    match op {
        ArithOp::Add => format!("({l} + {r})"),
        ArithOp::Sub => format!("({l} - {r})"),
        ArithOp::Mul => format!("({l} * {r})"),
        // SQLite gives NULL for a division by zero, as the evaluator does.
        ArithOp::Div => format!("({l} / {r})"),
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

fn literal(l: &Literal) -> String {
    match l {
        Literal::Int(i) => i.to_string(),
        Literal::Float(x) => number(*x),
        Literal::Str(s) => string(s),
        Literal::Bool(b) => u8::from(*b).to_string(),
        Literal::Time(t) => t.0.to_string(),
    }
}

/// A float as a SQL REAL literal.
fn number(x: f64) -> String {
    let s = format!("{x:?}");
    if s.contains(['.', 'e', 'E']) {
        s
    } else {
        format!("{s}.0")
    }
}

/// A SQL string literal.
pub fn string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// A quoted SQL identifier.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// The JSON path of top-level key `name`, as a SQL string: the key in double quotes with
/// `\\` and `"` escaped as in a JSON string (SQLite reads a quoted path label that way).
fn json_path(name: &str) -> String {
    string(&format!(
        "$.\"{}\"",
        name.replace('\\', "\\\\").replace('"', "\\\"")
    ))
}

/// The metrics of docs/metrics.md as a `WITH` clause defining `m(id, visits, ...)`.
fn metrics_cte(ctx: &SqlContext<'_>) -> String {
    let as_of = ctx.as_of.0;
    let order = format!(
        "({})",
        ctx.metrics
            .order_events
            .iter()
            .map(|e| string(e))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let session = string(&ctx.metrics.session_event);
    let gap = ctx.metrics.session_gap_ms;
    format!(
        "WITH o AS (\n  SELECT coalesce(q.merged_into, e.profile_id) AS profile_id, e.time, e.event, e.revenue\n  \
         FROM events e LEFT JOIN profiles q ON q.id = e.profile_id WHERE e.time <= {as_of}\n\
         ), s AS (\n  SELECT profile_id, time, event, revenue,\n    \
         CASE WHEN lag(time) OVER w IS NULL OR time - lag(time) OVER w > {gap} \
         OR event = {session} THEN 1 ELSE 0 END AS new_session\n  \
         FROM o\n  \
         WINDOW w AS (PARTITION BY profile_id ORDER BY time, event = {session} DESC)\n\
         ), a AS (\n  SELECT profile_id, sum(new_session) AS visits,\n    \
         sum(event IN {order}) AS orders,\n    \
         total(CASE WHEN event IN {order} THEN revenue END) AS revenue,\n    \
         min(time) AS first_seen, max(time) AS last_seen,\n    \
         max(CASE WHEN event IN {order} THEN time END) AS last_order_at\n  \
         FROM s GROUP BY profile_id\n\
         ), b AS (\n  SELECT p.id, coalesce(a.visits, 0) AS visits, coalesce(a.orders, 0) AS orders,\n    \
         coalesce(a.revenue, 0.0) AS revenue,\n    \
         CASE WHEN a.orders > 0 THEN a.revenue / a.orders END AS aov,\n    \
         a.first_seen, a.last_seen, a.last_order_at,\n    \
         ({as_of} - a.last_order_at) / 86400000 AS recency_days,\n    \
         ({as_of} - a.first_seen) / 86400000 AS tenure_days\n  \
         FROM profiles p LEFT JOIN a ON a.profile_id = p.id\n\
         ), r AS (\n  SELECT id, 6 - ntile(5) OVER (ORDER BY recency_days, id) AS rfm_r,\n    \
         ntile(5) OVER (ORDER BY orders, id) AS rfm_f,\n    \
         ntile(5) OVER (ORDER BY revenue, id) AS rfm_m\n  \
         FROM b WHERE orders > 0\n\
         ), m AS (\n  SELECT b.*, r.rfm_r, r.rfm_f, r.rfm_m,\n    \
         r.rfm_r || r.rfm_f || r.rfm_m AS rfm\n  FROM b LEFT JOIN r ON r.id = b.id\n)\n"
    )
}

#[cfg(test)]
mod differential;

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
        assert_eq!(
            Dialect::from_name("spark").unwrap_err(),
            "the spark dialect is not available yet; this version compiles to sqlite"
        );
    }
}
