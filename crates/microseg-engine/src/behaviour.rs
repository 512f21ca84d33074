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
    AggregateFn, CompareOp, Condition, EventFilter, Literal, Operand, TextOp, Window,
};
use microseg_core::time::parse_timestamp;
use microseg_core::{ProfileId, Timestamp};
use roaring::RoaringBitmap;

use crate::columnar::{json_string, EventTable, PropertyColumn, NO_CODE};
use crate::evaluate::EvalError;

/// A compiled event test: does row `r` match?
type RowTest<'a> = Box<dyn Fn(usize) -> bool + Sync + 'a>;

/// A property value of one event.
pub(crate) enum Prop<'a> {
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
        revenue: (name == "revenue").then_some(&events.revenue[..]),
    }
}

fn prop(source: PropRef<'_>, row: usize) -> Option<Prop<'_>> {
    if let Some(c) = source.column {
        let x = c.number(row);
        if !x.is_nan() {
            return Some(Prop::Number(x));
        }
        let code = c.text(row);
        if code != NO_CODE {
            return Some(Prop::Text(c.dict.value(code)));
        }
    }
    let x = source.revenue?[row];
    (!x.is_nan()).then_some(Prop::Number(x))
}

/// Orders a property value against a literal; `None` when their kinds differ.
pub(crate) fn order(p: &Prop<'_>, lit: &Literal) -> Option<Ordering> {
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
        Condition::And { all: cs } | Condition::Or { any: cs } => {
            let tests = cs
                .iter()
                .map(|c| compile(events, c))
                .collect::<Result<Vec<_>, _>>()?;
            if matches!(c, Condition::And { .. }) {
                Box::new(move |r| tests.iter().all(|t| t(r)))
            } else {
                Box::new(move |r| tests.iter().any(|t| t(r)))
            }
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
            let needle = json_string(value);
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
                    let code = c.text(r);
                    code != NO_CODE && op.holds(Some(ords[code as usize]))
                });
            }
            Box::new(move |r, op| prop(col, r).is_some_and(|p| op.holds(order(&p, lit))))
        }
        arith => {
            let value = numeric(events, arith);
            let target = lit.as_number();
            Box::new(move |r, op| match (value(r), target) {
                (Some(x), Some(t)) => op.holds(x.partial_cmp(&t)),
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
            Box::new(move |row| op.apply(l(row)?, r(row)?))
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

/// The rows of profile `p`'s visible events (time ≤ as-of) inside `window`. Rows are in
/// time order and windows are usually recent, so both ends are searched from the last
/// row backwards.
fn window_rows(
    events: &EventTable,
    p: ProfileId,
    window: &Window,
    as_of: Timestamp,
) -> std::ops::Range<usize> {
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
}

/// `sum`, `avg`, `min` or `max` of `values`; the sum of nothing is 0, the others are
/// missing.
pub(crate) fn aggregate(function: AggregateFn, values: impl Iterator<Item = f64>) -> Option<f64> {
    let (mut n, mut sum, mut min, mut max) = (0u64, 0.0, f64::INFINITY, f64::NEG_INFINITY);
    for x in values {
        n += 1;
        sum += x;
        min = min.min(x);
        max = max.max(x);
    }
    match function {
        AggregateFn::Sum => Some(sum),
        _ if n == 0 => None,
        AggregateFn::Avg => Some(sum / n as f64),
        AggregateFn::Min => Some(min),
        AggregateFn::Max => Some(max),
    }
}

/// The numeric value of a property, if it is a number.
fn number(p: Option<Prop<'_>>) -> Option<f64> {
    match p {
        Some(Prop::Number(x)) => Some(x),
        _ => None,
    }
}

/// The first row before `end` that `second` accepts, strictly later than row `r1` and at
/// most `within_ms` after it (events at the same instant are not ordered).
fn second_step(
    events: &EventTable,
    r1: usize,
    end: usize,
    within_ms: i64,
    second: &RowTest<'_>,
) -> Option<usize> {
    let (t1, limit) = (events.time[r1], events.time[r1].saturating_add(within_ms));
    (r1 + 1..end)
        .skip_while(|&r2| events.time[r2] == t1)
        .take_while(|&r2| events.time[r2] <= limit)
        .find(|&r2| second(r2))
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

/// Whether an event at `t` is visible at `as_of` and inside `window`.
pub(crate) fn in_window(t: i64, window: &Window, as_of: Timestamp) -> bool {
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
    let offsets = events.offsets();
    let windowed = |p: ProfileId, window: &Window| {
        // The rows of a profile a few ahead are fetched while this one is tested: the
        // walk jumps from profile to profile and would otherwise wait on memory each time.
        if let Some(&ahead) = offsets.get(p as usize + 1 + PREFETCH_AHEAD) {
            if ahead > 0 {
                prefetch(&events.time[ahead as usize - 1]);
                prefetch(&events.name[ahead as usize - 1]);
            }
        }
        window_rows(events, p, window, as_of)
    };
    let visible = |p: ProfileId| windowed(p, &Window::All);
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
                op.holds((n as f64).partial_cmp(value))
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
                let values = windowed(p, window)
                    .filter(|&r| m(r))
                    .filter_map(|r| number(prop(col, r)));
                aggregate(*function, values).is_some_and(|x| op.holds(x.partial_cmp(value)))
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
                let end = visible(p).end;
                let mut starts = windowed(p, window).filter(|&r| m1(r));
                let followed = |r1: usize| second_step(events, r1, end, *within_ms, &m2).is_some();
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
    let visible = window_rows(events, p, &Window::All, as_of);
    let at = |r: usize| Timestamp(events.time[r]).to_string();
    Ok(match c {
        Condition::Count { event, window, .. } => {
            let m = matcher(events, event)?;
            let n = window_rows(events, p, window, as_of)
                .filter(|&r| m(r))
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
            let values = window_rows(events, p, window, as_of)
                .filter(|&r| m(r))
                .filter_map(|r| number(prop(col, r)));
            let name = function.name();
            match aggregate(*function, values) {
                Some(x) => format!("{name} = {x}"),
                None => format!("{name}: no values"),
            }
        }
        Condition::Did { event, window } => {
            let m = matcher(events, event)?;
            let hits: Vec<usize> = window_rows(events, p, window, as_of)
                .filter(|&r| m(r))
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
            let starts: Vec<usize> = window_rows(events, p, window, as_of)
                .filter(|&r| m1(r))
                .collect();
            match starts.last() {
                None => "no first step in the window".into(),
                Some(&r1) => {
                    let limit = events.time[r1].saturating_add(*within_ms);
                    match second_step(events, r1, visible.end, *within_ms, &m2) {
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
