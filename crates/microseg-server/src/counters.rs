//! The server's own counters (requests, commits, changes, webhooks) and two latency
//! histograms, rendered in the Prometheus text format at `/metrics`. (Behavioural metrics
//! of profiles are another thing: `microseg_engine::metrics`.)

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// Histogram bucket bounds, in milliseconds.
const BUCKETS_MS: [f64; 12] = [
    0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 5000.0,
];

/// A latency histogram in milliseconds.
#[derive(Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS_MS.len()],
    count: AtomicU64,
    /// Sum in microseconds.
    sum_us: AtomicU64,
}

impl Histogram {
    /// Records one observation.
    pub fn observe(&self, ms: f64) {
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            if ms <= *bound {
                self.counts[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us
            .fetch_add((ms * 1000.0).max(0.0) as u64, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (i, bound) in BUCKETS_MS.iter().enumerate() {
            let n = self.counts[i].load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{le=\"{}\"}} {n}", bound / 1000.0);
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_us.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}\n{name}_count {count}");
    }
}

/// Everything `/metrics` reports.
#[derive(Default)]
pub struct Counters {
    /// Messages committed.
    pub ingested: AtomicU64,
    /// Messages skipped as duplicates.
    pub duplicates: AtomicU64,
    /// Requests refused, by status: 400, 401, 413, 503.
    pub rejected_400: AtomicU64,
    /// 401s.
    pub rejected_401: AtomicU64,
    /// 413s.
    pub rejected_413: AtomicU64,
    /// 422s (a workspace limit).
    pub rejected_422: AtomicU64,
    /// 429s (a key's rate).
    pub rejected_429: AtomicU64,
    /// 503s.
    pub rejected_503: AtomicU64,
    /// Requests refused for adding trait names past `[limits] traits`.
    pub limit_traits: AtomicU64,
    /// Requests refused for adding event names past `[limits] event_names`.
    pub limit_event_names: AtomicU64,
    /// Requests refused for an event dated past `[limits] future_minutes`.
    pub limit_future: AtomicU64,
    /// Requests refused for an alias merging two known customers.
    pub limit_alias_merges: AtomicU64,
    /// Requests waiting for the writer.
    pub queue_depth: AtomicI64,
    /// Segment membership changes.
    pub changes: AtomicU64,
    /// Webhook deliveries answered with a 2xx.
    pub webhook_delivered: AtomicU64,
    /// Webhook delivery attempts that failed (to be retried).
    pub webhook_failed: AtomicU64,
    /// Changes a webhook never got: its buffer was full or it fell behind the stream.
    pub webhook_dropped: AtomicU64,
    /// Decisions answered by `GET /v1/decide`.
    pub decisions: AtomicU64,
    /// `decision_served` events not recorded because the write queue was full.
    pub exposures_dropped: AtomicU64,
    /// Messages of triggered campaigns queued.
    pub triggered: AtomicU64,
    /// Segment entries the trigger worker missed (it fell behind the stream).
    pub triggers_dropped: AtomicU64,
    /// Messages handed over by the delivery loop.
    pub delivered: AtomicU64,
    /// Time of each group commit.
    pub commit: Histogram,
    /// Time from a commit to the change it caused.
    pub change_latency: Histogram,
}

impl Counters {
    /// Counts a refused ingestion request by its status (400, 401, 413, 422, 429 or 503).
    pub fn count_rejection(&self, status: u16) {
        let counter = match status {
            400 => &self.rejected_400,
            401 => &self.rejected_401,
            413 => &self.rejected_413,
            422 => &self.rejected_422,
            429 => &self.rejected_429,
            503 => &self.rejected_503,
            _ => return,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Records a group commit's duration.
    pub fn observe_commit(&self, d: Duration) {
        self.commit.observe(d.as_secs_f64() * 1000.0);
    }

    /// Records a change's latency.
    pub fn observe_change_latency(&self, ms: f64) {
        self.change_latency.observe(ms);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let counter = |out: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}"
            );
        };
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        counter(
            &mut out,
            "microseg_ingested_messages_total",
            "Messages committed to the store.",
            get(&self.ingested),
        );
        counter(
            &mut out,
            "microseg_duplicate_messages_total",
            "Messages skipped because their messageId was already stored.",
            get(&self.duplicates),
        );
        let _ = writeln!(
            out,
            "# HELP microseg_rejected_requests_total Requests refused, by HTTP status.\n# TYPE microseg_rejected_requests_total counter"
        );
        for (status, v) in [
            (400, &self.rejected_400),
            (401, &self.rejected_401),
            (413, &self.rejected_413),
            (422, &self.rejected_422),
            (429, &self.rejected_429),
            (503, &self.rejected_503),
        ] {
            let _ = writeln!(
                out,
                "microseg_rejected_requests_total{{status=\"{status}\"}} {}",
                get(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP microseg_limit_refusals_total Requests refused by a workspace limit, by limit.\n# TYPE microseg_limit_refusals_total counter"
        );
        for (limit, v) in [
            ("traits", &self.limit_traits),
            ("event_names", &self.limit_event_names),
            ("future_minutes", &self.limit_future),
            ("alias_merges_customers", &self.limit_alias_merges),
        ] {
            let _ = writeln!(
                out,
                "microseg_limit_refusals_total{{limit=\"{limit}\"}} {}",
                get(v)
            );
        }
        let _ = writeln!(
            out,
            "# HELP microseg_queue_depth Requests waiting for the writer.\n# TYPE microseg_queue_depth gauge\nmicroseg_queue_depth {}",
            self.queue_depth.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "microseg_segment_changes_total",
            "Segment memberships entered or exited.",
            get(&self.changes),
        );
        for (name, help, v) in [
            (
                "microseg_webhook_deliveries_total",
                "Webhook requests answered with a 2xx.",
                &self.webhook_delivered,
            ),
            (
                "microseg_webhook_failures_total",
                "Webhook requests that failed and were retried with back-off.",
                &self.webhook_failed,
            ),
            (
                "microseg_webhook_dropped_changes_total",
                "Changes a webhook never received (buffer full or stream overrun).",
                &self.webhook_dropped,
            ),
            (
                "microseg_decisions_total",
                "Decisions answered by GET /v1/decide.",
                &self.decisions,
            ),
            (
                "microseg_exposures_dropped_total",
                "decision_served events not recorded because the write queue was full.",
                &self.exposures_dropped,
            ),
            (
                "microseg_triggered_messages_total",
                "Messages of triggered campaigns queued.",
                &self.triggered,
            ),
            (
                "microseg_triggers_dropped_total",
                "Segment entries the trigger worker missed (it fell behind the change stream).",
                &self.triggers_dropped,
            ),
            (
                "microseg_delivered_messages_total",
                "Messages handed over to their channels by the delivery loop.",
                &self.delivered,
            ),
        ] {
            counter(&mut out, name, help, get(v));
        }
        self.commit.render(
            &mut out,
            "microseg_commit_seconds",
            "Duration of one group commit (transaction and fsync).",
        );
        self.change_latency.render(
            &mut out,
            "microseg_change_latency_seconds",
            "Time from a commit to the membership change it caused.",
        );
        out
    }
}
