//! What one person gets now on one channel or placement, and why every other campaign
//! lost: the same rules as a run, then arbitration by priority.

use microseg_core::{Timestamp, Value};
use microseg_store::campaigns::StoredCampaign;
use microseg_store::{Store, Tables, Workspace};
use serde::Serialize;
use serde_json::Value as Json;

use crate::run::{capped, context, offer_for, RunError};
use crate::{assign, render, Campaign, Channel, Kind, Settings, EXPLORATION};

/// The winner of a decision.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Winner {
    /// The campaign.
    pub campaign: String,
    /// Its variant (`exploration` for the general message).
    pub variant: String,
    /// The channel.
    pub channel: String,
    /// The rendered fields.
    pub content: std::collections::BTreeMap<String, String>,
    /// The offer as the person gets it.
    pub offer: Option<Json>,
}

/// One campaign's part in a decision.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Candidate {
    /// The campaign.
    pub campaign: String,
    /// `won` or `lost`.
    pub outcome: &'static str,
    /// Why it lost (`null` for the winner): `not in segment`, `excluded`, `global
    /// control`, `holdout`, `no consent`, `capped`, `not rendered: ...`, `lower
    /// priority`, `paused`, `archived`.
    pub reason: Option<String>,
}

/// A decision, as `decide --json` and `GET /v1/decide` answer it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Decision {
    /// The person's external id.
    pub profile: String,
    /// What they get, or `null`.
    pub winner: Option<Winner>,
    /// Every campaign of the channel (or placement), with its outcome.
    pub candidates: Vec<Candidate>,
}

/// What to decide for: a channel, or a website placement (channel `web`, the campaigns
/// whose messages name that placement).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Slot {
    /// A channel.
    Channel(Channel),
    /// A placement on the website.
    Placement(String),
}

/// One campaign for person `p`: what they would get (`Ok`), or why not (`Err(reason)`).
#[allow(clippy::too_many_arguments)]
fn assess(
    tables: &mut Tables<'_>,
    store: &Store,
    settings: &Settings,
    env: &minijinja::Environment<'_>,
    stored: &StoredCampaign,
    checked: &crate::Checked,
    p: u32,
    id: &str,
    as_of: Timestamp,
) -> Result<Result<Winner, String>, RunError> {
    let c = &checked.campaign;
    let lost = |reason: &str| Ok(Err(reason.to_string()));
    if stored.status != "active" {
        return lost(&stored.status);
    }
    let marketing = c.kind == Kind::Marketing;
    if !tables.evaluate(&checked.target)?.contains(p) {
        return lost("not in segment");
    }
    for e in &checked.exclude {
        if tables.evaluate(e)?.contains(p) {
            return lost("excluded");
        }
    }
    if marketing && assign::in_global_control(id, settings.global_control) {
        return lost("global control");
    }
    if assign::in_holdout(&c.name, id, c.holdout) {
        return lost("holdout");
    }
    let consent = tables
        .profiles()
        .columns
        .get(&format!("consent_{}", c.channel.name()))
        .and_then(|col| col.get(p));
    if consent != Some(Value::Bool(true)) {
        return lost("no consent");
    }
    let value = crate::suppress::address_trait(c.channel)
        .and_then(|t| tables.profiles().columns.get(t))
        .and_then(|col| col.get(p));
    if let Some(hash) = crate::suppress::person_hash(c.channel, value.as_ref(), id) {
        if store.suppressed(c.channel.name())?.contains(&hash) {
            return lost("suppressed");
        }
    }
    if marketing && capped(&store.outbox(), settings, c.channel.name(), p, as_of)? {
        return lost("capped");
    }
    if let (Some(q), true) = (&settings.quiet_hours, c.channel != Channel::Web) {
        let zone = match tables
            .profiles()
            .columns
            .get("timezone")
            .and_then(|col| col.get(p))
        {
            Some(Value::Str(name)) => Some(name),
            _ => None,
        };
        if q.release(as_of, zone.as_deref()) > as_of {
            return lost("quiet hours");
        }
    }
    match message_for(tables, settings, env, c, p, id, as_of) {
        Ok(winner) => Ok(Ok(winner)),
        Err(e) => lost(&format!("not rendered: {e}")),
    }
}

/// The message person `p` is assigned by `c` (exploration or their variant), rendered.
fn message_for(
    tables: &Tables<'_>,
    settings: &Settings,
    env: &minijinja::Environment<'_>,
    c: &Campaign,
    p: u32,
    id: &str,
    as_of: Timestamp,
) -> Result<Winner, render::RenderError> {
    let explore = c.kind == Kind::Marketing
        && settings.exploration_message.contains_key(&c.channel)
        && assign::in_exploration(&c.name, id, settings.exploration);
    let (variant, message) = if explore {
        (
            EXPLORATION.to_string(),
            &settings.exploration_message[&c.channel],
        )
    } else {
        let weights: Vec<f64> = c.variants.iter().map(|v| v.weight).collect();
        let v = &c.variants[assign::variant(&c.name, id, &weights)];
        (v.name.clone(), &v.message)
    };
    let offer = offer_for(c, id, as_of);
    let ctx = context(
        tables.profiles(),
        tables.dataset().metrics,
        p,
        id,
        &c.name,
        offer.as_ref(),
    );
    Ok(Winner {
        campaign: c.name.clone(),
        variant,
        channel: c.channel.name().to_string(),
        content: render::render(env, message, &ctx)?,
        offer,
    })
}

/// A campaign's message as one person would get it, and whether they would now.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preview {
    /// The person's external id.
    pub profile: String,
    /// The message (variant, content, offer).
    pub message: Winner,
    /// `null` when they would get it now, else why not.
    pub blocked_by: Option<String>,
}

/// Renders campaign `name` for the person `id` as they would get it (their variant and
/// offer), whatever the rules say now (`blocked_by` says it); counts nowhere.
///
/// # Errors
///
/// [`RunError`]: an unknown campaign or person, a template the person's data cannot
/// fill (its reason), a store failure.
pub fn preview(
    ws: &Workspace,
    store: &Store,
    name: &str,
    id: &str,
    as_of: Timestamp,
) -> Result<Preview, RunError> {
    let settings = Settings::from_config(&ws.config.activation)?;
    let stored = store.campaign(name)?;
    let checked = Campaign::from_json(&stored.body)?.check(&store.segment_conditions()?)?;
    let mut tables = Tables::open(ws, store, as_of)?;
    let p = find(&tables, id)?;
    tables.need_all_traits()?;
    tables.metrics()?;
    let env = render::environment();
    let message =
        message_for(&tables, &settings, &env, &checked.campaign, p, id, as_of).map_err(|e| {
            crate::CampaignError {
                field: e.field,
                reason: format!("not rendered for {id}: {}", e.reason),
            }
        })?;
    let blocked_by = assess(
        &mut tables,
        store,
        &settings,
        &env,
        &stored,
        &checked,
        p,
        id,
        as_of,
    )?
    .err();
    Ok(Preview {
        profile: id.to_string(),
        message,
        blocked_by,
    })
}

/// The dense id of the live profile with external id `id`.
fn find(tables: &Tables<'_>, id: &str) -> Result<u32, RunError> {
    (0..tables.len() as u32)
        .find(|&p| tables.external_id(p) == id && !tables.profiles().retired.contains(p))
        .ok_or_else(|| microseg_store::StoreError::UnknownProfile(id.to_string()).into())
}

/// Decides for the person with external id `id` as of `as_of`.
///
/// # Errors
///
/// [`RunError`]: an unknown person (`StoreError::UnknownProfile`), a store failure,
/// refused settings.
pub fn decide(
    ws: &Workspace,
    store: &Store,
    id: &str,
    slot: &Slot,
    as_of: Timestamp,
) -> Result<Decision, RunError> {
    let settings = Settings::from_config(&ws.config.activation)?;
    let saved = store.segment_conditions()?;
    let mut tables = Tables::open(ws, store, as_of)?;
    let p = find(&tables, id)?;
    tables.need_all_traits()?;
    tables.metrics()?;
    let campaigns: Vec<(StoredCampaign, crate::Checked)> = store
        .campaigns()?
        .into_iter()
        .filter_map(|s| {
            let checked = Campaign::from_json(&s.body).ok()?.check(&saved).ok()?;
            let fits = match slot {
                Slot::Channel(c) => checked.campaign.channel == *c,
                Slot::Placement(name) => {
                    checked.campaign.channel == Channel::Web
                        && checked
                            .campaign
                            .variants
                            .iter()
                            .any(|v| v.message.get("placement") == Some(name))
                }
            };
            fits.then_some((s, checked))
        })
        .collect();
    let env = render::environment();
    let mut candidates = Vec::new();
    // (priority, index into `candidates`, winner)
    let mut eligible: Vec<(i64, usize, Winner)> = Vec::new();
    for (stored, checked) in &campaigns {
        match assess(
            &mut tables,
            store,
            &settings,
            &env,
            stored,
            checked,
            p,
            id,
            as_of,
        )? {
            Ok(winner) => {
                candidates.push(Candidate {
                    campaign: checked.campaign.name.clone(),
                    outcome: "won",
                    reason: None,
                });
                eligible.push((checked.campaign.priority, candidates.len() - 1, winner));
            }
            Err(reason) => candidates.push(Candidate {
                campaign: checked.campaign.name.clone(),
                outcome: "lost",
                reason: Some(reason),
            }),
        }
    }
    // The highest priority wins; a tie goes to the campaign whose name sorts first.
    eligible.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    let mut winner = None;
    for (rank, (_, at, w)) in eligible.into_iter().enumerate() {
        if rank == 0 {
            winner = Some(w);
        } else {
            candidates[at].outcome = "lost";
            candidates[at].reason = Some("lower priority".into());
        }
    }
    Ok(Decision {
        profile: id.to_string(),
        winner,
        candidates,
    })
}
