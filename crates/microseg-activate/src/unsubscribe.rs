//! One-click unsubscribe (RFC 8058): every marketing e-mail carries
//! `List-Unsubscribe: <URL?t=TOKEN>` and `List-Unsubscribe-Post: List-Unsubscribe=One-Click`
//! and a visible link to the same URL. The token names the person by their dense id and
//! the channel, signed with the workspace's secret (HMAC-SHA256), so it holds no personal
//! data and cannot be forged or pointed at somebody else; the server's endpoint sets the
//! person's `consent_<channel>` to false when it is POSTed, with no login and no redirect.

use microseg_core::ProfileId;

use crate::Channel;

/// The name of the workspace secret that signs unsubscribe tokens.
pub const SECRET: &str = "unsubscribe";

fn mac(secret: &str, p: ProfileId, channel: Channel) -> String {
    let mac = microseg_core::sign::hmac_sha256(
        secret.as_bytes(),
        format!("microseg/unsubscribe/{p}/{}", channel.name()).as_bytes(),
    );
    microseg_core::hex(&mac[..16])
}

/// The token of person `p` on `channel`: `P.CHANNEL.MAC`.
pub fn token(secret: &str, p: ProfileId, channel: Channel) -> String {
    format!("{p}.{}.{}", channel.name(), mac(secret, p, channel))
}

/// The person and channel of a token, if its signature holds.
pub fn verify(secret: &str, token: &str) -> Option<(ProfileId, Channel)> {
    let mut parts = token.splitn(3, '.');
    let p: ProfileId = parts.next()?.parse().ok()?;
    let channel = Channel::from_name(parts.next()?)?;
    let given = parts.next()?.as_bytes();
    let expected = mac(secret, p, channel);
    // Compared in constant time.
    let same = given.len() == expected.len()
        && given
            .iter()
            .zip(expected.as_bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    same.then_some((p, channel))
}

/// The link: `base` with `t=TOKEN` added to its query.
pub fn link(base: &str, token: &str) -> String {
    let sep = if base.contains('?') { '&' } else { '?' };
    format!("{base}{sep}t={token}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_verify_only_as_made() {
        let t = token("s3cret", 42, Channel::Email);
        assert_eq!(verify("s3cret", &t), Some((42, Channel::Email)));
        // Another person, channel or secret: refused.
        let forged = t.replacen("42.", "43.", 1);
        assert_eq!(verify("s3cret", &forged), None);
        assert_eq!(verify("s3cret", &t.replace(".email.", ".sms.")), None);
        assert_eq!(verify("other", &t), None);
        assert_eq!(verify("s3cret", "42.email"), None);
        assert_eq!(
            link("https://shop.example/u", &t),
            format!("https://shop.example/u?t={t}")
        );
    }
}
