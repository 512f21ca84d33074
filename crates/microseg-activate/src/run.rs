//! A campaign run: the audience, the rules in their order, the messages rendered and
//! queued. The order (docs/campaigns.md):
//!
//! 1. **targeted**: the live members of the target segment as of the run;
//! 2. **excluded**: members of an exclusion segment; **lower_priority**: people an
//!    active campaign of the channel with a strictly higher priority reaches (after its
//!    own exclusions, control groups and consent);
//! 3. **global_control**: the workspace's global control (marketing only);
//! 4. **holdout**: the campaign's own control, never contacted by it;
//! 5. **no_consent**: without the boolean trait `consent_<channel>` set to true;
//!    **suppressed**: their address is on the channel's suppression list;
//! 6. **capped**: a frequency cap of the channel or across channels would be passed,
//!    counting what the outbox holds (marketing only);
//! 7. the rest get a message: **exploration** of them the channel's general message
//!    (marketing only), the others their variant; a message that cannot be rendered for a
//!    person (a variable they lack) is counted in **render_failed**, never sent;
//! 8. **queued**: written to the outbox with an idempotency key of (campaign, person,
//!    send slot); a key already there is not queued again (**already_queued**). A
//!    campaign drawing codes from a pool gives each person queued their code (the one
//!    given before, else the next unused); when none is left, **no_code**.

use std::collections::{BTreeMap, HashSet};

use microseg_core::{ProfileId, Timestamp};
use microseg_store::campaigns::{OutboxMessage, OutboxQuery, StoredCampaign};
use microseg_store::{Store, StoreError, Tables, Workspace};
use serde::Serialize;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::gate::{Gate, KeptOut, Pick};
use crate::{assign, render, Campaign, CampaignError, Checked, Kind, Settings, EXPLORATION};

/// The arm of the people a campaign sent to, in its report.
pub const TREATED: &str = "treated";
/// The arm of its holdout (the report's control).
pub const HOLDOUT: &str = "holdout";

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The campaign or the settings are refused.
    #[error(transparent)]
    Campaign(#[from] CampaignError),
    /// The store failed, or a segment cannot be evaluated.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The campaign is paused or archived.
    #[error("campaign '{0}' is {1}: resume it first")]
    NotActive(String, String),
    /// A channel did not take a message.
    #[error(transparent)]
    Send(#[from] crate::channels::SendError),
}

/// What a run did, in profiles (the pinned fields of `campaign run --json`, then more).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct RunCounts {
    /// Live members of the target segment.
    pub targeted: u64,
    /// In the workspace's global control.
    pub global_control: u64,
    /// In the campaign's holdout.
    pub holdout: u64,
    /// Given the general message instead of a variant (counted in `queued` too).
    pub exploration: u64,
    /// In an exclusion segment.
    pub excluded: u64,
    /// Without consent for the channel.
    pub no_consent: u64,
    /// Over a frequency cap.
    pub capped: u64,
    /// Messages queued (a dry run: that would be queued).
    pub queued: u64,
    /// Messages a template could not be rendered for (a variable the person lacks).
    pub render_failed: u64,
    /// Messages whose idempotency key was already in the outbox (an earlier run).
    pub already_queued: u64,
    /// Messages held until the person's quiet hours end (counted in `queued` too).
    pub quiet_hours_held: u64,
    /// On the channel's suppression list.
    pub suppressed: u64,
    /// Left to a higher-priority campaign of the channel that reaches them.
    pub lower_priority: u64,
    /// Not queued: the campaign's pool of codes has none left for them.
    pub no_code: u64,
}

/// One message as `--out` writes it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RunMessage {
    /// The person's external id.
    pub profile: String,
    /// The campaign.
    pub campaign: String,
    /// The variant, or `exploration`.
    pub variant: String,
    /// The channel.
    pub channel: String,
    /// The rendered fields.
    pub content: BTreeMap<String, String>,
    /// The offer as the person gets it (`kind`, `value`, `code`, `valid_until`).
    pub offer: Option<Json>,
    /// Campaign, person and send slot.
    pub idempotency_key: String,
    /// When it may go: the run's instant, or the end of the person's quiet hours.
    pub due_at: String,
    #[serde(skip)]
    profile_id: ProfileId,
    #[serde(skip)]
    due_ms: i64,
    /// A pool code to give the person when the message is queued.
    #[serde(skip)]
    new_code: Option<String>,
}

/// A run's counts and messages.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    /// The counts.
    pub counts: RunCounts,
    /// The messages queued (or, dry, that would be).
    pub messages: Vec<RunMessage>,
    /// The reasons of render failures, by field and reason (no personal values).
    pub render_errors: BTreeMap<String, u64>,
    /// With `choose`: the variants' records and shares this run used.
    pub choice: Option<Choice>,
}

/// The variants' shares a run chose from the results (Thompson sampling).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Choice {
    /// The variants, in the file's order.
    pub variants: Vec<String>,
    /// People whose window has closed, per variant.
    pub n: Vec<u64>,
    /// Their conversions, per variant.
    pub conversions: Vec<u64>,
    /// Each variant's probability of being the best.
    pub p_best: Vec<f64>,
    /// The shares used.
    pub shares: Vec<f64>,
    /// Whether learning stopped (one variant gets everyone).
    pub stopped: bool,
}

/// Runs the stored campaign `stored` as of `as_of`; `dry_run` queues nothing.
///
/// # Errors
///
/// [`RunError`]: a refused campaign or setting, a store failure, a paused campaign.
pub fn run(
    ws: &Workspace,
    store: &mut Store,
    stored: &StoredCampaign,
    as_of: Timestamp,
    dry_run: bool,
) -> Result<RunOutcome, RunError> {
    run_in_slot(
        ws,
        store,
        stored,
        as_of,
        dry_run,
        &format!("run-v{}", stored.version),
    )
}

/// [`run`] with the send slot of the idempotency keys given: a schedule's `every` gives
/// each period its own (`every-vN-K`), so each period sends once.
///
/// # Errors
///
/// As [`run`].
pub fn run_in_slot(
    ws: &Workspace,
    store: &mut Store,
    stored: &StoredCampaign,
    as_of: Timestamp,
    dry_run: bool,
    slot: &str,
) -> Result<RunOutcome, RunError> {
    run_inner(ws, store, stored, as_of, dry_run, slot, None)
}

/// Fires a trigger campaign (`{"on_enter": SEGMENT}`) in batch for the people who entered
/// its segment after `since` and are in it at `as_of` (members at `as_of` who were not at
/// `since`), with the idempotency keys the server gives a trigger on `as_of`'s day: what
/// `serve` would have fired over that time (after downtime, or to replay history).
///
/// # Errors
///
/// As [`run`]; a campaign without an `on_enter` trigger.
pub fn fire_entries(
    ws: &Workspace,
    store: &mut Store,
    stored: &StoredCampaign,
    since: Timestamp,
    as_of: Timestamp,
    dry_run: bool,
) -> Result<RunOutcome, RunError> {
    let day = as_of.to_string();
    let slot = format!("trigger-v{}-{}", stored.version, &day[..day.len().min(10)]);
    run_inner(ws, store, stored, as_of, dry_run, &slot, Some(since))
}

#[allow(clippy::too_many_arguments)]
fn run_inner(
    ws: &Workspace,
    store: &mut Store,
    stored: &StoredCampaign,
    as_of: Timestamp,
    dry_run: bool,
    slot: &str,
    entered_since: Option<Timestamp>,
) -> Result<RunOutcome, RunError> {
    if stored.status != "active" {
        return Err(RunError::NotActive(
            stored.name.clone(),
            stored.status.clone(),
        ));
    }
    let settings = Settings::from_config(&ws.config.activation)?;
    let saved = store.segment_conditions()?;
    let checked = Campaign::from_json(&stored.body)?.check(&saved)?;
    let marketing = checked.campaign.kind == Kind::Marketing;
    let channel = checked.campaign.channel;
    if marketing
        && settings.exploration > 0.0
        && !settings.exploration_message.contains_key(&channel)
    {
        return Err(CampaignError {
            field: format!("activation.exploration_message.{}", channel.name()),
            reason: "missing: the exploration share needs the channel's general message".into(),
        }
        .into());
    }
    let mut tables = Tables::open(ws, store, as_of)?;
    tables.need_all_traits()?;
    // A segment a warehouse ran (`microseg warehouse run`) is its member list from there,
    // as long as the segment has not changed since; people erased or merged away after
    // that run are no longer anyone's members.
    let from_warehouse = if saved.contains_key(&checked.campaign.segment) {
        store.warehouse_members(&checked.campaign.segment)?
    } else {
        None
    };
    let mut target = match from_warehouse {
        Some(w) => w.members & tables.everyone(),
        None => tables.evaluate(&checked.target)?,
    };
    if let Some(since) = entered_since {
        // Who entered the trigger segment between `since` and `as_of`.
        let on_enter = checked
            .campaign
            .trigger
            .as_ref()
            .and_then(|t| t.get("on_enter"))
            .and_then(Json::as_str)
            .and_then(|name| saved.get(name))
            .ok_or_else(|| CampaignError {
                field: "trigger".into(),
                reason: format!(
                    "campaign '{}' has no {{\"on_enter\": SEGMENT}} trigger to fire",
                    stored.name
                ),
            })?;
        let now_in = tables.evaluate(on_enter)?;
        let before = Tables::open(ws, store, since)?.evaluate(on_enter)?;
        target &= &now_in - &before;
    }
    let mut excluded = roaring::RoaringBitmap::new();
    for e in &checked.exclude {
        excluded |= tables.evaluate(e)?;
    }
    let suppressed = store.suppressed(channel.name())?;
    // Arbitration: people a higher-priority active campaign of the channel reaches are
    // left to it (its audience after its exclusions and its own rules).
    let mut outranked = roaring::RoaringBitmap::new();
    for other in store.campaigns()? {
        if other.name == stored.name || other.status != "active" {
            continue;
        }
        let Ok(o) = Campaign::from_json(&other.body).and_then(|c| c.check(&saved)) else {
            continue;
        };
        if o.campaign.channel != channel || o.campaign.priority <= checked.campaign.priority {
            continue;
        }
        let mut theirs = tables.evaluate(&o.target)?;
        for e in &o.exclude {
            theirs -= tables.evaluate(e)?;
        }
        let gate = Gate::new(&o.campaign, &settings, tables.profiles(), &suppressed);
        outranked.extend(
            theirs
                .iter()
                .filter(|&p| gate.keep_out(p, tables.external_id(p)).is_none()),
        );
    }
    tables.metrics()?;
    // Results choose the variants' shares (Thompson sampling in batches).
    let choice = match &checked.campaign.choose {
        Some(ch) => {
            let variants: Vec<String> = checked
                .campaign
                .variants
                .iter()
                .map(|v| v.name.clone())
                .collect();
            let window =
                microseg_core::time::parse_duration(&ch.window).map_err(|e| CampaignError {
                    field: "choose.window".into(),
                    reason: e.to_string(),
                })?;
            let records = crate::report::variant_records(
                ws,
                store,
                &mut tables,
                &stored.name,
                &variants,
                window,
                as_of,
            )?;
            // The draws are seeded by the campaign and its record, so a run is repeatable.
            let seed = assign::bucket(
                &format!("microseg/choose/{}", stored.name),
                &format!("{records:?}"),
            );
            let s = crate::choose::shares(
                &records,
                ch.min_per_variant,
                ch.stop_at,
                (seed * 2f64.powi(53)) as u64,
            );
            Some(Choice {
                variants,
                n: records.iter().map(|r| r.n).collect(),
                conversions: records.iter().map(|r| r.conversions).collect(),
                p_best: s.p_best,
                shares: s.weights,
                stopped: s.stopped,
            })
        }
        None => None,
    };
    let pool = match &checked.campaign.offer {
        Some(o) if o.pooled() => Some(store.offer_codes(&stored.name)?),
        None | Some(_) => None,
    };
    let planned = Plan {
        tables: &tables,
        checked: &checked,
        settings: &settings,
        suppressed: &suppressed,
        pool: pool.as_ref(),
        shares: choice.as_ref().map(|c| c.shares.clone()),
        slot: slot.to_string(),
        as_of,
    }
    .messages(&target, &excluded, &outranked)?;
    let (mut counts, candidates, render_errors, held) = planned;
    let mut admit = |q: &OutboxQuery<'_>, m: &RunMessage| -> Result<bool, StoreError> {
        if q.has_key(&m.idempotency_key)? {
            counts.already_queued += 1;
            return Ok(false);
        }
        if marketing && capped(q, &settings, channel.name(), m.profile_id, as_of)? {
            counts.capped += 1;
            return Ok(false);
        }
        if let (Some(code), false) = (&m.new_code, dry_run) {
            // Taken meanwhile by another run of the campaign: not queued this time.
            if !q.give_code(&m.campaign, code, m.profile_id)? {
                counts.no_code += 1;
                return Ok(false);
            }
        }
        counts.exploration += u64::from(m.variant == EXPLORATION);
        counts.quiet_hours_held += u64::from(m.due_ms > as_of.0);
        Ok(true)
    };
    let mut admitted = vec![false; candidates.len()];
    if dry_run {
        let q = store.outbox();
        for (m, ok) in candidates.iter().zip(&mut admitted) {
            *ok = admit(&q, m)?;
        }
    } else {
        let rows: Vec<OutboxMessage> = candidates
            .iter()
            .map(|m| outbox_message(m, stored.version))
            .collect();
        store.queue_messages(&rows, |q, i| {
            admitted[i] = admit(q, &candidates[i])?;
            Ok(admitted[i])
        })?;
    }
    let messages: Vec<RunMessage> = candidates
        .into_iter()
        .zip(admitted)
        .filter_map(|(m, ok)| ok.then_some(m))
        .collect();
    counts.queued = messages.len() as u64;
    if !dry_run {
        // The report's arms: who got a message now, and the holdout it could have reached
        // (each keeps their first assignment).
        let members: Vec<(ProfileId, &str, i64)> = messages
            .iter()
            .map(|m| (m.profile_id, TREATED, as_of.0))
            .chain(held.iter().map(|&p| (p, HOLDOUT, as_of.0)))
            .collect();
        store.record_campaign_members(&stored.name, &members)?;
    }
    Ok(RunOutcome {
        counts,
        messages,
        render_errors,
        choice,
    })
}

/// The counts, the messages, the render failures' reasons, and the holdout members the
/// channel could reach (the report's control arm).
type Planned = (
    RunCounts,
    Vec<RunMessage>,
    BTreeMap<String, u64>,
    Vec<ProfileId>,
);

/// Steps 1 to 5 and 7 of a run (all but the caps, which need the outbox at queueing time).
struct Plan<'a, 't> {
    tables: &'a Tables<'t>,
    checked: &'a Checked,
    settings: &'a Settings,
    suppressed: &'a HashSet<String>,
    /// The campaign's pool of codes, when it draws from one.
    pool: Option<&'a microseg_store::campaigns::OfferCodes>,
    /// The variants' shares chosen from the results, instead of the file's weights.
    shares: Option<Vec<f64>>,
    /// The send slot of the idempotency keys.
    slot: String,
    as_of: Timestamp,
}

impl Plan<'_, '_> {
    /// The counts and the rendered messages of the target's members.
    fn messages(
        &self,
        target: &roaring::RoaringBitmap,
        excluded: &roaring::RoaringBitmap,
        outranked: &roaring::RoaringBitmap,
    ) -> Result<Planned, RunError> {
        let c = &self.checked.campaign;
        let profiles = self.tables.profiles();
        let mut gate = Gate::new(c, self.settings, profiles, self.suppressed);
        if let Some(shares) = &self.shares {
            gate.set_weights(shares.clone());
        }
        let env = render::environment();
        let compile = |m| {
            render::compile(&env, m).map_err(|e| CampaignError {
                field: e.field,
                reason: e.reason,
            })
        };
        let variants = c
            .variants
            .iter()
            .map(|v| compile(&v.message))
            .collect::<Result<Vec<_>, _>>()?;
        let general = match self.settings.exploration_message.get(&c.channel) {
            Some(m) => Some(compile(m)?),
            None => None,
        };
        let mut counts = RunCounts {
            targeted: target.len(),
            ..RunCounts::default()
        };
        let mut messages = Vec::new();
        let mut render_errors: BTreeMap<String, u64> = BTreeMap::new();
        let metrics = self.tables.dataset().metrics;
        let mut free = self.pool.map(|pool| pool.free.iter());
        let mut held = Vec::new();
        for p in target {
            let id = self.tables.external_id(p);
            let count = if excluded.contains(p) {
                Some(&mut counts.excluded)
            } else if outranked.contains(p) {
                Some(&mut counts.lower_priority)
            } else {
                let why = gate.keep_out(p, id);
                if why == Some(KeptOut::Holdout) && gate.unreachable(p, id).is_none() {
                    held.push(p);
                }
                why.map(|why| match why {
                    KeptOut::GlobalControl => &mut counts.global_control,
                    KeptOut::Holdout => &mut counts.holdout,
                    KeptOut::NoConsent => &mut counts.no_consent,
                    KeptOut::Suppressed => &mut counts.suppressed,
                })
            };
            if let Some(n) = count {
                *n += 1;
                continue;
            }
            let (variant, message) = match gate.pick(id) {
                // `pick` gives the general message only when the channel has one.
                Pick::Exploration => (EXPLORATION, general.as_ref().expect("a general message")),
                Pick::Variant(i) => (c.variants[i].name.as_str(), &variants[i]),
            };
            // A pool code: the one the person was given, else the next free one.
            let (code, new_code) = match (self.pool, free.as_mut()) {
                (Some(pool), Some(free)) => match pool.given.get(&p) {
                    Some(code) => (Some(code.as_str()), None),
                    None => match free.next() {
                        Some(code) => (Some(code.as_str()), Some(code.clone())),
                        None => {
                            counts.no_code += 1;
                            continue;
                        }
                    },
                },
                _ => (None, None),
            };
            let offer = offer_for(c, id, self.as_of, code);
            let context = context(profiles, metrics, p, id, &c.name, offer.as_ref());
            let content = match message.render(&context) {
                Ok(content) => content,
                Err(e) => {
                    counts.render_failed += 1;
                    *render_errors.entry(e.to_string()).or_default() += 1;
                    continue;
                }
            };
            let due = gate.due(p, self.as_of);
            messages.push(RunMessage {
                due_at: due.to_string(),
                due_ms: due.0,
                profile: id.to_string(),
                campaign: c.name.clone(),
                variant: variant.to_string(),
                channel: c.channel.name().to_string(),
                content,
                offer,
                idempotency_key: idempotency_key(&c.name, id, &self.slot),
                profile_id: p,
                new_code,
            });
        }
        Ok((counts, messages, render_errors, held))
    }
}

/// What a template sees for person `p`: their traits, then the metrics not named like a
/// trait, `id`, `campaign.name` and `offer`.
pub(crate) fn context(
    profiles: &microseg_engine::ProfileTable,
    metrics: Option<&microseg_engine::Metrics>,
    p: ProfileId,
    id: &str,
    campaign: &str,
    offer: Option<&Json>,
) -> Json {
    let mut context = Map::new();
    for (name, column) in &profiles.columns {
        if let Some(v) = column.get(p) {
            context.insert(name.clone(), v.to_json());
        }
    }
    if let Some(m) = metrics {
        for name in microseg_engine::METRIC_NAMES {
            if let Some(v) = m.value(name, p) {
                context.entry(name.to_string()).or_insert(v.to_json());
            }
        }
    }
    context.insert("id".into(), json!(id));
    context.insert("campaign".into(), json!({ "name": campaign }));
    context.insert("offer".into(), offer.cloned().unwrap_or(Json::Null));
    Json::Object(context)
}

/// Whether one more message to `profile` on `channel` would pass a cap, counting what the
/// outbox holds from the cap's period before `as_of`.
pub(crate) fn capped(
    q: &OutboxQuery<'_>,
    settings: &Settings,
    channel: &str,
    profile: ProfileId,
    as_of: Timestamp,
) -> Result<bool, StoreError> {
    let over = |cap: crate::Cap, on: Option<&str>| -> Result<bool, StoreError> {
        Ok(q.count_since(profile, on, as_of.0 - cap.period_ms)? >= cap.count)
    };
    if let Some(cap) = crate::Channel::from_name(channel).and_then(|c| settings.caps.get(&c)) {
        if over(*cap, Some(channel))? {
            return Ok(true);
        }
    }
    match settings.cap_all {
        Some(cap) => over(cap, None),
        None => Ok(false),
    }
}

/// The offer as one person gets it; `pooled` is their code of the campaign's pool.
pub(crate) fn offer_for(
    c: &Campaign,
    id: &str,
    as_of: Timestamp,
    pooled: Option<&str>,
) -> Option<Json> {
    let offer = c.offer.as_ref()?;
    let valid_until = offer
        .valid_for
        .as_deref()
        .and_then(|d| microseg_core::time::parse_duration(d).ok())
        .map(|ms| Timestamp(as_of.0 + ms).to_string());
    Some(json!({
        "kind": offer.kind,
        "value": offer.value,
        "code": match offer.code.as_deref() {
            Some("pool") => pooled.map(str::to_string),
            Some(_) => Some(assign::offer_code(&c.name, id)),
            None => None,
        },
        "valid_until": valid_until,
    }))
}

/// The idempotency key of a message: campaign, person and send slot, hashed (no personal
/// data in it).
pub fn idempotency_key(campaign: &str, id: &str, slot: &str) -> String {
    let digest = Sha256::new()
        .chain_update(campaign.as_bytes())
        .chain_update([0x1f])
        .chain_update(id.as_bytes())
        .chain_update([0x1f])
        .chain_update(slot.as_bytes())
        .finalize();
    format!("{campaign}.{}", microseg_core::hex(&digest[..16]))
}

fn outbox_message(m: &RunMessage, version: i64) -> OutboxMessage {
    OutboxMessage {
        idempotency_key: m.idempotency_key.clone(),
        campaign: m.campaign.clone(),
        version,
        profile_id: m.profile_id,
        channel: m.channel.clone(),
        variant: m.variant.clone(),
        content: serde_json::to_string(&m.content).unwrap_or_default(),
        offer: m.offer.as_ref().map(Json::to_string),
        due_at: m.due_ms,
    }
}
