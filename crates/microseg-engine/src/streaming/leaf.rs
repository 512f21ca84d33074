//! Behavioural leaves in streaming form: what each keeps per profile, how it answers at
//! the clock, and the next instant its answer can change without a new event.
//!
//! Every event a state sees is visible (time ≤ clock: later ones wait in the evaluator's
//! future buffer), and the clock only moves forward. So:
//!
//! - counts and aggregates over all time or `between` fold into one running aggregate;
//!   `within D` keeps the matching (time, value) pairs of the last `D`, oldest first (for
//!   a count compared with `v`, only the latest `⌊v⌋ + 1`);
//! - `last(E) before D ago` keeps the latest time, `first(E)` the earliest;
//! - `E1 then E2 within D` keeps E1 and E2 times that can still pair: over all time or
//!   `between`, until a pair is found (then it holds for good); E1 times whose `D` ended
//!   more than the lateness horizon ago and E2 times older than it are dropped;
//! - `E1 then not E2 within D` keeps the latest E1, whether an E2 followed it, and the E2
//!   times after it within the lateness horizon (a later E1 may pair with them), thinned
//!   to fewer than two per `D`.
//!
//! All of this is exact for events in any order, except that a sequence can miss a pair
//! whose other half is older than the lateness horizon (documented in docs/streaming.md).

use std::collections::VecDeque;

use microseg_core::condition::{AggregateFn, CompareOp, Condition, Window};
use microseg_core::Timestamp;

use super::event::{Matcher, StreamEvent};
use crate::behaviour::{aggregate, in_window};
use crate::evaluate::EvalError;

/// Which step of a leaf an event feeds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// The leaf's event (the first step of a sequence).
    First,
    /// The second step of a sequence.
    Then,
}

/// What a leaf computes.
#[derive(Debug, Clone)]
enum Kind {
    Count {
        op: CompareOp,
        value: f64,
    },
    Aggregate {
        function: AggregateFn,
        property: String,
        op: CompareOp,
        value: f64,
    },
    LastBefore {
        ago_ms: i64,
    },
    First,
    Sequence {
        negated: bool,
        within_ms: i64,
    },
}

/// A compiled behavioural leaf.
#[derive(Debug, Clone)]
pub(crate) struct Leaf {
    /// The leaf as written (leaves are shared between segments by equality).
    pub(crate) condition: Condition,
    kind: Kind,
    window: Window,
    first: Matcher,
    then: Option<Matcher>,
}

impl Leaf {
    /// Compiles a behavioural leaf; `None` when `c` is not one.
    pub(crate) fn new(c: &Condition) -> Result<Option<Leaf>, EvalError> {
        let (kind, window, first, then) = match c {
            Condition::Count {
                event,
                window,
                op,
                value,
            } => (
                Kind::Count {
                    op: *op,
                    value: *value,
                },
                *window,
                event,
                None,
            ),
            Condition::Aggregate {
                function,
                property,
                event,
                window,
                op,
                value,
            } => (
                Kind::Aggregate {
                    function: *function,
                    property: property.clone(),
                    op: *op,
                    value: *value,
                },
                *window,
                event,
                None,
            ),
            // `did(E)` is `count(E) >= 1`.
            Condition::Did { event, window } => (
                Kind::Count {
                    op: CompareOp::Ge,
                    value: 1.0,
                },
                *window,
                event,
                None,
            ),
            Condition::LastBefore { event, ago_ms } => (
                Kind::LastBefore { ago_ms: *ago_ms },
                Window::All,
                event,
                None,
            ),
            Condition::First { event, window } => (Kind::First, *window, event, None),
            Condition::Sequence {
                first,
                then,
                negated,
                within_ms,
                window,
            } => (
                Kind::Sequence {
                    negated: *negated,
                    within_ms: *within_ms,
                },
                *window,
                first,
                Some(then),
            ),
            _ => return Ok(None),
        };
        Ok(Some(Leaf {
            condition: c.clone(),
            kind,
            window,
            first: Matcher::new(first)?,
            then: then.map(Matcher::new).transpose()?,
        }))
    }

    /// The event names this leaf listens to, with the step each feeds.
    pub(crate) fn listens(&self) -> Vec<(&str, Step)> {
        let mut out = vec![(self.first.name(), Step::First)];
        if let Some(t) = &self.then {
            out.push((t.name(), Step::Then));
        }
        out
    }

    /// The state of a profile that has seen no matching event.
    pub(crate) fn empty(&self) -> State {
        match (&self.kind, &self.window) {
            (Kind::Count { .. } | Kind::Aggregate { .. }, Window::Within { .. }) => {
                State::Recent(VecDeque::new())
            }
            (Kind::Count { .. } | Kind::Aggregate { .. }, _) => State::Folded(Folded::default()),
            (Kind::LastBefore { .. }, _) => State::Last(None),
            (Kind::First, _) => State::First(None),
            (Kind::Sequence { negated: false, .. }, _) => State::Pairs(Pairs::default()),
            (Kind::Sequence { negated: true, .. }, _) => State::Unfollowed(Unfollowed::default()),
        }
    }

    /// Whether event `e` is this leaf's event for `step`.
    pub(crate) fn matches(&self, step: Step, e: &StreamEvent) -> bool {
        match step {
            Step::First => self.first.matches(e),
            Step::Then => self.then.as_ref().is_some_and(|m| m.matches(e)),
        }
    }

    /// Feeds event `e`, which [`Leaf::matches`] for `step`, into `state`; the event is
    /// visible at `clock`.
    pub(crate) fn update(&self, state: &mut State, step: Step, e: &StreamEvent, clock: i64) {
        let t = e.time;
        let in_outer = match &self.window {
            Window::Between { from, to } => from.0 <= t && t <= to.0,
            Window::Within { ms } => t >= clock.saturating_sub(*ms),
            Window::All => true,
        };
        match state {
            State::Folded(f) => {
                if in_outer {
                    f.add(self.value(e));
                }
            }
            State::Recent(entries) => {
                if in_outer {
                    // After every entry at or before t: equal times keep arrival order.
                    let at = entries.partition_point(|&(u, _)| u <= t);
                    entries.insert(at, (t, self.value(e)));
                    self.truncate(entries);
                }
            }
            State::Last(last) => *last = Some(last.map_or(t, |l| l.max(t))),
            State::First(first) => *first = Some(first.map_or(t, |f| f.min(t))),
            State::Pairs(p) => {
                let Kind::Sequence { within_ms, .. } = self.kind else {
                    unreachable!("pairs belong to sequences")
                };
                if p.done {
                    return;
                }
                match step {
                    Step::First if in_outer => insert_sorted(&mut p.e1, t),
                    Step::First => {}
                    Step::Then => insert_sorted(&mut p.e2, t),
                }
                // Over all time or `between`, a pair holds for good once both are visible.
                if !matches!(self.window, Window::Within { .. }) && p.any_pair(within_ms) {
                    *p = Pairs {
                        done: true,
                        ..Pairs::default()
                    };
                }
            }
            State::Unfollowed(u) => {
                let Kind::Sequence { within_ms, .. } = self.kind else {
                    unreachable!("unfollowed belongs to sequences")
                };
                match step {
                    Step::First if in_outer && u.latest.is_none_or(|l| t > l) => {
                        u.latest = Some(t);
                        u.followed =
                            u.e2.iter()
                                .any(|&t2| t < t2 && t2 <= t.saturating_add(within_ms));
                        u.e2.retain(|&t2| t2 > t);
                    }
                    Step::First => {}
                    Step::Then => {
                        if let Some(t1) = u.latest {
                            if t1 < t && t <= t1.saturating_add(within_ms) {
                                u.followed = true;
                            }
                        }
                        if u.latest.is_none_or(|t1| t > t1) {
                            insert_sorted(&mut u.e2, t);
                            thin(&mut u.e2, within_ms);
                        }
                    }
                }
            }
        }
    }

    /// Keeps a windowed count's state bounded: `count(E, within D) op v` only needs the
    /// count up to `⌊v⌋ + 1` (every comparison with `v` has the same answer for any count
    /// from there on), so only the latest `⌊v⌋ + 1` times are kept. Exact: a dropped time
    /// is older than every kept one, so it leaves the window first.
    fn truncate(&self, entries: &mut VecDeque<(i64, f64)>) {
        if let Kind::Count { value, .. } = self.kind {
            let cap = (value.floor() + 1.0).max(0.0) as usize;
            while entries.len() > cap {
                entries.pop_front();
            }
        }
    }

    /// The aggregated value an event contributes (NaN when it has none).
    fn value(&self, e: &StreamEvent) -> f64 {
        match &self.kind {
            Kind::Aggregate { property, .. } => e.number(property).unwrap_or(f64::NAN),
            _ => f64::NAN,
        }
    }

    /// Drops what can no longer change the answer at `clock` or later (the evaluator runs
    /// it before every evaluation).
    pub(crate) fn prune(&self, state: &mut State, clock: i64, lateness_ms: i64) {
        let horizon = clock.saturating_sub(lateness_ms);
        match state {
            State::Recent(entries) => {
                if let Window::Within { ms } = self.window {
                    let from = clock.saturating_sub(ms);
                    while entries.front().is_some_and(|&(t, _)| t < from) {
                        entries.pop_front();
                    }
                }
            }
            State::Pairs(p) => {
                let Kind::Sequence { within_ms, .. } = self.kind else {
                    return;
                };
                let (keep_e1, keep_e2) = match self.window {
                    // E1 must be in the window; E2 comes after it.
                    Window::Within { ms } => {
                        let from = clock.saturating_sub(ms);
                        (from, from)
                    }
                    // A late E2 (at or after the horizon) pairs with E1 from D before it.
                    _ => (horizon.saturating_sub(within_ms), horizon),
                };
                p.e1.retain(|&t| t >= keep_e1);
                p.e2.retain(|&t| t >= keep_e2);
            }
            State::Unfollowed(u) => u.e2.retain(|&t| t >= horizon),
            State::Folded(_) | State::Last(_) | State::First(_) => {}
        }
    }

    /// The leaf's answer at `as_of` (the clock) for `state` (`None`: no matching events).
    pub(crate) fn holds(&self, state: Option<&State>, as_of: Timestamp) -> bool {
        let empty;
        let state = match state {
            Some(s) => s,
            None => {
                empty = self.empty();
                &empty
            }
        };
        let from = match self.window {
            Window::Within { ms } => as_of.0.saturating_sub(ms),
            _ => i64::MIN,
        };
        match (&self.kind, state) {
            (Kind::Count { op, value }, s) => {
                let n = match s {
                    State::Folded(f) => f.events as f64,
                    State::Recent(entries) => entries.iter().filter(|e| e.0 >= from).count() as f64,
                    _ => 0.0,
                };
                op.holds(n.partial_cmp(value))
            }
            (
                Kind::Aggregate {
                    function,
                    op,
                    value,
                    ..
                },
                s,
            ) => {
                let x = match s {
                    State::Folded(f) => f.aggregate(*function),
                    State::Recent(entries) => aggregate(
                        *function,
                        entries
                            .iter()
                            .filter(|e| e.0 >= from && !e.1.is_nan())
                            .map(|e| e.1),
                    ),
                    _ => None,
                };
                x.is_some_and(|x| op.holds(x.partial_cmp(value)))
            }
            (Kind::LastBefore { ago_ms }, State::Last(last)) => {
                last.is_some_and(|l| l < as_of.0.saturating_sub(*ago_ms))
            }
            (Kind::First, State::First(first)) => {
                first.is_some_and(|f| in_window(f, &self.window, as_of))
            }
            (Kind::Sequence { within_ms, .. }, State::Pairs(p)) => {
                p.done
                    || p.e1
                        .iter()
                        .any(|&t1| t1 >= from && p.followed(t1, *within_ms))
            }
            (Kind::Sequence { within_ms, .. }, State::Unfollowed(u)) => {
                u.latest.is_some_and(|t1| {
                    t1 >= from && as_of.0 >= t1.saturating_add(*within_ms) && !u.followed
                })
            }
            _ => false,
        }
    }

    /// The first instant after `as_of` at which the answer may change with no new event.
    pub(crate) fn deadline(&self, state: &State, as_of: Timestamp) -> Option<i64> {
        let after = |t: i64| (t > as_of.0).then_some(t);
        let window_ms = match self.window {
            Window::Within { ms } => Some(ms),
            _ => None,
        };
        // An event at t stays inside `within W` up to t + W.
        let leaves = |t: i64| window_ms.and_then(|w| after(t.saturating_add(w).saturating_add(1)));
        match (&self.kind, state) {
            (_, State::Recent(entries)) => entries.front().and_then(|&(t, _)| leaves(t)),
            (Kind::LastBefore { ago_ms }, State::Last(Some(l))) => {
                after(l.saturating_add(*ago_ms).saturating_add(1))
            }
            (Kind::First, State::First(Some(f))) => leaves(*f),
            (_, State::Pairs(p)) if !p.done => p.e1.first().and_then(|&t| leaves(t)),
            (Kind::Sequence { within_ms, .. }, State::Unfollowed(u)) => {
                let t1 = u.latest?;
                [after(t1.saturating_add(*within_ms)), leaves(t1)]
                    .into_iter()
                    .flatten()
                    .min()
            }
            _ => None,
        }
    }
}

impl Leaf {
    /// Adds a merged profile's state `theirs` to `mine`.
    pub(crate) fn absorb(&self, mine: &mut State, theirs: State) {
        let within_ms = match self.kind {
            Kind::Sequence { within_ms, .. } => within_ms,
            _ => 0,
        };
        match (&mut *mine, theirs) {
            (State::Folded(a), State::Folded(b)) => {
                a.events += b.events;
                a.values += b.values;
                a.sum += b.sum;
                a.min = a.min.min(b.min);
                a.max = a.max.max(b.max);
            }
            (State::Recent(a), State::Recent(b)) => {
                for entry in b {
                    let at = a.partition_point(|&(u, _)| u <= entry.0);
                    a.insert(at, entry);
                }
                self.truncate(a);
            }
            (State::Last(a), State::Last(b)) => *a = (*a).max(b),
            (State::First(a), State::First(b)) => {
                *a = match (*a, b) {
                    (Some(x), Some(y)) => Some(x.min(y)),
                    (x, y) => x.or(y),
                }
            }
            (State::Pairs(a), State::Pairs(b)) => {
                if a.done || b.done {
                    *a = Pairs {
                        done: true,
                        ..Pairs::default()
                    };
                } else {
                    b.e1.iter().for_each(|&t| insert_sorted(&mut a.e1, t));
                    b.e2.iter().for_each(|&t| insert_sorted(&mut a.e2, t));
                    if !matches!(self.window, Window::Within { .. }) && a.any_pair(within_ms) {
                        *a = Pairs {
                            done: true,
                            ..Pairs::default()
                        };
                    }
                }
            }
            (State::Unfollowed(a), State::Unfollowed(b)) => {
                let e2: Vec<i64> = a.e2.iter().chain(&b.e2).copied().collect();
                let (latest, followed) = match (a.latest, b.latest) {
                    (Some(x), Some(y)) if y > x => (Some(y), b.followed),
                    (Some(x), Some(y)) if y == x => (Some(x), a.followed || b.followed),
                    (None, y) => (y, b.followed),
                    (x, _) => (x, a.followed),
                };
                a.latest = latest;
                a.followed = followed
                    || latest.is_some_and(|t1| {
                        e2.iter()
                            .any(|&t2| t1 < t2 && t2 <= t1.saturating_add(within_ms))
                    });
                a.e2 = e2;
                a.e2.sort_unstable();
                a.e2.retain(|&t2| latest.is_none_or(|t1| t2 > t1));
                thin(&mut a.e2, within_ms);
            }
            _ => {}
        }
    }
}

/// Drops the times of sorted `v` that no question "is there a time in `(t, t + d]`?" needs:
/// a time whose neighbours are at most `d` apart (if the interval holds it, it holds a
/// neighbour too). What is left has fewer than two times per `d`, so the E2 times an
/// unfollowed sequence keeps are bounded by the lateness horizon over `D`, not by the rate.
fn thin(v: &mut Vec<i64>, d: i64) {
    let mut kept = 0;
    for i in 0..v.len() {
        let t = v[i];
        while kept >= 2 && t.saturating_sub(v[kept - 2]) <= d {
            kept -= 1;
        }
        v[kept] = t;
        kept += 1;
    }
    v.truncate(kept);
}

fn insert_sorted(v: &mut Vec<i64>, t: i64) {
    let at = v.partition_point(|&u| u <= t);
    v.insert(at, t);
}

/// Per-profile state of one leaf.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum State {
    /// A running aggregate (all time or `between`).
    Folded(Folded),
    /// Matching (time, value) pairs inside `within D`, oldest first.
    Recent(VecDeque<(i64, f64)>),
    /// The latest matching time.
    Last(Option<i64>),
    /// The earliest matching time.
    First(Option<i64>),
    /// A positive sequence.
    Pairs(Pairs),
    /// A negated sequence.
    Unfollowed(Unfollowed),
}

/// A running count and aggregate of values.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Folded {
    events: u64,
    values: u64,
    sum: f64,
    min: f64,
    max: f64,
}

impl Default for Folded {
    fn default() -> Self {
        Folded {
            events: 0,
            values: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
        }
    }
}

impl Folded {
    fn add(&mut self, x: f64) {
        self.events += 1;
        if !x.is_nan() {
            self.values += 1;
            self.sum += x;
            self.min = self.min.min(x);
            self.max = self.max.max(x);
        }
    }

    fn aggregate(&self, function: AggregateFn) -> Option<f64> {
        match function {
            AggregateFn::Sum => Some(self.sum),
            _ if self.values == 0 => None,
            AggregateFn::Avg => Some(self.sum / self.values as f64),
            AggregateFn::Min => Some(self.min),
            AggregateFn::Max => Some(self.max),
        }
    }
}

/// E1 and E2 times of a positive sequence that may still pair.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Pairs {
    done: bool,
    e1: Vec<i64>,
    e2: Vec<i64>,
}

impl Pairs {
    /// Whether some E2 comes strictly after `t1` and at most `within_ms` later.
    fn followed(&self, t1: i64, within_ms: i64) -> bool {
        let at = self.e2.partition_point(|&t2| t2 <= t1);
        self.e2
            .get(at)
            .is_some_and(|&t2| t2 <= t1.saturating_add(within_ms))
    }

    fn any_pair(&self, within_ms: i64) -> bool {
        self.e1.iter().any(|&t1| self.followed(t1, within_ms))
    }
}

/// The latest E1 of a negated sequence and what followed it.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Unfollowed {
    latest: Option<i64>,
    followed: bool,
    e2: Vec<i64>,
}

#[cfg(test)]
mod tests {
    use super::thin;

    fn any_in(v: &[i64], t: i64, d: i64) -> bool {
        v.iter().any(|&x| t < x && x <= t + d)
    }

    /// Thinned times answer every "is there a time in (t, t + d]?" as all of them do, and
    /// fewer than two remain per d + 1 milliseconds (2,000 random sets, xorshift).
    #[test]
    fn thinning_keeps_every_answer() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = |n: u64| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n) as i64
        };
        for _ in 0..2000 {
            let d = next(50);
            let len = next(40) as usize;
            let mut times: Vec<i64> = (0..len).map(|_| next(200)).collect();
            times.sort_unstable();
            let mut thinned = times.clone();
            thin(&mut thinned, d);
            for t in -60..260 {
                assert_eq!(
                    any_in(&times, t, d),
                    any_in(&thinned, t, d),
                    "{times:?} d={d} t={t}"
                );
            }
            assert!(
                thinned.windows(3).all(|w| w[2] - w[0] > d),
                "{thinned:?} d={d}"
            );
        }
    }
}
