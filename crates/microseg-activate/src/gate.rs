//! The rules one campaign applies to one person after its segment and exclusions: who is
//! kept out (global control, holdout, consent, suppression), which message they get
//! (the general one of the exploration share, or their variant) and when it may go
//! (quiet hours). Runs, their arbitration and decisions all ask a [`Gate`], so the three
//! cannot drift apart.

use std::collections::HashSet;

use microseg_core::{ProfileId, Timestamp, Value};
use microseg_engine::{Column, ProfileTable};

use crate::{assign, suppress, Campaign, Channel, Kind, Settings};

/// Why the rules keep a person from a campaign, in the order they are tried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeptOut {
    /// In the workspace's global control (marketing only).
    GlobalControl,
    /// In the campaign's holdout.
    Holdout,
    /// Without `consent_<channel>` set to true.
    NoConsent,
    /// Their address is on the channel's suppression list.
    Suppressed,
}

impl KeptOut {
    /// The reason as `decide` gives it.
    pub(crate) fn reason(self) -> &'static str {
        match self {
            KeptOut::GlobalControl => "global control",
            KeptOut::Holdout => "holdout",
            KeptOut::NoConsent => "no consent",
            KeptOut::Suppressed => "suppressed",
        }
    }
}

/// Which message a person gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// The channel's general message (the exploration share).
    Exploration,
    /// The variant at this index.
    Variant(usize),
}

/// One campaign's rules, with the columns they read looked up once.
pub(crate) struct Gate<'a> {
    campaign: &'a Campaign,
    settings: &'a Settings,
    consent: Option<&'a Column>,
    address: Option<&'a Column>,
    timezone: Option<&'a Column>,
    suppressed: &'a HashSet<String>,
    weights: Vec<f64>,
}

impl<'a> Gate<'a> {
    /// The rules of `campaign` over `profiles`, with the channel's suppression list.
    pub(crate) fn new(
        campaign: &'a Campaign,
        settings: &'a Settings,
        profiles: &'a ProfileTable,
        suppressed: &'a HashSet<String>,
    ) -> Gate<'a> {
        let channel = campaign.channel;
        Gate {
            campaign,
            settings,
            consent: profiles.columns.get(&format!("consent_{}", channel.name())),
            address: suppress::address_trait(channel).and_then(|t| profiles.columns.get(t)),
            timezone: profiles.columns.get("timezone"),
            suppressed,
            weights: campaign.variants.iter().map(|v| v.weight).collect(),
        }
    }

    /// Draws the variants by `weights` instead of the file's (results chose them).
    pub(crate) fn set_weights(&mut self, weights: Vec<f64>) {
        self.weights = weights;
    }

    fn marketing(&self) -> bool {
        self.campaign.kind == Kind::Marketing
    }

    /// Why person `p` (external id `id`) is kept out, if they are.
    pub(crate) fn keep_out(&self, p: ProfileId, id: &str) -> Option<KeptOut> {
        let c = self.campaign;
        if self.marketing() && assign::in_global_control(id, self.settings.global_control) {
            return Some(KeptOut::GlobalControl);
        }
        if assign::in_holdout(&c.name, id, c.holdout) {
            return Some(KeptOut::Holdout);
        }
        self.unreachable(p, id)
    }

    /// Why the channel cannot reach person `p` (no consent, suppressed), if it cannot:
    /// the rules after the control groups (a holdout member the channel could reach is
    /// the treated people's counterpart in the campaign's report).
    pub(crate) fn unreachable(&self, p: ProfileId, id: &str) -> Option<KeptOut> {
        let c = self.campaign;
        if !self
            .consent
            .is_some_and(|col| col.get(p) == Some(Value::Bool(true)))
        {
            return Some(KeptOut::NoConsent);
        }
        if !self.suppressed.is_empty() {
            let value = self.address.and_then(|col| col.get(p));
            let hash = suppress::person_hash(c.channel, value.as_ref(), id);
            if hash.is_some_and(|h| self.suppressed.contains(&h)) {
                return Some(KeptOut::Suppressed);
            }
        }
        None
    }

    /// The message person `id` gets: the general one for the exploration share of a
    /// marketing campaign (when the channel has one), else their variant.
    pub(crate) fn pick(&self, id: &str) -> Pick {
        let c = self.campaign;
        let explore = self.marketing()
            && self.settings.exploration_message.contains_key(&c.channel)
            && assign::in_exploration(&c.name, id, self.settings.exploration);
        if explore {
            Pick::Exploration
        } else {
            Pick::Variant(assign::variant(&c.name, id, &self.weights))
        }
    }

    /// When a message due at `at` may go to person `p`: `at`, or the end of their quiet
    /// hours (web placements have none).
    pub(crate) fn due(&self, p: ProfileId, at: Timestamp) -> Timestamp {
        match &self.settings.quiet_hours {
            Some(q) if self.campaign.channel != Channel::Web => {
                let zone = match self.timezone.and_then(|col| col.get(p)) {
                    Some(Value::Str(name)) => Some(name),
                    _ => None,
                };
                q.release(at, zone.as_deref())
            }
            _ => at,
        }
    }
}
