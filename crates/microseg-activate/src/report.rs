//! What a campaign earned: the people it treated against its holdout, as an experiment.
//!
//! Each person's arm and start time are recorded when a run (or a trigger) sends them the
//! message (`treated`) or holds them out while the channel could have reached them
//! (`holdout`: in the campaign's holdout, with consent, not suppressed), so both arms pass
//! the same rules. Their outcomes are the orders (the workspace's order events) within the
//! attribution window from their start: `conversion` (ordered at least once, 0/1) and
//! `revenue` (the orders' revenue). The statistics are the experiment report's (Newcombe
//! for the conversion rate, Welch for revenue per person).
//!
//! Money: `cost` is the messages handed over times `cost_per_message`, plus for a discount
//! offer the discount on the treated people's orders in the window (revenue × value, the
//! recorded revenue taken as the amount before the discount); `incremental_revenue` is
//! (treated − holdout revenue per person) × treated people; `roi` is (incremental revenue
//! − cost) / cost.

use microseg_core::Timestamp;
use microseg_engine::models::experiment::{Experiment, Member};
use microseg_store::{Store, Tables, Workspace};
use serde::Serialize;

use crate::campaign::OfferKind;
use crate::run::{RunError, HOLDOUT, TREATED};
use crate::Campaign;

/// A campaign's results besides the arms' statistics.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Money {
    /// Messages handed over to their channel.
    pub sent: u64,
    /// Messages the channels reported delivered (`message_delivered` events); `null` when
    /// no channel ever reported a delivery.
    pub delivered: Option<u64>,
    /// Messages and discounts.
    pub cost: f64,
    /// Revenue the campaign added over its holdout.
    pub incremental_revenue: Option<f64>,
    /// (incremental revenue − cost) / cost; `null` without a cost or a holdout.
    pub roi: Option<f64>,
    /// Conversions the campaign added over its holdout.
    pub incremental_conversions: Option<f64>,
    /// Cost per added conversion; `null` when it added none.
    pub cost_per_incremental_conversion: Option<f64>,
    /// The attribution window, in days.
    pub window_days: f64,
}

/// The campaign as an experiment (arms `treated`, `holdout`; outcomes `conversion`,
/// `revenue`), and its money.
#[derive(Debug, Clone)]
pub struct CampaignResults {
    /// The arms and outcomes.
    pub experiment: Experiment,
    /// Sent, cost, incremental revenue, ROI.
    pub money: Money,
    /// Each member's predicted 12-month value (`clv_12m`, `NaN` without a fitted CLV
    /// model), in the order of the experiment's members.
    pub clv_12m: Vec<f64>,
}

/// What a conversion cost and what a customer is worth, among some of the people.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Acquisition {
    /// Cost per conversion the campaign added (its cost shared by treated people);
    /// `null` when it added none.
    pub cac: Option<f64>,
    /// Mean predicted 12-month value of the treated (`clv_12m`); `null` without a fitted
    /// CLV model (`microseg clv fit`).
    pub ltv_12m: Option<f64>,
    /// `ltv_12m` / `cac`: above 1, an added customer is worth more than they cost.
    pub ltv_to_cac: Option<f64>,
}

impl CampaignResults {
    /// CAC against predicted LTV among `group` (all members: `None`).
    pub fn acquisition(&self, group: Option<&roaring::RoaringBitmap>) -> Acquisition {
        let inside = |p: u32| group.is_none_or(|g| g.contains(p));
        let (mut n, mut conv, mut ltv_sum, mut ltv_n) = ([0.0f64; 2], [0.0f64; 2], 0.0, 0.0);
        for (m, clv) in self.experiment.members.iter().zip(&self.clv_12m) {
            if !inside(m.profile) {
                continue;
            }
            n[m.arm] += 1.0;
            conv[m.arm] += m.outcomes[0];
            if m.arm == 0 && clv.is_finite() {
                ltv_sum += clv;
                ltv_n += 1.0;
            }
        }
        let treated_all = self
            .experiment
            .members
            .iter()
            .filter(|m| m.arm == 0)
            .count() as f64;
        let cost = if treated_all > 0.0 {
            self.money.cost * n[0] / treated_all
        } else {
            0.0
        };
        let added = (n[0] > 0.0 && n[1] > 0.0).then(|| (conv[0] / n[0] - conv[1] / n[1]) * n[0]);
        let cac = added.filter(|a| *a > 0.0).map(|a| cost / a);
        let ltv_12m = (ltv_n > 0.0).then(|| ltv_sum / ltv_n);
        let ltv_to_cac = match (ltv_12m, cac) {
            (Some(l), Some(c)) if c > 0.0 => Some(l / c),
            _ => None,
        };
        Acquisition {
            cac,
            ltv_12m,
            ltv_to_cac,
        }
    }
}

/// The results of campaign `name` as of `as_of`, orders counted for `window_ms` after
/// each person's start (and not after `as_of`).
///
/// # Errors
///
/// An unknown campaign, a store failure.
pub fn results(
    ws: &Workspace,
    store: &Store,
    name: &str,
    window_ms: i64,
    as_of: Timestamp,
) -> Result<CampaignResults, RunError> {
    let stored = store.campaign(name)?;
    let campaign = Campaign::from_json(&stored.body)?;
    let members = store.campaign_members(name)?;
    let mut tables = Tables::open(ws, store, as_of)?;
    // Predicted values with the stored CLV model (none without one).
    tables.need(&[], &["clv_12m"])?;
    let clv: Vec<f64> = {
        let metrics = tables.dataset().metrics;
        members
            .iter()
            .map(|(p, _, _)| {
                metrics
                    .and_then(|m| m.value("clv_12m", *p))
                    .and_then(|v| v.as_f64())
                    .unwrap_or(f64::NAN)
            })
            .collect()
    };
    let events = tables.events(&[])?;
    let is_order = ws.config.metrics_config().order_codes(&events.names);
    let mut experiment = Experiment {
        name: name.to_string(),
        control: HOLDOUT.to_string(),
        arms: vec![TREATED.to_string(), HOLDOUT.to_string()],
        outcomes: vec!["conversion".to_string(), "revenue".to_string()],
        members: Vec::with_capacity(members.len()),
    };
    let discount = campaign
        .offer
        .as_ref()
        .filter(|o| o.kind == OfferKind::Discount)
        .and_then(|o| o.value)
        .unwrap_or(0.0);
    let mut discounts = 0.0;
    for (p, arm, at) in &members {
        let arm = if arm == TREATED { 0 } else { 1 };
        let end = (at + window_ms).min(as_of.0);
        let (ordered, revenue) = orders_within(events, &is_order, *p, *at, end);
        if arm == 0 {
            discounts += revenue * discount;
        }
        experiment.members.push(Member {
            profile: *p,
            arm,
            outcomes: vec![f64::from(u8::from(ordered)), revenue],
        });
    }
    let sent = store.campaign_sent(name)?;
    let cost = sent as f64 * campaign.cost_per_message + discounts;
    let arm_stats = |arm: usize| -> (f64, f64, f64) {
        let rows: Vec<&Member> = experiment.members.iter().filter(|m| m.arm == arm).collect();
        let n = rows.len() as f64;
        let conv = rows.iter().map(|m| m.outcomes[0]).sum::<f64>();
        let rev = rows.iter().map(|m| m.outcomes[1]).sum::<f64>();
        (n, conv, rev)
    };
    let (nt, ct, rt) = arm_stats(0);
    let (nh, ch, rh) = arm_stats(1);
    let (incremental_revenue, incremental_conversions) = if nt > 0.0 && nh > 0.0 {
        (
            Some((rt / nt - rh / nh) * nt),
            Some((ct / nt - ch / nh) * nt),
        )
    } else {
        (None, None)
    };
    let roi = incremental_revenue
        .filter(|_| cost > 0.0)
        .map(|r| (r - cost) / cost);
    let cost_per_incremental_conversion = incremental_conversions
        .filter(|c| *c > 0.0)
        .map(|c| cost / c);
    Ok(CampaignResults {
        clv_12m: clv,
        experiment,
        money: Money {
            sent,
            delivered: store.campaign_event_count(name, "message_delivered")?,
            cost,
            incremental_revenue,
            roi,
            incremental_conversions,
            cost_per_incremental_conversion,
            window_days: window_ms as f64 / microseg_core::DAY_MS as f64,
        },
    })
}

/// Each variant's record so far for Thompson sampling: the treated people of `name` with
/// that variant whose `window_ms` has closed by `as_of`, and how many ordered within it.
///
/// # Errors
///
/// A store failure.
pub fn variant_records(
    ws: &Workspace,
    store: &Store,
    tables: &mut Tables<'_>,
    name: &str,
    variants: &[String],
    window_ms: i64,
    as_of: Timestamp,
) -> Result<Vec<crate::choose::Record>, RunError> {
    let treated = store.campaign_variants(name)?;
    let mut records = vec![crate::choose::Record::default(); variants.len()];
    if treated.is_empty() {
        return Ok(records);
    }
    let events = tables.events(&[])?;
    let is_order = ws.config.metrics_config().order_codes(&events.names);
    for (p, variant, at) in treated {
        let Some(v) = variants.iter().position(|x| *x == variant) else {
            continue; // the exploration message, or a variant since removed
        };
        if at + window_ms > as_of.0 {
            continue; // its window is still open
        }
        let (ordered, _) = orders_within(events, &is_order, p, at, at + window_ms);
        records[v].n += 1;
        records[v].conversions += u64::from(ordered);
    }
    Ok(records)
}

/// Whether person `p` ordered between `from` and `to` (inclusive), and the revenue of those
/// orders (`is_order` by event name code).
fn orders_within(
    events: &microseg_engine::EventTable,
    is_order: &[bool],
    p: u32,
    from: i64,
    to: i64,
) -> (bool, f64) {
    if p as usize >= events.profiles() {
        return (false, 0.0);
    }
    let mut ordered = false;
    let mut revenue = 0.0;
    for row in events.events_of(p) {
        let t = events.time[row];
        if t < from
            || t > to
            || !is_order
                .get(events.name[row] as usize)
                .copied()
                .unwrap_or(false)
        {
            continue;
        }
        ordered = true;
        if events.revenue[row].is_finite() {
            revenue += events.revenue[row];
        }
    }
    (ordered, revenue)
}
