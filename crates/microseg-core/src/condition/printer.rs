//! [`Condition`] to text, such that parsing the text gives the same condition back.
//! Parentheses are printed where precedence or the tree's shape needs them: an `and`
//! inside an `and` keeps its own group, so `a and (b and c)` stays a nested tree.

use std::fmt::{self, Display, Formatter, Write};

use super::parser::RESERVED;
use super::{ArithOp, CompareOp, Condition, EventFilter, Literal, Operand, TextOp, Window};

impl Display for Condition {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Condition::And { all } => join(f, all, " and "),
            Condition::Or { any } => join(f, any, " or "),
            Condition::Not { not } => {
                f.write_str("not ")?;
                grouped(f, not)
            }
            Condition::Compare { left, op, right } => write!(f, "{left} {op} {right}"),
            Condition::In {
                operand,
                values,
                negated,
            } => {
                write!(f, "{operand} {}in (", if *negated { "not " } else { "" })?;
                for (i, v) in values.iter().enumerate() {
                    if i > 0 {
                        f.write_str(", ")?;
                    }
                    write!(f, "{v}")?;
                }
                f.write_char(')')
            }
            Condition::Between { operand, low, high } => {
                write!(f, "{operand} between {low} and {high}")
            }
            Condition::Exists { name, negated } => {
                name_text(f, name)?;
                f.write_str(if *negated { " not exists" } else { " exists" })
            }
            Condition::Text { name, op, value } => {
                name_text(f, name)?;
                let op = match op {
                    TextOp::Contains => "contains",
                    TextOp::StartsWith => "starts_with",
                    TextOp::EndsWith => "ends_with",
                    TextOp::Matches => "matches",
                };
                write!(f, " {op} ")?;
                string(f, value)
            }
            Condition::Has { name, value } => {
                name_text(f, name)?;
                f.write_str(" has ")?;
                string(f, value)
            }
            Condition::InSegment { segment } => {
                f.write_str("in_segment(")?;
                string(f, segment)?;
                f.write_char(')')
            }
            Condition::Count {
                event,
                window,
                op,
                value,
            } => {
                write!(f, "count({event}")?;
                if !window.is_all() {
                    write!(f, ", {window}")?;
                }
                write!(f, ") {op} ")?;
                number(f, *value)
            }
            Condition::Aggregate {
                function,
                property,
                event,
                window,
                op,
                value,
            } => {
                write!(f, "{}(", function.name())?;
                name_text(f, property)?;
                write!(f, " of {event}")?;
                if !window.is_all() {
                    write!(f, ", {window}")?;
                }
                write!(f, ") {op} ")?;
                number(f, *value)
            }
            Condition::Did { event, window } => {
                write!(f, "did({event})")?;
                if !window.is_all() {
                    write!(f, " {window}")?;
                }
                Ok(())
            }
            Condition::LastBefore { event, ago_ms } => {
                write!(f, "last({event}) before {} ago", Duration(*ago_ms))
            }
            Condition::First { event, window } => {
                write!(f, "first({event})")?;
                if !window.is_all() {
                    write!(f, " {window}")?;
                }
                Ok(())
            }
            Condition::Sequence {
                first,
                then,
                negated,
                within_ms,
                window,
            } => {
                let not = if *negated { "not " } else { "" };
                write!(
                    f,
                    "{first} then {not}{then} within {}",
                    Duration(*within_ms)
                )?;
                if !window.is_all() {
                    write!(f, ", {window}")?;
                }
                Ok(())
            }
        }
    }
}

/// Children of `and`/`or`: compound children and sequences keep their own parentheses.
fn join(f: &mut Formatter<'_>, items: &[Condition], sep: &str) -> fmt::Result {
    for (i, c) in items.iter().enumerate() {
        if i > 0 {
            f.write_str(sep)?;
        }
        grouped(f, c)?;
    }
    Ok(())
}

fn grouped(f: &mut Formatter<'_>, c: &Condition) -> fmt::Result {
    if matches!(
        c,
        Condition::And { .. } | Condition::Or { .. } | Condition::Sequence { .. }
    ) {
        write!(f, "({c})")
    } else {
        write!(f, "{c}")
    }
}

impl Display for EventFilter {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        if is_plain_name(&self.name) {
            f.write_str(&self.name)?;
        } else {
            string(f, &self.name)?;
        }
        if let Some(filter) = &self.filter {
            f.write_str(" where ")?;
            // Compound filters are grouped so that `then`, `,` and `within` cannot be
            // mistaken for part of them.
            if matches!(**filter, Condition::Compare { .. } | Condition::Text { .. }) {
                write!(f, "{filter}")?;
            } else {
                write!(f, "({filter})")?;
            }
        }
        Ok(())
    }
}

impl Display for Window {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Window::All => Ok(()),
            Window::Within { ms } => write!(f, "within {}", Duration(*ms)),
            Window::Between { from, to } => write!(f, "between @{from} and @{to}"),
        }
    }
}

impl Display for Operand {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Name(n) => name_text(f, n),
            Operand::Number(x) => write!(f, "{x:?}"),
            Operand::Arith { op, left, right } => {
                let p = precedence(*op);
                side(f, left, |q| q < p)?;
                let sym = match op {
                    ArithOp::Add => "+",
                    ArithOp::Sub => "-",
                    ArithOp::Mul => "*",
                    ArithOp::Div => "/",
                };
                write!(f, " {sym} ")?;
                side(f, right, |q| q <= p)
            }
        }
    }
}

fn precedence(op: ArithOp) -> u8 {
    match op {
        ArithOp::Add | ArithOp::Sub => 1,
        ArithOp::Mul | ArithOp::Div => 2,
    }
}

fn side(f: &mut Formatter<'_>, o: &Operand, needs_parens: impl Fn(u8) -> bool) -> fmt::Result {
    match o {
        Operand::Arith { op, .. } if needs_parens(precedence(*op)) => write!(f, "({o})"),
        _ => write!(f, "{o}"),
    }
}

impl Display for CompareOp {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CompareOp::Eq => "=",
            CompareOp::Ne => "!=",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
        })
    }
}

impl Display for Literal {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        match self {
            Literal::Int(i) => write!(f, "{i}"),
            // `{:?}` always shows a decimal point or exponent, so it reads back as a float.
            Literal::Float(x) => write!(f, "{x:?}"),
            Literal::Str(s) => string(f, s),
            Literal::Bool(b) => write!(f, "{b}"),
            Literal::Time(t) => write!(f, "@{t}"),
        }
    }
}

/// A duration in the largest unit that divides it (whole seconds at least).
struct Duration(i64);

impl Display for Duration {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        for (unit, ms) in [
            ("w", 604_800_000),
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
        ] {
            if self.0 % ms == 0 {
                return write!(f, "{}{unit}", self.0 / ms);
            }
        }
        write!(f, "{}s", self.0 / 1000)
    }
}

/// Counts and aggregates compare with numbers: whole ones print without a decimal point.
fn number(f: &mut Formatter<'_>, x: f64) -> fmt::Result {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        write!(f, "{}", x as i64)
    } else {
        write!(f, "{x:?}")
    }
}

fn is_plain_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
        && !RESERVED.contains(&name)
}

/// A name, back-quoted when it is a keyword or not a plain identifier.
fn name_text(f: &mut Formatter<'_>, name: &str) -> fmt::Result {
    if is_plain_name(name) {
        f.write_str(name)
    } else {
        write!(f, "`{name}`")
    }
}

fn string(f: &mut Formatter<'_>, s: &str) -> fmt::Result {
    f.write_char('"')?;
    for c in s.chars() {
        match c {
            '"' => f.write_str("\\\"")?,
            '\\' => f.write_str("\\\\")?,
            '\n' => f.write_str("\\n")?,
            '\t' => f.write_str("\\t")?,
            '\r' => f.write_str("\\r")?,
            c if (c as u32) < 0x20 => write!(f, "\\u{:04x}", c as u32)?,
            c => f.write_char(c)?,
        }
    }
    f.write_char('"')
}
