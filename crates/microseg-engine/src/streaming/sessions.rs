//! The `visits` metric in streaming form: sessions over the distinct instants of a
//! profile's events, with the batch rule (`metrics`): an instant with session events opens
//! one session per such event; otherwise it opens one when it is the first or comes more
//! than the gap after the previous instant.
//!
//! Instants older than the lateness horizon are folded into a count; the rest are kept so
//! that a late event can be placed between its neighbours.

use std::collections::BTreeMap;

/// Sessions of one profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Sessions {
    /// Sessions opened by folded instants.
    folded: u32,
    /// The latest folded instant.
    last_folded: Option<i64>,
    /// Instants after it: time → number of session events at that time.
    tail: BTreeMap<i64, u32>,
    /// Sessions opened by the tail's instants.
    tail_visits: u32,
}

fn opens(t: i64, explicit: u32, previous: Option<i64>, gap_ms: i64) -> u32 {
    if explicit > 0 {
        explicit
    } else {
        u32::from(previous.is_none_or(|p| t - p > gap_ms))
    }
}

impl Sessions {
    /// The number of sessions.
    pub(crate) fn visits(&self) -> u32 {
        self.folded + self.tail_visits
    }

    fn previous(&self, t: i64) -> Option<i64> {
        self.tail
            .range(..t)
            .next_back()
            .map(|(&p, _)| p)
            .or(self.last_folded)
    }

    /// Adds an event at `t` (`session`: it is an explicit session event). Returns false
    /// when `t` is not after the folded instants (too late to place exactly).
    pub(crate) fn add(&mut self, t: i64, session: bool, gap_ms: i64) -> bool {
        if self.last_folded.is_some_and(|f| t <= f) {
            // Exact only for an explicit session event at a new instant.
            self.folded += u32::from(session);
            return false;
        }
        let previous = self.previous(t);
        let next = self
            .tail
            .range(t.saturating_add(1)..)
            .next()
            .map(|(&n, &e)| (n, e));
        let old = self
            .tail
            .get(&t)
            .map(|&e| opens(t, e, previous, gap_ms))
            .unwrap_or(0)
            + next.map_or(0, |(n, e)| {
                opens(
                    n,
                    e,
                    if self.tail.contains_key(&t) {
                        Some(t)
                    } else {
                        previous
                    },
                    gap_ms,
                )
            });
        let explicit = self.tail.entry(t).or_insert(0);
        *explicit += u32::from(session);
        let new = opens(t, *explicit, previous, gap_ms)
            + next.map_or(0, |(n, e)| opens(n, e, Some(t), gap_ms));
        self.tail_visits = self.tail_visits + new - old;
        true
    }

    /// Folds instants before `horizon`.
    pub(crate) fn fold(&mut self, horizon: i64, gap_ms: i64) {
        while let Some((&t, &e)) = self.tail.first_key_value() {
            if t >= horizon {
                break;
            }
            let n = opens(t, e, self.last_folded, gap_ms);
            self.folded += n;
            self.tail_visits -= n;
            self.last_folded = Some(t);
            self.tail.pop_first();
        }
    }

    /// Adds every instant of `other` (a merged profile's sessions).
    pub(crate) fn absorb(&mut self, other: &Sessions, gap_ms: i64) {
        self.folded += other.folded;
        for (&t, &e) in &other.tail {
            if e == 0 {
                self.add(t, false, gap_ms);
            }
            for _ in 0..e {
                self.add(t, true, gap_ms);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sessions by the batch rule over a sorted list of (time, is_session_event).
    fn by_hand(events: &[(i64, bool)], gap: i64) -> u32 {
        let mut instants: BTreeMap<i64, u32> = BTreeMap::new();
        for &(t, s) in events {
            *instants.entry(t).or_insert(0) += u32::from(s);
        }
        let mut previous = None;
        let mut n = 0;
        for (&t, &e) in &instants {
            n += opens(t, e, previous, gap);
            previous = Some(t);
        }
        n
    }

    #[test]
    fn any_arrival_order_gives_the_batch_count() {
        let events = [
            (100, false),
            (200, false),
            (131, false),
            (10, true),
            (500, false),
            (131, true),
            (470, false),
            (469, false),
            (200, true),
            (0, false),
        ];
        let mut s = Sessions::default();
        for (i, &(t, session)) in events.iter().enumerate() {
            assert!(s.add(t, session, 30));
            assert_eq!(s.visits(), by_hand(&events[..=i], 30), "after {i}");
        }
        s.fold(300, 30);
        assert_eq!(s.visits(), by_hand(&events, 30));
        assert!(s.add(520, false, 30));
        assert_eq!(
            s.visits(),
            by_hand(&[&events[..], &[(520, false)]].concat(), 30)
        );
        // Before the folded instants: not placed.
        assert!(!s.add(50, false, 30));
    }
}
