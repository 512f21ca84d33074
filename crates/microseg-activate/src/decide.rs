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
    let p = (0..tables.len() as u32)
        .find(|&p| tables.external_id(p) == id && !tables.profiles().retired.contains(p))
        .ok_or_else(|| microseg_store::StoreError::UnknownProfile(id.to_string()))?;
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
        let c = &checked.campaign;
        let lost = |reason: &str| Candidate {
            campaign: c.name.clone(),
            outcome: "lost",
            reason: Some(reason.to_string()),
        };
        if stored.status != "active" {
            candidates.push(lost(&stored.status));
            continue;
        }
        let marketing = c.kind == Kind::Marketing;
        if !tables.evaluate(&checked.target)?.contains(p) {
            candidates.push(lost("not in segment"));
            continue;
        }
        let mut excluded = false;
        for e in &checked.exclude {
            excluded |= tables.evaluate(e)?.contains(p);
        }
        if excluded {
            candidates.push(lost("excluded"));
            continue;
        }
        if marketing && assign::in_global_control(id, settings.global_control) {
            candidates.push(lost("global control"));
            continue;
        }
        if assign::in_holdout(&c.name, id, c.holdout) {
            candidates.push(lost("holdout"));
            continue;
        }
        let consent = tables
            .profiles()
            .columns
            .get(&format!("consent_{}", c.channel.name()))
            .and_then(|col| col.get(p));
        if consent != Some(Value::Bool(true)) {
            candidates.push(lost("no consent"));
            continue;
        }
        if marketing && capped(&store.outbox(), &settings, c.channel.name(), p, as_of)? {
            candidates.push(lost("capped"));
            continue;
        }
        let explore = marketing
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
        match render::render(&env, message, &ctx) {
            Ok(content) => {
                candidates.push(Candidate {
                    campaign: c.name.clone(),
                    outcome: "won",
                    reason: None,
                });
                eligible.push((
                    c.priority,
                    candidates.len() - 1,
                    Winner {
                        campaign: c.name.clone(),
                        variant,
                        channel: c.channel.name().to_string(),
                        content,
                        offer,
                    },
                ));
            }
            Err(e) => candidates.push(lost(&format!("not rendered: {e}"))),
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
