//! Deterministic assignment: a person's place in the global control, a campaign's holdout,
//! its exploration share and its variants is a salted hash of their external id (and the
//! campaign), the same on every run and machine, and independent between the draws.

use sha2::{Digest, Sha256};

/// A number in [0, 1) from SHA-256 of `salt`, a separator and `id`: uniform, stable, and
/// unrelated for different salts.
pub fn bucket(salt: &str, id: &str) -> f64 {
    let digest = Sha256::new()
        .chain_update(salt.as_bytes())
        .chain_update([0x1f])
        .chain_update(id.as_bytes())
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    // 53 bits, so the result is exact in an f64 and below 1.
    (u64::from_be_bytes(first) >> 11) as f64 / (1u64 << 53) as f64
}

/// Whether the person is in the workspace's global control (no marketing campaign at all):
/// from their id alone, so a new profile joins by the same rule and nobody moves.
pub fn in_global_control(id: &str, share: f64) -> bool {
    bucket("microseg/global-control", id) < share
}

/// Whether the person is in `campaign`'s holdout.
pub fn in_holdout(campaign: &str, id: &str, share: f64) -> bool {
    bucket(&format!("microseg/holdout/{campaign}"), id) < share
}

/// Whether the person's message from `campaign` is the general exploration message.
pub fn in_exploration(campaign: &str, id: &str, share: f64) -> bool {
    bucket(&format!("microseg/exploration/{campaign}"), id) < share
}

/// The index of the person's variant, drawn by `weights` (all above 0).
pub fn variant(campaign: &str, id: &str, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = bucket(&format!("microseg/variant/{campaign}"), id) * total;
    for (i, w) in weights.iter().enumerate() {
        if x < *w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// A person's own offer code for `campaign`: 10 characters of Crockford base 32 from a
/// hash of both, the same on every run (so a re-run or a retry sends the same code).
pub fn offer_code(campaign: &str, id: &str) -> String {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
    let digest = Sha256::new()
        .chain_update(b"microseg/offer/")
        .chain_update(campaign.as_bytes())
        .chain_update([0x1f])
        .chain_update(id.as_bytes())
        .finalize();
    let mut n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes"));
    (0..10)
        .map(|_| {
            let c = ALPHABET[(n % 32) as usize] as char;
            n /= 32;
            c
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Shares over 100,000 ids are within 4 standard deviations of the setting
    /// (sd = sqrt(p(1-p)/n)), the draws are independent, and the same id always lands in
    /// the same place.
    #[test]
    fn shares_are_as_set_stable_and_independent() {
        let n = 100_000;
        let ids: Vec<String> = (0..n).map(|i| format!("c{i:07}")).collect();
        let share =
            |f: &dyn Fn(&str) -> bool| ids.iter().filter(|i| f(i)).count() as f64 / n as f64;
        let within = |got: f64, p: f64| {
            let sd = (p * (1.0 - p) / n as f64).sqrt();
            assert!((got - p).abs() <= 4.0 * sd, "{got} vs {p} (sd {sd})");
        };
        within(share(&|i| in_global_control(i, 0.05)), 0.05);
        within(share(&|i| in_holdout("winter", i, 0.10)), 0.10);
        within(share(&|i| in_exploration("winter", i, 0.05)), 0.05);
        // Independent: the holdout's share among the global control is the holdout's.
        let control: Vec<&String> = ids.iter().filter(|i| in_global_control(i, 0.5)).collect();
        let both = control
            .iter()
            .filter(|i| in_holdout("winter", i, 0.5))
            .count() as f64;
        let p = 0.5;
        let sd = (p * (1.0 - p) / control.len() as f64).sqrt();
        assert!((both / control.len() as f64 - p).abs() <= 4.0 * sd);
        // Variants by weight 3:1.
        let a = ids
            .iter()
            .filter(|i| variant("winter", i, &[3.0, 1.0]) == 0)
            .count();
        within(a as f64 / n as f64, 0.75);
        // Pinned to values computed with Python's hashlib (the same SHA-256 of
        // salt, 0x1f, id; first 8 bytes big-endian, top 53 bits / 2^53): a change of the
        // hash would move people between groups and change their codes.
        assert_eq!(bucket("s", "c1"), 0.5128133731304985);
        assert_eq!(offer_code("winter", "c1"), "QHDMV4A9GJ");
        assert_ne!(offer_code("winter", "c1"), offer_code("winter", "c2"));
        assert_eq!(offer_code("winter", "c1").len(), 10);
    }
}
