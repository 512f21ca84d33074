//! Behavioural metrics per profile, computed as of an instant.
//!
//! Only events at or before `as_of` count. For each profile:
//!
//! | metric | definition |
//! |---|---|
//! | `visits` | sessions: the first event opens one; so does every event more than the session gap (30 min) after the previous event, and every explicit session event (`session_started`); at one instant, session events count first |
//! | `orders` | number of order events (`order_completed` unless configured) |
//! | `revenue` | sum of the revenue of order events (an order without revenue adds 0) |
//! | `aov` | `revenue / orders`; missing without orders |
//! | `first_seen`, `last_seen` | time of the first and last event of any name |
//! | `last_order_at` | time of the last order |
//! | `recency_days` | whole days (rounded down) from `last_order_at` to `as_of` |
//! | `tenure_days` | whole days (rounded down) from `first_seen` to `as_of` |
//! | `rfm_r`, `rfm_f`, `rfm_m` | quintiles of the rank among profiles with at least one order, ties broken by external id in byte order: R = 6 − NTILE(5) OVER (ORDER BY recency_days, id), F = NTILE(5) OVER (ORDER BY orders, id), M = NTILE(5) OVER (ORDER BY revenue, id) |
//! | `rfm` | the three digits as text, e.g. `"545"` |
//!
//! NTILE is SQL's: `n` rows go into 5 buckets whose sizes differ by at most one, the
//! larger buckets first. Profiles without orders have no RFM scores.

use microseg_core::{ProfileId, Timestamp, TraitType, Value};

use crate::columnar::{Dictionary, EventTable, ExternalIds};

/// The metric names, in output order.
pub const METRIC_NAMES: [&str; 13] = [
    "visits",
    "orders",
    "revenue",
    "aov",
    "first_seen",
    "last_seen",
    "last_order_at",
    "recency_days",
    "tenure_days",
    "rfm_r",
    "rfm_f",
    "rfm_m",
    "rfm",
];

/// The type of a metric, by name.
pub fn metric_type(name: &str) -> Option<TraitType> {
    Some(match name {
        "visits" | "orders" | "recency_days" | "tenure_days" | "rfm_r" | "rfm_f" | "rfm_m" => {
            TraitType::Integer
        }
        "revenue" | "aov" => TraitType::Float,
        "first_seen" | "last_seen" | "last_order_at" => TraitType::Timestamp,
        "rfm" => TraitType::String,
        _ if crate::models::clv::PREDICTION_NAMES.contains(&name) => TraitType::Float,
        _ => return None,
    })
}

/// What counts as an order and a session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// The event names that count as an order.
    pub order_events: Vec<String>,
    /// The event name that explicitly starts a session.
    pub session_event: String,
    /// A gap longer than this between two events starts a new session.
    pub session_gap_ms: i64,
}

/// The order events when nothing is configured: microseg's own name and the one of
/// Segment's e-commerce spec, so a workspace fed by Segment's libraries counts orders
/// without configuration.
pub const DEFAULT_ORDER_EVENTS: [&str; 2] = ["order_completed", "Order Completed"];

impl MetricsConfig {
    /// Whether events named `name` are orders.
    pub fn is_order(&self, name: &str) -> bool {
        self.order_events.iter().any(|o| o == name)
    }

    /// For each code of `names`, whether its events are orders.
    pub fn order_codes(&self, names: &Dictionary) -> Vec<bool> {
        (0..names.len() as u32)
            .map(|c| self.is_order(names.value(c)))
            .collect()
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            order_events: DEFAULT_ORDER_EVENTS.iter().map(|s| s.to_string()).collect(),
            session_event: "session_started".to_string(),
            session_gap_ms: 30 * 60 * 1000,
        }
    }
}

/// Metric columns, one slot per profile.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Metrics {
    /// The instant the metrics describe.
    pub as_of: Option<Timestamp>,
    /// Sessions.
    pub visits: Vec<u32>,
    /// Order events.
    pub orders: Vec<u32>,
    /// Sum of order revenue.
    pub revenue: Vec<f64>,
    /// First event time, `None` without events.
    pub first_seen: Vec<Option<i64>>,
    /// Last event time.
    pub last_seen: Vec<Option<i64>>,
    /// Last order time.
    pub last_order_at: Vec<Option<i64>>,
    /// RFM scores `[r, f, m]`, `None` without orders.
    pub rfm: Vec<Option<[u8; 3]>>,
    /// CLV predictions ([`crate::models::clv::PREDICTION_NAMES`]) when a model is fitted.
    pub clv: Option<crate::models::clv::Predictions>,
}

impl Metrics {
    /// Number of profiles.
    pub fn len(&self) -> usize {
        self.visits.len()
    }

    /// True when there are no profiles.
    pub fn is_empty(&self) -> bool {
        self.visits.is_empty()
    }

    /// Profile `id`'s own metrics (everything but the population-relative RFM scores
    /// and CLV predictions).
    pub fn row(&self, id: ProfileId) -> ProfileMetrics {
        let i = id as usize;
        ProfileMetrics {
            visits: self.visits[i],
            orders: self.orders[i],
            revenue: self.revenue[i],
            first_seen: self.first_seen[i],
            last_seen: self.last_seen[i],
            last_order_at: self.last_order_at[i],
        }
    }

    /// Average order value.
    pub fn aov(&self, id: ProfileId) -> Option<f64> {
        self.row(id).aov()
    }

    /// Whole days since the last order.
    pub fn recency_days(&self, id: ProfileId) -> Option<i64> {
        self.row(id).recency_days(self.as_of?)
    }

    /// Whole days since the first event.
    pub fn tenure_days(&self, id: ProfileId) -> Option<i64> {
        self.row(id).tenure_days(self.as_of?)
    }

    /// The value of metric `name` for profile `id` (`None` when missing or unknown).
    pub fn value(&self, name: &str, id: ProfileId) -> Option<Value> {
        let i = id as usize;
        let rfm = self.rfm[i];
        match name {
            "rfm_r" => rfm.map(|s| Value::Int(s[0] as i64)),
            "rfm_f" => rfm.map(|s| Value::Int(s[1] as i64)),
            "rfm_m" => rfm.map(|s| Value::Int(s[2] as i64)),
            "rfm" => rfm.map(|s| Value::Str(format!("{}{}{}", s[0], s[1], s[2]))),
            "recency_days" | "tenure_days" => self.row(id).value(name, self.as_of?),
            _ if OWN_METRIC_NAMES.contains(&name) => self.row(id).value(name, Timestamp(0)),
            _ => self.clv.as_ref()?.value(name, i).map(Value::Float),
        }
    }
}

/// The metrics of one profile that depend on its own events only.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProfileMetrics {
    /// Sessions.
    pub visits: u32,
    /// Order events.
    pub orders: u32,
    /// Sum of order revenue.
    pub revenue: f64,
    /// First event time.
    pub first_seen: Option<i64>,
    /// Last event time.
    pub last_seen: Option<i64>,
    /// Last order time.
    pub last_order_at: Option<i64>,
}

/// The numeric metrics a marketer looks at first: what `microseg correlate` compares and
/// the console's overview draws.
pub const KEY_METRICS: [&str; 6] = [
    "visits",
    "orders",
    "revenue",
    "aov",
    "recency_days",
    "tenure_days",
];

/// The metrics [`ProfileMetrics::value`] answers: those of one profile's own events (the
/// names before the RFM scores).
pub const OWN_METRIC_NAMES: &[&str] = METRIC_NAMES.split_at(9).0;

impl ProfileMetrics {
    /// Average order value; missing without orders.
    pub fn aov(&self) -> Option<f64> {
        (self.orders > 0).then(|| self.revenue / self.orders as f64)
    }

    /// Whole days from the last order to `as_of`.
    pub fn recency_days(&self, as_of: Timestamp) -> Option<i64> {
        self.last_order_at
            .map(|t| Timestamp(t).whole_days_until(as_of))
    }

    /// Whole days from the first event to `as_of`.
    pub fn tenure_days(&self, as_of: Timestamp) -> Option<i64> {
        self.first_seen
            .map(|t| Timestamp(t).whole_days_until(as_of))
    }

    /// The value of metric `name` (one of [`OWN_METRIC_NAMES`]) as of `as_of`.
    pub fn value(&self, name: &str, as_of: Timestamp) -> Option<Value> {
        let time = |t: Option<i64>| t.map(|ms| Value::Time(Timestamp(ms)));
        match name {
            "visits" => Some(Value::Int(self.visits as i64)),
            "orders" => Some(Value::Int(self.orders as i64)),
            "revenue" => Some(Value::Float(self.revenue)),
            "aov" => self.aov().map(Value::Float),
            "first_seen" => time(self.first_seen),
            "last_seen" => time(self.last_seen),
            "last_order_at" => time(self.last_order_at),
            "recency_days" => self.recency_days(as_of).map(Value::Int),
            "tenure_days" => self.tenure_days(as_of).map(Value::Int),
            _ => None,
        }
    }
}

/// Computes every metric for each of the table's profiles as of `as_of`; `external_ids`
/// (one per profile) break RFM ties.
pub fn compute(
    events: &EventTable,
    external_ids: &ExternalIds,
    as_of: Timestamp,
    config: &MetricsConfig,
) -> Metrics {
    let n = events.profiles();
    let is_order = config.order_codes(&events.names);
    let session = events.names.code(&config.session_event);
    let mut m = Metrics {
        as_of: Some(as_of),
        visits: vec![0; n],
        orders: vec![0; n],
        revenue: vec![0.0; n],
        first_seen: vec![None; n],
        last_seen: vec![None; n],
        last_order_at: vec![None; n],
        rfm: vec![None; n],
        clv: None,
    };
    for p in 0..n {
        let rows = events.events_of(p as ProfileId);
        // Events are sorted by time: the visible ones are a prefix.
        let times = &events.time[rows.clone()];
        let visible = times.partition_point(|&t| t <= as_of.0);
        if visible == 0 {
            continue;
        }
        let (mut visits, mut orders, mut revenue, mut last_order) = (0u32, 0u32, 0.0f64, None);
        // Events at one instant are a group: each session event in it opens a session;
        // without one, the group opens a session when it is the first or comes more than
        // the gap after the previous group (as if session events sorted first).
        let mut previous = i64::MIN;
        let mut row = rows.start;
        let end = rows.start + visible;
        while row < end {
            let t = events.time[row];
            let mut explicit = 0u32;
            while row < end && events.time[row] == t {
                let name = Some(events.name[row]);
                if session.is_some() && name == session {
                    explicit += 1;
                }
                if is_order[events.name[row] as usize] {
                    orders += 1;
                    let r = events.revenue[row];
                    if !r.is_nan() {
                        revenue += r;
                    }
                    last_order = Some(t);
                }
                row += 1;
            }
            visits += if explicit > 0 {
                explicit
            } else {
                u32::from(previous == i64::MIN || t - previous > config.session_gap_ms)
            };
            previous = t;
        }
        m.visits[p] = visits;
        m.orders[p] = orders;
        m.revenue[p] = revenue;
        m.first_seen[p] = Some(times[0]);
        m.last_seen[p] = Some(times[visible - 1]);
        m.last_order_at[p] = last_order;
    }
    score_rfm(&mut m, external_ids, as_of);
    m
}

/// The NTILE(5) bucket (1..=5) of 0-based rank `i` among `n` rows.
fn ntile5(i: usize, n: usize) -> u8 {
    let (q, r) = (n / 5, n % 5);
    let big = r * (q + 1);
    if i < big {
        (i / (q + 1) + 1) as u8
    } else {
        (r + (i - big) / q.max(1) + 1) as u8
    }
}

fn score_rfm(m: &mut Metrics, external_ids: &ExternalIds, as_of: Timestamp) {
    let mut buyers: Vec<u32> = (0..m.len() as u32)
        .filter(|&p| m.orders[p as usize] > 0)
        .collect();
    let n = buyers.len();
    // Ties break by external id (byte order), so scores do not depend on import order.
    buyers.sort_unstable_by(|&a, &b| external_ids.get(a).cmp(external_ids.get(b)));
    let mut tie = vec![0u32; m.len()];
    for (i, &p) in buyers.iter().enumerate() {
        tie[p as usize] = i as u32;
    }
    let mut scores = vec![[0u8; 3]; m.len()];
    let mut ranked = buyers.clone();
    // Recency in whole days ascending; R = 6 - ntile.
    let days = |p: u32| Timestamp(m.last_order_at[p as usize].unwrap_or(0)).whole_days_until(as_of);
    ranked.sort_by_key(|&p| (days(p), tie[p as usize]));
    for (i, &p) in ranked.iter().enumerate() {
        scores[p as usize][0] = 6 - ntile5(i, n);
    }
    ranked.sort_by_key(|&p| (m.orders[p as usize], tie[p as usize]));
    for (i, &p) in ranked.iter().enumerate() {
        scores[p as usize][1] = ntile5(i, n);
    }
    ranked.sort_by(|&a, &b| {
        m.revenue[a as usize]
            .total_cmp(&m.revenue[b as usize])
            .then(tie[a as usize].cmp(&tie[b as usize]))
    });
    for (i, &p) in ranked.iter().enumerate() {
        scores[p as usize][2] = ntile5(i, n);
    }
    for p in buyers {
        m.rfm[p as usize] = Some(scores[p as usize]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::columnar::EventTableBuilder;
    use microseg_core::time::parse_timestamp;

    fn t(s: &str) -> i64 {
        parse_timestamp(s).unwrap().0
    }

    #[test]
    fn ntile_matches_sql_bucket_sizes() {
        // SQL NTILE(5) over 7 rows gives buckets 1,1,2,2,3,4,5 (first n % 5 buckets larger).
        let buckets: Vec<u8> = (0..7).map(|i| ntile5(i, 7)).collect();
        assert_eq!(buckets, [1, 1, 2, 2, 3, 4, 5]);
        let buckets: Vec<u8> = (0..3).map(|i| ntile5(i, 3)).collect();
        assert_eq!(buckets, [1, 2, 3]);
        let buckets: Vec<u8> = (0..10).map(|i| ntile5(i, 10)).collect();
        assert_eq!(buckets, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    }

    #[test]
    fn sessions_orders_and_days_by_hand() {
        let mut b = EventTableBuilder::default();
        // Profile 0: two events 10 min apart (1 session), one 31 min later (2nd), an
        // explicit session start 1 min later (3rd), an order in it, and a future order.
        b.push(0, t("2024-01-01T10:00:00Z"), "page_viewed", None);
        b.push(0, t("2024-01-01T10:10:00Z"), "page_viewed", None);
        b.push(0, t("2024-01-01T10:41:00Z"), "page_viewed", None);
        b.push(0, t("2024-01-01T10:42:00Z"), "session_started", None);
        b.push(0, t("2024-01-01T10:43:00Z"), "order_completed", Some(30.0));
        b.push(0, t("2024-01-01T10:44:00Z"), "order_completed", None);
        b.push(0, t("2024-03-01T00:00:00Z"), "order_completed", Some(99.0));
        // Profile 1: exactly 30 min apart is still one session.
        b.push(1, t("2024-01-05T10:00:00Z"), "page_viewed", None);
        b.push(1, t("2024-01-05T10:30:00Z"), "page_viewed", None);
        // Profile 2: no events at all.
        let events = b.finish(3);
        let as_of = parse_timestamp("2024-01-11T09:00:00Z").unwrap();
        let m = compute(&events, &ids(3), as_of, &MetricsConfig::default());
        assert_eq!(m.visits, [3, 1, 0]);
        assert_eq!(m.orders, [2, 0, 0]);
        assert_eq!(m.revenue, [30.0, 0.0, 0.0]);
        assert_eq!(m.aov(0), Some(15.0));
        assert_eq!(m.aov(1), None);
        // 2024-01-01T10:44 to 2024-01-11T09:00 is 9 days 22 h: 9 whole days.
        assert_eq!(m.recency_days(0), Some(9));
        assert_eq!(m.tenure_days(0), Some(9));
        assert_eq!(m.tenure_days(1), Some(5));
        assert_eq!(m.recency_days(1), None);
        assert_eq!(m.last_seen[0], Some(t("2024-01-01T10:44:00Z")));
        // One buyer: NTILE(5) puts it in bucket 1 everywhere, so R = 6 - 1 = 5.
        assert_eq!(m.value("rfm", 0), Some(Value::Str("511".into())));
        assert_eq!(m.value("rfm", 1), None);
        assert_eq!(m.value("first_seen", 2), None);
    }

    #[test]
    fn every_configured_order_event_is_an_order() {
        // By hand: profile 0 has one order of each default name (10 + 5); profile 1 a
        // `purchase`, which only a config naming it counts.
        let mut b = EventTableBuilder::default();
        b.push(0, t("2024-01-01"), "order_completed", Some(10.0));
        b.push(0, t("2024-01-02"), "Order Completed", Some(5.0));
        b.push(1, t("2024-01-03"), "purchase", Some(7.0));
        let events = b.finish(2);
        let as_of = Timestamp(t("2024-02-01"));
        let m = compute(&events, &ids(2), as_of, &MetricsConfig::default());
        assert_eq!(
            (m.orders.clone(), m.revenue.clone()),
            (vec![2, 0], vec![15.0, 0.0])
        );
        assert_eq!(m.last_order_at[0], Some(t("2024-01-02")));
        let config = MetricsConfig {
            order_events: vec!["purchase".into()],
            ..MetricsConfig::default()
        };
        let m = compute(&events, &ids(2), as_of, &config);
        assert_eq!((m.orders, m.revenue), (vec![0, 1], vec![0.0, 7.0]));
    }

    fn ids(n: usize) -> ExternalIds {
        (0..n).map(|p| format!("p{p:03}")).collect()
    }

    #[test]
    fn rfm_ties_break_by_external_id() {
        // Ten buyers, identical behaviour: every score comes from the tie-break alone,
        // which follows the external ids ("c9" < ... < "c0"), not the dense ids.
        let mut b = EventTableBuilder::default();
        for p in 0..10 {
            b.push(p, t("2024-01-01"), "order_completed", Some(10.0));
        }
        let events = b.finish(10);
        let external: ExternalIds = (0..10).map(|p| format!("c{}", 9 - p)).collect();
        let m = compute(
            &events,
            &external,
            parse_timestamp("2024-02-01").unwrap(),
            &MetricsConfig::default(),
        );
        let r: Vec<u8> = m.rfm.iter().map(|s| s.unwrap()[0]).collect();
        let f: Vec<u8> = m.rfm.iter().map(|s| s.unwrap()[1]).collect();
        assert_eq!(r, [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
        assert_eq!(f, [5, 5, 4, 4, 3, 3, 2, 2, 1, 1]);
    }

    #[test]
    fn events_at_one_instant_count_session_events_first() {
        // Sessions by hand, with the rule "at one instant, session events come first":
        // 0: page and session_started at the same instant, in that arrival order -> 1
        //    (the session start opens it; the page is 0 min after it);
        // 1: two session_started at one instant -> 2;
        // 2: two pages at one instant, then one 31 min later -> 2.
        let mut b = EventTableBuilder::default();
        b.push(0, t("2024-01-01T10:00:00Z"), "page_viewed", None);
        b.push(0, t("2024-01-01T10:00:00Z"), "session_started", None);
        b.push(1, t("2024-01-01T10:00:00Z"), "session_started", None);
        b.push(1, t("2024-01-01T10:00:00Z"), "session_started", None);
        b.push(2, t("2024-01-01T10:00:00Z"), "page_viewed", None);
        b.push(2, t("2024-01-01T10:00:00Z"), "page_viewed", None);
        b.push(2, t("2024-01-01T10:31:00Z"), "page_viewed", None);
        let events = b.finish(3);
        let as_of = parse_timestamp("2024-01-02").unwrap();
        let m = compute(&events, &ids(3), as_of, &MetricsConfig::default());
        assert_eq!(m.visits, [1, 2, 2]);
    }
}
