//! One incoming event and the test of a `where` filter against it, with the batch
//! evaluator's rules (`behaviour`): a property is a number or a text (booleans as
//! `true`/`false`, lists and objects as their JSON text); `revenue` falls back to the
//! event's revenue; a test against a value of another kind does not match.

use std::collections::HashMap;

use microseg_core::condition::{CompareOp, Condition, EventFilter, Literal, Operand, TextOp};
use regex::Regex;

use crate::behaviour::{order, Prop};
use crate::columnar::json_string;
use crate::evaluate::EvalError;

/// A property value of an incoming event.
#[derive(Debug, Clone, PartialEq)]
pub enum EventValue {
    /// A number.
    Number(f64),
    /// Text (booleans as `true` / `false`, lists and objects as JSON text).
    Text(String),
}

/// One event as the streaming evaluator sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// When it happened, UTC milliseconds.
    pub time: i64,
    /// Its name.
    pub name: String,
    /// Its revenue, if any.
    pub revenue: Option<f64>,
    /// Its properties (only those some segment reads need be given).
    pub properties: Vec<(String, EventValue)>,
}

impl StreamEvent {
    fn prop(&self, name: &str) -> Option<Prop<'_>> {
        if let Some((_, v)) = self.properties.iter().find(|(k, _)| k == name) {
            return Some(match v {
                EventValue::Number(x) => Prop::Number(*x),
                EventValue::Text(s) => Prop::Text(s),
            });
        }
        let x = self.revenue.filter(|x| !x.is_nan())?;
        (name == "revenue").then_some(Prop::Number(x))
    }

    /// The numeric value of property `name`, if it is a number.
    pub(crate) fn number(&self, name: &str) -> Option<f64> {
        match self.prop(name) {
            Some(Prop::Number(x)) => Some(x),
            _ => None,
        }
    }
}

/// An event filter ready to test events: its name and `where` test with its regular
/// expressions compiled.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    name: String,
    filter: Option<Condition>,
    regexes: HashMap<String, Regex>,
}

impl Matcher {
    /// Compiles `e`; the errors are the batch evaluator's.
    pub(crate) fn new(e: &EventFilter) -> Result<Matcher, EvalError> {
        let mut regexes = HashMap::new();
        if let Some(f) = &e.filter {
            let mut error = None;
            f.walk(&mut |c| match c {
                Condition::Text {
                    op: TextOp::Matches,
                    value,
                    ..
                } if !regexes.contains_key(value) => match Regex::new(value) {
                    Ok(re) => {
                        regexes.insert(value.clone(), re);
                    }
                    Err(e) => {
                        error.get_or_insert(EvalError::BadRegex {
                            pattern: value.clone(),
                            reason: e.to_string().lines().last().unwrap_or_default().to_string(),
                        });
                    }
                },
                Condition::Compare { .. }
                | Condition::In { .. }
                | Condition::Between { .. }
                | Condition::Exists { .. }
                | Condition::Text { .. }
                | Condition::Has { .. }
                | Condition::And { .. }
                | Condition::Or { .. }
                | Condition::Not { .. } => {}
                _ => {
                    error.get_or_insert(EvalError::Unsupported(
                        "a behavioural condition inside `where`",
                    ));
                }
            });
            if let Some(e) = error {
                return Err(e);
            }
        }
        Ok(Matcher {
            name: e.name.clone(),
            filter: e.filter.as_deref().cloned(),
            regexes,
        })
    }

    /// The event name this matcher looks at.
    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Whether `e` is such an event.
    pub(crate) fn matches(&self, e: &StreamEvent) -> bool {
        e.name == self.name && self.filter.as_ref().is_none_or(|f| self.holds(f, e))
    }

    fn holds(&self, c: &Condition, e: &StreamEvent) -> bool {
        match c {
            Condition::And { all } => all.iter().all(|c| self.holds(c, e)),
            Condition::Or { any } => any.iter().any(|c| self.holds(c, e)),
            Condition::Not { not } => !self.holds(not, e),
            Condition::Compare { left, op, right } => compare(e, left, *op, right),
            Condition::In {
                operand,
                values,
                negated,
            } => {
                let any = values.iter().any(|v| compare(e, operand, CompareOp::Eq, v));
                if *negated {
                    present(e, operand) && !any
                } else {
                    any
                }
            }
            Condition::Between { operand, low, high } => {
                compare(e, operand, CompareOp::Ge, low) && compare(e, operand, CompareOp::Le, high)
            }
            Condition::Exists { name, negated } => e.prop(name).is_some() != *negated,
            Condition::Text { name, op, value } => match e.prop(name) {
                Some(Prop::Text(s)) => match op {
                    TextOp::Contains => s.contains(value.as_str()),
                    TextOp::StartsWith => s.starts_with(value.as_str()),
                    TextOp::EndsWith => s.ends_with(value.as_str()),
                    TextOp::Matches => self.regexes.get(value).is_some_and(|re| re.is_match(s)),
                },
                _ => false,
            },
            Condition::Has { name, value } => match e.prop(name) {
                Some(Prop::Text(s)) => s == value || s.contains(&json_string(value)),
                _ => false,
            },
            // Refused by `Matcher::new`.
            _ => false,
        }
    }
}

fn compare(e: &StreamEvent, operand: &Operand, op: CompareOp, lit: &Literal) -> bool {
    match operand {
        Operand::Name(name) => e.prop(name).is_some_and(|p| op.holds(order(&p, lit))),
        arith => match (arith.evaluate(&|n| e.number(n)), lit.as_number()) {
            (Some(x), Some(t)) => op.holds(x.partial_cmp(&t)),
            _ => false,
        },
    }
}

fn present(e: &StreamEvent, operand: &Operand) -> bool {
    match operand {
        Operand::Name(name) => e.prop(name).is_some(),
        arith => arith.evaluate(&|n| e.number(n)).is_some(),
    }
}
