//! Text to [`Condition`]: a recursive-descent parser with precedence `or` < `and` < `not`,
//! errors that give line, column, the offending text and what was expected, and a nesting
//! limit so hostile input cannot exhaust the stack.

use std::fmt;
use std::ops::Range;

use super::lexer::{lex, Tok};
use super::{
    AggregateFn, ArithOp, CompareOp, Condition, EventFilter, Literal, Operand, TextOp, Window,
    MAX_DEPTH,
};
use crate::time::parse_timestamp;

/// Words that cannot be bare names (back-quote them: `` `first` ``).
pub(crate) const RESERVED: [&str; 19] = [
    "and",
    "or",
    "not",
    "in",
    "between",
    "exists",
    "contains",
    "starts_with",
    "ends_with",
    "matches",
    "has",
    "true",
    "false",
    "then",
    "where",
    "within",
    "before",
    "ago",
    "of",
];

/// A condition that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub column: usize,
    /// The offending text, or `end of input`.
    pub found: String,
    /// What would have been accepted.
    pub expected: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "line {}, column {}: expected {}, found {}",
            self.line, self.column, self.expected, self.found
        )
    }
}

/// Parses the text form of a condition.
///
/// # Errors
///
/// A [`ParseError`] pointing at the first token that does not fit.
pub fn parse(input: &str) -> std::result::Result<Condition, ParseError> {
    let tokens = lex(input).map_err(|e| error_at(input, e.at, e.found, e.expected))?;
    let mut p = Parser {
        input,
        tokens,
        pos: 0,
        depth: 0,
        furthest: None,
    };
    let result = p.condition().and_then(|c| match p.peek() {
        None => Ok(c),
        Some(_) => Err(p.error("`and`, `or` or the end of the condition")),
    });
    let condition = result.map_err(|e| p.best(e))?;
    // The parser's own guard keeps its stack bounded; the tree's size is measured here,
    // node by node, by the same rule every other way in (the store's JSON) uses.
    condition.check_size().map_err(|e| ParseError {
        line: 1,
        column: 1,
        found: "a larger condition".into(),
        expected: e.to_string(),
    })?;
    Ok(condition)
}

fn error_at(input: &str, at: usize, found: String, expected: impl Into<String>) -> ParseError {
    let at = at.min(input.len());
    let before = &input[..at];
    let line = before.matches('\n').count() + 1;
    let column = before[before.rfind('\n').map_or(0, |i| i + 1)..]
        .chars()
        .count()
        + 1;
    ParseError {
        line,
        column,
        found,
        expected: expected.into(),
    }
}

struct Parser<'a> {
    input: &'a str,
    tokens: Vec<(Tok, Range<usize>)>,
    pos: usize,
    depth: usize,
    /// The error that got furthest, reported when backtracking fails everywhere.
    furthest: Option<(usize, ParseError)>,
}

type Result<T> = std::result::Result<T, ParseError>;

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|(t, _)| t)
    }

    fn peek_at(&self, k: usize) -> Option<&Tok> {
        self.tokens.get(self.pos + k).map(|(t, _)| t)
    }

    fn error(&self, expected: &str) -> ParseError {
        match self.tokens.get(self.pos) {
            Some((_, span)) => error_at(
                self.input,
                span.start,
                format!("`{}`", &self.input[span.clone()]),
                expected,
            ),
            None => error_at(
                self.input,
                self.input.len(),
                "end of input".into(),
                expected,
            ),
        }
    }

    /// Keeps the error that reached furthest into the input.
    fn note(&mut self, e: ParseError) {
        let at = self.pos;
        if self.furthest.as_ref().is_none_or(|(f, _)| at > *f) {
            self.furthest = Some((at, e));
        }
    }

    fn best(&self, e: ParseError) -> ParseError {
        match &self.furthest {
            Some((_, f)) if (f.line, f.column) > (e.line, e.column) => f.clone(),
            _ => e,
        }
    }

    fn is_word(&self, word: &str) -> bool {
        matches!(self.peek(), Some(Tok::Ident(w)) if w == word)
    }

    fn is_sym(&self, sym: &str) -> bool {
        matches!(self.peek(), Some(Tok::Sym(s)) if *s == sym)
    }

    fn eat_word(&mut self, word: &str) -> bool {
        let yes = self.is_word(word);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn eat_sym(&mut self, sym: &str) -> bool {
        let yes = self.is_sym(sym);
        if yes {
            self.pos += 1;
        }
        yes
    }

    fn expect_word(&mut self, word: &str) -> Result<()> {
        if self.eat_word(word) {
            Ok(())
        } else {
            Err(self.error(&format!("`{word}`")))
        }
    }

    fn expect_sym(&mut self, sym: &str) -> Result<()> {
        if self.eat_sym(sym) {
            Ok(())
        } else {
            Err(self.error(&format!("`{sym}`")))
        }
    }

    /// One level deeper: every group, `not`, `where` and arithmetic operator in a chain
    /// counts, so no input makes the parser (or a later walk) recurse without bound.
    fn enter(&mut self) -> Result<()> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(&format!(
                "at most {MAX_DEPTH} levels of nesting (groups, `not`, `where` and each \
                 operator in a chain of arithmetic count)"
            )));
        }
        Ok(())
    }

    fn condition(&mut self) -> Result<Condition> {
        self.enter()?;
        let mut any = vec![self.and()?];
        while self.eat_word("or") {
            any.push(self.and()?);
        }
        self.depth -= 1;
        Ok(if any.len() == 1 {
            any.pop().expect("one")
        } else {
            Condition::Or { any }
        })
    }

    fn and(&mut self) -> Result<Condition> {
        let mut all = vec![self.unary()?];
        while self.eat_word("and") {
            all.push(self.unary()?);
        }
        Ok(if all.len() == 1 {
            all.pop().expect("one")
        } else {
            Condition::And { all }
        })
    }

    fn unary(&mut self) -> Result<Condition> {
        if self.eat_word("not") {
            self.enter()?;
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Condition::Not {
                not: Box::new(inner),
            });
        }
        self.atom()
    }

    fn atom(&mut self) -> Result<Condition> {
        if self.is_sym("(") {
            // A parenthesised condition, or a comparison whose arithmetic starts with "(".
            let (start, depth) = (self.pos, self.depth);
            self.pos += 1;
            let group = self.condition().and_then(|c| {
                self.expect_sym(")")?;
                Ok(c)
            });
            match group {
                Ok(c) if !self.continues_arithmetic() => return Ok(c),
                Ok(_) => {}
                Err(e) => self.note(e),
            }
            self.pos = start;
            self.depth = depth;
            return self.comparison();
        }
        let next_is_paren = matches!(self.peek_at(1), Some(Tok::Sym("(")));
        match self.peek() {
            Some(Tok::Ident(w)) if next_is_paren => match w.as_str() {
                "in_segment" => return self.in_segment(),
                "count" => return self.count(),
                "sum" | "avg" | "min" | "max" => return self.aggregate(),
                "did" => return self.did(),
                "last" => return self.last(),
                "first" => return self.first(),
                _ => {}
            },
            Some(Tok::Str(_)) => return self.sequence(),
            Some(Tok::Ident(w)) if !RESERVED.contains(&w.as_str()) => {
                if matches!(self.peek_at(1), Some(Tok::Ident(n)) if n == "where" || n == "then") {
                    return self.sequence();
                }
            }
            _ => {}
        }
        self.comparison()
    }

    fn continues_arithmetic(&self) -> bool {
        matches!(
            self.peek(),
            Some(Tok::Sym(
                "+" | "-" | "*" | "/" | "=" | "!=" | "<" | "<=" | ">" | ">="
            ))
        ) || matches!(self.peek(), Some(Tok::Ident(w)) if matches!(w.as_str(),
            "in" | "between" | "exists" | "contains" | "starts_with" | "ends_with" | "matches" | "has"))
            || (self.is_word("not")
                && matches!(self.peek_at(1), Some(Tok::Ident(w)) if w == "in" || w == "exists"))
    }

    fn name(&mut self, what: &str) -> Result<String> {
        match self.peek() {
            Some(Tok::Ident(w)) if !RESERVED.contains(&w.as_str()) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            Some(Tok::QuotedName(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => Err(self.error(what)),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                Ok(s)
            }
            _ => Err(self.error(what)),
        }
    }

    fn duration(&mut self) -> Result<i64> {
        match self.peek() {
            Some(Tok::Duration(ms)) if *ms > 0 => {
                let ms = *ms;
                self.pos += 1;
                Ok(ms)
            }
            _ => Err(self.error("a positive duration such as 30m, 12h, 7d or 4w")),
        }
    }

    fn time(&mut self) -> Result<crate::Timestamp> {
        match self.peek() {
            Some(Tok::Time(t)) => match parse_timestamp(t) {
                Ok(ts) => {
                    self.pos += 1;
                    Ok(ts)
                }
                Err(_) => Err(self.error("a date @YYYY-MM-DD or @YYYY-MM-DDTHH:MM:SSZ")),
            },
            _ => Err(self.error("a date such as @2024-01-31")),
        }
    }

    fn compare_op(&mut self) -> Option<CompareOp> {
        let op = match self.peek() {
            Some(Tok::Sym("=")) => CompareOp::Eq,
            Some(Tok::Sym("!=")) => CompareOp::Ne,
            Some(Tok::Sym("<")) => CompareOp::Lt,
            Some(Tok::Sym("<=")) => CompareOp::Le,
            Some(Tok::Sym(">")) => CompareOp::Gt,
            Some(Tok::Sym(">=")) => CompareOp::Ge,
            _ => return None,
        };
        self.pos += 1;
        Some(op)
    }

    /// A number (with optional minus) as f64.
    fn number(&mut self) -> Result<f64> {
        let negative = self.eat_sym("-");
        match self.peek() {
            Some(Tok::Number(text)) => {
                let x: f64 = text.parse().map_err(|_| self.error("a number"))?;
                self.pos += 1;
                Ok(if negative { -x } else { x })
            }
            _ => Err(self.error("a number")),
        }
    }

    fn literal(&mut self) -> Result<Literal> {
        let expected = "a value: a number, \"text\", true, false or a date @2024-01-31";
        if self.is_sym("-") {
            if let Some(Tok::Number(text)) = self.peek_at(1) {
                let text = format!("-{text}");
                self.pos += 2;
                return self.number_literal(&text, 1);
            }
            return Err(self.error(expected));
        }
        let lit = match self.peek() {
            Some(Tok::Number(text)) => {
                let text = text.clone();
                self.pos += 1;
                return self.number_literal(&text, 0);
            }
            Some(Tok::Str(s)) => Literal::Str(s.clone()),
            Some(Tok::Ident(w)) if w == "true" => Literal::Bool(true),
            Some(Tok::Ident(w)) if w == "false" => Literal::Bool(false),
            Some(Tok::Time(_)) => return Ok(Literal::Time(self.time()?)),
            _ => return Err(self.error(expected)),
        };
        self.pos += 1;
        Ok(lit)
    }

    fn number_literal(&mut self, text: &str, back: usize) -> Result<Literal> {
        let is_float = text.contains(['.', 'e', 'E']);
        let lit = if is_float {
            text.parse()
                .ok()
                .filter(|x: &f64| x.is_finite())
                .map(Literal::Float)
        } else {
            text.parse().ok().map(Literal::Int)
        };
        lit.ok_or_else(|| {
            self.pos -= 1 + back;
            let e = self.error("a number that fits in 64 bits");
            self.pos += 1 + back;
            e
        })
    }

    fn arith(&mut self) -> Result<Operand> {
        let depth = self.depth;
        let mut left = self.term()?;
        loop {
            let op = if self.eat_sym("+") {
                ArithOp::Add
            } else if self.eat_sym("-") {
                ArithOp::Sub
            } else {
                self.depth = depth;
                return Ok(left);
            };
            self.enter()?;
            let right = self.term()?;
            left = Operand::Arith {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
    }

    fn term(&mut self) -> Result<Operand> {
        let depth = self.depth;
        let mut left = self.factor()?;
        loop {
            let op = if self.eat_sym("*") {
                ArithOp::Mul
            } else if self.eat_sym("/") {
                ArithOp::Div
            } else {
                self.depth = depth;
                return Ok(left);
            };
            self.enter()?;
            let right = self.factor()?;
            left = Operand::Arith {
                op,
                left: Box::new(left),
                right: Box::new(right),
            };
        }
    }

    fn factor(&mut self) -> Result<Operand> {
        if self.eat_sym("(") {
            self.enter()?;
            let inner = self.arith()?;
            self.depth -= 1;
            self.expect_sym(")")?;
            return Ok(inner);
        }
        if matches!(self.peek(), Some(Tok::Number(_))) || self.is_sym("-") {
            return Ok(Operand::Number(self.number()?));
        }
        Ok(Operand::Name(self.name(
            "a trait or metric name (back-quote names that are keywords)",
        )?))
    }

    fn comparison(&mut self) -> Result<Condition> {
        let operand = self.arith()?;
        let plain = |p: &Self, operand: &Operand, what: &str| match operand {
            Operand::Name(n) => Ok(n.clone()),
            _ => Err(p.error(&format!("a plain name before `{what}`"))),
        };
        if let Some(op) = self.compare_op() {
            let right = self.literal()?;
            return Ok(Condition::Compare {
                left: operand,
                op,
                right,
            });
        }
        let negated = self.is_word("not")
            && matches!(self.peek_at(1), Some(Tok::Ident(w)) if w == "in" || w == "exists");
        if negated {
            self.pos += 1;
        }
        if self.eat_word("in") {
            self.expect_sym("(")?;
            let mut values = vec![self.literal()?];
            while self.eat_sym(",") {
                values.push(self.literal()?);
            }
            self.expect_sym(")")?;
            return Ok(Condition::In {
                operand,
                values,
                negated,
            });
        }
        if self.is_word("exists") {
            let name = plain(self, &operand, "exists")?;
            self.pos += 1;
            return Ok(Condition::Exists { name, negated });
        }
        if self.eat_word("between") {
            let low = self.literal()?;
            self.expect_word("and")?;
            let high = self.literal()?;
            return Ok(Condition::Between { operand, low, high });
        }
        let text_op = match self.peek() {
            Some(Tok::Ident(w)) => match w.as_str() {
                "contains" => Some(TextOp::Contains),
                "starts_with" => Some(TextOp::StartsWith),
                "ends_with" => Some(TextOp::EndsWith),
                "matches" => Some(TextOp::Matches),
                _ => None,
            },
            _ => None,
        };
        if let Some(op) = text_op {
            let name = plain(self, &operand, "a text test")?;
            self.pos += 1;
            let value = self.string("a \"text\" value")?;
            if op == TextOp::Matches {
                if let Err(e) = regex_syntax_check(&value) {
                    self.pos -= 1;
                    let err = self.error(&format!("a valid regular expression ({e})"));
                    self.pos += 1;
                    return Err(err);
                }
            }
            return Ok(Condition::Text { name, op, value });
        }
        if self.is_word("has") {
            let name = plain(self, &operand, "has")?;
            self.pos += 1;
            let value = self.string("a \"text\" value")?;
            return Ok(Condition::Has { name, value });
        }
        Err(self.error(
            "a comparison: = != < <= > >= in, not in, between, exists, not exists, contains, \
             starts_with, ends_with, matches or has",
        ))
    }

    fn in_segment(&mut self) -> Result<Condition> {
        self.pos += 2; // in_segment (
        let segment = self.string("a segment name in quotes")?;
        self.expect_sym(")")?;
        Ok(Condition::InSegment { segment })
    }

    /// `NAME [where COND]` or `"Name" [where COND]`.
    fn event(&mut self) -> Result<EventFilter> {
        let name = match self.peek() {
            Some(Tok::Str(s)) => {
                let s = s.clone();
                self.pos += 1;
                s
            }
            _ => self.name("an event name")?,
        };
        let filter = if self.eat_word("where") {
            self.enter()?;
            let f = self.condition()?;
            self.depth -= 1;
            if let Some(kind) = behavioural(&f) {
                return Err(self.error(&format!(
                    "a condition on event properties after `where` (not {kind})"
                )));
            }
            Some(Box::new(f))
        } else {
            None
        };
        Ok(EventFilter { name, filter })
    }

    fn window(&mut self) -> Result<Window> {
        if self.eat_word("within") {
            return Ok(Window::Within {
                ms: self.duration()?,
            });
        }
        if self.eat_word("between") {
            let from = self.time()?;
            self.expect_word("and")?;
            let to = self.time()?;
            return Ok(Window::Between { from, to });
        }
        Err(self.error("`within` or `between`"))
    }

    fn optional_window(&mut self) -> Result<Window> {
        if self.is_word("within") || self.is_word("between") {
            self.window()
        } else {
            Ok(Window::All)
        }
    }

    fn count(&mut self) -> Result<Condition> {
        self.pos += 2; // count (
        let event = self.event()?;
        let window = if self.eat_sym(",") {
            self.window()?
        } else {
            Window::All
        };
        self.expect_sym(")")?;
        let op = self
            .compare_op()
            .ok_or_else(|| self.error("a comparison: = != < <= > >="))?;
        let value = self.number()?;
        Ok(Condition::Count {
            event,
            window,
            op,
            value,
        })
    }

    fn aggregate(&mut self) -> Result<Condition> {
        let function = match self.peek() {
            Some(Tok::Ident(w)) if w == "sum" => AggregateFn::Sum,
            Some(Tok::Ident(w)) if w == "avg" => AggregateFn::Avg,
            Some(Tok::Ident(w)) if w == "min" => AggregateFn::Min,
            _ => AggregateFn::Max,
        };
        self.pos += 2; // fn (
        let property = self.name("an event property name")?;
        self.expect_word("of")?;
        let event = self.event()?;
        let window = if self.eat_sym(",") {
            self.window()?
        } else {
            Window::All
        };
        self.expect_sym(")")?;
        let op = self
            .compare_op()
            .ok_or_else(|| self.error("a comparison: = != < <= > >="))?;
        let value = self.number()?;
        Ok(Condition::Aggregate {
            function,
            property,
            event,
            window,
            op,
            value,
        })
    }

    fn did(&mut self) -> Result<Condition> {
        self.pos += 2; // did (
        let event = self.event()?;
        self.expect_sym(")")?;
        let window = self.optional_window()?;
        Ok(Condition::Did { event, window })
    }

    fn last(&mut self) -> Result<Condition> {
        self.pos += 2; // last (
        let event = self.event()?;
        self.expect_sym(")")?;
        self.expect_word("before")?;
        let ago_ms = self.duration()?;
        self.expect_word("ago")?;
        Ok(Condition::LastBefore { event, ago_ms })
    }

    fn first(&mut self) -> Result<Condition> {
        self.pos += 2; // first (
        let event = self.event()?;
        self.expect_sym(")")?;
        let window = self.optional_window()?;
        Ok(Condition::First { event, window })
    }

    fn sequence(&mut self) -> Result<Condition> {
        let first = self.event()?;
        self.expect_word("then")?;
        let negated = self.eat_word("not");
        let then = self.event()?;
        self.expect_word("within")?;
        let within_ms = self.duration()?;
        let window = if self.eat_sym(",") {
            self.window()?
        } else {
            Window::All
        };
        Ok(Condition::Sequence {
            first,
            then,
            negated,
            within_ms,
            window,
        })
    }
}

/// The kind of the first behavioural or segment leaf in `c`, if any (not allowed in `where`).
fn behavioural(c: &Condition) -> Option<&'static str> {
    match c {
        Condition::And { all: cs } | Condition::Or { any: cs } => cs.iter().find_map(behavioural),
        Condition::Not { not } => behavioural(not),
        Condition::InSegment { .. } => Some("in_segment"),
        Condition::Count { .. } => Some("count"),
        Condition::Aggregate { .. } => Some("an aggregate"),
        Condition::Did { .. } => Some("did"),
        Condition::LastBefore { .. } => Some("last"),
        Condition::First { .. } => Some("first"),
        Condition::Sequence { .. } => Some("a sequence"),
        _ => None,
    }
}

/// A light syntax check of a regular expression: balanced groups and classes, no dangling
/// escape. The evaluator compiles it for real.
fn regex_syntax_check(pattern: &str) -> std::result::Result<(), &'static str> {
    let mut depth = 0i32;
    let mut chars = pattern.chars();
    let mut in_class = false;
    while let Some(c) = chars.next() {
        match c {
            // The guard consumes the escaped character, which is what skips it.
            '\\' if chars.next().is_none() => return Err("a trailing backslash"),
            '\\' => {}
            '[' if !in_class => in_class = true,
            ']' if in_class => in_class = false,
            '(' if !in_class => depth += 1,
            ')' if !in_class => {
                depth -= 1;
                if depth < 0 {
                    return Err("an unopened `)`");
                }
            }
            _ => {}
        }
    }
    match (depth, in_class) {
        (0, false) => Ok(()),
        (_, true) => Err("an unclosed `[`"),
        _ => Err("an unclosed `(`"),
    }
}
