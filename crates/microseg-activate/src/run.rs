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
//!    send slot); a key already there is not queued again (**already_queued**).

use std::collections::BTreeMap;

use microseg_core::{ProfileId, Timestamp, Value};
use microseg_store::campaigns::{OutboxMessage, OutboxQuery, StoredCampaign};
use microseg_store::{Store, StoreError, Tables, Workspace};
use serde::Serialize;
use serde_json::{json, Map, Value as Json};
use sha2::{Digest, Sha256};

use crate::{assign, render, Campaign, CampaignError, Checked, Kind, Settings, EXPLORATION};

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
    let target = tables.evaluate(&checked.target)?;
    let mut excluded = roaring::RoaringBitmap::new();
    for e in &checked.exclude {
        excluded |= tables.evaluate(e)?;
    }
    // Arbitration: people a higher-priority active campaign of the channel reaches are
    // left to it (its audience after its exclusions, control groups and consent).
    let mut outranked = roaring::RoaringBitmap::new();
    for other in store.campaigns()? {
        if other.name == stored.name || other.status != "active" {
            continue;
        }
        let Ok(o) = Campaign::from_json(&other.body).and_then(|c| c.check(&saved)) else {
            continue;
        };
        let (oc, c) = (&o.campaign, &checked.campaign);
        if oc.channel != c.channel || oc.priority <= c.priority {
            continue;
        }
        let mut theirs = tables.evaluate(&o.target)?;
        for e in &o.exclude {
            theirs -= tables.evaluate(e)?;
        }
        let consent = tables
            .profiles()
            .columns
            .get(&format!("consent_{}", oc.channel.name()));
        for p in theirs {
            let id = tables.external_id(p);
            let kept_out = (oc.kind == Kind::Marketing
                && assign::in_global_control(id, settings.global_control))
                || assign::in_holdout(&oc.name, id, oc.holdout)
                || !consent.is_some_and(|col| col.get(p) == Some(Value::Bool(true)));
            if !kept_out {
                outranked.insert(p);
            }
        }
    }
    tables.metrics()?;
    let suppressed = store.suppressed(checked.campaign.channel.name())?;
    let plan = plan(
        &tables,
        &checked,
        &settings,
        &target,
        &excluded,
        &outranked,
        &suppressed,
        stored,
        as_of,
    );
    let (mut counts, candidates, render_errors) = plan?;
    let store_ref: &Store = store;
    let mut within_run: BTreeMap<ProfileId, u64> = BTreeMap::new();
    let mut admit = |q: &OutboxQuery<'_>, m: &RunMessage| -> Result<bool, StoreError> {
        if q.has_key(&m.idempotency_key)? {
            counts.already_queued += 1;
            return Ok(false);
        }
        if marketing
            && capped(
                q,
                &settings,
                checked.campaign.channel.name(),
                m.profile_id,
                as_of,
            )?
        {
            counts.capped += 1;
            return Ok(false);
        }
        *within_run.entry(m.profile_id).or_default() += 1;
        if m.variant == EXPLORATION {
            counts.exploration += 1;
        }
        Ok(true)
    };
    let messages = if dry_run {
        let q = store_ref.outbox();
        let mut kept = Vec::new();
        for m in candidates {
            if admit(&q, &m)? {
                kept.push(m);
            }
        }
        kept
    } else {
        let mut kept = Vec::new();
        let mut to_queue = Vec::new();
        for m in &candidates {
            to_queue.push(outbox_message(m, stored.version));
        }
        let by_key: BTreeMap<&str, &RunMessage> = candidates
            .iter()
            .map(|m| (m.idempotency_key.as_str(), m))
            .collect();
        let mut accepted = Vec::new();
        store.queue_messages(to_queue, |q, om| {
            let m = by_key[om.idempotency_key.as_str()];
            let ok = admit(q, m)?;
            if ok {
                accepted.push(om.idempotency_key.clone());
            }
            Ok(ok)
        })?;
        for key in accepted {
            kept.push(by_key[key.as_str()].clone());
        }
        kept
    };
    counts.queued = messages.len() as u64;
    Ok(RunOutcome {
        counts,
        messages,
        render_errors,
    })
}

type Planned = (RunCounts, Vec<RunMessage>, BTreeMap<String, u64>);

/// Steps 1 to 5 and 7 (all but the caps, which need the outbox at queueing time).
#[allow(clippy::too_many_arguments)]
fn plan(
    tables: &Tables<'_>,
    checked: &Checked,
    settings: &Settings,
    target: &roaring::RoaringBitmap,
    excluded: &roaring::RoaringBitmap,
    outranked: &roaring::RoaringBitmap,
    suppressed: &std::collections::HashSet<String>,
    stored: &StoredCampaign,
    as_of: Timestamp,
) -> Result<Planned, RunError> {
    let c = &checked.campaign;
    let marketing = c.kind == Kind::Marketing;
    let profiles = tables.profiles();
    let consent = profiles
        .columns
        .get(&format!("consent_{}", c.channel.name()));
    let timezone = profiles.columns.get("timezone");
    let address = crate::suppress::address_trait(c.channel).and_then(|t| profiles.columns.get(t));
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
    let general = match settings.exploration_message.get(&c.channel) {
        Some(m) => Some(compile(m)?),
        None => None,
    };
    let weights: Vec<f64> = c.variants.iter().map(|v| v.weight).collect();
    let mut counts = RunCounts {
        targeted: target.len(),
        ..RunCounts::default()
    };
    let mut messages = Vec::new();
    let mut render_errors: BTreeMap<String, u64> = BTreeMap::new();
    let metrics = tables.dataset().metrics;
    for p in target {
        let id = tables.external_id(p);
        if excluded.contains(p) {
            counts.excluded += 1;
            continue;
        }
        if outranked.contains(p) {
            counts.lower_priority += 1;
            continue;
        }
        if marketing && assign::in_global_control(id, settings.global_control) {
            counts.global_control += 1;
            continue;
        }
        if assign::in_holdout(&c.name, id, c.holdout) {
            counts.holdout += 1;
            continue;
        }
        if !consent.is_some_and(|col| col.get(p) == Some(Value::Bool(true))) {
            counts.no_consent += 1;
            continue;
        }
        if !suppressed.is_empty() {
            let value = address.and_then(|col| col.get(p));
            let hash = crate::suppress::person_hash(c.channel, value.as_ref(), id);
            if hash.is_some_and(|h| suppressed.contains(&h)) {
                counts.suppressed += 1;
                continue;
            }
        }
        let explore = marketing && assign::in_exploration(&c.name, id, settings.exploration);
        let (variant, message) = match (&general, explore) {
            (Some(general), true) => (EXPLORATION.to_string(), general),
            _ => {
                let i = assign::variant(&c.name, id, &weights);
                (c.variants[i].name.clone(), &variants[i])
            }
        };
        let offer = offer_for(c, id, as_of);
        let context = context(profiles, metrics, p, id, &c.name, offer.as_ref());
        let content = match message.render(&context) {
            Ok(content) => content,
            Err(e) => {
                counts.render_failed += 1;
                *render_errors.entry(e.to_string()).or_default() += 1;
                continue;
            }
        };
        let due = match &settings.quiet_hours {
            Some(q) if c.channel != crate::Channel::Web => {
                let zone = timezone.and_then(|col| match col.get(p) {
                    Some(Value::Str(name)) => Some(name),
                    _ => None,
                });
                q.release(as_of, zone.as_deref())
            }
            _ => as_of,
        };
        if due > as_of {
            counts.quiet_hours_held += 1;
        }
        messages.push(RunMessage {
            due_at: due.to_string(),
            due_ms: due.0,
            profile: id.to_string(),
            campaign: c.name.clone(),
            variant,
            channel: c.channel.name().to_string(),
            content,
            offer,
            idempotency_key: idempotency_key(&c.name, id, &format!("run-v{}", stored.version)),
            profile_id: p,
        });
    }
    Ok((counts, messages, render_errors))
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

/// The offer as one person gets it.
pub(crate) fn offer_for(c: &Campaign, id: &str, as_of: Timestamp) -> Option<Json> {
    let offer = c.offer.as_ref()?;
    let valid_until = offer
        .valid_for
        .as_deref()
        .and_then(|d| microseg_core::time::parse_duration(d).ok())
        .map(|ms| Timestamp(as_of.0 + ms).to_string());
    Some(json!({
        "kind": offer.kind,
        "value": offer.value,
        "code": offer.code.as_ref().map(|_| assign::offer_code(&c.name, id)),
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
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("{campaign}.{hex}")
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
