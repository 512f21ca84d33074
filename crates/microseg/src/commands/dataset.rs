//! Loading a workspace for evaluation: traits, metrics and events as of one instant.

use std::collections::BTreeMap;

use anyhow::Result;
use microseg_core::condition::Condition;
use microseg_core::Timestamp;
use microseg_engine::models::clv::{summarise, ClvModel, Predictions, Summary, PREDICTION_NAMES};
use microseg_engine::{compute_metrics, Dataset, EventTable, Metrics, MetricsConfig, ProfileTable};
use microseg_store::{Store, Workspace};
use roaring::RoaringBitmap;

/// The stored CLV model and every profile's order history as of `as_of` in its unit;
/// `None` without a model.
pub fn clv_summaries(
    store: &Store,
    events: &EventTable,
    config: &MetricsConfig,
    as_of: Timestamp,
) -> Result<Option<(ClvModel, Vec<Option<Summary>>)>> {
    let Some(model) = store.model::<ClvModel>("clv")? else {
        return Ok(None);
    };
    let summaries = summarise(
        events,
        &config.order_codes(&events.names),
        as_of,
        model.unit,
    );
    Ok(Some((model, summaries)))
}

/// Everything conditions are evaluated over, as of one instant.
pub struct Loaded {
    /// External id per dense profile id.
    pub external_ids: Vec<String>,
    /// Traits.
    pub profiles: ProfileTable,
    /// Metrics at `as_of`.
    pub metrics: Metrics,
    /// Events with the properties the conditions need.
    pub events: EventTable,
    /// Stored segments by name.
    pub segments: BTreeMap<String, Condition>,
    /// The instant everything is evaluated at.
    pub as_of: Timestamp,
}

impl Loaded {
    /// Loads the workspace for evaluating `conditions` (and the segments they refer to).
    pub fn new(
        ws: &Workspace,
        store: &Store,
        as_of: Timestamp,
        conditions: &[&Condition],
    ) -> Result<Loaded> {
        Loaded::reading(ws, store, as_of, conditions, &[])
    }

    /// As [`Loaded::new`], for commands that also read traits or metrics by name
    /// (features, dimensions, targets): names that need a model's predictions load them.
    pub fn reading(
        ws: &Workspace,
        store: &Store,
        as_of: Timestamp,
        conditions: &[&Condition],
        read: &[String],
    ) -> Result<Loaded> {
        let segments = store.segment_conditions()?;
        // Event properties of the conditions and of every segment they reach.
        let mut properties = std::collections::BTreeSet::new();
        let mut names: std::collections::BTreeSet<String> = read.iter().cloned().collect();
        let mut todo: Vec<&Condition> = conditions.to_vec();
        let mut seen = std::collections::BTreeSet::new();
        while let Some(c) = todo.pop() {
            properties.extend(c.event_properties());
            names.extend(c.profile_names());
            for r in c.segment_refs() {
                if seen.insert(r.to_string()) {
                    if let Some(s) = segments.get(r) {
                        todo.push(s);
                    }
                }
            }
        }
        let properties: Vec<String> = properties.into_iter().collect();
        let profiles = store.load_profiles()?;
        let events = store.load_events_with_properties(profiles.len(), &properties)?;
        let config = ws.config.metrics_config();
        let mut metrics = compute_metrics(&events, &profiles.external_ids, as_of, &config);
        if names.iter().any(|n| PREDICTION_NAMES.contains(&n.as_str())) {
            // The metric is named for its 90-day horizon.
            metrics.clv =
                clv_summaries(store, &events, &config, as_of)?.map(|(model, summaries)| {
                    let horizon = model.unit.of_ms(90 * 86_400_000);
                    Predictions::compute(&model, &summaries, horizon)
                });
        }
        Ok(Loaded {
            external_ids: profiles.external_ids.clone(),
            profiles,
            metrics,
            events,
            segments,
            as_of,
        })
    }

    /// The dataset the evaluator works on.
    pub fn dataset(&self) -> Dataset<'_> {
        Dataset {
            profiles: &self.profiles,
            metrics: Some(&self.metrics),
            events: Some(&self.events),
            as_of: self.as_of,
            segments: Some(&self.segments),
        }
    }

    /// Members of `condition`.
    pub fn evaluate(&self, condition: &Condition) -> Result<RoaringBitmap> {
        Ok(self.dataset().evaluate(condition)?)
    }
}
