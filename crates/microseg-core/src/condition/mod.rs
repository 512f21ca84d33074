//! The condition language: one typed AST ([`Condition`]) for segments, with a text form
//! that parses to it ([`parse`]) and prints from it ([`Condition::to_string`]) without loss,
//! and a JSON form (serde) for machines.
//!
//! ```
//! use microseg_core::condition::parse;
//! let c = parse(r#"gender = "f" and discipline in ("mountain") and skill = "amateur""#).unwrap();
//! assert_eq!(parse(&c.to_string()).unwrap(), c);
//! ```
//!
//! The full grammar and the exact semantics (windows, missing values, sequences) are in
//! `docs/conditions.md`. In short:
//!
//! - `within 7d` covers event times `t` with `as_of - 7d <= t <= as_of`; `between @A and
//!   @B` covers `A <= t <= B`; `before 90d ago` covers `t < as_of - 90d`. Events after
//!   `as_of` are invisible to every condition.
//! - A missing trait never matches a comparison (`!=` included); only `exists` tests it.
//! - `count(...) = 0` and `not did(...)` include people with no events at all.

mod lexer;
mod parser;
mod printer;

use serde::{Deserialize, Serialize};

use crate::time::Timestamp;

pub use parser::{parse, ParseError};

/// Most levels a condition may have on any path from its root, counting every node: each
/// `and`, `or` and `not`, each test, each event filter (`E where ...`), each arithmetic
/// operator and each name or number in it. Every walk over a condition (printer,
/// evaluators, SQL compiler, JSON) recurses at most this deep, and its JSON form stays well
/// inside serde_json's nesting limit (at most two JSON levels per node), so anything that
/// passes [`Condition::check_size`] can be saved and read back.
pub const MAX_DEPTH: usize = 32;

/// Most nodes a condition may have in all, counted as for [`MAX_DEPTH`] (the values of an
/// `in` list are not nodes). Bounds the work of evaluating it for one person.
pub const MAX_NODES: usize = 10_000;

/// Why a condition is too large to accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SizeError {
    /// A path from the root is longer than [`MAX_DEPTH`].
    #[error(
        "at most {MAX_DEPTH} levels of nesting (each and, or, not, test, where, arithmetic \
         operator and name counts)"
    )]
    TooDeep,
    /// More than [`MAX_NODES`] nodes.
    #[error("at most {MAX_NODES} parts in one condition")]
    TooLarge,
}

/// Checks a segment name: 1 to 100 ASCII letters, digits, `_`, `-` or `.` (names appear
/// in URLs, file names and `in_segment("...")`). The error is the sentence to show.
pub fn check_segment_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "segment name '{name}': use 1 to 100 letters, digits, '_', '-' or '.'"
        ))
    }
}

/// A condition over one profile: its traits, its metrics, its events and its segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Condition {
    /// Every condition holds (two or more).
    And {
        /// The conditions.
        all: Vec<Condition>,
    },
    /// At least one condition holds (two or more).
    Or {
        /// The conditions.
        any: Vec<Condition>,
    },
    /// The condition does not hold; at the root it means "everyone else".
    Not {
        /// The negated condition.
        not: Box<Condition>,
    },
    /// `left OP right`, e.g. `age >= 30`, `revenue / orders > 50`.
    Compare {
        /// A trait, metric or arithmetic over them.
        left: Operand,
        /// The comparison.
        op: CompareOp,
        /// The value compared with.
        right: Literal,
    },
    /// `operand in (v1, v2, ...)`, or `not in` when `negated`.
    In {
        /// The trait or metric.
        operand: Operand,
        /// The values.
        values: Vec<Literal>,
        /// `not in`: the value is present and none of them.
        #[serde(default, skip_serializing_if = "is_false")]
        negated: bool,
    },
    /// `operand between low and high`, both ends included.
    Between {
        /// The trait or metric.
        operand: Operand,
        /// Lower bound.
        low: Literal,
        /// Upper bound.
        high: Literal,
    },
    /// `name exists`, or `name not exists` when `negated`.
    Exists {
        /// The trait or metric.
        name: String,
        /// `not exists`.
        #[serde(default, skip_serializing_if = "is_false")]
        negated: bool,
    },
    /// A text test: `contains`, `starts_with`, `ends_with`, `matches` (regex).
    Text {
        /// The trait.
        name: String,
        /// Which test.
        op: TextOp,
        /// The text or pattern.
        value: String,
    },
    /// `name has "value"`: string-set membership.
    Has {
        /// The string-set trait.
        name: String,
        /// The member.
        value: String,
    },
    /// `in_segment("name")`.
    InSegment {
        /// The segment's name.
        segment: String,
    },
    /// `count(E [where C] [, window]) OP n`.
    Count {
        /// Which events.
        event: EventFilter,
        /// When.
        #[serde(default, skip_serializing_if = "Window::is_all")]
        window: Window,
        /// The comparison.
        op: CompareOp,
        /// The number compared with.
        value: f64,
    },
    /// `sum|avg|min|max(PROP of E [where C] [, window]) OP n`.
    Aggregate {
        /// The aggregate.
        function: AggregateFn,
        /// The numeric event property.
        property: String,
        /// Which events.
        event: EventFilter,
        /// When.
        #[serde(default, skip_serializing_if = "Window::is_all")]
        window: Window,
        /// The comparison.
        op: CompareOp,
        /// The number compared with.
        value: f64,
    },
    /// `did(E [where C]) [window]`: at least one such event in the window.
    Did {
        /// Which events.
        event: EventFilter,
        /// When.
        #[serde(default, skip_serializing_if = "Window::is_all")]
        window: Window,
    },
    /// `last(E [where C]) before D ago`: there are such events and the latest is more than
    /// `D` before as-of.
    LastBefore {
        /// Which events.
        event: EventFilter,
        /// How long ago, in milliseconds.
        ago_ms: i64,
    },
    /// `first(E [where C]) window`: there are such events and the first ever is in the
    /// window (a first-time action).
    First {
        /// Which events.
        event: EventFilter,
        /// When.
        window: Window,
    },
    /// `E1 then E2 within D [, window]` or `E1 then not E2 within D [, window]`.
    ///
    /// Positive: some E1 in the outer window is followed by an E2 at most `D` later.
    /// Negated: after the latest E1 in the outer window, no E2 within `D` of it; true only
    /// once `D` has passed (as-of ≥ that E1 + D).
    Sequence {
        /// The first step.
        first: EventFilter,
        /// The second step.
        then: EventFilter,
        /// `then not`: the second step must not happen.
        #[serde(default, skip_serializing_if = "is_false")]
        negated: bool,
        /// The step window, in milliseconds.
        within_ms: i64,
        /// The window of the first step.
        #[serde(default, skip_serializing_if = "Window::is_all")]
        window: Window,
    },
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Condition {
    /// Checks the condition against [`MAX_DEPTH`] and [`MAX_NODES`]. The check itself stops
    /// one level past the limit, so it is safe on a tree of any depth.
    ///
    /// # Errors
    ///
    /// [`SizeError`] naming the limit passed.
    pub fn check_size(&self) -> Result<(), SizeError> {
        let mut nodes = 0;
        size_of_condition(self, 1, &mut nodes)
    }

    /// Calls `f` on this condition and every condition inside it (`where` filters
    /// included), parents first.
    pub fn walk<'a>(&'a self, f: &mut impl FnMut(&'a Condition)) {
        f(self);
        match self {
            Condition::And { all: cs } | Condition::Or { any: cs } => {
                cs.iter().for_each(|c| c.walk(f))
            }
            Condition::Not { not } => not.walk(f),
            Condition::Count { event, .. }
            | Condition::Aggregate { event, .. }
            | Condition::Did { event, .. }
            | Condition::LastBefore { event, .. }
            | Condition::First { event, .. } => event.walk_filter(f),
            Condition::Sequence { first, then, .. } => {
                first.walk_filter(f);
                then.walk_filter(f);
            }
            _ => {}
        }
    }

    /// Whether this condition reads events (a behavioural leaf outside any `in_segment`).
    pub fn reads_events(&self) -> bool {
        let mut found = false;
        self.walk(&mut |c| {
            found |= matches!(
                c,
                Condition::Count { .. }
                    | Condition::Aggregate { .. }
                    | Condition::Did { .. }
                    | Condition::LastBefore { .. }
                    | Condition::First { .. }
                    | Condition::Sequence { .. }
            )
        });
        found
    }

    /// The segments this condition refers to with `in_segment`, in order, without repeats.
    pub fn segment_refs(&self) -> Vec<&str> {
        let mut refs: Vec<&str> = Vec::new();
        self.walk(&mut |c| {
            if let Condition::InSegment { segment } = c {
                if !refs.contains(&segment.as_str()) {
                    refs.push(segment);
                }
            }
        });
        refs
    }

    /// The traits and metrics this condition reads (outside `where` filters), sorted,
    /// without repeats.
    pub fn profile_names(&self) -> Vec<String> {
        fn visit(c: &Condition, names: &mut std::collections::BTreeSet<String>) {
            match c {
                Condition::And { all: cs } | Condition::Or { any: cs } => {
                    cs.iter().for_each(|c| visit(c, names))
                }
                Condition::Not { not } => visit(not, names),
                leaf => leaf_names(leaf, names),
            }
        }
        let mut names = std::collections::BTreeSet::new();
        visit(self, &mut names);
        names.into_iter().collect()
    }

    /// The event properties this condition reads (names in `where` filters and aggregated
    /// properties), sorted, without repeats.
    pub fn event_properties(&self) -> Vec<String> {
        let mut names = std::collections::BTreeSet::new();
        self.walk(&mut |c| {
            let filters: Vec<&EventFilter> = match c {
                Condition::Aggregate {
                    property, event, ..
                } => {
                    names.insert(property.clone());
                    vec![event]
                }
                Condition::Count { event, .. }
                | Condition::Did { event, .. }
                | Condition::LastBefore { event, .. }
                | Condition::First { event, .. } => vec![event],
                Condition::Sequence { first, then, .. } => vec![first, then],
                _ => vec![],
            };
            for filter in filters.into_iter().filter_map(|e| e.filter.as_deref()) {
                filter.walk(&mut |leaf| leaf_names(leaf, &mut names));
            }
        });
        names.into_iter().collect()
    }
}

/// Counts one node at `depth` against the limits.
fn count_node(depth: usize, nodes: &mut usize) -> Result<(), SizeError> {
    *nodes += 1;
    if depth > MAX_DEPTH {
        Err(SizeError::TooDeep)
    } else if *nodes > MAX_NODES {
        Err(SizeError::TooLarge)
    } else {
        Ok(())
    }
}

fn size_of_condition(c: &Condition, depth: usize, nodes: &mut usize) -> Result<(), SizeError> {
    count_node(depth, nodes)?;
    let filter = |e: &EventFilter, nodes: &mut usize| -> Result<(), SizeError> {
        count_node(depth + 1, nodes)?;
        match &e.filter {
            Some(f) => size_of_condition(f, depth + 2, nodes),
            None => Ok(()),
        }
    };
    match c {
        Condition::And { all: cs } | Condition::Or { any: cs } => {
            for c in cs {
                size_of_condition(c, depth + 1, nodes)?;
            }
            Ok(())
        }
        Condition::Not { not } => size_of_condition(not, depth + 1, nodes),
        Condition::Compare { left: o, .. }
        | Condition::In { operand: o, .. }
        | Condition::Between { operand: o, .. } => size_of_operand(o, depth + 1, nodes),
        Condition::Count { event, .. }
        | Condition::Aggregate { event, .. }
        | Condition::Did { event, .. }
        | Condition::LastBefore { event, .. }
        | Condition::First { event, .. } => filter(event, nodes),
        Condition::Sequence { first, then, .. } => {
            filter(first, nodes)?;
            filter(then, nodes)
        }
        Condition::Exists { .. }
        | Condition::Text { .. }
        | Condition::Has { .. }
        | Condition::InSegment { .. } => Ok(()),
    }
}

fn size_of_operand(o: &Operand, depth: usize, nodes: &mut usize) -> Result<(), SizeError> {
    count_node(depth, nodes)?;
    match o {
        Operand::Arith { left, right, .. } => {
            size_of_operand(left, depth + 1, nodes)?;
            size_of_operand(right, depth + 1, nodes)
        }
        Operand::Name(_) | Operand::Number(_) => Ok(()),
    }
}

/// The names a non-behavioural leaf reads.
fn leaf_names(c: &Condition, names: &mut std::collections::BTreeSet<String>) {
    fn operand(o: &Operand, names: &mut std::collections::BTreeSet<String>) {
        match o {
            Operand::Name(n) => {
                names.insert(n.clone());
            }
            Operand::Number(_) => {}
            Operand::Arith { left, right, .. } => {
                operand(left, names);
                operand(right, names);
            }
        }
    }
    match c {
        Condition::Compare { left: o, .. }
        | Condition::In { operand: o, .. }
        | Condition::Between { operand: o, .. } => operand(o, names),
        Condition::Exists { name, .. }
        | Condition::Text { name, .. }
        | Condition::Has { name, .. } => {
            names.insert(name.clone());
        }
        _ => {}
    }
}

impl EventFilter {
    fn walk_filter<'a>(&'a self, f: &mut impl FnMut(&'a Condition)) {
        if let Some(filter) = &self.filter {
            filter.walk(f);
        }
    }
}

/// Events of one name, optionally filtered by their properties.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventFilter {
    /// The event name.
    pub name: String,
    /// A condition over the event's properties (`E where path starts_with "/winter"`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<Box<Condition>>,
}

/// Which event times a behavioural condition looks at (never after as-of).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Window {
    /// Every event up to as-of.
    #[default]
    All,
    /// `within D`: `as_of - D <= t <= as_of`.
    Within {
        /// D in milliseconds.
        ms: i64,
    },
    /// `between @A and @B`: `A <= t <= B` (and `t <= as_of`).
    Between {
        /// A.
        from: Timestamp,
        /// B.
        to: Timestamp,
    },
}

impl Window {
    /// True for [`Window::All`].
    pub fn is_all(&self) -> bool {
        matches!(self, Window::All)
    }
}

/// The left side of a comparison: a name or arithmetic over names and numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Operand {
    /// A trait, metric or (inside `where`) event property.
    Name(String),
    /// A number (inside arithmetic).
    Number(f64),
    /// `left OP right`.
    Arith {
        /// The operator.
        op: ArithOp,
        /// Left side.
        left: Box<Operand>,
        /// Right side.
        right: Box<Operand>,
    },
}

/// `+ - * /`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArithOp {
    /// `+`
    Add,
    /// `-`
    Sub,
    /// `*`
    Mul,
    /// `/`
    Div,
}

/// `= != < <= > >=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CompareOp {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// Text tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TextOp {
    /// Substring.
    Contains,
    /// Prefix.
    StartsWith,
    /// Suffix.
    EndsWith,
    /// Regular expression (unanchored).
    Matches,
}

/// `sum avg min max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AggregateFn {
    /// Sum.
    Sum,
    /// Mean.
    Avg,
    /// Minimum.
    Min,
    /// Maximum.
    Max,
}

/// A literal value.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Literal {
    /// `42`
    Int(i64),
    /// `4.5`
    Float(f64),
    /// `"text"`
    Str(String),
    /// `true` / `false`
    Bool(bool),
    /// `@2024-01-31` / `@2024-01-31T10:00:00Z`
    Time(Timestamp),
}

impl CompareOp {
    /// Whether `ordering` (of the left side against the right; `None` when the two cannot
    /// be compared) satisfies this comparison. Incomparable values never match.
    pub fn holds(self, ordering: Option<std::cmp::Ordering>) -> bool {
        use std::cmp::Ordering::*;
        match (ordering, self) {
            (None, _) => false,
            (Some(o), CompareOp::Eq) => o == Equal,
            (Some(o), CompareOp::Ne) => o != Equal,
            (Some(o), CompareOp::Lt) => o == Less,
            (Some(o), CompareOp::Le) => o != Greater,
            (Some(o), CompareOp::Gt) => o == Greater,
            (Some(o), CompareOp::Ge) => o != Less,
        }
    }
}

impl Operand {
    /// The operand's number, with `number` giving each name's value; missing when a name
    /// has no number or the arithmetic has no finite result.
    pub fn evaluate(&self, number: &dyn Fn(&str) -> Option<f64>) -> Option<f64> {
        match self {
            Operand::Number(x) => Some(*x),
            Operand::Name(name) => number(name),
            Operand::Arith { op, left, right } => {
                op.apply(left.evaluate(number)?, right.evaluate(number)?)
            }
        }
    }
}

impl ArithOp {
    /// `a OP b`; `None` (a missing value) for a division by zero or a non-finite result.
    pub fn apply(self, a: f64, b: f64) -> Option<f64> {
        let x = match self {
            ArithOp::Add => a + b,
            ArithOp::Sub => a - b,
            ArithOp::Mul => a * b,
            ArithOp::Div if b == 0.0 => return None,
            ArithOp::Div => a / b,
        };
        x.is_finite().then_some(x)
    }
}

impl AggregateFn {
    /// The function's name in the language: `sum`, `avg`, `min`, `max`.
    pub fn name(self) -> &'static str {
        match self {
            AggregateFn::Sum => "sum",
            AggregateFn::Avg => "avg",
            AggregateFn::Min => "min",
            AggregateFn::Max => "max",
        }
    }
}

impl Literal {
    /// The literal as a number, for integer and float literals.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Literal::Int(i) => Some(*i as f64),
            Literal::Float(x) => Some(*x),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
