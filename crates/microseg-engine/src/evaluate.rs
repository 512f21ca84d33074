//! The batch evaluator: a [`Condition`] over every profile at once, into a
//! [`RoaringBitmap`] of dense profile ids.
//!
//! Leaves on traits and metrics scan their column once (dictionary-encoded strings are
//! compared by code); `and`, `or` and `not` combine bitmaps. Missing values follow the
//! language's rule: a profile without the value never matches a comparison (`!=`, `not in`
//! and `between` included); only `exists` tests for it, and `not` is the complement.
//!
//! Behavioural leaves (`count`, `did`, sequences, ...) are evaluated by one pass over the
//! profile-sorted events each (see the `behaviour` module). `in_segment` evaluates the
//! stored segment at the same as-of; a reference cycle is an error naming it.

use std::cmp::Ordering;
use std::collections::BTreeMap;

use microseg_core::condition::{CompareOp, Condition, Literal, Operand, TextOp};
use microseg_core::{ProfileId, Timestamp, TraitType, Value};
use roaring::RoaringBitmap;

use crate::columnar::{Column, EventTable, ProfileTable, NO_CODE};
use crate::index::{scan, Keys, ValueIndex};
use crate::metrics::{metric_type, Metrics};
use crate::models::clv::PREDICTION_NAMES;

/// Why a condition cannot be evaluated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    /// A name that is neither a trait nor a metric.
    #[error("unknown trait or metric '{0}'")]
    UnknownName(String),
    /// A value of the wrong type for the name.
    #[error("'{name}' is {ty}: {hint}")]
    WrongType {
        /// The name.
        name: String,
        /// Its type.
        ty: TraitType,
        /// What to write instead.
        hint: String,
    },
    /// An invalid regular expression.
    #[error("bad regular expression '{pattern}': {reason}")]
    BadRegex {
        /// The pattern.
        pattern: String,
        /// Why.
        reason: String,
    },
    /// `in_segment` names a segment that does not exist.
    #[error("unknown segment '{0}'")]
    UnknownSegment(String),
    /// Segments that refer to each other in a loop.
    #[error("segment reference cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
    /// A CLV prediction used before a model was fitted.
    #[error("'{0}' is predicted by the CLV model: fit it first with `microseg clv fit`")]
    NoModel(String),
    /// A part of the language this evaluator does not handle yet.
    #[error("{0} is not evaluated yet")]
    Unsupported(&'static str),
}

impl EvalError {
    /// A name of type `ty` inside arithmetic.
    pub(crate) fn not_numeric(name: &str, ty: TraitType) -> EvalError {
        EvalError::WrongType {
            name: name.into(),
            ty,
            hint: "arithmetic needs numbers".into(),
        }
    }

    /// Arithmetic compared with something else than a number.
    pub(crate) fn arithmetic_literal(arith: &Operand) -> EvalError {
        EvalError::WrongType {
            name: arith.to_string(),
            ty: TraitType::Float,
            hint: "arithmetic compares with a number".into(),
        }
    }

    /// A text test on a name of type `ty`.
    pub(crate) fn not_text(name: &str, ty: TraitType) -> EvalError {
        EvalError::WrongType {
            name: name.into(),
            ty,
            hint: "text tests need a string trait".into(),
        }
    }

    /// `has` on a name of type `ty`.
    pub(crate) fn not_set(name: &str, ty: TraitType) -> EvalError {
        EvalError::WrongType {
            name: name.into(),
            ty,
            hint: "`has` needs a string set; compare strings with = or contains".into(),
        }
    }
}

/// What conditions are evaluated over: profile traits and (optionally) metrics computed
/// at the same as-of instant.
pub struct Dataset<'a> {
    /// Traits by column.
    pub profiles: &'a ProfileTable,
    /// Metrics at `as_of`, when the condition may use them.
    pub metrics: Option<&'a Metrics>,
    /// Events sorted by profile and time, with the properties `where` filters use.
    pub events: Option<&'a EventTable>,
    /// The instant conditions are evaluated at; later events are invisible.
    pub as_of: Timestamp,
    /// Stored segments by name, for `in_segment`.
    pub segments: Option<&'a BTreeMap<String, Condition>>,
}

/// Why one profile is or is not matched: every node of the condition with its result and,
/// for leaves, the value it saw.
#[derive(Debug, Clone, PartialEq)]
pub struct Explanation {
    /// The node, in the condition language.
    pub condition: String,
    /// Whether the profile matches this node.
    pub matched: bool,
    /// What the leaf saw (`missing` when the profile has no value); empty for `and`,
    /// `or` and `not`.
    pub saw: String,
    /// Sub-conditions (for `in_segment`, the segment's own condition).
    pub children: Vec<Explanation>,
}

/// Checks that the segments `condition` (to be saved as `name`) refers to exist and that
/// no chain of references leads back to `name`.
pub fn check_references(
    name: &str,
    condition: &Condition,
    segments: &BTreeMap<String, Condition>,
) -> Result<(), EvalError> {
    fn visit(
        condition: &Condition,
        path: &mut Vec<String>,
        segments: &BTreeMap<String, Condition>,
    ) -> Result<(), EvalError> {
        for r in condition.segment_refs() {
            if let Some(at) = path.iter().position(|p| p == r) {
                let mut cycle = path[at..].to_vec();
                cycle.push(r.to_string());
                return Err(EvalError::Cycle(cycle));
            }
            let next = segments
                .get(r)
                .ok_or_else(|| EvalError::UnknownSegment(r.to_string()))?;
            path.push(r.to_string());
            visit(next, path, segments)?;
            path.pop();
        }
        Ok(())
    }
    visit(condition, &mut vec![name.to_string()], segments)
}

/// Where a name's values come from.
enum Source<'a> {
    Trait(&'a Column),
    Metric(&'a str, TraitType),
}

impl Dataset<'_> {
    fn len(&self) -> u32 {
        self.profiles.len() as u32
    }

    /// Every live profile (retired ones are never members).
    fn universe(&self) -> RoaringBitmap {
        let mut all = RoaringBitmap::new();
        all.insert_range(0..self.len());
        all - &self.profiles.retired
    }

    fn source(&self, name: &str) -> Result<Source<'_>, EvalError> {
        if let Some(column) = self.profiles.columns.get(name) {
            return Ok(Source::Trait(column));
        }
        match (self.metrics, metric_type(name)) {
            (Some(m), Some(_)) if m.clv.is_none() && PREDICTION_NAMES.contains(&name) => {
                Err(EvalError::NoModel(name.to_string()))
            }
            (Some(_), Some(ty)) => Ok(Source::Metric(
                static_metric_name(name).expect("metric_type knows only metric names"),
                ty,
            )),
            _ => Err(EvalError::UnknownName(name.to_string())),
        }
    }

    fn value(&self, source: &Source<'_>, p: ProfileId) -> Option<Value> {
        match source {
            Source::Trait(column) => column.get(p),
            Source::Metric(name, _) => self.metrics.and_then(|m| m.value(name, p)),
        }
    }

    /// Number of profiles.
    pub fn profile_count(&self) -> u32 {
        self.len()
    }

    /// The type of trait or metric `name`.
    pub fn type_of(&self, name: &str) -> Result<TraitType, EvalError> {
        Ok(match self.source(name)? {
            Source::Trait(c) => c.trait_type(),
            Source::Metric(_, ty) => ty,
        })
    }

    /// The value of trait or metric `name` for profile `p` (an error for unknown names).
    pub fn value_of(&self, name: &str, p: ProfileId) -> Result<Option<Value>, EvalError> {
        let source = self.source(name)?;
        Ok(self.value(&source, p))
    }

    /// Explains how `condition` treats profile `p`.
    pub fn explain(&self, condition: &Condition, p: ProfileId) -> Result<Explanation, EvalError> {
        let matched = self.evaluate(condition)?.contains(p);
        let explain_all = |cs: &[Condition]| -> Result<Vec<Explanation>, EvalError> {
            cs.iter().map(|c| self.explain(c, p)).collect()
        };
        let (saw, children) = match condition {
            Condition::And { all: cs } | Condition::Or { any: cs } => {
                (String::new(), explain_all(cs)?)
            }
            Condition::Not { not } => (String::new(), vec![self.explain(not, p)?]),
            Condition::Compare { left, .. }
            | Condition::In { operand: left, .. }
            | Condition::Between { operand: left, .. } => (self.describe_operand(left, p)?, vec![]),
            Condition::Exists { name, .. }
            | Condition::Text { name, .. }
            | Condition::Has { name, .. } => (
                self.describe_operand(&Operand::Name(name.clone()), p)?,
                vec![],
            ),
            Condition::InSegment { segment } => {
                let inner = self
                    .segments
                    .and_then(|s| s.get(segment))
                    .ok_or_else(|| EvalError::UnknownSegment(segment.clone()))?;
                (String::new(), vec![self.explain(inner, p)?])
            }
            behavioural => match self.events {
                Some(events) => (
                    crate::behaviour::describe(events, p, self.as_of, behavioural)?,
                    vec![],
                ),
                None => (String::new(), vec![]),
            },
        };
        Ok(Explanation {
            condition: condition.to_string(),
            matched,
            saw,
            children,
        })
    }

    fn describe_operand(&self, operand: &Operand, p: ProfileId) -> Result<String, EvalError> {
        Ok(match operand {
            Operand::Name(name) => match self.value_of(name, p)? {
                Some(Value::Str(s)) => format!("{s:?}"),
                Some(v) => v.to_string(),
                None => "missing".into(),
            },
            arith => match self.numeric(arith)?(p) {
                Some(x) => format!("{arith} = {x}"),
                None => format!("{arith} is missing"),
            },
        })
    }

    /// Evaluates `condition` to the set of matching profiles (never a retired one).
    pub fn evaluate(&self, condition: &Condition) -> Result<RoaringBitmap, EvalError> {
        Ok(self.eval(condition, &mut Vec::new())? - &self.profiles.retired)
    }

    /// Evaluates with `path` holding the segments being evaluated (to catch cycles).
    fn eval(
        &self,
        condition: &Condition,
        path: &mut Vec<String>,
    ) -> Result<RoaringBitmap, EvalError> {
        Ok(match condition {
            Condition::And { all } => {
                let mut it = all.iter();
                let mut acc = match it.next() {
                    Some(c) => self.eval(c, path)?,
                    None => return Ok(self.universe()),
                };
                for c in it {
                    if acc.is_empty() {
                        break;
                    }
                    acc &= self.eval(c, path)?;
                }
                acc
            }
            Condition::Or { any } => {
                let mut acc = RoaringBitmap::new();
                for c in any {
                    acc |= self.eval(c, path)?;
                }
                acc
            }
            Condition::Not { not } => self.universe() - self.eval(not, path)?,
            Condition::Compare { left, op, right } => self.compare(left, *op, right)?,
            Condition::In {
                operand,
                values,
                negated,
            } => {
                let matched = self.any_of(operand, values, CompareOp::Eq)?;
                if *negated {
                    self.present(operand)? - matched
                } else {
                    matched
                }
            }
            Condition::Between { operand, low, high } => {
                self.compare(operand, CompareOp::Ge, low)?
                    & self.compare(operand, CompareOp::Le, high)?
            }
            Condition::Exists { name, negated } => {
                let present = self.present(&Operand::Name(name.clone()))?;
                if *negated {
                    self.universe() - present
                } else {
                    present
                }
            }
            Condition::Text { name, op, value } => self.text(name, *op, value)?,
            Condition::Has { name, value } => self.has(name, value)?,
            Condition::InSegment { segment } => {
                if let Some(at) = path.iter().position(|p| p == segment) {
                    let mut cycle = path[at..].to_vec();
                    cycle.push(segment.clone());
                    return Err(EvalError::Cycle(cycle));
                }
                let inner = self
                    .segments
                    .and_then(|s| s.get(segment))
                    .ok_or_else(|| EvalError::UnknownSegment(segment.clone()))?;
                path.push(segment.clone());
                let members = self.eval(inner, path)?;
                path.pop();
                members
            }
            Condition::Count { .. }
            | Condition::Aggregate { .. }
            | Condition::Did { .. }
            | Condition::LastBefore { .. }
            | Condition::First { .. }
            | Condition::Sequence { .. } => match self.events {
                Some(events) => {
                    crate::behaviour::evaluate(events, self.len(), self.as_of, condition)?
                }
                None => {
                    return Err(EvalError::Unsupported(
                        "a behavioural condition without events",
                    ))
                }
            },
        })
    }

    /// Profiles that have a value for `operand` (every name present, no division by zero).
    fn present(&self, operand: &Operand) -> Result<RoaringBitmap, EvalError> {
        if let Operand::Name(name) = operand {
            let source = self.source(name)?;
            if let Source::Trait(column) = source {
                if let Some(index) = &*self.profiles.indexes.get(name, column) {
                    return Ok(index.present.clone());
                }
                return Ok(scan(self.len() as usize, |p| column.has_value(p as u32)));
            }
            return Ok(scan(self.len() as usize, |p| {
                self.value(&source, p as u32).is_some()
            }));
        }
        let numeric = self.numeric(operand)?;
        Ok(scan(self.len() as usize, |p| numeric(p as u32).is_some()))
    }

    fn any_of(
        &self,
        operand: &Operand,
        values: &[Literal],
        op: CompareOp,
    ) -> Result<RoaringBitmap, EvalError> {
        let mut acc = RoaringBitmap::new();
        for v in values {
            acc |= self.compare(operand, op, v)?;
        }
        Ok(acc)
    }

    fn compare(
        &self,
        left: &Operand,
        op: CompareOp,
        right: &Literal,
    ) -> Result<RoaringBitmap, EvalError> {
        let Operand::Name(name) = left else {
            let target = right
                .as_number()
                .ok_or_else(|| EvalError::arithmetic_literal(left))?;
            let numeric = self.numeric(left)?;
            return Ok(scan(self.len() as usize, |p| {
                numeric(p as u32).is_some_and(|x| op.holds(x.partial_cmp(&target)))
            }));
        };
        let source = self.source(name)?;
        let ty = match &source {
            Source::Trait(c) => c.trait_type(),
            Source::Metric(_, ty) => *ty,
        };
        check_literal(name, ty, right)?;
        if let (Source::Trait(column @ Column::Str { dict, .. }), Literal::Str(s)) =
            (&source, right)
        {
            let hits: Vec<bool> = (0..dict.len() as u32)
                .map(|code| op.holds(Some(dict.value(code).cmp(s.as_str()))))
                .collect();
            return Ok(self.strings_where(name, column, &hits));
        }
        Ok(match source {
            Source::Trait(column) => match &*self.profiles.indexes.get(name, column) {
                Some(index) => indexed_compare(index, column, op, right),
                None => scan_compare(column, op, right),
            },
            Source::Metric(..) => scan(self.len() as usize, |p| {
                self.value(&source, p as u32)
                    .is_some_and(|v| op.holds(compare_value(&v, right)))
            }),
        })
    }

    /// A per-profile numeric evaluator for arithmetic (and numeric names).
    fn numeric<'s>(
        &'s self,
        operand: &'s Operand,
    ) -> Result<Box<dyn Fn(ProfileId) -> Option<f64> + 's>, EvalError> {
        Ok(match operand {
            Operand::Number(x) => {
                let x = *x;
                Box::new(move |_| Some(x))
            }
            Operand::Name(name) => {
                let source = self.source(name)?;
                let ty = match &source {
                    Source::Trait(c) => c.trait_type(),
                    Source::Metric(_, ty) => *ty,
                };
                if !matches!(ty, TraitType::Integer | TraitType::Float) {
                    return Err(EvalError::not_numeric(name, ty));
                }
                Box::new(move |p| match self.value(&source, p) {
                    Some(Value::Int(i)) => Some(i as f64),
                    Some(Value::Float(x)) => Some(x),
                    _ => None,
                })
            }
            Operand::Arith { op, left, right } => {
                let (l, r, op) = (self.numeric(left)?, self.numeric(right)?, *op);
                Box::new(move |p| op.apply(l(p)?, r(p)?))
            }
        })
    }

    fn text(&self, name: &str, op: TextOp, pattern: &str) -> Result<RoaringBitmap, EvalError> {
        let source = self.source(name)?;
        let regex = || match op {
            TextOp::Matches => {
                regex::Regex::new(pattern)
                    .map(Some)
                    .map_err(|e| EvalError::BadRegex {
                        pattern: pattern.into(),
                        reason: e.to_string().lines().last().unwrap_or_default().to_string(),
                    })
            }
            _ => Ok(None),
        };
        let test = |s: &str, regex: &Option<regex::Regex>| match op {
            TextOp::Contains => s.contains(pattern),
            TextOp::StartsWith => s.starts_with(pattern),
            TextOp::EndsWith => s.ends_with(pattern),
            TextOp::Matches => regex.as_ref().is_some_and(|r| r.is_match(s)),
        };
        if let Source::Trait(Column::Sparse(sparse)) = &source {
            if sparse.trait_type() == TraitType::String {
                let regex = regex()?;
                return Ok(sparse
                    .values()
                    .filter(|(_, v)| matches!(v, Value::Str(s) if test(s, &regex)))
                    .map(|(p, _)| p)
                    .collect());
            }
        }
        let Source::Trait(column @ Column::Str { dict, .. }) = source else {
            let ty = match source {
                Source::Trait(c) => c.trait_type(),
                Source::Metric(_, ty) => ty,
            };
            return Err(EvalError::not_text(name, ty));
        };
        let regex = regex()?;
        // Test each distinct string once, then scan the codes.
        let hits: Vec<bool> = (0..dict.len() as u32)
            .map(|code| test(dict.value(code), &regex))
            .collect();
        Ok(self.strings_where(name, column, &hits))
    }

    /// The profiles of string column `name` whose value's dictionary code is a hit
    /// (each distinct string was tested once): through the index, or one scan of codes.
    fn strings_where(&self, name: &str, column: &Column, hits: &[bool]) -> RoaringBitmap {
        if let Some(index) = &*self.profiles.indexes.get(name, column) {
            return index.select(|code| hits[code]);
        }
        let Column::Str { codes, .. } = column else {
            return RoaringBitmap::new();
        };
        scan(codes.len(), |p| {
            let c = codes[p];
            c != NO_CODE && hits[c as usize]
        })
    }

    fn has(&self, name: &str, member: &str) -> Result<RoaringBitmap, EvalError> {
        match self.source(name)? {
            Source::Trait(Column::Sparse(s)) if s.trait_type() == TraitType::StringSet => Ok(s
                .values()
                .filter(
                    |(_, v)| matches!(v, Value::Set(items) if items.iter().any(|i| i == member)),
                )
                .map(|(p, _)| p)
                .collect()),
            Source::Trait(
                column @ Column::Set {
                    dict,
                    offsets,
                    items,
                    present,
                },
            ) => {
                let Some(code) = dict.code(member) else {
                    return Ok(RoaringBitmap::new());
                };
                if let Some(index) = &*self.profiles.indexes.get(name, column) {
                    return Ok(index.bitmaps[code as usize].clone());
                }
                Ok(scan(present.len(), |p| {
                    present[p]
                        && items[offsets[p] as usize..offsets[p + 1] as usize].contains(&code)
                }))
            }
            other => Err(EvalError::not_set(
                name,
                match other {
                    Source::Trait(c) => c.trait_type(),
                    Source::Metric(_, ty) => ty,
                },
            )),
        }
    }
}

/// The static metric name equal to `name`.
pub(crate) fn static_metric_name(name: &str) -> Option<&'static str> {
    crate::metrics::METRIC_NAMES
        .iter()
        .chain(&PREDICTION_NAMES)
        .copied()
        .find(|m| *m == name)
}

/// Refuses comparisons between a name of type `ty` and a literal of another kind.
pub fn check_literal(name: &str, ty: TraitType, lit: &Literal) -> Result<(), EvalError> {
    let ok = matches!(
        (ty, lit),
        (
            TraitType::Integer | TraitType::Float,
            Literal::Int(_) | Literal::Float(_)
        ) | (TraitType::String, Literal::Str(_))
            | (TraitType::Bool, Literal::Bool(_))
            | (TraitType::Timestamp, Literal::Time(_))
    );
    if ok {
        return Ok(());
    }
    let hint = match ty {
        TraitType::Integer | TraitType::Float => "compare it with a number",
        TraitType::String => "compare it with a \"string\"",
        TraitType::Bool => "compare it with true or false",
        TraitType::Timestamp => "compare it with a date such as @2024-01-31",
        TraitType::StringSet => "test members with `has \"value\"`",
    };
    Err(EvalError::WrongType {
        name: name.into(),
        ty,
        hint: hint.into(),
    })
}

/// Orders a value against a literal of a compatible kind.
/// `column OP lit` through the column's bitmap index: the union of the bitmaps of the
/// values that satisfy it (the literal's kind was checked against the column's type;
/// strings go through `strings_where`).
fn indexed_compare(
    index: &ValueIndex,
    column: &Column,
    op: CompareOp,
    lit: &Literal,
) -> RoaringBitmap {
    match (column, lit) {
        (Column::Bool(_), Literal::Bool(b)) => index.select_numeric(f64::from(u8::from(*b)), op),
        (Column::Time(_), Literal::Time(t)) => match &index.keys {
            Keys::Ints(keys) => index.select(|i| op.holds(Some(keys[i].cmp(&t.0)))),
            _ => RoaringBitmap::new(),
        },
        (Column::Int(_), Literal::Int(b)) => match &index.keys {
            Keys::Ints(keys) => index.select(|i| op.holds(Some(keys[i].cmp(b)))),
            _ => RoaringBitmap::new(),
        },
        (_, lit) => match lit.as_number() {
            Some(x) => index.select_numeric(x, op),
            None => RoaringBitmap::new(),
        },
    }
}

/// `column OP lit` by one pass over the column, without building values.
fn scan_compare(column: &Column, op: CompareOp, lit: &Literal) -> RoaringBitmap {
    let test = |o: Option<Ordering>| op.holds(o);
    match (column, lit) {
        (Column::Sparse(s), lit) => s
            .values()
            .filter(|(_, v)| test(compare_value(v, lit)))
            .map(|(p, _)| p)
            .collect(),
        (Column::Int(v), Literal::Int(b)) => {
            scan(v.len(), |p| v[p].is_some_and(|a| test(Some(a.cmp(b)))))
        }
        (Column::Time(v), Literal::Time(t)) => {
            scan(v.len(), |p| v[p].is_some_and(|a| test(Some(a.cmp(&t.0)))))
        }
        (Column::Bool(v), Literal::Bool(b)) => {
            scan(v.len(), |p| v[p].is_some_and(|a| test(Some(a.cmp(b)))))
        }
        (Column::Int(v), lit) => match lit.as_number() {
            Some(x) => scan(v.len(), |p| {
                v[p].is_some_and(|a| test((a as f64).partial_cmp(&x)))
            }),
            None => RoaringBitmap::new(),
        },
        (Column::Float(v), lit) => match lit.as_number() {
            Some(x) => scan(v.len(), |p| v[p].is_some_and(|a| test(a.partial_cmp(&x)))),
            None => RoaringBitmap::new(),
        },
        _ => RoaringBitmap::new(),
    }
}

/// Orders a trait or metric value against a literal; `None` when their kinds differ.
pub(crate) fn compare_value(v: &Value, lit: &Literal) -> Option<Ordering> {
    match (v, lit) {
        (Value::Int(a), Literal::Int(b)) => Some(a.cmp(b)),
        (Value::Int(a), Literal::Float(b)) => (*a as f64).partial_cmp(b),
        (Value::Float(a), Literal::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Value::Float(a), Literal::Float(b)) => a.partial_cmp(b),
        (Value::Str(a), Literal::Str(b)) => Some(a.as_str().cmp(b.as_str())),
        (Value::Bool(a), Literal::Bool(b)) => Some(a.cmp(b)),
        (Value::Time(a), Literal::Time(b)) => Some(a.cmp(b)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use microseg_core::condition::parse;
    use microseg_core::time::parse_timestamp;
    use microseg_core::{Schema, TraitSpec};

    use super::*;
    use crate::columnar::EventTableBuilder;
    use crate::metrics::{compute, MetricsConfig};

    /// Five profiles; profile 4 has no traits at all.
    fn dataset() -> (ProfileTable, Metrics, EventTable) {
        let mut schema = Schema::new();
        for (name, ty) in [
            ("age", TraitType::Integer),
            ("score", TraitType::Float),
            ("city", TraitType::String),
            ("vip", TraitType::Bool),
            ("tags", TraitType::StringSet),
            ("joined", TraitType::Timestamp),
            ("refunds", TraitType::Float),
        ] {
            schema.insert(name.into(), TraitSpec::new(ty));
        }
        let mut table = ProfileTable::with_schema(&schema);
        let t = |s: &str| Value::Time(parse_timestamp(s).unwrap());
        let rows: Vec<Vec<(&str, Value)>> = vec![
            vec![
                ("age", Value::Int(25)),
                ("score", Value::Float(0.5)),
                ("city", Value::Str("Budapest".into())),
                ("vip", Value::Bool(true)),
                ("tags", Value::Set(vec!["mtb".into(), "road".into()])),
                ("joined", t("2024-01-01")),
                ("refunds", Value::Float(10.0)),
            ],
            vec![
                ("age", Value::Int(34)),
                ("score", Value::Float(2.0)),
                ("city", Value::Str("Vienna".into())),
                ("vip", Value::Bool(false)),
                ("tags", Value::Set(vec!["road".into()])),
                ("joined", t("2024-06-01")),
            ],
            vec![
                ("age", Value::Int(35)),
                ("city", Value::Str("Budapest".into())),
                ("tags", Value::Set(vec![])),
            ],
            vec![
                ("score", Value::Float(-1.0)),
                ("city", Value::Str("Bern".into())),
                ("refunds", Value::Float(0.0)),
            ],
            vec![],
        ];
        for (i, row) in rows.iter().enumerate() {
            let traits: HashMap<&str, Value> = row.iter().cloned().collect();
            table.push(&format!("p{i}"), &traits);
        }
        let mut events = EventTableBuilder::default();
        events.push(
            0,
            parse_timestamp("2024-07-01").unwrap().0,
            "order_completed",
            Some(100.0),
        );
        events.push(
            0,
            parse_timestamp("2024-07-02").unwrap().0,
            "order_completed",
            Some(50.0),
        );
        events.push(
            1,
            parse_timestamp("2024-07-03").unwrap().0,
            "order_completed",
            Some(30.0),
        );
        events.push(
            3,
            parse_timestamp("2024-07-03").unwrap().0,
            "page_viewed",
            None,
        );
        let events = events.finish(5);
        let metrics = compute(
            &events,
            &table.external_ids,
            parse_timestamp("2024-08-01").unwrap(),
            &MetricsConfig::default(),
        );
        (table, metrics, events)
    }

    fn with<T>(f: impl FnOnce(&Dataset<'_>) -> T) -> T {
        let (table, metrics, events) = dataset();
        let segments: BTreeMap<String, Condition> = [
            ("budapest", r#"city = "Budapest""#),
            ("young_budapest", r#"in_segment("budapest") and age < 30"#),
            ("loop_a", r#"in_segment("loop_b")"#),
            ("loop_b", r#"age > 1 and in_segment("loop_a")"#),
        ]
        .into_iter()
        .map(|(n, c)| (n.to_string(), parse(c).unwrap()))
        .collect();
        f(&Dataset {
            profiles: &table,
            metrics: Some(&metrics),
            events: Some(&events),
            as_of: parse_timestamp("2024-08-01").unwrap(),
            segments: Some(&segments),
        })
    }

    #[test]
    fn segments_refer_to_segments_and_cycles_are_named() {
        assert_eq!(members(r#"in_segment("budapest")"#), [0, 2]);
        assert_eq!(members(r#"in_segment("young_budapest")"#), [0]);
        assert_eq!(members(r#"not in_segment("budapest")"#), [1, 3, 4]);
        assert_eq!(error(r#"in_segment("nope")"#), "unknown segment 'nope'");
        assert_eq!(
            error(r#"in_segment("loop_a")"#),
            "segment reference cycle: loop_a -> loop_b -> loop_a"
        );
        let mut saved = BTreeMap::new();
        saved.insert("a".to_string(), parse(r#"in_segment("b")"#).unwrap());
        saved.insert("b".to_string(), parse("x = 1").unwrap());
        let c = parse(r#"in_segment("a")"#).unwrap();
        assert_eq!(check_references("new", &c, &saved), Ok(()));
        assert_eq!(
            check_references("b", &c, &saved),
            Err(EvalError::Cycle(vec!["b".into(), "a".into(), "b".into()]))
        );
        assert_eq!(
            check_references("new", &parse(r#"in_segment("zz")"#).unwrap(), &saved),
            Err(EvalError::UnknownSegment("zz".into()))
        );
    }

    fn members(text: &str) -> Vec<u32> {
        let c = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        with(|data| {
            data.evaluate(&c)
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .iter()
                .collect()
        })
    }

    fn error(text: &str) -> String {
        let c = parse(text).unwrap();
        with(|data| data.evaluate(&c).unwrap_err().to_string())
    }

    #[test]
    fn comparisons_never_match_missing_values() {
        assert_eq!(members("age = 34"), [1]);
        assert_eq!(members("age != 34"), [0, 2], "profiles 3 and 4 have no age");
        assert_eq!(members("age >= 34"), [1, 2]);
        assert_eq!(members("age < 30.5"), [0]);
        assert_eq!(members("score > 0"), [0, 1]);
        assert_eq!(members(r#"city = "Budapest""#), [0, 2]);
        assert_eq!(members(r#"city != "Budapest""#), [1, 3]);
        assert_eq!(members(r#"city = "Nowhere""#), Vec::<u32>::new());
        assert_eq!(members(r#"city != "Nowhere""#), [0, 1, 2, 3]);
        assert_eq!(members(r#"city < "C""#), [0, 2, 3]);
        assert_eq!(members("vip = false"), [1]);
        assert_eq!(members("joined >= @2024-03-01"), [1]);
    }

    #[test]
    fn not_is_the_complement_unlike_not_equal() {
        assert_eq!(members("not age = 34"), [0, 2, 3, 4]);
        assert_eq!(members("not (age = 34 or age = 25)"), [2, 3, 4]);
        assert_eq!(members("age > 30 and not vip = true"), [1, 2]);
    }

    #[test]
    fn in_between_exists() {
        assert_eq!(members("age in (25, 35)"), [0, 2]);
        assert_eq!(
            members("age not in (25, 35)"),
            [1],
            "present and none of them"
        );
        assert_eq!(
            members("age between 25 and 34"),
            [0, 1],
            "both ends included"
        );
        assert_eq!(members(r#"city between "Bern" and "Bern""#), [3]);
        assert_eq!(members(r#"city between "B" and "C""#), [0, 2, 3]);
        assert_eq!(members("score exists"), [0, 1, 3]);
        assert_eq!(members("score not exists"), [2, 4]);
        assert_eq!(members("aov exists"), [0, 1], "metrics are traits");
    }

    #[test]
    fn text_tests_and_set_membership() {
        assert_eq!(members(r#"city contains "e""#), [0, 1, 2, 3]);
        assert_eq!(members(r#"city contains "nn""#), [1]);
        assert_eq!(members(r#"city starts_with "Bu""#), [0, 2]);
        assert_eq!(members(r#"city ends_with "na""#), [1]);
        assert_eq!(members(r#"city matches "^B.*n$""#), [3]);
        assert_eq!(members(r#"tags has "road""#), [0, 1]);
        assert_eq!(members(r#"tags has "gravel""#), Vec::<u32>::new());
        assert_eq!(members(r#"not tags has "road""#), [2, 3, 4]);
    }

    #[test]
    fn metrics_and_arithmetic() {
        // Profile 0: two orders, 150 revenue; profile 1: one order, 30.
        assert_eq!(members("orders >= 2"), [0]);
        assert_eq!(members("orders = 0"), [2, 3, 4]);
        assert_eq!(
            members("revenue / orders > 40"),
            [0],
            "division by zero orders is missing"
        );
        assert_eq!(
            members("revenue - refunds >= 100"),
            [0],
            "missing refunds on 1 is missing"
        );
        assert_eq!(members("score * 2 + 1 > 2"), [1], "0.5 * 2 + 1 is not > 2");
        assert_eq!(members("score * 2 + 1 >= 2"), [0, 1]);
        assert_eq!(
            members("score / refunds < 0"),
            Vec::<u32>::new(),
            "3 divides by zero"
        );
        // Buyers 0 (2 orders, 150, last 30 days ago) and 1 (1 order, 30, 29 days ago):
        // NTILE(5) over two rows gives buckets 1 and 2, so 1 scores R5 F1 M1 and 0 R4 F2 M2.
        assert_eq!(members(r#"rfm = "511""#), [1]);
        assert_eq!(members(r#"rfm = "422""#), [0]);
        assert_eq!(members("recency_days = 30"), [0]);
    }

    #[test]
    fn type_errors_and_unknown_names_are_explained() {
        assert_eq!(error("nope = 1"), "unknown trait or metric 'nope'");
        assert_eq!(
            error(r#"age = "old""#),
            "'age' is integer: compare it with a number"
        );
        assert_eq!(
            error(r#"tags = "road""#),
            "'tags' is string_set: test members with `has \"value\"`"
        );
        assert_eq!(
            error(r#"city has "x""#),
            "'city' is string: `has` needs a string set; compare strings with = or contains"
        );
        assert_eq!(
            error(r#"city + 1 > 2"#),
            "'city' is string: arithmetic needs numbers"
        );
        assert!(error(r#"city matches "[z-a]""#).starts_with("bad regular expression '[z-a]'"));
        assert_eq!(error(r#"in_segment("x")"#), "unknown segment 'x'");
    }
}

#[cfg(test)]
mod explain_tests {
    use super::*;
    use crate::columnar::EventTableBuilder;
    use microseg_core::condition::parse;
    use microseg_core::{Schema, TraitSpec};
    use std::collections::HashMap;

    #[test]
    fn explain_reports_each_leaf_with_what_it_saw() {
        let mut schema = Schema::new();
        schema.insert("city".into(), TraitSpec::new(TraitType::String));
        schema.insert("age".into(), TraitSpec::new(TraitType::Integer));
        let mut table = ProfileTable::with_schema(&schema);
        let mut traits = HashMap::new();
        traits.insert("city", Value::Str("Graz".into()));
        table.push("p0", &traits);
        let mut b = EventTableBuilder::default();
        b.push(0, 1_000, "order_completed", Some(20.0));
        b.push(0, 2_000, "order_completed", Some(30.0));
        let events = b.finish(1);
        let data = Dataset {
            profiles: &table,
            metrics: None,
            events: Some(&events),
            as_of: Timestamp(86_400_000),
            segments: None,
        };
        let c = parse(r#"city = "Graz" and (age > 30 or count(order_completed) >= 3) and not sum(revenue of order_completed) > 100"#).unwrap();
        let e = data.explain(&c, 0).unwrap();
        assert!(!e.matched);
        let leaves: Vec<(bool, &str)> = vec![
            (e.children[0].matched, e.children[0].saw.as_str()),
            (
                e.children[1].children[0].matched,
                e.children[1].children[0].saw.as_str(),
            ),
            (
                e.children[1].children[1].matched,
                e.children[1].children[1].saw.as_str(),
            ),
            (
                e.children[2].children[0].matched,
                e.children[2].children[0].saw.as_str(),
            ),
        ];
        assert_eq!(
            leaves,
            [
                (true, "\"Graz\""),
                (false, "missing"),
                (false, "count = 2"),
                (false, "sum = 50")
            ]
        );
        assert!(e.children[2].matched, "not (sum > 100) holds");
        assert_eq!(
            e.children[1].condition,
            "age > 30 or count(order_completed) >= 3"
        );
    }
}
