//! The suppression list: addresses never contacted on a channel (unsubscribed by other
//! means, complained, bounced). A person's address on a channel is their `email` trait
//! for e-mail, their `phone` trait for SMS, and their external id for push, web and
//! webhooks. Addresses are normalised (e-mail trimmed and lower-cased; a phone keeps a
//! leading `+` and its digits) and kept as SHA-256 hex only, so the list itself holds no
//! readable personal data and survives a person's erasure.

use microseg_core::Value;
use sha2::{Digest, Sha256};

use crate::Channel;

/// The trait that holds a person's address on `channel` (`None`: the external id).
pub fn address_trait(channel: Channel) -> Option<&'static str> {
    match channel {
        Channel::Email => Some("email"),
        Channel::Sms => Some("phone"),
        Channel::Push | Channel::Web | Channel::Webhook => None,
    }
}

/// `address` as the list compares it on `channel`.
pub fn normalise(channel: Channel, address: &str) -> String {
    let a = address.trim();
    match channel {
        Channel::Email => a.to_lowercase(),
        Channel::Sms => {
            let digits: String = a.chars().filter(char::is_ascii_digit).collect();
            if a.starts_with('+') {
                format!("+{digits}")
            } else {
                digits
            }
        }
        _ => a.to_string(),
    }
}

/// The SHA-256 hex of a normalised address, as the list keeps it.
pub fn hash(channel: Channel, address: &str) -> String {
    microseg_core::hex(&Sha256::digest(normalise(channel, address).as_bytes()))
}

/// The hash of a person's address on `channel`: their trait's value (`trait_value`), or
/// their external id for channels without an address trait; `None` without an address.
pub fn person_hash(
    channel: Channel,
    trait_value: Option<&Value>,
    external_id: &str,
) -> Option<String> {
    match address_trait(channel) {
        None => Some(hash(channel, external_id)),
        Some(_) => match trait_value {
            Some(Value::Str(s)) => Some(hash(channel, s)),
            _ => None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_compared_normalised_and_kept_hashed() {
        assert_eq!(
            normalise(Channel::Email, "  Anna.Kiss@Example.COM "),
            "anna.kiss@example.com"
        );
        assert_eq!(normalise(Channel::Sms, "+36 (30) 123-4567"), "+36301234567");
        assert_eq!(hash(Channel::Email, "A@B.C"), hash(Channel::Email, "a@b.c"));
        // SHA-256("a@b.c"), from `printf 'a@b.c' | sha256sum`.
        assert_eq!(
            hash(Channel::Email, "a@b.c"),
            "d648b243a3e817eaa3309e00e183483f2867baadf522099f0c2121770536b25a"
        );
    }
}
