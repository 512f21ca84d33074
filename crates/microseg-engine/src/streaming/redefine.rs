//! Changing the segment definitions of a running evaluator without rebuilding it.
//!
//! A new or edited segment needs history only for its behavioural leaves that the
//! evaluator does not keep yet (leaves are shared by equality), and for sessions when
//! `visits` appears for the first time. So a change is three steps:
//!
//! 1. [`Streaming::redefine`] compiles the new list of segments and names what is new:
//!    the leaves without state, whether sessions are needed, and the segments whose
//!    membership must be recomputed (the new and edited ones and those that refer to
//!    them);
//! 2. [`Redefinition::backfill`] replays history into those leaves only, on any thread,
//!    from an event table holding exactly the events the evaluator has taken in: the
//!    events visible at the backfill's as-of are applied, the later ones set aside;
//! 3. [`Streaming::install`], on the evaluator's thread, moves the clock to at least that
//!    as-of, swaps in the new definitions keeping every existing leaf state, adds the
//!    backfilled states, applies the set-aside events the clock has reached since, and
//!    sets the recomputed segments' memberships without reporting them as changes.
//!
//! The server runs step 2 off its writer and evaluator threads, from the store as it was
//! between two commits, and step 3 between those two commits on the evaluator, so no
//! event is applied twice or missed (the differential test checks it against the batch
//! evaluator).

use std::collections::HashMap;

use microseg_core::condition::Condition;
use microseg_core::{ProfileId, Timestamp};

use super::leaf::State;
use super::sessions::Sessions;
use super::{row_properties, Change, StreamError, StreamEvent, Streaming, TraitSource};
use crate::columnar::EventTable;

/// A planned change of segment definitions; see the module documentation.
pub struct Redefinition {
    /// The new definitions, compiled (no state).
    template: Streaming,
    /// Per segment of the template (in its order): whether its membership is recomputed.
    changed: Vec<bool>,
    /// Template leaves that need history.
    fresh: Vec<u32>,
    /// Whether sessions need history (`visits` is used for the first time).
    sessions: bool,
}

/// History replayed into a redefinition's new leaves; see [`Redefinition::backfill`].
pub struct Backfill {
    as_of: Timestamp,
    /// (profile, template leaf, state), by profile.
    states: Vec<(ProfileId, u32, State)>,
    /// Sessions per profile, when needed.
    sessions: Vec<(ProfileId, Sessions)>,
    /// Every event dated after `as_of`, set aside with all its properties.
    later: Vec<(ProfileId, StreamEvent)>,
}

impl Streaming {
    /// Plans replacing the segment definitions with `segments` (the whole new list),
    /// checked and typed as [`Streaming::new`] does.
    pub fn redefine(
        &self,
        segments: &[(String, Condition)],
        traits: &dyn TraitSource,
    ) -> Result<Redefinition, StreamError> {
        let template = Streaming::new(segments, traits, self.config.clone(), self.clock())?;
        let mut changed = Vec::with_capacity(template.segments.len());
        for (i, (name, node)) in template.segments.iter().enumerate() {
            let edited = self.conditions.get(name) != template.conditions.get(name);
            let refers = node_refs(node).iter().any(|&r| changed[r]);
            changed.push(edited || refers);
            debug_assert!(changed.len() == i + 1);
        }
        let fresh = template
            .leaves
            .iter()
            .enumerate()
            .filter(|(_, leaf)| !self.leaves.iter().any(|l| l.condition == leaf.condition))
            .map(|(i, _)| i as u32)
            .collect();
        Ok(Redefinition {
            sessions: template.uses_visits && !self.uses_visits,
            template,
            changed,
            fresh,
        })
    }

    /// Swaps in a redefinition with its backfill (see the module documentation); returns
    /// the changes moving the clock to the backfill's as-of made (the recomputed
    /// memberships are set silently).
    pub fn install(
        &mut self,
        traits: &dyn TraitSource,
        plan: Redefinition,
        backfill: Backfill,
    ) -> Vec<Change> {
        let changes = self.advance(traits, backfill.as_of);
        let Redefinition {
            template,
            changed,
            fresh,
            sessions,
        } = plan;
        // Existing leaf states follow their leaf to its index in the new list.
        let remap: Vec<Option<u32>> = self
            .leaves
            .iter()
            .map(|l| {
                template
                    .leaves
                    .iter()
                    .position(|t| t.condition == l.condition)
                    .map(|i| i as u32)
            })
            .collect();
        for state in &mut self.states {
            state.leaves = std::mem::take(&mut state.leaves)
                .into_iter()
                .filter_map(|(l, s)| Some((remap[l as usize]?, s)))
                .collect();
        }
        for (p, leaf, s) in backfill.states {
            self.ensure(p);
            self.states[p as usize].leaves.push((leaf, s));
        }
        if sessions {
            for (p, s) in backfill.sessions {
                self.ensure(p);
                let state = &mut self.states[p as usize];
                state.metrics.visits = s.visits();
                state.sessions = Some(s);
            }
        }
        let mut old: HashMap<String, roaring::RoaringBitmap> = self
            .segments
            .drain(..)
            .map(|(name, _)| name)
            .zip(self.members.drain(..))
            .collect();
        let Streaming {
            segments,
            conditions,
            leaves,
            by_event,
            regexes,
            uses_visits,
            uses_days,
            ..
        } = template;
        self.members = segments
            .iter()
            .zip(&changed)
            .map(|((name, _), &changed)| match changed {
                true => roaring::RoaringBitmap::new(),
                false => old.remove(name).unwrap_or_default(),
            })
            .collect();
        (self.segments, self.conditions, self.leaves) = (segments, conditions, leaves);
        (self.by_event, self.regexes) = (by_event, regexes);
        (self.uses_visits, self.uses_days) = (uses_visits, uses_days);
        // Events dated after the backfill's as-of that the clock has reached since were
        // applied to the old leaves when released: the new ones take them now. The rest
        // are exactly the events waiting in the buffer (nothing was taken in since the
        // backfill's history), and they replace it: they carry every property the new
        // definitions read, which the buffered copies may lack.
        let clock = self.clock;
        self.future.clear();
        for (p, e) in backfill.later {
            self.ensure(p);
            if e.time <= clock {
                self.apply_to(p, &e, e.time, Some(&fresh), sessions);
            } else {
                self.buffer(p, e);
            }
        }
        for p in 0..self.states.len() as ProfileId {
            self.settle(traits, p, &changed);
        }
        changes
    }
}

impl Redefinition {
    /// Replays `events` (sorted by profile and time, with every property the new
    /// definitions read; exactly the events the evaluator has taken in) into the new
    /// leaves for profiles `0..profiles`: events at or before `as_of` are applied as they
    /// happened, later ones are set aside for [`Streaming::install`].
    pub fn backfill(&self, events: &EventTable, profiles: u32, as_of: Timestamp) -> Backfill {
        let t = &self.template;
        let config = &t.config.metrics;
        let lateness = t.config.lateness_ms;
        let mut out = Backfill {
            as_of,
            states: Vec::new(),
            sessions: Vec::new(),
            later: Vec::new(),
        };
        let listeners: HashMap<&str, Vec<(u32, super::leaf::Step)>> = t
            .by_event
            .iter()
            .map(|(name, ls)| {
                let ours = ls
                    .iter()
                    .filter(|(leaf, _)| self.fresh.contains(leaf))
                    .copied()
                    .collect::<Vec<_>>();
                (name.as_str(), ours)
            })
            .filter(|(_, ls)| !ls.is_empty())
            .collect();
        let by_code: Vec<Option<&Vec<(u32, super::leaf::Step)>>> = (0..events.names.len() as u32)
            .map(|c| listeners.get(events.names.value(c)))
            .collect();
        let session_code = events.names.code(&config.session_event);
        let mut states: Vec<(u32, State)> = Vec::new();
        for p in 0..profiles.min(events.profiles() as u32) {
            states.clear();
            let mut sessions = self.sessions.then(Sessions::default);
            for row in events.events_of(p) {
                let code = events.name[row];
                let time = events.time[row];
                let listened = by_code[code as usize];
                if listened.is_none() && sessions.is_none() && time <= as_of.0 {
                    continue;
                }
                let event = || StreamEvent {
                    time,
                    name: events.names.value(code).to_string(),
                    revenue: Some(events.revenue[row]).filter(|r| !r.is_nan()),
                    properties: row_properties(events, row),
                };
                if time > as_of.0 {
                    out.later.push((p, event()));
                    continue;
                }
                if let Some(s) = &mut sessions {
                    s.add(time, Some(code) == session_code, config.session_gap_ms);
                    s.fold(time.saturating_sub(lateness), config.session_gap_ms);
                }
                let Some(listeners) = listened else {
                    continue;
                };
                let e = event();
                for &(leaf, step) in listeners {
                    let def = &t.leaves[leaf as usize];
                    if !def.matches(step, &e) {
                        continue;
                    }
                    let at = match states.iter().position(|(l, _)| *l == leaf) {
                        Some(at) => at,
                        None => {
                            states.push((leaf, def.empty()));
                            states.len() - 1
                        }
                    };
                    def.update(&mut states[at].1, step, &e, time);
                }
            }
            out.states
                .extend(states.drain(..).map(|(leaf, s)| (p, leaf, s)));
            if let Some(s) = sessions.filter(|s| s.visits() > 0) {
                out.sessions.push((p, s));
            }
        }
        out
    }

    /// The segments whose memberships the change recomputes.
    pub fn changed_segments(&self) -> Vec<&str> {
        self.template
            .segments
            .iter()
            .zip(&self.changed)
            .filter(|(_, &c)| c)
            .map(|((name, _), _)| name.as_str())
            .collect()
    }
}

/// The segments a compiled condition refers to.
fn node_refs(node: &super::Node) -> Vec<usize> {
    use super::Node;
    match node {
        Node::All(nodes) | Node::Any(nodes) => nodes.iter().flat_map(node_refs).collect(),
        Node::Not(n) => node_refs(n),
        Node::Segment(i) => vec![*i],
        Node::Leaf(_) | Node::Profile(_) => Vec::new(),
    }
}
