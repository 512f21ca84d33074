//! A campaign as its file says it (`../shared/INTERFACES.md`, docs/campaigns.md), and the
//! checks that refuse a bad one with the field and the reason before anything is saved.

use std::collections::BTreeMap;

use microseg_core::condition::{parse, Condition};
use serde::{Deserialize, Serialize};

/// Where a campaign's messages go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    /// E-mail: `subject`, `text`, `html`.
    Email,
    /// Text message: `text`.
    Sms,
    /// Mobile push: `title`, `body`.
    Push,
    /// A website placement: `placement`, `content`.
    Web,
    /// An HTTP POST: `body`.
    Webhook,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 5] = [
        Channel::Email,
        Channel::Sms,
        Channel::Push,
        Channel::Web,
        Channel::Webhook,
    ];

    /// Its name in files and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::Push => "push",
            Channel::Web => "web",
            Channel::Webhook => "webhook",
        }
    }

    /// The channel called `name`.
    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL.into_iter().find(|c| c.name() == name)
    }

    /// The message fields it takes, and which of them are required.
    pub fn fields(self) -> &'static [(&'static str, bool)] {
        match self {
            Channel::Email => &[("subject", true), ("text", false), ("html", false)],
            Channel::Sms => &[("text", true)],
            Channel::Push => &[("title", true), ("body", true)],
            Channel::Web => &[("placement", true), ("content", true)],
            Channel::Webhook => &[("body", true)],
        }
    }
}

/// Marketing campaigns obey every workspace rule; transactional ones (receipts, password
/// resets) skip the global control, caps and exploration.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Promotional.
    #[default]
    Marketing,
    /// Expected by the person.
    Transactional,
}

/// What the message offers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OfferKind {
    /// A price reduction.
    Discount,
    /// A cheaper product.
    Downsell,
    /// A better product.
    Upsell,
    /// Nothing.
    #[default]
    None,
}

/// A campaign's offer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Offer {
    /// Discount, downsell, upsell or none.
    #[serde(default)]
    pub kind: OfferKind,
    /// Its value (a discount's fraction, 0.15 for 15 %).
    #[serde(default)]
    pub value: Option<f64>,
    /// How long it is valid from the send, e.g. `48h`.
    #[serde(default)]
    pub valid_for: Option<String>,
    /// `unique`: a code of its own for every person (derived from the campaign and the
    /// person, so every run gives the same one); `pool`: the next unused code of the
    /// `pool` file, given once per person when a run queues their message; absent: no
    /// code.
    #[serde(default)]
    pub code: Option<String>,
    /// With `code: "pool"`: the file of codes, one per line (relative to the campaign
    /// file), read by `campaign create` / `edit` into the store.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pool: Option<String>,
}

impl Offer {
    /// Whether codes come from a pool.
    pub fn pooled(&self) -> bool {
        self.code.as_deref() == Some("pool")
    }
}

/// Most codes a pool file may hold.
pub const MAX_POOL_CODES: usize = 10_000_000;

/// Reads a pool file's text: one code per line (surrounding blanks trimmed, empty lines
/// skipped), each 1 to 64 printable ASCII characters without spaces, none twice.
///
/// # Errors
///
/// The first bad line, named by its number.
pub fn read_pool(text: &str) -> Result<Vec<String>, CampaignError> {
    let mut seen = std::collections::HashSet::new();
    let mut codes = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let code = line.trim();
        if code.is_empty() {
            continue;
        }
        let at = format!("offer.pool: line {}", i + 1);
        if code.len() > 64 || !code.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(refuse(
                at,
                "a code is 1 to 64 printable ASCII characters without spaces",
            ));
        }
        if !seen.insert(code) {
            return Err(refuse(at, format!("'{code}' appears twice")));
        }
        if codes.len() == MAX_POOL_CODES {
            return Err(refuse(at, format!("more than {MAX_POOL_CODES} codes")));
        }
        codes.push(code.to_string());
    }
    if codes.is_empty() {
        return Err(refuse("offer.pool", "the file holds no code"));
    }
    Ok(codes)
}

/// One variant of the message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Its name (unique in the campaign; `exploration` is reserved).
    pub name: String,
    /// Its share of the treated audience, relative to the other variants' weights.
    #[serde(default = "one")]
    pub weight: f64,
    /// The channel's message fields, as minijinja templates.
    pub message: BTreeMap<String, String>,
}

fn one() -> f64 {
    1.0
}

/// A campaign file. More fields may follow; these keep their meaning.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Campaign {
    /// Its name (letters, digits, `_`, `-`, `.`).
    pub name: String,
    /// The target: a saved segment's name, or a condition.
    pub segment: String,
    /// Segments (names or conditions) whose members never get it.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// Where it goes.
    pub channel: Channel,
    /// Marketing or transactional.
    #[serde(default)]
    pub kind: Kind,
    /// When several campaigns want one person on a channel, the highest wins.
    #[serde(default)]
    pub priority: i64,
    /// The share of its audience kept out as its control.
    #[serde(default)]
    pub holdout: f64,
    /// What it offers.
    #[serde(default)]
    pub offer: Option<Offer>,
    /// The message variants.
    pub variants: Vec<Variant>,
    /// Fire when a profile enters a segment or an event arrives (issue 21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trigger: Option<serde_json::Value>,
    /// Run at a time or every period (issue 21).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<serde_json::Value>,
    /// What one message costs (for ROI).
    #[serde(default)]
    pub cost_per_message: f64,
    /// Let the results choose the variants' shares (docs/campaigns.md).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub choose: Option<Choose>,
}

/// How results choose a campaign's variants: Thompson sampling in batches. Before each
/// run, each variant's conversion rate so far (people whose attribution window has
/// closed) gives a Beta posterior; the variants' shares become each one's probability of
/// being the best. Learning stops when one variant is the best with probability
/// `stop_at` or more and every variant has `min_per_variant` people: it then gets
/// everyone. The holdout stays as it is.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Choose {
    /// `thompson`.
    pub method: String,
    /// Orders count within this long after the message (default `7d`).
    #[serde(default = "seven_days")]
    pub window: String,
    /// People per variant before learning may stop.
    #[serde(default = "one_hundred")]
    pub min_per_variant: u64,
    /// The probability of being best that stops learning.
    #[serde(default = "ninety_five")]
    pub stop_at: f64,
}

fn seven_days() -> String {
    "7d".into()
}
fn one_hundred() -> u64 {
    100
}
fn ninety_five() -> f64 {
    0.95
}

/// When a scheduled campaign runs (on `serve`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Schedule {
    /// Once, at this instant.
    At(microseg_core::Timestamp),
    /// Every period (milliseconds), counted from the Unix epoch: period K runs once, at
    /// or after K × period.
    Every(i64),
}

impl Schedule {
    /// Reads `{"at": T}` or `{"every": "7d"}`.
    ///
    /// # Errors
    ///
    /// Anything else, naming the field.
    pub fn read(v: &serde_json::Value) -> Result<Schedule, CampaignError> {
        let o = v.as_object().filter(|o| o.len() == 1);
        match o.and_then(|o| o.iter().next()) {
            Some((k, serde_json::Value::String(t))) if k == "at" => {
                microseg_core::time::parse_timestamp(t)
                    .map(Schedule::At)
                    .map_err(|e| refuse("schedule.at", e.to_string()))
            }
            Some((k, serde_json::Value::String(d))) if k == "every" => {
                match microseg_core::time::parse_duration(d) {
                    Ok(ms) if ms >= 60_000 => Ok(Schedule::Every(ms)),
                    Ok(_) => Err(refuse("schedule.every", "at least 1m")),
                    Err(e) => Err(refuse("schedule.every", e.to_string())),
                }
            }
            _ => Err(refuse(
                "schedule",
                "{\"at\": \"2026-12-24T08:00:00Z\"} or {\"every\": \"7d\"}",
            )),
        }
    }

    /// The slot due at `now` (its idempotency-key part), if one is: `run-vN` once `at`
    /// has come (the same keys as running it by hand), `every-vN-K` for period K.
    pub fn due(self, version: i64, now: microseg_core::Timestamp) -> Option<String> {
        match self {
            Schedule::At(t) => (now >= t).then(|| format!("run-v{version}")),
            Schedule::Every(ms) => Some(format!("every-v{version}-{}", now.0.div_euclid(ms))),
        }
    }
}

/// Why a campaign is refused: the field and the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct CampaignError {
    /// Where, e.g. `variants[0].message.subject`.
    pub field: String,
    /// What is wrong, e.g. `line 2: unexpected end of input`.
    pub reason: String,
}

fn refuse(field: impl Into<String>, reason: impl Into<String>) -> CampaignError {
    CampaignError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A campaign checked and compiled: its target and exclusions as conditions.
#[derive(Debug, Clone)]
pub struct Checked {
    /// The campaign as written.
    pub campaign: Campaign,
    /// The target.
    pub target: Condition,
    /// The exclusions.
    pub exclude: Vec<Condition>,
}

impl Campaign {
    /// Reads a campaign file's text (JSON).
    ///
    /// # Errors
    ///
    /// A [`CampaignError`] naming the line and column of a JSON error.
    pub fn from_json(text: &str) -> Result<Campaign, CampaignError> {
        serde_json::from_str(text).map_err(|e| {
            refuse(
                format!("line {}, column {}", e.line(), e.column()),
                e.to_string()
                    .split(" at line")
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
    }

    /// Checks everything that can be checked without data: the name, the target and
    /// exclusions (saved names in `saved`, or conditions that parse), shares, the
    /// variants and their fields for the channel, and every template (a parse error
    /// names the field and the line).
    ///
    /// # Errors
    ///
    /// The first [`CampaignError`] found.
    pub fn check(self, saved: &BTreeMap<String, Condition>) -> Result<Checked, CampaignError> {
        // The same rule as segment names (names go into URLs and idempotency keys).
        microseg_core::condition::check_segment_name(&self.name).map_err(|_| {
            refuse(
                "name",
                format!(
                    "'{}': use 1 to 100 letters, digits, '_', '-' or '.'",
                    self.name
                ),
            )
        })?;
        let condition = |field: &str, text: &str| -> Result<Condition, CampaignError> {
            match saved.get(text) {
                Some(c) => Ok(c.clone()),
                None => parse(text).map_err(|e| {
                    refuse(
                        field,
                        format!("neither a saved segment nor a condition ({e})"),
                    )
                }),
            }
        };
        let target = condition("segment", &self.segment)?;
        let exclude = self
            .exclude
            .iter()
            .enumerate()
            .map(|(i, e)| condition(&format!("exclude[{i}]"), e))
            .collect::<Result<Vec<_>, _>>()?;
        if !(0.0..1.0).contains(&self.holdout) {
            return Err(refuse("holdout", "a share from 0 up to (not including) 1"));
        }
        if !(self.cost_per_message.is_finite() && self.cost_per_message >= 0.0) {
            return Err(refuse("cost_per_message", "a number of 0 or more"));
        }
        if let Some(offer) = &self.offer {
            if offer.value.is_some_and(|v| !v.is_finite()) {
                return Err(refuse("offer.value", "a finite number"));
            }
            if let Some(d) = &offer.valid_for {
                microseg_core::time::parse_duration(d)
                    .map_err(|e| refuse("offer.valid_for", e.to_string()))?;
            }
            match (offer.code.as_deref(), &offer.pool) {
                (None | Some("unique"), None) | (Some("pool"), Some(_)) => {}
                (Some("pool"), None) => {
                    return Err(refuse(
                        "offer.pool",
                        "missing: the file of codes to draw from",
                    ))
                }
                (_, Some(_)) if offer.code.as_deref() != Some("pool") => {
                    return Err(refuse("offer.pool", "only with `code: \"pool\"`"))
                }
                _ => {
                    return Err(refuse(
                        "offer.code",
                        "`unique` (generated), `pool` (from the `pool` file), or leave it out",
                    ))
                }
            }
        }
        if let Some(sc) = &self.schedule {
            if self.trigger.is_some() {
                return Err(refuse(
                    "schedule",
                    "a campaign has a trigger or a schedule, not both",
                ));
            }
            Schedule::read(sc)?;
        }
        if let Some(t) = &self.trigger {
            let one = t.as_object().filter(|o| o.len() == 1);
            match one.and_then(|o| o.iter().next()) {
                Some((k, serde_json::Value::String(name))) if k == "on_enter" => {
                    if !saved.contains_key(name) {
                        return Err(refuse(
                            "trigger.on_enter",
                            format!("'{name}' is not a saved segment"),
                        ));
                    }
                }
                Some((k, serde_json::Value::String(name))) if k == "event" => {
                    if name.is_empty() || name.len() > 200 {
                        return Err(refuse(
                            "trigger.event",
                            "an event name (1 to 200 characters)",
                        ));
                    }
                }
                _ => {
                    return Err(refuse(
                        "trigger",
                        "{\"on_enter\": SEGMENT} (a saved segment) or {\"event\": NAME}",
                    ))
                }
            }
        }
        if self.variants.is_empty() {
            return Err(refuse("variants", "at least one variant"));
        }
        if let Some(ch) = &self.choose {
            if ch.method != "thompson" {
                return Err(refuse("choose.method", "`thompson`"));
            }
            if self.variants.len() < 2 {
                return Err(refuse("choose", "needs two variants or more"));
            }
            microseg_core::time::parse_duration(&ch.window)
                .map_err(|e| refuse("choose.window", e.to_string()))?;
            if !(0.5..1.0).contains(&ch.stop_at) {
                return Err(refuse("choose.stop_at", "a probability from 0.5 up to 1"));
            }
        }
        let env = crate::render::environment();
        for (i, v) in self.variants.iter().enumerate() {
            let at = format!("variants[{i}]");
            if v.name.is_empty() || v.name == crate::EXPLORATION {
                return Err(refuse(
                    format!("{at}.name"),
                    "a name, not `exploration` (reserved for the general message)",
                ));
            }
            if self.variants[..i].iter().any(|w| w.name == v.name) {
                return Err(refuse(format!("{at}.name"), "repeats an earlier variant's"));
            }
            if !(v.weight.is_finite() && v.weight > 0.0) {
                return Err(refuse(format!("{at}.weight"), "a number above 0"));
            }
            check_message(&env, self.channel, &v.message, &format!("{at}.message"))?;
        }
        Ok(Checked {
            campaign: self,
            target,
            exclude,
        })
    }
}

/// Checks a message's fields for `channel` and compiles each template.
pub(crate) fn check_message(
    env: &minijinja::Environment<'_>,
    channel: Channel,
    message: &BTreeMap<String, String>,
    at: &str,
) -> Result<(), CampaignError> {
    let fields = channel.fields();
    if let Some(unknown) = message.keys().find(|k| !fields.iter().any(|(f, _)| f == k)) {
        let known: Vec<&str> = fields.iter().map(|(f, _)| *f).collect();
        return Err(refuse(
            format!("{at}.{unknown}"),
            format!("not a {} field (use {})", channel.name(), known.join(", ")),
        ));
    }
    for (field, required) in fields {
        if *required && !message.contains_key(*field) {
            return Err(refuse(
                format!("{at}.{field}"),
                format!("missing (a {} message needs it)", channel.name()),
            ));
        }
    }
    if channel == Channel::Email && !message.contains_key("text") && !message.contains_key("html") {
        return Err(refuse(
            format!("{at}.text"),
            "an e-mail needs `text` or `html`",
        ));
    }
    for (field, source) in message {
        env.template_from_str(source).map_err(|e| {
            refuse(
                format!("{at}.{field}"),
                match e.line() {
                    Some(line) => format!("line {line}: {}", e.detail().unwrap_or("bad template")),
                    None => e.to_string(),
                },
            )
        })?;
    }
    Ok(())
}
