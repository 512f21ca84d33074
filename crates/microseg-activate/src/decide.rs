//! What one person gets now on one channel or placement, and why every other campaign
//! lost: the same rules as a run, then arbitration by priority.

use microseg_core::Timestamp;
use microseg_store::campaigns::StoredCampaign;
use microseg_store::{Store, Tables, Workspace};
use serde::Serialize;
use serde_json::Value as Json;

use std::collections::HashSet;

use crate::gate::{Gate, Pick};
use crate::run::{capped, context, offer_for, RunError};
use crate::{render, Campaign, Channel, Kind, Settings, EXPLORATION};

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

/// One person, loaded for deciding: the workspace's tables, the rules and the channel's
/// suppression list.
struct Person<'a, 't> {
    tables: Tables<'t>,
    store: &'a Store,
    settings: &'a Settings,
    suppressed: HashSet<String>,
    env: minijinja::Environment<'static>,
    p: u32,
    id: &'a str,
    as_of: Timestamp,
}

impl Person<'_, '_> {
    /// One campaign: what the person would get (`Ok`), or why not (`Err(reason)`).
    fn assess(
        &mut self,
        stored: &StoredCampaign,
        checked: &crate::Checked,
    ) -> Result<Result<Winner, String>, RunError> {
        let c = &checked.campaign;
        let lost = |reason: &str| Ok(Err(reason.to_string()));
        if stored.status != "active" {
            return lost(&stored.status);
        }
        let p = self.p;
        if !self.tables.evaluate(&checked.target)?.contains(p) {
            return lost("not in segment");
        }
        for e in &checked.exclude {
            if self.tables.evaluate(e)?.contains(p) {
                return lost("excluded");
            }
        }
        let gate = Gate::new(c, self.settings, self.tables.profiles(), &self.suppressed);
        if let Some(why) = gate.keep_out(p, self.id) {
            return lost(why.reason());
        }
        let marketing = c.kind == Kind::Marketing;
        if marketing
            && capped(
                &self.store.outbox(),
                self.settings,
                c.channel.name(),
                p,
                self.as_of,
            )?
        {
            return lost("capped");
        }
        if gate.due(p, self.as_of) > self.as_of {
            return lost("quiet hours");
        }
        match self.message(&gate, c) {
            Ok(winner) => Ok(Ok(winner)),
            Err(e) => lost(&format!("not rendered: {e}")),
        }
    }

    /// The message the person is assigned by `c` (exploration or their variant), rendered.
    fn message(&self, gate: &Gate<'_>, c: &Campaign) -> Result<Winner, render::RenderError> {
        let (variant, message) = match gate.pick(self.id) {
            Pick::Exploration => (EXPLORATION, &self.settings.exploration_message[&c.channel]),
            Pick::Variant(i) => (c.variants[i].name.as_str(), &c.variants[i].message),
        };
        let offer = offer_for(c, self.id, self.as_of);
        let ctx = context(
            self.tables.profiles(),
            self.tables.dataset().metrics,
            self.p,
            self.id,
            &c.name,
            offer.as_ref(),
        );
        Ok(Winner {
            campaign: c.name.clone(),
            variant: variant.to_string(),
            channel: c.channel.name().to_string(),
            content: render::render(&self.env, message, &ctx)?,
            offer,
        })
    }
}

/// Loads person `id` (a live profile) with every trait and the metrics as of `as_of`.
fn person<'a, 't>(
    ws: &Workspace,
    store: &'t Store,
    settings: &'a Settings,
    channel: Channel,
    id: &'a str,
    as_of: Timestamp,
) -> Result<Person<'a, 't>, RunError>
where
    't: 'a,
{
    let mut tables = Tables::open(ws, store, as_of)?;
    let p = tables
        .profiles()
        .find(id)
        .filter(|&p| !tables.profiles().retired.contains(p))
        .ok_or_else(|| microseg_store::StoreError::UnknownProfile(id.to_string()))?;
    tables.need_all_traits()?;
    tables.metrics()?;
    Ok(Person {
        tables,
        store,
        settings,
        suppressed: store.suppressed(channel.name())?,
        env: render::environment(),
        p,
        id,
        as_of,
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
    let c = &checked.campaign;
    let mut person = person(ws, store, &settings, c.channel, id, as_of)?;
    let message = {
        let gate = Gate::new(c, &settings, person.tables.profiles(), &person.suppressed);
        person.message(&gate, c).map_err(|e| crate::CampaignError {
            field: e.field,
            reason: format!("not rendered for {id}: {}", e.reason),
        })?
    };
    let blocked_by = person.assess(&stored, &checked)?.err();
    Ok(Preview {
        profile: id.to_string(),
        message,
        blocked_by,
    })
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
    let channel = match slot {
        Slot::Channel(c) => *c,
        Slot::Placement(_) => Channel::Web,
    };
    let mut person = person(ws, store, &settings, channel, id, as_of)?;
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
    let mut candidates = Vec::new();
    // (priority, index into `candidates`, winner)
    let mut eligible: Vec<(i64, usize, Winner)> = Vec::new();
    for (stored, checked) in &campaigns {
        match person.assess(stored, checked)? {
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
