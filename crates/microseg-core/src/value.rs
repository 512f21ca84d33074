//! Typed trait values, their types, and type inference from text.
//!
//! A trait keeps the type it was first given (declared in the workspace config or inferred
//! by the first import); later values must conform or their row is rejected.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::time::{parse_timestamp, Timestamp};

/// The type of a profile trait.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TraitType {
    /// `true` / `false`.
    Bool,
    /// A signed 64-bit integer.
    Integer,
    /// A 64-bit float.
    Float,
    /// Text.
    String,
    /// A set of strings (tags, interests), written `a;b;c` or `a|b|c` in text files.
    StringSet,
    /// A UTC instant.
    Timestamp,
}

impl TraitType {
    /// The name used in configs and output (`string_set`, ...).
    pub fn name(self) -> &'static str {
        match self {
            TraitType::Bool => "bool",
            TraitType::Integer => "integer",
            TraitType::Float => "float",
            TraitType::String => "string",
            TraitType::StringSet => "string_set",
            TraitType::Timestamp => "timestamp",
        }
    }

    /// Reads a type name as written in a config (`int` and `set` are accepted too).
    pub fn from_name(name: &str) -> Option<TraitType> {
        Some(match name {
            "bool" | "boolean" => TraitType::Bool,
            "integer" | "int" => TraitType::Integer,
            "float" | "number" => TraitType::Float,
            "string" | "text" => TraitType::String,
            "string_set" | "set" => TraitType::StringSet,
            "timestamp" | "time" => TraitType::Timestamp,
            _ => return None,
        })
    }
}

impl fmt::Display for TraitType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One typed value of a trait or event property.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A finite float.
    Float(f64),
    /// Text.
    Str(String),
    /// A set of strings, sorted and without duplicates.
    Set(Vec<String>),
    /// An instant.
    Time(Timestamp),
}

impl Value {
    /// The type this value has.
    pub fn trait_type(&self) -> TraitType {
        match self {
            Value::Bool(_) => TraitType::Bool,
            Value::Int(_) => TraitType::Integer,
            Value::Float(_) => TraitType::Float,
            Value::Str(_) => TraitType::String,
            Value::Set(_) => TraitType::StringSet,
            Value::Time(_) => TraitType::Timestamp,
        }
    }

    /// The value as a number, for integers and floats.
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Int(i) => Some(*i as f64),
            Value::Float(x) => Some(*x),
            _ => None,
        }
    }

    /// The value as JSON, as stored in the durable store (timestamps as RFC 3339 text).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Bool(b) => (*b).into(),
            Value::Int(i) => (*i).into(),
            Value::Float(x) => serde_json::Number::from_f64(*x)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Str(s) => s.clone().into(),
            Value::Set(items) => items.clone().into(),
            Value::Time(t) => t.to_string().into(),
        }
    }

    /// Reads a stored JSON value as `ty`; `None` for JSON null or a value of another shape.
    pub fn from_json(ty: TraitType, json: &serde_json::Value) -> Option<Value> {
        use serde_json::Value as J;
        Some(match (ty, json) {
            (TraitType::Bool, J::Bool(b)) => Value::Bool(*b),
            (TraitType::Integer, J::Number(n)) => Value::Int(n.as_i64()?),
            (TraitType::Float, J::Number(n)) => Value::Float(n.as_f64()?),
            (TraitType::String, J::String(s)) => Value::Str(s.clone()),
            (TraitType::StringSet, J::Array(items)) => Value::Set(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            ),
            (TraitType::Timestamp, J::String(s)) => Value::Time(parse_timestamp(s).ok()?),
            (TraitType::Timestamp, J::Number(n)) => Value::Time(Timestamp(n.as_i64()?)),
            _ => return None,
        })
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Bool(b) => write!(f, "{b}"),
            Value::Int(i) => write!(f, "{i}"),
            Value::Float(x) => write!(f, "{x}"),
            Value::Str(s) => f.write_str(s),
            Value::Set(items) => f.write_str(&items.join(";")),
            Value::Time(t) => write!(f, "{t}"),
        }
    }
}

/// A text value that does not have the expected type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, found '{found}'")]
pub struct TypeMismatch {
    /// The expected type.
    pub expected: TraitType,
    /// The offending text (cut to 80 characters).
    pub found: String,
}

/// Parses text as a value of type `ty`. `separators` split string sets.
pub fn parse_text(ty: TraitType, text: &str, separators: &[char]) -> Result<Value, TypeMismatch> {
    let t = text.trim();
    let mismatch = || TypeMismatch {
        expected: ty,
        found: text.chars().take(80).collect(),
    };
    Ok(match ty {
        TraitType::Bool => Value::Bool(parse_bool(t).ok_or_else(mismatch)?),
        TraitType::Integer => Value::Int(t.parse().map_err(|_| mismatch())?),
        TraitType::Float => Value::Float(parse_float(t).ok_or_else(mismatch)?),
        TraitType::String => Value::Str(text.to_string()),
        TraitType::StringSet => Value::Set(split_set(t, separators)),
        TraitType::Timestamp => Value::Time(parse_timestamp(t).map_err(|_| mismatch())?),
    })
}

/// `true`/`false` in any case.
pub fn parse_bool(t: &str) -> Option<bool> {
    if t.eq_ignore_ascii_case("true") {
        Some(true)
    } else if t.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

/// A finite decimal number (no `NaN`, no `inf`).
pub fn parse_float(t: &str) -> Option<f64> {
    let x: f64 = t.parse().ok()?;
    let plain = t
        .bytes()
        .all(|c| c.is_ascii_digit() || matches!(c, b'.' | b'-' | b'+' | b'e' | b'E'));
    (x.is_finite() && plain).then_some(x)
}

/// Splits a string set on any of `separators`, trimming items, dropping empty ones,
/// sorting and removing duplicates.
pub fn split_set(text: &str, separators: &[char]) -> Vec<String> {
    let mut items: Vec<String> = text
        .split(|c| separators.contains(&c))
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    items.sort();
    items.dedup();
    items
}

/// Narrows the type of a text column value by value: the most specific type every value
/// so far parses as (bool, integer, float, timestamp, else string). Empty values are
/// skipped; a column with no values infers as string.
#[derive(Debug, Clone, Copy)]
pub struct TypeGuess {
    can_bool: bool,
    can_int: bool,
    can_float: bool,
    can_time: bool,
    can_set: bool,
    seen: bool,
}

impl Default for TypeGuess {
    fn default() -> Self {
        TypeGuess {
            can_bool: true,
            can_int: true,
            can_float: true,
            can_time: true,
            can_set: true,
            seen: false,
        }
    }
}

impl TypeGuess {
    /// Takes one text value into account.
    pub fn observe(&mut self, text: &str) {
        let t = text.trim();
        if t.is_empty() {
            return;
        }
        self.seen = true;
        self.can_set = false;
        if self.can_bool && parse_bool(t).is_none() {
            self.can_bool = false;
        }
        if self.can_int && t.parse::<i64>().is_err() {
            self.can_int = false;
        }
        if self.can_float && parse_float(t).is_none() {
            self.can_float = false;
        }
        if self.can_time && parse_timestamp(t).is_err() {
            self.can_time = false;
        }
    }

    /// Takes an already typed value into account (from NDJSON or Parquet).
    pub fn observe_type(&mut self, ty: TraitType) {
        self.seen = true;
        self.can_bool &= ty == TraitType::Bool;
        self.can_int &= ty == TraitType::Integer;
        self.can_float &= matches!(ty, TraitType::Integer | TraitType::Float);
        self.can_time &= ty == TraitType::Timestamp;
        self.can_set &= ty == TraitType::StringSet;
    }

    /// The inferred type.
    pub fn result(&self) -> TraitType {
        match *self {
            TypeGuess { seen: false, .. } => TraitType::String,
            TypeGuess { can_bool: true, .. } => TraitType::Bool,
            TypeGuess { can_int: true, .. } => TraitType::Integer,
            TypeGuess {
                can_float: true, ..
            } => TraitType::Float,
            TypeGuess { can_time: true, .. } => TraitType::Timestamp,
            TypeGuess { can_set: true, .. } => TraitType::StringSet,
            _ => TraitType::String,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn infer(values: &[&str]) -> TraitType {
        let mut g = TypeGuess::default();
        values.iter().for_each(|v| g.observe(v));
        g.result()
    }

    #[test]
    fn inference_picks_the_narrowest_type() {
        assert_eq!(infer(&["true", "FALSE", ""]), TraitType::Bool);
        assert_eq!(infer(&["1", "-2", ""]), TraitType::Integer);
        assert_eq!(infer(&["1", "2.5"]), TraitType::Float);
        assert_eq!(
            infer(&["2024-01-01", "2024-01-02T10:00:00Z"]),
            TraitType::Timestamp
        );
        assert_eq!(infer(&["1", "x"]), TraitType::String);
        assert_eq!(infer(&["NaN"]), TraitType::String);
        assert_eq!(infer(&["", " "]), TraitType::String);
    }

    #[test]
    fn typed_observations_widen_integers_to_floats() {
        let mut g = TypeGuess::default();
        g.observe_type(TraitType::Integer);
        g.observe_type(TraitType::Float);
        assert_eq!(g.result(), TraitType::Float);
    }

    #[test]
    fn typed_lists_infer_as_string_sets_unless_mixed_with_text() {
        let mut g = TypeGuess::default();
        g.observe_type(TraitType::StringSet);
        assert_eq!(g.result(), TraitType::StringSet);
        g.observe("road");
        assert_eq!(g.result(), TraitType::String);
    }

    #[test]
    fn parse_text_checks_types_and_splits_sets() {
        assert_eq!(
            parse_text(TraitType::StringSet, "road; mtb|road", &[';', '|']).unwrap(),
            Value::Set(vec!["mtb".into(), "road".into()])
        );
        let err = parse_text(TraitType::Integer, "forty", &[]).unwrap_err();
        assert_eq!(err.to_string(), "expected integer, found 'forty'");
        assert!(parse_text(TraitType::Float, "inf", &[]).is_err());
    }

    #[test]
    fn json_round_trip_keeps_type() {
        let values = [
            Value::Bool(true),
            Value::Int(-3),
            Value::Float(2.5),
            Value::Str("Budapest".into()),
            Value::Set(vec!["a".into(), "b".into()]),
            Value::Time(Timestamp(951_782_400_000)),
        ];
        for v in values {
            assert_eq!(Value::from_json(v.trait_type(), &v.to_json()), Some(v));
        }
        assert_eq!(Value::from_json(TraitType::Integer, &"7".into()), None);
    }
}
