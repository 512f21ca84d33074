//! What one person gets now on one channel or placement, and why every other campaign
//! lost: the same rules as a run, then arbitration by priority.
//!
//! A [`Decider`] holds the campaigns, the rules and the suppression lists, read once; it
//! decides for a [`Person`] given how to tell their membership of an audience and whether
//! a cap holds them. `microseg decide` answers both from the workspace's tables and the
//! outbox; the server from its streaming evaluator (audiences it keeps live under
//! [`Decider::live_audiences`]' names) and the outbox.

use std::collections::{BTreeMap, HashSet};

use microseg_core::condition::Condition;
use microseg_core::{ProfileId, Timestamp};
use microseg_engine::{Metrics, ProfileTable};
use microseg_store::campaigns::OutboxQuery;
use microseg_store::{Store, StoreError, Tables, Workspace};
use serde::Serialize;
use serde_json::Value as Json;

use crate::gate::{Gate, Pick};
use crate::run::{capped, context, offer_for, RunError};
use crate::{render, Campaign, Channel, Checked, Kind, Settings, EXPLORATION};

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
    pub content: BTreeMap<String, String>,
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
    /// control`, `holdout`, `no consent`, `suppressed`, `capped`, `quiet hours`, `not
    /// rendered: ...`, `not live: ...` (server), `lower priority`, `paused`, `archived`.
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
    /// For a placement nobody wins: its `[activation.fallback]` content rendered for the
    /// person (`null` otherwise, or when the placement has none).
    pub fallback: Option<String>,
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

impl Slot {
    /// The channel decided for.
    pub fn channel(&self) -> Channel {
        match self {
            Slot::Channel(c) => *c,
            Slot::Placement(_) => Channel::Web,
        }
    }
}

/// The person decided for: a row of a profile table (every trait), the metrics of that
/// table when the caller has them (templates see metrics not named like a trait; a table
/// may carry metrics as columns instead), their external id, and the instant.
#[derive(Clone, Copy)]
pub struct Person<'a> {
    /// A table holding the person (all of it, or only them).
    pub profiles: &'a ProfileTable,
    /// Metrics of that table, if loaded.
    pub metrics: Option<&'a Metrics>,
    /// Their row.
    pub p: ProfileId,
    /// Their external id.
    pub id: &'a str,
    /// When.
    pub as_of: Timestamp,
}

/// One stored campaign, checked, with the names its audiences are kept live under.
struct Entry {
    status: String,
    version: i64,
    checked: Checked,
    /// The target's (first) and each exclusion's live name, with the condition.
    audiences: Vec<(String, Condition)>,
}

impl Entry {
    fn fits(&self, slot: &Slot) -> bool {
        let c = &self.checked.campaign;
        match slot {
            Slot::Channel(channel) => c.channel == *channel,
            Slot::Placement(name) => {
                c.channel == Channel::Web
                    && c.variants
                        .iter()
                        .any(|v| v.message.get("placement") == Some(name))
            }
        }
    }
}

/// The live name of a campaign's audience: a saved segment's own name, else
/// `campaign:NAME:segment` or `campaign:NAME:exclude.I` (`:` is in no segment's name).
fn live_name(
    campaign: &str,
    field: &str,
    text: &str,
    saved: &BTreeMap<String, Condition>,
) -> String {
    if saved.contains_key(text) {
        text.to_string()
    } else {
        format!("{LIVE_PREFIX}{campaign}:{field}")
    }
}

/// The prefix of the live names of campaigns' own audiences (conditions written in a
/// campaign file rather than saved segments).
pub const LIVE_PREFIX: &str = "campaign:";

/// What the outbox says about one person (dense id `p`): whether a frequency cap holds
/// them on a channel (asked once per channel), and the pool codes they were given.
pub struct Sent<'a> {
    outbox: OutboxQuery<'a>,
    p: ProfileId,
    caps: BTreeMap<Channel, bool>,
}

impl<'a> Sent<'a> {
    /// The records of person `p` in `outbox`.
    pub fn new(outbox: OutboxQuery<'a>, p: ProfileId) -> Sent<'a> {
        Sent {
            outbox,
            p,
            caps: BTreeMap::new(),
        }
    }

    fn capped(
        &mut self,
        settings: &Settings,
        channel: Channel,
        at: Timestamp,
    ) -> Result<bool, RunError> {
        if let Some(&c) = self.caps.get(&channel) {
            return Ok(c);
        }
        let c = capped(&self.outbox, settings, channel.name(), self.p, at)?;
        self.caps.insert(channel, c);
        Ok(c)
    }

    fn code(&self, campaign: &str) -> Result<Option<String>, RunError> {
        Ok(self.outbox.code_of(campaign, self.p)?)
    }
}

/// What a trigger does for one person.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// A message to queue.
    Send(Fired),
    /// They are in the campaign's holdout (and the channel could reach them): recorded
    /// for the report, sent nothing.
    Holdout,
    /// Nothing, for this reason.
    Skip(String),
}

/// A triggered campaign's message for one person, ready for the outbox.
#[derive(Debug, Clone)]
pub struct Fired {
    /// The outbox row.
    pub message: microseg_store::campaigns::OutboxMessage,
    /// Whether caps apply.
    pub marketing: bool,
    /// Its channel.
    pub channel: Channel,
}

/// Whether the person is in an audience (live name, condition): `None` when the caller
/// cannot tell.
pub type Membership<'a> = dyn FnMut(&str, &Condition) -> Result<Option<bool>, RunError> + 'a;

/// The campaigns, rules and suppression lists, read once, for many decisions.
pub struct Decider {
    settings: Settings,
    env: minijinja::Environment<'static>,
    campaigns: Vec<Entry>,
    suppressed: BTreeMap<Channel, HashSet<String>>,
}

impl Decider {
    /// Reads the rules of `ws` and the campaigns and suppression lists of `store`.
    /// Campaigns that no longer check (a saved segment they name was deleted) are left out.
    ///
    /// # Errors
    ///
    /// Refused `[activation]` settings, a store failure.
    pub fn load(ws: &Workspace, store: &Store) -> Result<Decider, RunError> {
        let settings = Settings::from_config(&ws.config.activation)?;
        let saved = store.segment_conditions()?;
        let env = render::environment();
        let mut campaigns = Vec::new();
        for stored in store.campaigns()? {
            let Ok(checked) = Campaign::from_json(&stored.body).and_then(|c| c.check(&saved))
            else {
                continue;
            };
            let c = &checked.campaign;
            let mut audiences = vec![(
                live_name(&c.name, "segment", &c.segment, &saved),
                checked.target.clone(),
            )];
            for (i, (text, condition)) in c.exclude.iter().zip(&checked.exclude).enumerate() {
                audiences.push((
                    live_name(&c.name, &format!("exclude.{i}"), text, &saved),
                    condition.clone(),
                ));
            }
            campaigns.push(Entry {
                status: stored.status,
                version: stored.version,
                checked,
                audiences,
            });
        }
        let mut suppressed = BTreeMap::new();
        for channel in Channel::ALL {
            suppressed.insert(channel, store.suppressed(channel.name())?);
        }
        Ok(Decider {
            settings,
            env,
            campaigns,
            suppressed,
        })
    }

    /// No campaigns, no rules: every decision has no winner.
    pub fn empty() -> Decider {
        Decider {
            settings: Settings::default(),
            env: render::environment(),
            campaigns: Vec::new(),
            suppressed: Channel::ALL.map(|c| (c, HashSet::new())).into(),
        }
    }

    /// The audiences written as conditions in the files of campaigns not archived, under
    /// their live names (saved segments are kept live under their own names already).
    pub fn live_audiences(&self) -> Vec<(String, Condition)> {
        self.campaigns
            .iter()
            .filter(|e| e.status != "archived")
            .flat_map(|e| &e.audiences)
            .filter(|(name, _)| name.starts_with(LIVE_PREFIX))
            .cloned()
            .collect()
    }

    /// The audiences a decision for `slot` asks about (live name, condition).
    pub fn audiences(&self, slot: &Slot) -> Vec<(&str, &Condition)> {
        self.campaigns
            .iter()
            .filter(|e| e.status == "active" && e.fits(slot))
            .flat_map(|e| e.audiences.iter().map(|(n, c)| (n.as_str(), c)))
            .collect()
    }

    /// Decides for `person` on `slot`. `member(live name, condition)` says whether they
    /// are in an audience (`None`: it cannot tell, the campaign loses as `not live`);
    /// `sent` what the outbox holds for them (caps, pool codes).
    ///
    /// # Errors
    ///
    /// What `member` returns, a store failure.
    pub fn decide(
        &self,
        person: Person<'_>,
        slot: &Slot,
        member: &mut Membership<'_>,
        sent: &mut Sent<'_>,
    ) -> Result<Decision, RunError> {
        let mut candidates = Vec::new();
        // (priority, index into `candidates`, winner)
        let mut eligible: Vec<(i64, usize, Winner)> = Vec::new();
        for e in self.campaigns.iter().filter(|e| e.fits(slot)) {
            let name = e.checked.campaign.name.clone();
            match self.assess(e, person, member, sent, false)? {
                Ok((winner, _)) => {
                    candidates.push(Candidate {
                        campaign: name,
                        outcome: "won",
                        reason: None,
                    });
                    eligible.push((e.checked.campaign.priority, candidates.len() - 1, winner));
                }
                Err(reason) => candidates.push(Candidate {
                    campaign: name,
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
        let fallback = match (slot, &winner) {
            (Slot::Placement(name), None) => self.fallback(name, person),
            _ => None,
        };
        Ok(Decision {
            profile: person.id.to_string(),
            winner,
            candidates,
            fallback,
        })
    }

    /// A placement's fallback content for `person`, if it has one that renders.
    fn fallback(&self, placement: &str, person: Person<'_>) -> Option<String> {
        let source = self.settings.fallback.get(placement)?;
        let ctx = context(
            person.profiles,
            person.metrics,
            person.p,
            person.id,
            "",
            None,
        );
        let message = BTreeMap::from([("content".to_string(), source.clone())]);
        render::render(&self.env, &message, &ctx)
            .ok()
            .and_then(|mut m| m.remove("content"))
    }

    /// One campaign: what the person would get (`Ok`), or why not (`Err(reason)`).
    /// With `hold`, a message due inside the person's quiet hours is not lost: its
    /// release time comes back with it (a send); without, it loses (a decision is now).
    fn assess(
        &self,
        e: &Entry,
        person: Person<'_>,
        member: &mut Membership<'_>,
        sent: &mut Sent<'_>,
        hold: bool,
    ) -> Result<Result<(Winner, Timestamp), String>, RunError> {
        let c = &e.checked.campaign;
        let lost = |reason: &str| Ok(Err(reason.to_string()));
        if e.status != "active" {
            return lost(&e.status);
        }
        let (target, exclusions) = e.audiences.split_first().expect("a target");
        let not_live = "not live: an audience is evaluated in batch only";
        match member(&target.0, &target.1)? {
            None => return lost(not_live),
            Some(false) => return lost("not in segment"),
            Some(true) => {}
        }
        for (name, condition) in exclusions {
            match member(name, condition)? {
                None => return lost(not_live),
                Some(true) => return lost("excluded"),
                Some(false) => {}
            }
        }
        let gate = self.gate(c, person.profiles);
        if let Some(why) = gate.keep_out(person.p, person.id) {
            return lost(why.reason());
        }
        if c.kind == Kind::Marketing && sent.capped(&self.settings, c.channel, person.as_of)? {
            return lost("capped");
        }
        let due = gate.due(person.p, person.as_of);
        if due > person.as_of && !hold {
            return lost("quiet hours");
        }
        let code = match &c.offer {
            Some(o) if o.pooled() => match sent.code(&c.name)? {
                Some(code) => Some(code),
                None => {
                    return lost("no code yet: pool codes are given when a run queues the message")
                }
            },
            _ => None,
        };
        match self.message(&gate, c, person, code.as_deref()) {
            Ok(winner) => Ok(Ok((winner, due))),
            Err(e) => lost(&format!("not rendered: {e}")),
        }
    }

    /// The audiences of campaign `name` (live name, condition).
    pub fn campaign_audiences(&self, name: &str) -> Vec<(&str, &Condition)> {
        self.campaigns
            .iter()
            .filter(|e| e.checked.campaign.name == name)
            .flat_map(|e| e.audiences.iter().map(|(n, c)| (n.as_str(), c)))
            .collect()
    }

    /// Event name → the active campaigns whose `trigger` is `{"event": name}`.
    pub fn event_triggers(&self) -> std::collections::HashMap<String, Vec<String>> {
        let mut out: std::collections::HashMap<String, Vec<String>> = Default::default();
        for e in self.campaigns.iter().filter(|e| e.status == "active") {
            let event = e
                .checked
                .campaign
                .trigger
                .as_ref()
                .and_then(|t| t.get("event"))
                .and_then(Json::as_str);
            if let Some(name) = event {
                out.entry(name.to_string())
                    .or_default()
                    .push(e.checked.campaign.name.clone());
            }
        }
        out
    }

    /// The active campaigns whose `trigger` is `{"on_enter": segment}`.
    pub fn triggered_by<'a>(&'a self, segment: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.campaigns
            .iter()
            .filter(move |e| {
                e.status == "active"
                    && e.checked
                        .campaign
                        .trigger
                        .as_ref()
                        .and_then(|t| t.get("on_enter"))
                        .and_then(Json::as_str)
                        == Some(segment)
            })
            .map(|e| e.checked.campaign.name.as_str())
    }

    /// Fires campaign `name` for `person` (dense id `p`): the rules of a run for one
    /// person (no arbitration: caps keep campaigns from piling up), the message held
    /// through quiet hours.
    ///
    /// # Errors
    ///
    /// What `member` returns, a store failure.
    pub fn fire(
        &self,
        name: &str,
        person: Person<'_>,
        p: ProfileId,
        member: &mut Membership<'_>,
        sent: &mut Sent<'_>,
    ) -> Result<Trigger, RunError> {
        let Some(e) = self
            .campaigns
            .iter()
            .find(|e| e.checked.campaign.name == name)
        else {
            return Ok(Trigger::Skip("no such campaign".into()));
        };
        let (winner, due) = match self.assess(e, person, member, sent, true)? {
            Ok(w) => w,
            Err(reason) if reason == crate::gate::KeptOut::Holdout.reason() => {
                let gate = self.gate(&e.checked.campaign, person.profiles);
                return Ok(match gate.unreachable(person.p, person.id) {
                    None => Trigger::Holdout,
                    Some(why) => Trigger::Skip(why.reason().into()),
                });
            }
            Err(reason) => return Ok(Trigger::Skip(reason)),
        };
        // One send per person, campaign version and day of the trigger.
        let day = person.as_of.to_string();
        let slot = format!("trigger-v{}-{}", e.version, &day[..day.len().min(10)]);
        Ok(Trigger::Send(Fired {
            message: microseg_store::campaigns::OutboxMessage {
                idempotency_key: crate::run::idempotency_key(name, person.id, &slot),
                campaign: name.to_string(),
                version: e.version,
                profile_id: p,
                channel: winner.channel.clone(),
                variant: winner.variant.clone(),
                content: serde_json::to_string(&winner.content).unwrap_or_default(),
                offer: winner.offer.as_ref().map(Json::to_string),
                due_at: due.0,
            },
            marketing: e.checked.campaign.kind == Kind::Marketing,
            channel: e.checked.campaign.channel,
        }))
    }

    /// Queues `fired` unless, inside the queueing transaction, a cap of its channel is
    /// reached (marketing) or its key is already there; true when queued.
    ///
    /// # Errors
    ///
    /// A store failure.
    pub fn queue(
        &self,
        store: &mut Store,
        fired: &Fired,
        as_of: Timestamp,
    ) -> Result<bool, RunError> {
        let m = &fired.message;
        let queued = store.queue_messages(std::slice::from_ref(m), |q, _| {
            if q.has_key(&m.idempotency_key)? {
                return Ok(false);
            }
            Ok(!(fired.marketing
                && capped(q, &self.settings, fired.channel.name(), m.profile_id, as_of)?))
        })?;
        Ok(queued == 1)
    }

    fn gate<'a>(&'a self, c: &'a Campaign, profiles: &'a ProfileTable) -> Gate<'a> {
        Gate::new(c, &self.settings, profiles, &self.suppressed[&c.channel])
    }

    /// The message the person is assigned by `c` (exploration or their variant), rendered.
    fn message(
        &self,
        gate: &Gate<'_>,
        c: &Campaign,
        person: Person<'_>,
        code: Option<&str>,
    ) -> Result<Winner, render::RenderError> {
        let (variant, message) = match gate.pick(person.id) {
            Pick::Exploration => (EXPLORATION, &self.settings.exploration_message[&c.channel]),
            Pick::Variant(i) => (c.variants[i].name.as_str(), &c.variants[i].message),
        };
        let offer = offer_for(c, person.id, person.as_of, code);
        let ctx = context(
            person.profiles,
            person.metrics,
            person.p,
            person.id,
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
fn open_person<'t>(
    ws: &Workspace,
    store: &'t Store,
    id: &str,
    as_of: Timestamp,
) -> Result<(Tables<'t>, ProfileId), RunError> {
    let mut tables = Tables::open(ws, store, as_of)?;
    let p = tables
        .profiles()
        .find(id)
        .filter(|&p| !tables.profiles().retired.contains(p))
        .ok_or_else(|| StoreError::UnknownProfile(id.to_string()))?;
    tables.need_all_traits()?;
    tables.metrics()?;
    Ok((tables, p))
}

/// The decision for profile `p` (external id `id`) from tables the caller has open (every
/// trait and the metrics loaded): membership by evaluating the conditions over the
/// tables, caps from the outbox. Computed only: nothing is recorded.
///
/// # Errors
///
/// [`RunError`]: a condition the tables cannot evaluate, a store failure.
pub fn workspace_decision(
    decider: &Decider,
    store: &Store,
    tables: &mut Tables<'_>,
    p: ProfileId,
    id: &str,
    slot: &Slot,
    as_of: Timestamp,
) -> Result<Decision, RunError> {
    let mut members: BTreeMap<String, bool> = BTreeMap::new();
    for (name, condition) in decider.audiences(slot) {
        if !members.contains_key(name) {
            members.insert(name.to_string(), tables.evaluate(condition)?.contains(p));
        }
    }
    let person = Person {
        profiles: tables.profiles(),
        metrics: tables.dataset().metrics,
        p,
        id,
        as_of,
    };
    decider.decide(
        person,
        slot,
        &mut |name, _| Ok(members.get(name).copied()),
        &mut Sent::new(store.outbox(), p),
    )
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
    // A campaign that no longer checks (a saved segment it names is gone) says why.
    Campaign::from_json(&store.campaign(name)?.body)?.check(&store.segment_conditions()?)?;
    let decider = Decider::load(ws, store)?;
    let entry = decider
        .campaigns
        .iter()
        .find(|e| e.checked.campaign.name == name)
        .ok_or_else(|| StoreError::NotFound(format!("campaign {name}")))?;
    let (mut tables, p) = open_person(ws, store, id, as_of)?;
    let c = &entry.checked.campaign;
    let message = {
        let person = Person {
            profiles: tables.profiles(),
            metrics: tables.dataset().metrics,
            p,
            id,
            as_of,
        };
        let gate = decider.gate(c, tables.profiles());
        // A pool code: the one given to the person, else a stand-in (a preview gives none).
        let code = match &c.offer {
            Some(o) if o.pooled() => Some(
                store
                    .outbox()
                    .code_of(name, p)?
                    .unwrap_or_else(|| "(next code of the pool)".into()),
            ),
            _ => None,
        };
        decider
            .message(&gate, c, person, code.as_deref())
            .map_err(|e| crate::CampaignError {
                field: e.field,
                reason: format!("not rendered for {id}: {}", e.reason),
            })?
    };
    let slot = Slot::Channel(c.channel);
    let decision = workspace_decision(&decider, store, &mut tables, p, id, &slot, as_of)?;
    let blocked_by = decision
        .candidates
        .into_iter()
        .find(|k| k.campaign == name)
        .and_then(|k| k.reason);
    Ok(Preview {
        profile: id.to_string(),
        message,
        blocked_by,
    })
}

/// Decides for the person with external id `id` as of `as_of`, from the workspace.
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
    let decider = Decider::load(ws, store)?;
    let (mut tables, p) = open_person(ws, store, id, as_of)?;
    workspace_decision(&decider, store, &mut tables, p, id, slot, as_of)
}

/// A test send, as `campaign preview --send-to` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TestSent {
    /// Whose message it was.
    pub profile: String,
    /// Where it went (an address, or the webhook's URL).
    pub to: String,
    /// The channel.
    pub channel: String,
    /// The message sent (subject marked `[test]`).
    pub message: Winner,
    /// Its idempotency key (`CAMPAIGN.test-…`: never one of a real send).
    pub idempotency_key: String,
}

/// Sends campaign `name` as person `id` would get it to `to` (an e-mail address; for a
/// webhook campaign a URL, or `None` for the configured one), marked as a test: the
/// subject starts with `[test] `, the webhook body has `"test": true`. It is not queued,
/// and counts in no cap or result.
///
/// # Errors
///
/// As [`preview`]; a channel without an adapter or settings; the relay's refusal.
pub fn test_send(
    ws: &Workspace,
    store: &Store,
    name: &str,
    id: &str,
    to: Option<&str>,
    as_of: Timestamp,
) -> Result<TestSent, RunError> {
    use crate::channels::{Adapter, Outgoing, SendError};
    let mut message = preview(ws, store, name, id, as_of)?.message;
    if let Some(subject) = message.content.get_mut("subject") {
        subject.insert_str(0, "[test] ");
    }
    let sent_at = microseg_core::Timestamp(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64),
    );
    let key = crate::run::idempotency_key(name, id, &format!("test-{}", sent_at.0));
    let key = key.replacen(&format!("{name}."), &format!("{name}.test-"), 1);
    let outgoing = Outgoing {
        to,
        content: &message.content,
        idempotency_key: &key,
        meta: serde_json::json!({
            "campaign": name, "variant": message.variant, "channel": message.channel,
            "profile": id, "offer": message.offer, "test": true,
        }),
        at: sent_at,
        // No unsubscribe link: a tester's click would unsubscribe the customer.
        unsubscribe: None,
    };
    let channel = Channel::from_name(&message.channel)
        .ok_or_else(|| SendError::Address(format!("unknown channel '{}'", message.channel)))?;
    let adapter = Adapter::from_config(channel, &ws.config.channels, &ws.dir)?;
    adapter.send(&outgoing)?;
    adapter.sync()?;
    let to = match (&adapter, to) {
        (_, Some(to)) => to.to_string(),
        (Adapter::Webhook(hook), None) => hook.url.clone(),
        (_, None) => String::new(),
    };
    Ok(TestSent {
        profile: id.to_string(),
        to,
        channel: message.channel.clone(),
        message,
        idempotency_key: key,
    })
}
