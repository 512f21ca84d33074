//! A hashed timer wheel (Varghese and Lauck 1987, scheme 6): deadlines hash to slots by
//! time; advancing the clock visits only the slots it passes, and a slot keeps the
//! deadlines of later rotations. Scheduling is O(1) and firing costs the expired timers
//! plus the slots passed, never a scan of every profile.

use microseg_core::ProfileId;

/// Timers per profile, at millisecond deadlines.
#[derive(Debug, Clone)]
pub(crate) struct TimerWheel {
    slot_ms: i64,
    slots: Vec<Vec<(i64, ProfileId)>>,
    /// Every deadline at or before this has fired.
    fired_until: i64,
    len: usize,
}

impl TimerWheel {
    /// A wheel of `slots` slots of `slot_ms` each, with nothing fired after `now`.
    pub(crate) fn new(slots: usize, slot_ms: i64, now: i64) -> TimerWheel {
        TimerWheel {
            slot_ms,
            slots: vec![Vec::new(); slots],
            fired_until: now,
            len: 0,
        }
    }

    fn slot(&self, t: i64) -> usize {
        t.div_euclid(self.slot_ms)
            .rem_euclid(self.slots.len() as i64) as usize
    }

    /// Timers waiting.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Schedules `p` at `at` (fires at the next advance when `at` has already passed);
    /// returns the time the entry carries.
    pub(crate) fn schedule(&mut self, at: i64, p: ProfileId) -> i64 {
        let at = at.max(self.fired_until.saturating_add(1));
        let slot = self.slot(at);
        self.slots[slot].push((at, p));
        self.len += 1;
        at
    }

    /// Removes and returns (in `out`) every timer due at or before `now`.
    pub(crate) fn advance(&mut self, now: i64, out: &mut Vec<(i64, ProfileId)>) {
        if now <= self.fired_until {
            return;
        }
        let n = self.slots.len() as i64;
        let first = (self.fired_until + 1).div_euclid(self.slot_ms);
        let last = now.div_euclid(self.slot_ms);
        // A full rotation visits every slot once.
        let visits = (last - first + 1).min(n);
        for i in 0..visits {
            let slot = (first + i).rem_euclid(n) as usize;
            let timers = &mut self.slots[slot];
            let before = out.len();
            timers.retain(|&(at, p)| {
                if at <= now {
                    out.push((at, p));
                    false
                } else {
                    true
                }
            });
            self.len -= out.len() - before;
        }
        self.fired_until = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_each_timer_once_at_or_after_its_deadline() {
        let mut w = TimerWheel::new(8, 10, 0);
        let deadlines = [5, 15, 79, 80, 81, 1000, 12, 12, 400];
        for (p, &t) in deadlines.iter().enumerate() {
            w.schedule(t, p as u32);
        }
        let mut fired = Vec::new();
        for now in [4, 12, 80, 81, 399, 2000] {
            let mut out = Vec::new();
            w.advance(now, &mut out);
            for &(at, p) in &out {
                assert!(at <= now && deadlines[p as usize] == at);
            }
            fired.extend(out.into_iter().map(|(_, p)| p));
            // Nothing due is left behind.
            let due = deadlines.iter().filter(|&&t| t <= now).count();
            assert_eq!(fired.len(), due, "at {now}");
        }
        fired.sort();
        assert_eq!(fired, (0..deadlines.len() as u32).collect::<Vec<_>>());
        assert_eq!(w.len(), 0);
    }
}
