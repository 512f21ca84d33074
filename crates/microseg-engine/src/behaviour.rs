//! Behavioural leaves over the profile-sorted event table: one pass over every profile's
//! visible events (time ≤ as-of) per leaf.
//!
//! Semantics (docs/conditions.md): `within D` is `as_of - D <= t <= as_of`; `between @A and
//! @B` is `A <= t <= B`; `last(E) before D ago` needs the latest E at `t < as_of - D`;
//! `first(E) W` needs the first-ever E in W; `E1 then E2 within D` needs an E2 strictly
//! later than some E1 in the window, `t1 < t2 <= t1 + D`; `E1 then not E2 within D` looks
//! at the latest E1 in the window, needs no E2 with `t1 < t2 <= t1 + D`, and
//! `as_of >= t1 + D`.
//!
//! Event properties are schemaless: a `where` test whose value has another type than the
//! property's value (text against a number) does not match, rather than failing. The
//! property `revenue` is the event's revenue wherever the event has no property of that
//! name.

use std::cmp::Ordering;

use microseg_core::condition::{
    AggregateFn, ArithOp, CompareOp, Condition, EventFilter, Literal, Operand, TextOp, Window,
};
use microseg_core::time::parse_timestamp;
use microseg_core::{ProfileId, Timestamp};
use roaring::RoaringBitmap;

use crate::columnar::{EventTable, PropertyColumn, NO_CODE};
use crate::evaluate::EvalError;

/// A compiled event test: does row `r` match?
type RowTest<'a> = Box<dyn Fn(usize) -> bool + Sync + 'a>;

/// A property value of one event.
enum Prop<'a> {
    Number(f64),
    Text(&'a str),
}

/// Where a property's values come from: its column and, for `revenue`, the event's
/// revenue wherever the event has no property of that name.
#[derive(Clone, Copy)]
struct PropRef<'a> {
    column: Option<&'a PropertyColumn>,
    revenue: Option<&'a [f64]>,
}

fn prop_ref<'a>(events: &'a EventTable, name: &str) -> PropRef<'a> {
    PropRef {
        column: events.properties.get(name),
        revenue: (name == "revenue").then_some(events.revenue.as_slice()),
    }
}

fn prop(source: PropRef<'_>, row: usize) -> Option<Prop<'_>> {
    if let Some(c) = source.column {
        let x = c.numbers[row];
        if !x.is_nan() {
            return Some(Prop::Number(x));
        }
        let code = c.texts[row];
        if code != NO_CODE {
            return Some(Prop::Text(c.dict.value(code)));
        }
    }
    let x = source.revenue?[row];
    (!x.is_nan()).then_some(Prop::Number(x))
}

fn holds(o: Option<Ordering>, op: CompareOp) -> bool {
    match (o, op) {
        (None, _) => false,
        (Some(o), CompareOp::Eq) => o == Ordering::Equal,
        (Some(o), CompareOp::Ne) => o != Ordering::Equal,
        (Some(o), CompareOp::Lt) => o == Ordering::Less,
        (Some(o), CompareOp::Le) => o != Ordering::Greater,
        (Some(o), CompareOp::Gt) => o == Ordering::Greater,
        (Some(o), CompareOp::Ge) => o != Ordering::Less,
    }
}

fn order(p: &Prop<'_>, lit: &Literal) -> Option<Ordering> {
    match (p, lit) {
        (Prop::Number(a), Literal::Int(b)) => a.partial_cmp(&(*b as f64)),
        (Prop::Number(a), Literal::Float(b)) => a.partial_cmp(b),
        (Prop::Text(a), Literal::Str(b)) => Some((*a).cmp(b.as_str())),
        (Prop::Text(a), Literal::Bool(b)) => match *a {
            "true" => Some(true.cmp(b)),
            "false" => Some(false.cmp(b)),
            _ => None,
        },
        (Prop::Text(a), Literal::Time(b)) => parse_timestamp(a).ok().map(|t| t.cmp(b)),
        _ => None,
    }
}

/// Compiles a `where` condition into a per-row test.
fn compile<'a>(events: &'a EventTable, c: &'a Condition) -> Result<RowTest<'a>, EvalError> {
    let column = |name: &str| prop_ref(events, name);
    Ok(match c {
        Condition::And { all } => {
            let tests = all
                .iter()
                .map(|c| compile(events, c))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(move |r| tests.iter().all(|t| t(r)))
        }
        Condition::Or { any } => {
            let tests = any
                .iter()
                .map(|c| compile(events, c))
                .collect::<Result<Vec<_>, _>>()?;
            Box::new(move |r| tests.iter().any(|t| t(r)))
        }
        Condition::Not { not } => {
            let t = compile(events, not)?;
            Box::new(move |r| !t(r))
        }
        Condition::Compare { left, op, right } => with_op(op_test(events, left, right), *op),
        Condition::In {
            operand,
            values,
            negated,
        } => {
            let tests: Vec<OpTest<'a>> =
                values.iter().map(|v| op_test(events, operand, v)).collect();
            let present = present(events, operand);
            let negated = *negated;
            Box::new(move |r| {
                let any = tests.iter().any(|t| t(r, CompareOp::Eq));
                if negated {
                    present(r) && !any
                } else {
                    any
                }
            })
        }
        Condition::Between { operand, low, high } => {
            let lo = with_op(op_test(events, operand, low), CompareOp::Ge);
            let hi = with_op(op_test(events, operand, high), CompareOp::Le);
            Box::new(move |r| lo(r) && hi(r))
        }
        Condition::Exists { name, negated } => {
            let col = column(name);
            let negated = *negated;
            Box::new(move |r| prop(col, r).is_some() != negated)
        }
        Condition::Text { name, op, value } => {
            let col = column(name);
            let regex = match op {
                TextOp::Matches => {
                    Some(regex::Regex::new(value).map_err(|e| EvalError::BadRegex {
                        pattern: value.clone(),
                        reason: e.to_string().lines().last().unwrap_or_default().to_string(),
                    })?)
                }
                _ => None,
            };
            let op = *op;
            Box::new(move |r| match prop(col, r) {
                Some(Prop::Text(s)) => match op {
                    TextOp::Contains => s.contains(value.as_str()),
                    TextOp::StartsWith => s.starts_with(value.as_str()),
                    TextOp::EndsWith => s.ends_with(value.as_str()),
                    TextOp::Matches => regex.as_ref().is_some_and(|re| re.is_match(s)),
                },
                _ => false,
            })
        }
        Condition::Has { name, value } => {
            // Lists in event properties are stored as JSON text; `has` looks for the item.
            let col = column(name);
            let needle = serde_json_string(value);
            Box::new(move |r| match prop(col, r) {
                Some(Prop::Text(s)) => s == value || s.contains(&needle),
                _ => false,
            })
        }
        _ => {
            return Err(EvalError::Unsupported(
                "a behavioural condition inside `where`",
            ))
        }
    })
}

/// A comparison test `operand = literal` whose operator is chosen later.
type OpTest<'a> = Box<dyn Fn(usize, CompareOp) -> bool + Sync + 'a>;

/// `operand OP lit` for a row, with the operator given per call.
fn op_test<'a>(events: &'a EventTable, operand: &'a Operand, lit: &'a Literal) -> OpTest<'a> {
    match operand {
        Operand::Name(name) => {
            let col = prop_ref(events, name);
            if let (Some(c), None, Literal::Str(s)) = (col.column, col.revenue, lit) {
                // Text against a string: order each distinct text once, then test codes.
                let ords: Vec<Ordering> = (0..c.dict.len() as u32)
                    .map(|code| c.dict.value(code).cmp(s.as_str()))
                    .collect();
                // A row holds a number or a text, never both (see `set_property`).
                return Box::new(move |r, op| {
                    let code = c.texts[r];
                    code != NO_CODE && holds(Some(ords[code as usize]), op)
                });
            }
            Box::new(move |r, op| prop(col, r).is_some_and(|p| holds(order(&p, lit), op)))
        }
        arith => {
            let value = numeric(events, arith);
            let target = match lit {
                Literal::Int(i) => Some(*i as f64),
                Literal::Float(x) => Some(*x),
                _ => None,
            };
            Box::new(move |r, op| match (value(r), target) {
                (Some(x), Some(t)) => holds(x.partial_cmp(&t), op),
                _ => false,
            })
        }
    }
}

fn with_op<'a>(test: OpTest<'a>, op: CompareOp) -> Box<dyn Fn(usize) -> bool + Sync + 'a> {
    Box::new(move |r| test(r, op))
}

fn present<'a>(
    events: &'a EventTable,
    operand: &'a Operand,
) -> Box<dyn Fn(usize) -> bool + Sync + 'a> {
    match operand {
        Operand::Name(name) => {
            let col = prop_ref(events, name);
            Box::new(move |r| prop(col, r).is_some())
        }
        arith => {
            let value = numeric(events, arith);
            Box::new(move |r| value(r).is_some())
        }
    }
}

fn serde_json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn numeric<'a>(
    events: &'a EventTable,
    o: &'a Operand,
) -> Box<dyn Fn(usize) -> Option<f64> + Sync + 'a> {
    match o {
        Operand::Number(x) => {
            let x = *x;
            Box::new(move |_| Some(x))
        }
        Operand::Name(name) => {
            let col = prop_ref(events, name);
            Box::new(move |r| match prop(col, r) {
                Some(Prop::Number(x)) => Some(x),
                _ => None,
            })
        }
        Operand::Arith { op, left, right } => {
            let (l, r, op) = (numeric(events, left), numeric(events, right), *op);
            Box::new(move |row| {
                let (a, b) = (l(row)?, r(row)?);
                let x = match op {
                    ArithOp::Add => a + b,
                    ArithOp::Sub => a - b,
                    ArithOp::Mul => a * b,
                    ArithOp::Div if b == 0.0 => return None,
                    ArithOp::Div => a / b,
                };
                x.is_finite().then_some(x)
            })
        }
    }
}

/// Compiles an event filter (name and `where`) into a row test.
fn matcher<'a>(events: &'a EventTable, e: &'a EventFilter) -> Result<RowTest<'a>, EvalError> {
    let Some(code) = events.names.code(&e.name) else {
        return Ok(Box::new(|_| false));
    };
    let filter = match &e.filter {
        Some(f) => Some(compile(events, f)?),
        None => None,
    };
    Ok(Box::new(move |r| {
        events.name[r] == code && filter.as_ref().is_none_or(|f| f(r))
    }))
}

/// How many profiles ahead [`prefetch`] asks for.
const PREFETCH_AHEAD: usize = 16;

/// Asks the CPU to bring `x` into cache (a hint: it never faults and changes nothing).
#[inline(always)]
fn prefetch<T>(x: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: prefetching is a hint; it reads nothing and cannot fault, even for a
    // pointer that is not dereferenceable (this one is: it comes from a reference).
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>((x as *const T).cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = x;
}

/// The length of the prefix of `times` on which the monotone `pred` holds (true, then
/// false), found by galloping back from the end: O(log k) for a boundary k rows from it.
fn prefix_from_end(times: &[i64], pred: impl Fn(i64) -> bool) -> usize {
    let n = times.len();
    if n == 0 || pred(times[n - 1]) {
        return n;
    }
    // times[hi] is past the prefix.
    let (mut hi, mut step) = (n - 1, 1);
    let lo = loop {
        if hi < step {
            break 0;
        }
        let probe = hi - step;
        if pred(times[probe]) {
            break probe + 1;
        }
        hi = probe;
        step *= 2;
    };
    lo + times[lo..hi].partition_point(|&t| pred(t))
}

fn in_window(t: i64, window: &Window, as_of: Timestamp) -> bool {
    t <= as_of.0
        && match window {
            Window::All => true,
            Window::Within { ms } => t >= as_of.0.saturating_sub(*ms),
            Window::Between { from, to } => from.0 <= t && t <= to.0,
        }
}

/// Evaluates one behavioural leaf for every profile.
pub(crate) fn evaluate(
    events: &EventTable,
    profiles: u32,
    as_of: Timestamp,
    c: &Condition,
) -> Result<RoaringBitmap, EvalError> {
    let visible = |p: ProfileId| {
        let rows = events.events_of(p);
        let n = events.time[rows.clone()].partition_point(|&t| t <= as_of.0);
        rows.start..rows.start + n
    };
    // The visible rows inside a window. Rows are in time order and windows are usually
    // recent, so both ends are searched from the last row backwards.
    let offsets = events.offsets();
    let windowed = |p: ProfileId, window: &Window| {
        // The rows of a profile a few ahead are fetched while this one is tested: the
        // walk jumps from profile to profile and would otherwise wait on memory each time.
        if let Some(&ahead) = offsets.get(p as usize + 1 + PREFETCH_AHEAD) {
            if ahead > 0 {
                prefetch(&events.time[ahead - 1]);
                prefetch(&events.name[ahead - 1]);
            }
        }
        let rows = events.events_of(p);
        let times = &events.time[rows.clone()];
        let (lo, hi) = match window {
            Window::All => (i64::MIN, as_of.0),
            Window::Within { ms } => (as_of.0.saturating_sub(*ms), as_of.0),
            Window::Between { from, to } => (from.0, to.0.min(as_of.0)),
        };
        let end = prefix_from_end(times, |t| t <= hi);
        let start = if lo == i64::MIN {
            0
        } else {
            prefix_from_end(&times[..end], |t| t < lo)
        };
        rows.start + start..rows.start + end
    };
    Ok(match c {
        Condition::Count {
            event,
            window,
            op,
            value,
        } => {
            let m = matcher(events, event)?;
            parallel(profiles, |p| {
                let n = windowed(p, window).filter(|&r| m(r)).count();
                holds((n as f64).partial_cmp(value), *op)
            })
        }
        Condition::Aggregate {
            function,
            property,
            event,
            window,
            op,
            value,
        } => {
            let m = matcher(events, event)?;
            let col = prop_ref(events, property);
            parallel(profiles, |p| {
                let (mut n, mut sum, mut min, mut max) =
                    (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
                for r in windowed(p, window) {
                    if !m(r) {
                        continue;
                    }
                    if let Some(Prop::Number(x)) = prop(col, r) {
                        n += 1;
                        sum += x;
                        min = min.min(x);
                        max = max.max(x);
                    }
                }
                let result = match function {
                    AggregateFn::Sum => Some(sum),
                    _ if n == 0 => None,
                    AggregateFn::Avg => Some(sum / n as f64),
                    AggregateFn::Min => Some(min),
                    AggregateFn::Max => Some(max),
                };
                result.is_some_and(|x| holds(x.partial_cmp(value), *op))
            })
        }
        Condition::Did { event, window } => {
            let m = matcher(events, event)?;
            parallel(profiles, |p| windowed(p, window).any(&m))
        }
        Condition::LastBefore { event, ago_ms } => {
            let m = matcher(events, event)?;
            let limit = as_of.0.saturating_sub(*ago_ms);
            parallel(profiles, |p| {
                visible(p)
                    .rev()
                    .find(|&r| m(r))
                    .is_some_and(|r| events.time[r] < limit)
            })
        }
        Condition::First { event, window } => {
            let m = matcher(events, event)?;
            parallel(profiles, |p| {
                visible(p)
                    .find(|&r| m(r))
                    .is_some_and(|r| in_window(events.time[r], window, as_of))
            })
        }
        Condition::Sequence {
            first,
            then,
            negated,
            within_ms,
            window,
        } => {
            let (m1, m2) = (matcher(events, first)?, matcher(events, then)?);
            parallel(profiles, |p| {
                let rows = visible(p);
                let mut starts = rows
                    .clone()
                    .filter(|&r| in_window(events.time[r], window, as_of) && m1(r));
                // Strictly later in time: events at the same instant are not ordered.
                let followed = |r1: usize| {
                    let (t1, limit) = (events.time[r1], events.time[r1].saturating_add(*within_ms));
                    (r1 + 1..rows.end)
                        .skip_while(|&r2| events.time[r2] == t1)
                        .take_while(|&r2| events.time[r2] <= limit)
                        .any(&m2)
                };
                if *negated {
                    starts.next_back().is_some_and(|r1| {
                        as_of.0 >= events.time[r1].saturating_add(*within_ms) && !followed(r1)
                    })
                } else {
                    starts.any(followed)
                }
            })
        }
        _ => {
            return Err(EvalError::Unsupported(
                "this condition as a behavioural leaf",
            ))
        }
    })
}

/// Profiles below this count are tested on one thread.
const PARALLEL_MIN: u32 = 50_000;

/// The profiles `0..profiles` for which `hit` holds, tested in contiguous slices on every
/// available core.
fn parallel(profiles: u32, hit: impl Fn(ProfileId) -> bool + Sync) -> RoaringBitmap {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if profiles < PARALLEL_MIN || threads < 2 {
        return RoaringBitmap::from_sorted_iter((0..profiles).filter(|&p| hit(p)))
            .expect("ascending");
    }
    let step = profiles.div_ceil(threads);
    let parts: Vec<Vec<u32>> = std::thread::scope(|scope| {
        let hit = &hit;
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let range = t * step..((t + 1) * step).min(profiles);
                scope.spawn(move || range.filter(|&p| hit(p)).collect::<Vec<u32>>())
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a segment thread panicked"))
            .collect()
    });
    RoaringBitmap::from_sorted_iter(parts.into_iter().flatten()).expect("ascending")
}

/// What a behavioural leaf sees for one profile, in words (for `segment explain`).
pub(crate) fn describe(
    events: &EventTable,
    p: ProfileId,
    as_of: Timestamp,
    c: &Condition,
) -> Result<String, EvalError> {
    let rows = events.events_of(p);
    let visible = rows.start..rows.start + events.time[rows].partition_point(|&t| t <= as_of.0);
    let at = |r: usize| Timestamp(events.time[r]).to_string();
    Ok(match c {
        Condition::Count { event, window, .. } => {
            let m = matcher(events, event)?;
            let n = visible
                .filter(|&r| in_window(events.time[r], window, as_of) && m(r))
                .count();
            format!("count = {n}")
        }
        Condition::Aggregate {
            function,
            property,
            event,
            window,
            ..
        } => {
            let m = matcher(events, event)?;
            let col = prop_ref(events, property);
            let values: Vec<f64> = visible
                .filter(|&r| in_window(events.time[r], window, as_of) && m(r))
                .filter_map(|r| match prop(col, r) {
                    Some(Prop::Number(x)) => Some(x),
                    _ => None,
                })
                .collect();
            let name = match function {
                AggregateFn::Sum => "sum",
                AggregateFn::Avg => "avg",
                AggregateFn::Min => "min",
                AggregateFn::Max => "max",
            };
            match (function, values.is_empty()) {
                (AggregateFn::Sum, _) => format!("sum = {}", values.iter().sum::<f64>()),
                (_, true) => format!("{name}: no values"),
                (AggregateFn::Avg, _) => {
                    format!("avg = {}", values.iter().sum::<f64>() / values.len() as f64)
                }
                (AggregateFn::Min, _) => format!(
                    "min = {}",
                    values.iter().copied().fold(f64::INFINITY, f64::min)
                ),
                (AggregateFn::Max, _) => format!(
                    "max = {}",
                    values.iter().copied().fold(f64::NEG_INFINITY, f64::max)
                ),
            }
        }
        Condition::Did { event, window } => {
            let m = matcher(events, event)?;
            let hits: Vec<usize> = visible
                .filter(|&r| in_window(events.time[r], window, as_of) && m(r))
                .collect();
            match hits.last() {
                Some(&r) => format!("{} matching, latest at {}", hits.len(), at(r)),
                None => "no matching event".into(),
            }
        }
        Condition::LastBefore { event, .. } => {
            let m = matcher(events, event)?;
            match visible.rev().find(|&r| m(r)) {
                Some(r) => format!("last at {}", at(r)),
                None => "never".into(),
            }
        }
        Condition::First { event, .. } => {
            let m = matcher(events, event)?;
            match visible.clone().find(|&r| m(r)) {
                Some(r) => format!("first at {}", at(r)),
                None => "never".into(),
            }
        }
        Condition::Sequence {
            first,
            then,
            within_ms,
            window,
            ..
        } => {
            let (m1, m2) = (matcher(events, first)?, matcher(events, then)?);
            let starts: Vec<usize> = visible
                .clone()
                .filter(|&r| in_window(events.time[r], window, as_of) && m1(r))
                .collect();
            match starts.last() {
                None => "no first step in the window".into(),
                Some(&r1) => {
                    let (t1, limit) = (events.time[r1], events.time[r1].saturating_add(*within_ms));
                    let next = (r1 + 1..visible.end)
                        .skip_while(|&r2| events.time[r2] == t1)
                        .take_while(|&r2| events.time[r2] <= limit)
                        .find(|&r2| m2(r2));
                    match next {
                        Some(r2) => {
                            format!("latest first step at {}, second step at {}", at(r1), at(r2))
                        }
                        None => format!(
                            "latest first step at {}, no second step by {}",
                            at(r1),
                            Timestamp(limit)
                        ),
                    }
                }
            }
        }
        _ => String::new(),
    })
}

#[cfg(test)]
mod tests {
    use microseg_core::condition::parse;

    use super::*;
    use crate::columnar::{EventTableBuilder, PropertyValue};

    fn day(d: u32, h: u32) -> i64 {
        parse_timestamp(&format!("2024-01-{d:02}T{h:02}:00:00Z"))
            .unwrap()
            .0
    }

    /// Six profiles, as of 2024-01-10T00:00Z:
    /// 0 viewed a winter page on day 5 10:00 and never ordered;
    /// 1 viewed a winter page on day 8 12:00 (its 3 days are not over);
    /// 2 viewed a winter page on day 2 00:00 and ordered (50, winter) on day 3 00:00;
    /// 3 ordered (100, bikes) on day 1, viewed /bikes on day 9, ordered (2000, bikes) day 9 12:00;
    /// 4 has no events; 5 ordered on day 12, after as-of.
    fn events() -> EventTable {
        let mut b = EventTableBuilder::default();
        let mut add = |p: u32, t: i64, name: &str, revenue: Option<f64>, props: &[(&str, &str)]| {
            let row = b.push(p, t, name, revenue);
            for (k, v) in props {
                b.set_property(row, k, PropertyValue::Text(v));
            }
        };
        add(
            0,
            day(5, 10),
            "page_viewed",
            None,
            &[("path", "/winter/gloves")],
        );
        add(
            1,
            day(8, 12),
            "page_viewed",
            None,
            &[("path", "/winter/jackets")],
        );
        add(
            2,
            day(2, 0),
            "page_viewed",
            None,
            &[("path", "/winter/gloves")],
        );
        add(
            2,
            day(3, 0),
            "order_completed",
            Some(50.0),
            &[("category", "winter")],
        );
        add(
            3,
            day(1, 0),
            "order_completed",
            Some(100.0),
            &[("category", "bikes")],
        );
        add(3, day(9, 0), "page_viewed", None, &[("path", "/bikes")]);
        add(
            3,
            day(9, 12),
            "order_completed",
            Some(2000.0),
            &[("category", "bikes")],
        );
        add(5, day(12, 0), "order_completed", Some(10.0), &[]);
        b.finish(6)
    }

    fn members(text: &str) -> Vec<u32> {
        let events = events();
        let c = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        evaluate(&events, 6, Timestamp(day(10, 0)), &c)
            .unwrap_or_else(|e| panic!("{text}: {e}"))
            .iter()
            .collect()
    }

    #[test]
    fn parallel_slices_give_the_sequential_answer() {
        let test = |p: ProfileId| p % 7 == 3 || p == 99_999 || p == 50_000;
        let expected: RoaringBitmap = (0..100_000).filter(|&p| test(p)).collect();
        assert_eq!(parallel(100_000, test), expected);
        assert_eq!(parallel(10, test), (0..10).filter(|&p| test(p)).collect());
    }

    #[test]
    fn galloping_search_finds_the_prefix() {
        let times: Vec<i64> = vec![1, 2, 2, 5, 9, 9, 9, 12];
        for bound in -1..14 {
            let expected = times.iter().filter(|&&t| t <= bound).count();
            assert_eq!(prefix_from_end(&times, |t| t <= bound), expected, "{bound}");
        }
        assert_eq!(prefix_from_end(&[], |t| t <= 0), 0);
    }

    #[test]
    fn events_at_one_instant_do_not_follow_each_other() {
        // Profile 0: a view and an order at the same instant, then nothing; profile 1: a
        // view, and an order one hour later. Arrival order puts the order after the view
        // in both, but only profile 1's order is later in time.
        let mut b = EventTableBuilder::default();
        b.push(0, day(2, 10), "page_viewed", None);
        b.push(0, day(2, 10), "order_completed", Some(5.0));
        b.push(1, day(2, 10), "page_viewed", None);
        b.push(1, day(2, 11), "order_completed", Some(5.0));
        let events = b.finish(2);
        let run = |text: &str| -> Vec<u32> {
            evaluate(&events, 2, Timestamp(day(10, 0)), &parse(text).unwrap())
                .unwrap()
                .iter()
                .collect()
        };
        assert_eq!(run("page_viewed then order_completed within 1d"), [1]);
        assert_eq!(run("page_viewed then not order_completed within 1d"), [0]);
        // `order then order` never counts one order, or two at one instant, twice.
        assert_eq!(
            run("order_completed then order_completed within 1d"),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn counts_see_nothing_after_as_of_and_zero_includes_the_eventless() {
        assert_eq!(members("count(order_completed) >= 1"), [2, 3]);
        assert_eq!(members("count(order_completed) = 0"), [0, 1, 4, 5]);
        assert_eq!(members("count(order_completed, within 2d) >= 1"), [3]);
        assert_eq!(
            members(r#"count(order_completed where category = "bikes") = 2"#),
            [3]
        );
        assert_eq!(
            members("count(order_completed where category = 5) >= 1"),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn aggregates_over_property_values_and_revenue() {
        assert_eq!(members("sum(revenue of order_completed) > 1000"), [3]);
        assert_eq!(members("avg(revenue of order_completed) = 1050"), [3]);
        assert_eq!(members("min(revenue of order_completed) < 60"), [2]);
        // No values: the sum is 0 for everyone, the maximum is missing for everyone.
        assert_eq!(
            members("sum(items of order_completed) = 0"),
            [0, 1, 2, 3, 4, 5]
        );
        assert_eq!(
            members("max(items of order_completed) >= 0"),
            Vec::<u32>::new()
        );
    }

    #[test]
    fn windows_include_their_start() {
        assert_eq!(
            members(r#"did(page_viewed where path starts_with "/winter") within 7d"#),
            [0, 1]
        );
        // Profile 2's order at day 3 00:00 is exactly 7 days before as-of: included.
        assert_eq!(members("did(order_completed) within 7d"), [2, 3]);
        assert_eq!(
            members("did(order_completed) between @2024-01-03 and @2024-01-09"),
            [2]
        );
        assert_eq!(members("last(order_completed) before 5d ago"), [2]);
        assert_eq!(
            members("first(order_completed) between @2024-01-01 and @2024-01-02"),
            [3]
        );
        assert_eq!(members("first(order_completed) within 7d"), [2]);
    }

    #[test]
    fn sequences_and_the_absence_deadline() {
        let winter = r#"page_viewed where path starts_with "/winter""#;
        // 0: deadline day 8 10:00 passed, no order. 1: deadline day 11 not reached.
        // 2: ordered 1 day after the view.
        assert_eq!(
            members(&format!("{winter} then not order_completed within 3d")),
            [0]
        );
        assert_eq!(
            members(&format!("{winter} then order_completed within 3d")),
            [2]
        );
        // Exactly one day later still counts as within 1d.
        assert_eq!(
            members("page_viewed then order_completed within 1d"),
            [2, 3]
        );
        assert_eq!(
            members("page_viewed then order_completed within 1d, within 2d"),
            [3]
        );
        assert_eq!(
            members("page_viewed then page_viewed within 30d"),
            Vec::<u32>::new()
        );
    }
}
