//! Activation: campaigns (what goes to whom, [`campaign`]), the workspace's rules
//! ([`Settings`]), deterministic assignment ([`assign`]), templates ([`render`]), and a
//! campaign run that applies them in a documented order and queues the messages in the
//! store's outbox ([`run`]). Delivery, triggers and results build on it (issue 21).

pub mod assign;
pub mod audience;
pub mod campaign;
pub mod channels;
pub mod choose;
pub mod decide;
pub mod deliver;
mod gate;
pub mod quiet;
pub mod render;
pub mod report;
pub mod run;
pub mod suppress;
pub mod unsubscribe;

use std::collections::BTreeMap;

pub use campaign::{Campaign, CampaignError, Channel, Checked, Kind};
pub use decide::{decide, preview, test_send, Decider, Decision, Person, Preview, Slot, TestSent};
pub use run::{run, RunCounts, RunMessage, RunOutcome};

use microseg_store::workspace::ActivationSection;

/// The variant name of the exploration share's general message.
pub const EXPLORATION: &str = "exploration";

/// A frequency cap: at most `count` messages per `period_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cap {
    /// Messages allowed in a period.
    pub count: u64,
    /// The period, in milliseconds.
    pub period_ms: i64,
}

/// The workspace's rules (`[activation]` in `microseg.toml`), checked.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Share of all profiles in the global control.
    pub global_control: f64,
    /// Share of sends that get the general message.
    pub exploration: f64,
    /// Caps per channel.
    pub caps: BTreeMap<Channel, Cap>,
    /// The cap across channels.
    pub cap_all: Option<Cap>,
    /// The general message per channel.
    pub exploration_message: BTreeMap<Channel, BTreeMap<String, String>>,
    /// When no message goes out, in each person's time zone.
    pub quiet_hours: Option<quiet::QuietHours>,
    /// Placement → content template when no campaign wins it.
    pub fallback: BTreeMap<String, String>,
}

impl Settings {
    /// Reads and checks the `[activation]` section.
    ///
    /// # Errors
    ///
    /// A [`CampaignError`] naming the setting (`activation.caps.email`, ...).
    pub fn from_config(section: &ActivationSection) -> Result<Settings, CampaignError> {
        let share = |field: &str, x: f64| {
            if (0.0..1.0).contains(&x) {
                Ok(x)
            } else {
                Err(CampaignError {
                    field: format!("activation.{field}"),
                    reason: "a share from 0 up to (not including) 1".into(),
                })
            }
        };
        let mut settings = Settings {
            global_control: share("global_control", section.global_control)?,
            exploration: share("exploration", section.exploration)?,
            ..Settings::default()
        };
        for (channel, text) in &section.caps {
            let field = format!("activation.caps.{channel}");
            let cap = parse_cap(text).map_err(|reason| CampaignError {
                field: field.clone(),
                reason,
            })?;
            match channel.as_str() {
                "all" => settings.cap_all = Some(cap),
                name => {
                    let c = Channel::from_name(name).ok_or_else(|| CampaignError {
                        field,
                        reason: "a channel (email, sms, push, web, webhook) or `all`".into(),
                    })?;
                    settings.caps.insert(c, cap);
                }
            }
        }
        settings.quiet_hours =
            quiet::QuietHours::parse(&section.quiet_hours).map_err(|reason| CampaignError {
                field: "activation.quiet_hours".into(),
                reason,
            })?;
        let env = render::environment();
        for (channel, message) in &section.exploration_message {
            let at = format!("activation.exploration_message.{channel}");
            let c = Channel::from_name(channel).ok_or_else(|| CampaignError {
                field: at.clone(),
                reason: "a channel (email, sms, push, web, webhook)".into(),
            })?;
            campaign::check_message(&env, c, message, &at)?;
            settings.exploration_message.insert(c, message.clone());
        }
        for (placement, content) in &section.fallback {
            let message = BTreeMap::from([
                ("placement".to_string(), placement.clone()),
                ("content".to_string(), content.clone()),
            ]);
            campaign::check_message(&env, Channel::Web, &message, "activation.fallback")?;
        }
        settings.fallback = section.fallback.clone();
        Ok(settings)
    }
}

/// Reads `N/period`, e.g. `2/7d`.
fn parse_cap(text: &str) -> Result<Cap, String> {
    let bad = || format!("'{text}': write N/period, e.g. 2/7d");
    let (n, period) = text.split_once('/').ok_or_else(bad)?;
    let count: u64 = n.trim().parse().map_err(|_| bad())?;
    let period_ms = microseg_core::time::parse_duration(period.trim()).map_err(|_| bad())?;
    Ok(Cap { count, period_ms })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_and_refused_by_name() {
        let mut section = ActivationSection {
            global_control: 0.05,
            exploration: 0.1,
            ..Default::default()
        };
        section.caps.insert("email".into(), "2/7d".into());
        section.caps.insert("all".into(), "4/7d".into());
        let s = Settings::from_config(&section).unwrap();
        assert_eq!(
            s.caps[&Channel::Email],
            Cap {
                count: 2,
                period_ms: 7 * 86_400_000
            }
        );
        assert_eq!(s.cap_all.unwrap().count, 4);
        section.caps.insert("fax".into(), "1/1d".into());
        let e = Settings::from_config(&section).unwrap_err();
        assert_eq!(e.field, "activation.caps.fax");
        section.caps.remove("fax");
        section.caps.insert("sms".into(), "two a week".into());
        assert!(Settings::from_config(&section)
            .unwrap_err()
            .reason
            .contains("N/period"));
        section.caps.remove("sms");
        section.global_control = 1.5;
        assert_eq!(
            Settings::from_config(&section).unwrap_err().field,
            "activation.global_control"
        );
    }
}
