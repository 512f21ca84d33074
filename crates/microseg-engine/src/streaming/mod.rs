//! The streaming evaluator: segment membership kept current event by event.
//!
//! Each profile has a small state per behavioural leaf of the defined segments (see
//! [`leaf`]), its own metrics (orders, revenue, first and last seen, sessions) and its
//! traits (read from a [`TraitSource`] the host keeps current). An event updates the
//! states of the leaves that listen to its name and re-evaluates only that profile's
//! segments; a membership that flips is reported as a [`Change`]. Answers that change with
//! time alone (a `within` window sliding past an event, an absence deadline, a
//! `recency_days` day boundary) are scheduled in a timer wheel, so they fire on time
//! without scanning profiles.
//!
//! The clock only moves forward ([`Streaming::advance`]); an event dated after the clock
//! waits in a buffer until the clock reaches it, as the batch evaluator ignores events
//! after as-of. At any clock the membership equals the batch evaluator's at as-of = clock
//! over the same events (the differential test pins it), with one documented limit: a
//! sequence or a session count can miss a neighbour older than the lateness horizon when
//! an event arrives later than that ([`StreamStats::late`] counts them).
//!
//! Population-relative metrics (RFM scores) and CLV predictions are not streamable: a
//! segment naming them is refused with [`StreamError::NotStreamable`].

mod event;
mod leaf;
mod redefine;
mod sessions;
mod wheel;

#[cfg(test)]
mod differential;

use std::collections::{BTreeMap, HashMap};

use microseg_core::condition::{CompareOp, Condition, Literal, Operand, TextOp};
use microseg_core::{ProfileId, Timestamp, TraitType, Value};
use regex::Regex;
use roaring::RoaringBitmap;

pub use event::{EventValue, StreamEvent};
use leaf::{Leaf, State, Step};
pub use redefine::{Backfill, Redefinition, Replay};
use sessions::Sessions;
use wheel::TimerWheel;

use crate::columnar::{EventTable, ProfileTable, NO_CODE};
use crate::evaluate::{check_literal, check_references, compare_value, EvalError};
use crate::metrics::{metric_type, MetricsConfig, ProfileMetrics, OWN_METRIC_NAMES};

const DAY_MS: i64 = 86_400_000;

/// Where the streaming evaluator reads traits: the host keeps them current and calls
/// [`Streaming::traits_changed`] after a change.
pub trait TraitSource {
    /// The type of trait `name`, `None` when no profile has it.
    fn trait_type(&self, name: &str) -> Option<TraitType>;
    /// Profile `p`'s value of trait `name`.
    fn trait_value(&self, p: ProfileId, name: &str) -> Option<Value>;
}

impl TraitSource for ProfileTable {
    fn trait_type(&self, name: &str) -> Option<TraitType> {
        self.columns.get(name).map(|c| c.trait_type())
    }

    fn trait_value(&self, p: ProfileId, name: &str) -> Option<Value> {
        self.columns.get(name)?.get(p)
    }
}

/// Settings of the streaming evaluator.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamConfig {
    /// How late (behind the clock) an event may arrive and still be placed exactly in
    /// sequences and sessions.
    pub lateness_ms: i64,
    /// What counts as an order and a session.
    pub metrics: MetricsConfig,
}

impl Default for StreamConfig {
    fn default() -> Self {
        StreamConfig {
            lateness_ms: DAY_MS,
            metrics: MetricsConfig::default(),
        }
    }
}

/// Why a membership changed.
#[derive(Debug, Clone, PartialEq)]
pub enum Cause {
    /// An event of the profile.
    Event {
        /// Its name.
        name: String,
        /// Its time.
        time: Timestamp,
    },
    /// Time passed (a window moved on, a deadline passed).
    Time,
    /// The profile's traits changed.
    Traits,
    /// Another profile was merged into this one (or this one into another).
    Merge,
}

/// A profile entered or left a segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The segment.
    pub segment: String,
    /// The profile.
    pub profile: ProfileId,
    /// Entered (true) or exited.
    pub entered: bool,
    /// The clock when it was seen.
    pub at: Timestamp,
    /// Why.
    pub cause: Cause,
}

/// Why a set of segments cannot be kept in streaming form.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StreamError {
    /// The condition does not evaluate (as the batch evaluator would refuse it).
    #[error("segment '{segment}': {source}")]
    Eval {
        /// The segment.
        segment: String,
        /// The reason.
        source: EvalError,
    },
    /// The condition names a value that depends on every profile.
    #[error("segment '{segment}' uses '{name}', which {why}; it is evaluated in batch only")]
    NotStreamable {
        /// The segment.
        segment: String,
        /// The metric.
        name: String,
        /// Why.
        why: &'static str,
    },
}

/// Counters of what the evaluator did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStats {
    /// Events observed.
    pub events: u64,
    /// Events that arrived later than the lateness horizon.
    pub late: u64,
    /// Timers that fired.
    pub timers: u64,
    /// Membership changes reported.
    pub changes: u64,
}

/// A compiled condition.
#[derive(Debug, Clone)]
enum Node {
    All(Vec<Node>),
    Any(Vec<Node>),
    Not(Box<Node>),
    /// A trait or metric test.
    Profile(Condition),
    /// A behavioural leaf, by index.
    Leaf(u32),
    /// Another segment, by index (earlier in evaluation order).
    Segment(usize),
}

#[derive(Debug, Clone, Default)]
struct ProfileState {
    metrics: ProfileMetrics,
    sessions: Option<Sessions>,
    /// Leaf states by leaf index, for the leaves that saw a matching event.
    leaves: Vec<(u32, State)>,
}

/// Segment membership kept current per event; see the module documentation.
pub struct Streaming {
    config: StreamConfig,
    /// Names and compiled conditions, referenced segments first.
    segments: Vec<(String, Node)>,
    /// The segments' conditions as defined.
    conditions: BTreeMap<String, Condition>,
    leaves: Vec<Leaf>,
    by_event: HashMap<String, Vec<(u32, Step)>>,
    regexes: HashMap<String, Regex>,
    uses_visits: bool,
    uses_days: bool,
    states: Vec<ProfileState>,
    members: Vec<RoaringBitmap>,
    retired: RoaringBitmap,
    wheel: TimerWheel,
    /// Each profile's current deadline (`i64::MAX`: none).
    scheduled: Vec<i64>,
    /// The time of each profile's live wheel entry (`i64::MAX`: none). A deadline that
    /// moves later leaves the entry in place, and the entry re-arms itself when it fires
    /// early, so the wheel holds about one entry per profile however often deadlines move
    /// (entries of other times are stale and dropped when they fire).
    armed: Vec<i64>,
    future: BTreeMap<(i64, u64), (ProfileId, StreamEvent)>,
    arrivals: u64,
    clock: i64,
    stats: StreamStats,
}

impl Streaming {
    /// Compiles `segments` (name, condition) with traits typed by `traits`, with the
    /// clock at `now` and no profiles yet.
    pub fn new(
        segments: &[(String, Condition)],
        traits: &dyn TraitSource,
        config: StreamConfig,
        now: Timestamp,
    ) -> Result<Streaming, StreamError> {
        let defined: BTreeMap<String, Condition> = segments.iter().cloned().collect();
        let mut s = Streaming {
            config,
            segments: Vec::new(),
            conditions: defined.clone(),
            leaves: Vec::new(),
            by_event: HashMap::new(),
            regexes: HashMap::new(),
            uses_visits: false,
            uses_days: false,
            states: Vec::new(),
            members: Vec::new(),
            retired: RoaringBitmap::new(),
            wheel: TimerWheel::new(4096, 1000, now.0),
            scheduled: Vec::new(),
            armed: Vec::new(),
            future: BTreeMap::new(),
            arrivals: 0,
            clock: now.0,
            stats: StreamStats::default(),
        };
        let mut order: Vec<String> = Vec::new();
        for (name, condition) in segments {
            check_references(name, condition, &defined).map_err(|source| StreamError::Eval {
                segment: name.clone(),
                source,
            })?;
            visit(name, &defined, &mut order);
        }
        for name in order {
            let node = s.compile(&name, &defined[&name], traits)?;
            s.segments.push((name, node));
            s.members.push(RoaringBitmap::new());
        }
        for (i, leaf) in s.leaves.iter().enumerate() {
            for (name, step) in leaf.listens() {
                s.by_event
                    .entry(name.to_string())
                    .or_default()
                    .push((i as u32, step));
            }
        }
        Ok(s)
    }

    fn compile(
        &mut self,
        segment: &str,
        c: &Condition,
        traits: &dyn TraitSource,
    ) -> Result<Node, StreamError> {
        let eval = |source: EvalError| StreamError::Eval {
            segment: segment.to_string(),
            source,
        };
        Ok(match c {
            Condition::And { all } => Node::All(
                all.iter()
                    .map(|c| self.compile(segment, c, traits))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Or { any } => Node::Any(
                any.iter()
                    .map(|c| self.compile(segment, c, traits))
                    .collect::<Result<_, _>>()?,
            ),
            Condition::Not { not } => Node::Not(Box::new(self.compile(segment, not, traits)?)),
            Condition::InSegment { segment: other } => Node::Segment(
                self.segments
                    .iter()
                    .position(|(n, _)| n == other)
                    .expect("referenced segments are compiled first"),
            ),
            leaf => match Leaf::new(leaf).map_err(eval)? {
                Some(compiled) => {
                    let at = match self.leaves.iter().position(|l| l.condition == *leaf) {
                        Some(at) => at,
                        None => {
                            self.leaves.push(compiled);
                            self.leaves.len() - 1
                        }
                    };
                    Node::Leaf(at as u32)
                }
                None => {
                    self.check_profile_leaf(segment, leaf, traits)?;
                    Node::Profile(leaf.clone())
                }
            },
        })
    }

    /// Checks a trait or metric test as the batch evaluator would, and notes what it needs.
    fn check_profile_leaf(
        &mut self,
        segment: &str,
        c: &Condition,
        traits: &dyn TraitSource,
    ) -> Result<(), StreamError> {
        let eval = |source: EvalError| StreamError::Eval {
            segment: segment.to_string(),
            source,
        };
        for name in c.profile_names() {
            if traits.trait_type(&name).is_some() {
                continue;
            }
            if !OWN_METRIC_NAMES.contains(&name.as_str()) {
                // A name no profile has yet is a trait still to come: missing for now.
                if metric_type(&name).is_some() {
                    let why = if name.starts_with("rfm") {
                        "ranks each profile against all others"
                    } else {
                        "is predicted by the CLV model from every customer's history"
                    };
                    return Err(StreamError::NotStreamable {
                        segment: segment.into(),
                        name,
                        why,
                    });
                }
                continue;
            }
            self.uses_visits |= name == "visits";
            self.uses_days |= matches!(name.as_str(), "recency_days" | "tenure_days");
        }
        let type_of = |name: &str| traits.trait_type(name).or_else(|| metric_type(name));
        let compared = |o: &Operand, lit: &Literal| -> Result<(), EvalError> {
            match o {
                Operand::Name(n) => match type_of(n) {
                    Some(ty) => check_literal(n, ty, lit),
                    None => Ok(()),
                },
                arith => {
                    numeric_names(arith, &type_of)?;
                    if lit.as_number().is_none() {
                        return Err(EvalError::arithmetic_literal(arith));
                    }
                    Ok(())
                }
            }
        };
        match c {
            Condition::Compare { left, right, .. } => compared(left, right).map_err(eval)?,
            Condition::In {
                operand, values, ..
            } => {
                for v in values {
                    compared(operand, v).map_err(eval)?;
                }
            }
            Condition::Between { operand, low, high } => {
                compared(operand, low).map_err(eval)?;
                compared(operand, high).map_err(eval)?;
            }
            Condition::Text { name, op, value } => {
                let ty = type_of(name);
                if let Some(ty) =
                    ty.filter(|&t| t != TraitType::String || traits.trait_type(name).is_none())
                {
                    return Err(eval(EvalError::not_text(name, ty)));
                }
                if *op == TextOp::Matches && !self.regexes.contains_key(value) {
                    let re = Regex::new(value).map_err(|e| {
                        eval(EvalError::BadRegex {
                            pattern: value.clone(),
                            reason: e.to_string().lines().last().unwrap_or_default().to_string(),
                        })
                    })?;
                    self.regexes.insert(value.clone(), re);
                }
            }
            Condition::Has { name, .. } => {
                if let Some(ty) = type_of(name).filter(|&t| t != TraitType::StringSet) {
                    return Err(eval(EvalError::not_set(name, ty)));
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// The clock.
    pub fn clock(&self) -> Timestamp {
        Timestamp(self.clock)
    }

    /// What the evaluator did so far.
    pub fn stats(&self) -> StreamStats {
        self.stats
    }

    /// Timers waiting, and events waiting for the clock to reach their time.
    pub fn pending(&self) -> (usize, usize) {
        (self.wheel.len(), self.future.len())
    }

    /// The segment names, referenced segments first.
    pub fn segment_names(&self) -> impl Iterator<Item = &str> {
        self.segments.iter().map(|(n, _)| n.as_str())
    }

    /// The current members of segment `name`.
    pub fn members(&self, name: &str) -> Option<&RoaringBitmap> {
        let i = self.segments.iter().position(|(n, _)| n == name)?;
        Some(&self.members[i])
    }

    /// The segments profile `p` is in.
    pub fn segments_of(&self, p: ProfileId) -> Vec<&str> {
        self.segments
            .iter()
            .zip(&self.members)
            .filter(|(_, m)| m.contains(p))
            .map(|((n, _), _)| n.as_str())
            .collect()
    }

    /// Metric `name` (one of [`OWN_METRIC_NAMES`]) of profile `p` at the clock: `None`
    /// when it is not kept (`visits` is only kept when a segment uses it), `Some(None)`
    /// when the profile has no value.
    pub fn own_metric(&self, p: ProfileId, name: &str) -> Option<Option<Value>> {
        if name == "visits" && !self.uses_visits {
            return None;
        }
        let m = self.states.get(p as usize).map(|s| s.metrics);
        Some(m.unwrap_or_default().value(name, Timestamp(self.clock)))
    }

    fn ensure(&mut self, p: ProfileId) {
        let n = p as usize + 1;
        if self.states.len() < n {
            self.states.resize_with(n, ProfileState::default);
            self.scheduled.resize(n, i64::MAX);
            self.armed.resize(n, i64::MAX);
        }
    }

    /// Replaces every state with one rebuilt from history: `events` (sorted by profile and
    /// time, with the properties segments read) for profiles `0..profiles`, the clock set
    /// to `as_of`. Memberships are set without reporting changes.
    pub fn backfill(
        &mut self,
        traits: &dyn TraitSource,
        profiles: u32,
        events: &EventTable,
        as_of: Timestamp,
    ) {
        self.states.clear();
        self.scheduled.clear();
        self.armed.clear();
        self.future.clear();
        self.members.iter_mut().for_each(RoaringBitmap::clear);
        self.wheel = TimerWheel::new(4096, 1000, as_of.0);
        self.clock = as_of.0;
        if profiles > 0 {
            self.ensure(profiles - 1);
        }
        let listened: Vec<bool> = (0..events.names.len() as u32)
            .map(|code| self.by_event.contains_key(events.names.value(code)))
            .collect();
        for p in 0..profiles.min(events.profiles() as u32) {
            for row in events.events_of(p) {
                let code = events.name[row];
                let time = events.time[row];
                let e = StreamEvent {
                    time,
                    name: events.names.value(code).to_string(),
                    revenue: Some(events.revenue[row]).filter(|r| !r.is_nan()),
                    // An event waiting for the clock keeps its properties: leaves defined
                    // before it is released may read them.
                    properties: if listened[code as usize] || time > as_of.0 {
                        row_properties(events, row)
                    } else {
                        Vec::new()
                    },
                };
                if e.time > as_of.0 {
                    self.buffer(p, e);
                } else {
                    // Replayed as it happened: nothing is pruned before its pair came.
                    self.apply(p, &e, e.time);
                }
            }
        }
        for p in 0..profiles {
            self.evaluate(traits, p, None);
        }
    }

    fn buffer(&mut self, p: ProfileId, e: StreamEvent) {
        self.arrivals += 1;
        self.future.insert((e.time, self.arrivals), (p, e));
    }

    /// Takes in event `e` of profile `p`: updates its state and reports the changes of
    /// its memberships (none when `e` is dated after the clock: it waits for it).
    pub fn observe(
        &mut self,
        traits: &dyn TraitSource,
        p: ProfileId,
        e: StreamEvent,
    ) -> Vec<Change> {
        self.stats.events += 1;
        self.ensure(p);
        if e.time > self.clock {
            self.buffer(p, e);
            return Vec::new();
        }
        self.apply(p, &e, self.clock);
        let cause = Cause::Event {
            name: e.name,
            time: Timestamp(e.time),
        };
        self.evaluate(traits, p, Some(cause))
    }

    /// Re-evaluates profile `p` after its traits changed.
    pub fn traits_changed(&mut self, traits: &dyn TraitSource, p: ProfileId) -> Vec<Change> {
        self.ensure(p);
        self.evaluate(traits, p, Some(Cause::Traits))
    }

    /// Moves the clock to `now`: releases buffered events dated up to it and fires the
    /// deadlines that passed. Does nothing when `now` is not after the clock.
    pub fn advance(&mut self, traits: &dyn TraitSource, now: Timestamp) -> Vec<Change> {
        if now.0 <= self.clock {
            return Vec::new();
        }
        self.clock = now.0;
        let mut changes = Vec::new();
        while let Some(entry) = self.future.first_entry() {
            if entry.key().0 > now.0 {
                break;
            }
            let (p, e) = entry.remove();
            self.apply(p, &e, now.0);
            let cause = Cause::Event {
                name: e.name,
                time: Timestamp(e.time),
            };
            changes.extend(self.evaluate(traits, p, Some(cause)));
        }
        let mut due = Vec::new();
        self.wheel.advance(now.0, &mut due);
        for (at, p) in due {
            let i = p as usize;
            if self.armed[i] != at {
                continue;
            }
            self.armed[i] = i64::MAX;
            match self.scheduled[i] {
                due if due <= now.0 => {
                    self.stats.timers += 1;
                    self.scheduled[i] = i64::MAX;
                    changes.extend(self.evaluate(traits, p, Some(Cause::Time)));
                }
                i64::MAX => {}
                later => self.armed[i] = self.wheel.schedule(later, p),
            }
        }
        changes
    }

    /// Merges profile `from` into `into` (an alias: `from`'s events now belong to
    /// `into`); `from` is retired and leaves every segment.
    pub fn merge(
        &mut self,
        traits: &dyn TraitSource,
        from: ProfileId,
        into: ProfileId,
    ) -> Vec<Change> {
        if from == into {
            return Vec::new();
        }
        self.ensure(from.max(into));
        let gone = std::mem::take(&mut self.states[from as usize]);
        for (p, _) in self.future.values_mut() {
            if *p == from {
                *p = into;
            }
        }
        let gap = self.config.metrics.session_gap_ms;
        let target = &mut self.states[into as usize];
        let (a, b) = (&mut target.metrics, gone.metrics);
        a.orders += b.orders;
        a.revenue += b.revenue;
        a.first_seen = min_opt(a.first_seen, b.first_seen);
        a.last_seen = a.last_seen.max(b.last_seen);
        a.last_order_at = a.last_order_at.max(b.last_order_at);
        if let Some(theirs) = &gone.sessions {
            target
                .sessions
                .get_or_insert_with(Sessions::default)
                .absorb(theirs, gap);
        }
        for (leaf, theirs) in gone.leaves {
            let def = &self.leaves[leaf as usize];
            match target.leaves.iter_mut().find(|(l, _)| *l == leaf) {
                Some((_, mine)) => def.absorb(mine, theirs),
                None => target.leaves.push((leaf, theirs)),
            }
        }
        self.retired.insert(from);
        let mut changes = self.evaluate(traits, from, Some(Cause::Merge));
        changes.extend(self.evaluate(traits, into, Some(Cause::Merge)));
        changes
    }

    /// Erases profile `p`: its state, its events still in the future and its memberships
    /// go, silently (no change is published: the person is to be forgotten, not
    /// announced), and it is retired, in no segment from now on.
    pub fn retire(&mut self, p: ProfileId) {
        self.ensure(p);
        let i = p as usize;
        self.states[i] = ProfileState::default();
        self.future.retain(|_, (q, _)| *q != p);
        for members in &mut self.members {
            members.remove(p);
        }
        self.scheduled[i] = i64::MAX;
        self.retired.insert(p);
    }

    /// Updates profile `p`'s metrics and leaf states with event `e`, visible at `clock`.
    fn apply(&mut self, p: ProfileId, e: &StreamEvent, clock: i64) {
        let lateness = self.config.lateness_ms;
        if e.time < clock.saturating_sub(lateness) {
            self.stats.late += 1;
        }
        let config = &self.config.metrics;
        let m = &mut self.states[p as usize].metrics;
        m.first_seen = min_opt(m.first_seen, Some(e.time));
        m.last_seen = m.last_seen.max(Some(e.time));
        if config.is_order(&e.name) {
            m.orders += 1;
            m.revenue += e.revenue.filter(|r| !r.is_nan()).unwrap_or(0.0);
            m.last_order_at = m.last_order_at.max(Some(e.time));
        }
        self.apply_to(p, e, clock, None, self.uses_visits);
    }

    /// Updates profile `p`'s sessions (when `sessions`) and the states of `only` those
    /// leaves (every leaf with `None`) with event `e`, visible at `clock`.
    fn apply_to(
        &mut self,
        p: ProfileId,
        e: &StreamEvent,
        clock: i64,
        only: Option<&[u32]>,
        sessions: bool,
    ) {
        let lateness = self.config.lateness_ms;
        let config = &self.config.metrics;
        let state = &mut self.states[p as usize];
        if sessions {
            let s = state.sessions.get_or_insert_with(Sessions::default);
            s.add(
                e.time,
                e.name == config.session_event,
                config.session_gap_ms,
            );
            s.fold(clock.saturating_sub(lateness), config.session_gap_ms);
            state.metrics.visits = s.visits();
        }
        let Some(listeners) = self.by_event.get(&e.name) else {
            return;
        };
        for &(leaf, step) in listeners {
            if only.is_some_and(|only| !only.contains(&leaf)) {
                continue;
            }
            let def = &self.leaves[leaf as usize];
            if !def.matches(step, e) {
                continue;
            }
            let at = match state.leaves.iter().position(|(l, _)| *l == leaf) {
                Some(at) => at,
                None => {
                    state.leaves.push((leaf, def.empty()));
                    state.leaves.len() - 1
                }
            };
            def.update(&mut state.leaves[at].1, step, e, clock);
        }
    }

    /// Evaluates every segment for `p` at the clock; reports flips (with `cause`, or
    /// silently when `None`) and reschedules `p`'s next deadline.
    fn evaluate(
        &mut self,
        traits: &dyn TraitSource,
        p: ProfileId,
        cause: Option<Cause>,
    ) -> Vec<Change> {
        self.evaluate_masked(traits, p, cause, None)
    }

    /// Sets `p`'s memberships of the segments `changed` marks, silently, and reschedules
    /// its next deadline (after a redefinition).
    fn settle(&mut self, traits: &dyn TraitSource, p: ProfileId, changed: &[bool]) {
        self.evaluate_masked(traits, p, None, Some(changed));
    }

    /// [`Streaming::evaluate`], touching only the segments `only` marks when given.
    fn evaluate_masked(
        &mut self,
        traits: &dyn TraitSource,
        p: ProfileId,
        cause: Option<Cause>,
        only: Option<&[bool]>,
    ) -> Vec<Change> {
        let as_of = Timestamp(self.clock);
        let lateness = self.config.lateness_ms;
        // The one place states are pruned: every update and merge is followed by this.
        let state = &mut self.states[p as usize];
        for (leaf, s) in &mut state.leaves {
            self.leaves[*leaf as usize].prune(s, as_of.0, lateness);
        }
        let state = &self.states[p as usize];
        let retired = self.retired.contains(p);
        let mut results = Vec::with_capacity(self.segments.len());
        let mut changes = Vec::new();
        for (i, (name, node)) in self.segments.iter().enumerate() {
            let now = !retired && self.holds(node, &results, traits, p, state, as_of);
            results.push(now);
            if only.is_some_and(|only| !only[i]) {
                continue;
            }
            if now != self.members[i].contains(p) {
                if now {
                    self.members[i].insert(p);
                } else {
                    self.members[i].remove(p);
                }
                if let Some(cause) = &cause {
                    changes.push(Change {
                        segment: name.clone(),
                        profile: p,
                        entered: now,
                        at: as_of,
                        cause: cause.clone(),
                    });
                }
            }
        }
        self.stats.changes += changes.len() as u64;
        let next = if retired {
            None
        } else {
            self.deadline(p, as_of)
        };
        let next = next.unwrap_or(i64::MAX);
        let i = p as usize;
        self.scheduled[i] = next;
        if next < self.armed[i] {
            self.armed[i] = self.wheel.schedule(next, p);
        }
        changes
    }

    fn deadline(&self, p: ProfileId, as_of: Timestamp) -> Option<i64> {
        let state = &self.states[p as usize];
        let mut next = state
            .leaves
            .iter()
            .filter_map(|(leaf, s)| self.leaves[*leaf as usize].deadline(s, as_of))
            .min();
        if self.uses_days {
            let m = &state.metrics;
            for anchor in [m.last_order_at, m.first_seen].into_iter().flatten() {
                // Whole days from the anchor change at anchor + k days.
                let k = (as_of.0 - anchor).div_euclid(DAY_MS) + 1;
                let at = anchor.saturating_add(k.saturating_mul(DAY_MS));
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        next
    }

    fn holds(
        &self,
        node: &Node,
        earlier: &[bool],
        traits: &dyn TraitSource,
        p: ProfileId,
        state: &ProfileState,
        as_of: Timestamp,
    ) -> bool {
        match node {
            Node::All(nodes) => nodes
                .iter()
                .all(|n| self.holds(n, earlier, traits, p, state, as_of)),
            Node::Any(nodes) => nodes
                .iter()
                .any(|n| self.holds(n, earlier, traits, p, state, as_of)),
            Node::Not(n) => !self.holds(n, earlier, traits, p, state, as_of),
            Node::Segment(i) => earlier[*i],
            Node::Leaf(leaf) => {
                let s = state.leaves.iter().find(|(l, _)| l == leaf).map(|(_, s)| s);
                self.leaves[*leaf as usize].holds(s, as_of)
            }
            Node::Profile(c) => {
                let value = |name: &str| match traits.trait_type(name) {
                    Some(_) => traits.trait_value(p, name),
                    None => state.metrics.value(name, as_of),
                };
                self.profile_holds(c, &value)
            }
        }
    }

    /// A trait or metric test with the batch evaluator's rules: a missing value never
    /// matches a comparison; only `exists` tests for it.
    fn profile_holds(&self, c: &Condition, value: &dyn Fn(&str) -> Option<Value>) -> bool {
        let numeric = |o: &Operand| o.evaluate(&|n| value(n)?.as_f64());
        let compare = |o: &Operand, op: CompareOp, lit: &Literal| match o {
            Operand::Name(n) => value(n).is_some_and(|v| op.holds(compare_value(&v, lit))),
            arith => match (numeric(arith), lit.as_number()) {
                (Some(x), Some(t)) => op.holds(x.partial_cmp(&t)),
                _ => false,
            },
        };
        match c {
            Condition::Compare { left, op, right } => compare(left, *op, right),
            Condition::In {
                operand,
                values,
                negated,
            } => {
                let any = values.iter().any(|v| compare(operand, CompareOp::Eq, v));
                if *negated {
                    let present = match operand {
                        Operand::Name(n) => value(n).is_some(),
                        arith => numeric(arith).is_some(),
                    };
                    present && !any
                } else {
                    any
                }
            }
            Condition::Between { operand, low, high } => {
                compare(operand, CompareOp::Ge, low) && compare(operand, CompareOp::Le, high)
            }
            Condition::Exists { name, negated } => value(name).is_some() != *negated,
            Condition::Text { name, op, value: v } => match value(name) {
                Some(Value::Str(s)) => match op {
                    TextOp::Contains => s.contains(v.as_str()),
                    TextOp::StartsWith => s.starts_with(v.as_str()),
                    TextOp::EndsWith => s.ends_with(v.as_str()),
                    TextOp::Matches => self.regexes.get(v).is_some_and(|re| re.is_match(&s)),
                },
                _ => false,
            },
            Condition::Has {
                name,
                value: member,
            } => {
                matches!(value(name), Some(Value::Set(items)) if items.contains(member))
            }
            _ => false,
        }
    }
}

/// Refuses a non-numeric name inside arithmetic.
fn numeric_names(
    o: &Operand,
    type_of: &dyn Fn(&str) -> Option<TraitType>,
) -> Result<(), EvalError> {
    match o {
        Operand::Number(_) => Ok(()),
        Operand::Name(n) => match type_of(n) {
            None | Some(TraitType::Integer | TraitType::Float) => Ok(()),
            Some(ty) => Err(EvalError::not_numeric(n, ty)),
        },
        Operand::Arith { left, right, .. } => {
            numeric_names(left, type_of)?;
            numeric_names(right, type_of)
        }
    }
}

fn min_opt(a: Option<i64>, b: Option<i64>) -> Option<i64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Adds `name` to `order` after the segments it refers to.
fn visit(name: &str, defined: &BTreeMap<String, Condition>, order: &mut Vec<String>) {
    if order.iter().any(|n| n == name) {
        return;
    }
    for r in defined[name].segment_refs() {
        visit(r, defined, order);
    }
    order.push(name.to_string());
}

/// The properties of event `row` of a table, as an incoming event would carry them.
fn row_properties(events: &EventTable, row: usize) -> Vec<(String, EventValue)> {
    events
        .properties
        .iter()
        .filter_map(|(k, c)| {
            let x = c.number(row);
            if !x.is_nan() {
                return Some((k.clone(), EventValue::Number(x)));
            }
            let code = c.text(row);
            (code != NO_CODE).then(|| (k.clone(), EventValue::Text(c.dict.value(code).into())))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use microseg_core::condition::parse;
    use microseg_core::time::parse_timestamp;

    use super::*;

    fn at(s: &str) -> Timestamp {
        parse_timestamp(s).unwrap()
    }

    fn view(time: &str) -> StreamEvent {
        StreamEvent {
            time: at(time).0,
            name: "page_viewed".into(),
            revenue: None,
            properties: vec![("path".into(), EventValue::Text("/winter/gloves".into()))],
        }
    }

    /// Each event of a `within` window moves the profile's deadline later; the wheel must
    /// not keep an entry per move (the memory of a long run grew with the event rate
    /// before), and the last deadline must still fire on time.
    #[test]
    fn the_wheel_keeps_one_entry_per_profile_however_often_deadlines_move() {
        let segments = vec![(
            "recent".to_string(),
            parse("did(page_viewed) within 1d").unwrap(),
        )];
        let traits = ProfileTable::default();
        let start = at("2024-01-01T00:00:00Z").0;
        let mut s = Streaming::new(
            &segments,
            &traits,
            StreamConfig::default(),
            Timestamp(start),
        )
        .unwrap();
        let mut last = start;
        for i in 0..20_000 {
            last = start + i * 1_000;
            s.advance(&traits, Timestamp(last));
            let mut e = view("2024-01-01T00:00:00Z");
            e.time = last;
            s.observe(&traits, 0, e);
        }
        assert!(s.pending().0 <= 2, "{} wheel entries", s.pending().0);
        // In the window until last + 1 day; out one millisecond later.
        assert!(s.advance(&traits, Timestamp(last + DAY_MS)).is_empty());
        let changes = s.advance(&traits, Timestamp(last + DAY_MS + 1));
        assert_eq!(changes.len(), 1);
        assert!(!changes[0].entered && changes[0].cause == Cause::Time);
    }

    /// An erased person leaves every segment without a published change, its pending
    /// deadline and future events do nothing, and a later event does not bring it back.
    #[test]
    fn a_retired_profile_leaves_silently_and_for_good() {
        let segments = vec![
            ("viewers".to_string(), parse("did(page_viewed)").unwrap()),
            (
                "recent".to_string(),
                parse("did(page_viewed) within 1d").unwrap(),
            ),
            ("quiet".to_string(), parse("not did(page_viewed)").unwrap()),
        ];
        let traits = ProfileTable::default();
        let start = at("2024-01-01T00:00:00Z");
        let mut s = Streaming::new(&segments, &traits, StreamConfig::default(), start).unwrap();
        s.observe(&traits, 0, view("2024-01-01T00:00:00Z"));
        s.observe(&traits, 1, view("2024-01-01T00:00:00Z"));
        // A future event of profile 0, waiting for its time.
        s.observe(&traits, 0, view("2024-01-05T00:00:00Z"));
        let member = |s: &Streaming, name: &str, p: u32| s.members(name).unwrap().contains(p);
        assert!(member(&s, "viewers", 0) && member(&s, "recent", 0));
        s.retire(0);
        assert!(!member(&s, "viewers", 0) && !member(&s, "recent", 0) && !member(&s, "quiet", 0));
        // The deadline of "recent" and the future event pass: only profile 1 changes.
        let changes = s.advance(&traits, at("2024-01-06T00:00:00Z"));
        assert!(changes.iter().all(|c| c.profile == 1), "{changes:?}");
        assert!(s
            .observe(&traits, 0, view("2024-01-06T00:00:00Z"))
            .is_empty());
        assert!(!member(&s, "viewers", 0));
        assert!(member(&s, "viewers", 1));
    }

    #[test]
    fn absence_fires_on_the_third_day_from_a_timer() {
        let segments = vec![(
            "winter_no_order".to_string(),
            parse(r#"page_viewed where path starts_with "/winter" then not order_completed within 3d"#)
                .unwrap(),
        )];
        let traits = ProfileTable::default();
        let start = at("2024-01-01T00:00:00Z");
        let mut s = Streaming::new(&segments, &traits, StreamConfig::default(), start).unwrap();
        assert!(s
            .observe(&traits, 0, view("2024-01-01T00:00:00Z"))
            .is_empty());
        s.advance(&traits, at("2024-01-01T10:00:00Z"));
        assert!(s
            .observe(&traits, 1, view("2024-01-01T10:00:00Z"))
            .is_empty());
        // Profile 1 orders in time; profile 0 does not.
        let order = StreamEvent {
            time: at("2024-01-02T10:00:00Z").0,
            name: "order_completed".into(),
            revenue: Some(50.0),
            properties: vec![],
        };
        s.advance(&traits, at("2024-01-02T10:00:00Z"));
        s.observe(&traits, 1, order);
        // One millisecond before the deadline nothing fires; at it, profile 0 enters.
        assert!(s
            .advance(&traits, Timestamp(at("2024-01-04T00:00:00Z").0 - 1))
            .is_empty());
        let changes = s.advance(&traits, at("2024-01-04T00:00:00Z"));
        assert_eq!(
            changes,
            vec![Change {
                segment: "winter_no_order".into(),
                profile: 0,
                entered: true,
                at: at("2024-01-04T00:00:00Z"),
                cause: Cause::Time,
            }]
        );
        assert_eq!(s.stats().timers, 1);
        assert!(s.advance(&traits, at("2024-01-09T00:00:00Z")).is_empty());
        assert_eq!(
            s.members("winter_no_order")
                .unwrap()
                .iter()
                .collect::<Vec<_>>(),
            [0]
        );
    }

    #[test]
    fn population_metrics_are_refused_with_the_reason() {
        let traits = ProfileTable::default();
        let refuse = |text: &str| {
            Streaming::new(
                &[("s".to_string(), parse(text).unwrap())],
                &traits,
                StreamConfig::default(),
                Timestamp(0),
            )
            .err()
            .unwrap()
            .to_string()
        };
        assert_eq!(
            refuse("rfm_r >= 4"),
            "segment 's' uses 'rfm_r', which ranks each profile against all others; it is evaluated in batch only"
        );
        assert!(refuse("p_alive > 0.5").contains("CLV model"));
        assert_eq!(
            refuse(r#"orders = "x""#),
            "segment 's': 'orders' is integer: compare it with a number"
        );
        // A trait no profile has yet is accepted: it is missing until one has it.
        let later = [("s".to_string(), parse("age > 3").unwrap())];
        assert!(Streaming::new(&later, &traits, StreamConfig::default(), Timestamp(0)).is_ok());
    }
}
