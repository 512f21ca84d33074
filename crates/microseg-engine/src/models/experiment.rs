//! Experiments: profiles assigned to arms (one is the control) with their outcomes, and
//! the comparisons of an arm with the control: Wilson intervals for rates, Newcombe's
//! hybrid score interval for a difference of rates with a pooled z test, Welch's interval
//! and t test for a difference of means.

use microseg_core::ProfileId;
use roaring::RoaringBitmap;
use serde::Serialize;

use crate::special::{normal_two_sided_p, t_quantile, t_two_sided_p, Z_95};

/// An experiment: who was in which arm and what they did.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    /// Its name.
    pub name: String,
    /// The control arm's name.
    pub control: String,
    /// Arm names (the control among them), in the order first seen.
    pub arms: Vec<String>,
    /// Outcome names.
    pub outcomes: Vec<String>,
    /// One row per profile.
    pub members: Vec<Member>,
}

/// One profile in an experiment.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    /// The profile.
    pub profile: ProfileId,
    /// Index into [`Experiment::arms`].
    pub arm: usize,
    /// One value per outcome, `NaN` when missing.
    pub outcomes: Vec<f64>,
}

/// How an outcome is summarised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum OutcomeKind {
    /// Every value is 0 or 1: a rate.
    Rate,
    /// Any other number: a mean.
    Mean,
}

impl Experiment {
    /// The control arm's index.
    pub fn control_index(&self) -> usize {
        self.arms
            .iter()
            .position(|a| a == &self.control)
            .unwrap_or(0)
    }

    /// The profiles of arm `arm`.
    pub fn arm_members(&self, arm: usize) -> RoaringBitmap {
        self.members
            .iter()
            .filter(|m| m.arm == arm)
            .map(|m| m.profile)
            .collect()
    }

    /// Every profile in the experiment.
    pub fn all_members(&self) -> RoaringBitmap {
        self.members.iter().map(|m| m.profile).collect()
    }

    /// Outcome `o` per profile id (`NaN` outside the experiment), for `profiles` profiles.
    pub fn outcome_column(&self, o: usize, profiles: usize) -> Vec<f64> {
        let mut column = vec![f64::NAN; profiles];
        for m in &self.members {
            if let Some(slot) = column.get_mut(m.profile as usize) {
                *slot = m.outcomes[o];
            }
        }
        column
    }

    /// Whether outcome `o` is a rate (only 0 and 1 seen) or a mean.
    pub fn outcome_kind(&self, o: usize) -> OutcomeKind {
        let binary = self
            .members
            .iter()
            .map(|m| m.outcomes[o])
            .filter(|v| !v.is_nan())
            .all(|v| v == 0.0 || v == 1.0);
        if binary {
            OutcomeKind::Rate
        } else {
            OutcomeKind::Mean
        }
    }
}

/// One arm in a report: its size and each outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmResult {
    /// The arm.
    pub arm: String,
    /// Its members (in the group reported on).
    pub n: u64,
    /// Per outcome, in [`Experiment::outcomes`] order.
    pub outcomes: Vec<OutcomeResult>,
}

/// One outcome of one arm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutcomeResult {
    /// The arm's rate or mean (`NaN` without members).
    pub value: f64,
    /// Compared with the control (`None` for the control itself, or when undefined).
    pub comparison: Option<Comparison>,
}

impl Experiment {
    /// Every arm, control first, with each outcome compared with the control: over the
    /// whole experiment, or within `group` (profile ids, `profiles` of them in all).
    pub fn report(&self, profiles: usize, group: Option<&RoaringBitmap>) -> Vec<ArmResult> {
        let columns: Vec<Vec<f64>> = (0..self.outcomes.len())
            .map(|o| self.outcome_column(o, profiles))
            .collect();
        let kinds: Vec<OutcomeKind> = (0..self.outcomes.len())
            .map(|o| self.outcome_kind(o))
            .collect();
        let control = self.control_index();
        let arm_sets: Vec<RoaringBitmap> = (0..self.arms.len())
            .map(|a| {
                let m = self.arm_members(a);
                match group {
                    Some(g) => m & g,
                    None => m,
                }
            })
            .collect();
        let mut order: Vec<usize> = vec![control];
        order.extend((0..self.arms.len()).filter(|&a| a != control));
        order
            .into_iter()
            .map(|a| ArmResult {
                arm: self.arms[a].clone(),
                n: arm_sets[a].len(),
                outcomes: (0..self.outcomes.len())
                    .map(|o| {
                        let mine = Moments::of(&columns[o], &arm_sets[a]);
                        let theirs = Moments::of(&columns[o], &arm_sets[control]);
                        OutcomeResult {
                            value: mine.mean(),
                            comparison: (a != control)
                                .then(|| compare(kinds[o], &mine, &theirs))
                                .flatten(),
                        }
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Count, sum and sum of squares of an outcome over a group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Moments {
    /// Values seen (missing ones skipped).
    pub n: f64,
    /// Their sum.
    pub sum: f64,
    /// Their sum of squares.
    pub sum_sq: f64,
}

impl Moments {
    /// The moments of `column` over `members`.
    pub fn of(column: &[f64], members: &RoaringBitmap) -> Moments {
        let mut m = Moments::default();
        for p in members {
            let v = column[p as usize];
            if !v.is_nan() {
                m.n += 1.0;
                m.sum += v;
                m.sum_sq += v * v;
            }
        }
        m
    }

    /// The mean (the rate for 0/1 values).
    pub fn mean(&self) -> f64 {
        self.sum / self.n
    }

    /// The sample variance (n − 1 in the denominator).
    pub fn variance(&self) -> f64 {
        let mean = self.mean();
        ((self.sum_sq - self.n * mean * mean) / (self.n - 1.0)).max(0.0)
    }
}

/// The Wilson score interval (95%) of `k` successes in `n` trials.
pub fn wilson(k: f64, n: f64) -> (f64, f64) {
    if n <= 0.0 {
        return (0.0, 1.0);
    }
    let z2 = Z_95 * Z_95;
    let p = k / n;
    let centre = (p + z2 / (2.0 * n)) / (1.0 + z2 / n);
    let half = Z_95 / (1.0 + z2 / n) * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

/// An arm (or segment) compared with a reference.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Comparison {
    /// The arm's value minus the reference's.
    pub abs_lift: f64,
    /// The arm's value over the reference's, minus one (`None` when the reference is 0).
    pub rel_lift: Option<f64>,
    /// 95% interval of `abs_lift`.
    pub ci_low: f64,
    /// 95% interval of `abs_lift`.
    pub ci_high: f64,
    /// z (rates) or t (means).
    pub statistic: f64,
    /// Two-sided p-value.
    pub p_value: f64,
}

/// Difference of two rates, `treated − control`: Newcombe's hybrid score interval (his
/// method 10, from the two Wilson intervals) and the pooled two-proportion z test.
pub fn compare_rates(treated: (f64, f64), control: (f64, f64)) -> Option<Comparison> {
    let ((k1, n1), (k0, n0)) = (treated, control);
    if n1 <= 0.0 || n0 <= 0.0 {
        return None;
    }
    let (p1, p0) = (k1 / n1, k0 / n0);
    let (l1, u1) = wilson(k1, n1);
    let (l0, u0) = wilson(k0, n0);
    let d = p1 - p0;
    let pooled = (k1 + k0) / (n1 + n0);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n0)).sqrt();
    let z = if se > 0.0 { d / se } else { 0.0 };
    Some(Comparison {
        abs_lift: d,
        rel_lift: (p0 > 0.0).then(|| p1 / p0 - 1.0),
        ci_low: d - ((p1 - l1).powi(2) + (u0 - p0).powi(2)).sqrt(),
        ci_high: d + ((u1 - p1).powi(2) + (p0 - l0).powi(2)).sqrt(),
        statistic: z,
        p_value: if se > 0.0 { normal_two_sided_p(z) } else { 1.0 },
    })
}

/// Difference of two means, `treated − control`: Welch's t test and interval with the
/// Welch–Satterthwaite degrees of freedom.
pub fn compare_means(treated: &Moments, control: &Moments) -> Option<Comparison> {
    if treated.n < 2.0 || control.n < 2.0 {
        return None;
    }
    let (m1, m0) = (treated.mean(), control.mean());
    let (v1, v0) = (
        treated.variance() / treated.n,
        control.variance() / control.n,
    );
    let d = m1 - m0;
    let se = (v1 + v0).sqrt();
    let rel_lift = (m0 != 0.0).then(|| m1 / m0 - 1.0);
    if se == 0.0 {
        return Some(Comparison {
            abs_lift: d,
            rel_lift,
            ci_low: d,
            ci_high: d,
            statistic: 0.0,
            p_value: if d == 0.0 { 1.0 } else { 0.0 },
        });
    }
    let df = (v1 + v0).powi(2) / (v1 * v1 / (treated.n - 1.0) + v0 * v0 / (control.n - 1.0));
    let t = d / se;
    let q = t_quantile(0.975, df);
    Some(Comparison {
        abs_lift: d,
        rel_lift,
        ci_low: d - q * se,
        ci_high: d + q * se,
        statistic: t,
        p_value: t_two_sided_p(t, df),
    })
}

/// Compares outcome values of `treated` with `control` as a rate or a mean.
pub fn compare(kind: OutcomeKind, treated: &Moments, control: &Moments) -> Option<Comparison> {
    match kind {
        OutcomeKind::Rate => compare_rates((treated.sum, treated.n), (control.sum, control.n)),
        OutcomeKind::Mean => compare_means(treated, control),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() < tol
    }

    #[test]
    fn wilson_matches_newcombes_examples() {
        // Newcombe (1998), "Two-sided confidence intervals for the single proportion",
        // Statistics in Medicine 17, table I (statsmodels' proportion_confint(method="wilson")
        // gives the same to 4 decimals): 81/263 -> 0.2553 to 0.3662;
        // 15/148 -> 0.0624 to 0.1605; 0/20 -> 0 to 0.1611; 1/29 -> 0.0061 to 0.1718.
        for (k, n, lo, hi) in [
            (81.0, 263.0, 0.2553, 0.3662),
            (15.0, 148.0, 0.0624, 0.1605),
            (0.0, 20.0, 0.0, 0.1611),
            (1.0, 29.0, 0.0061, 0.1718),
        ] {
            let (l, h) = wilson(k, n);
            assert!(close(l, lo, 5e-5) && close(h, hi, 5e-5), "{k}/{n}: {l} {h}");
        }
    }

    #[test]
    fn newcombe_difference_matches_the_paper() {
        // Newcombe (1998), "Interval estimation for the difference between independent
        // proportions", Statistics in Medicine 17, table II, method 10, as statsmodels
        // 0.14 computes it (confint_proportions_2indep(method="newcomb")):
        // 56/70 - 48/80 -> 0.0524 to 0.3339; 9/10 - 3/10 -> 0.1705 to 0.8090;
        // 6/7 - 2/7 -> 0.0582 to 0.8062; 5/56 - 0/29 -> -0.0381 to 0.1926.
        for ((k1, n1), (k0, n0), lo, hi) in [
            ((56.0, 70.0), (48.0, 80.0), 0.0524, 0.3339),
            ((9.0, 10.0), (3.0, 10.0), 0.1705, 0.8090),
            ((6.0, 7.0), (2.0, 7.0), 0.0582, 0.8062),
            ((5.0, 56.0), (0.0, 29.0), -0.0381, 0.1926),
        ] {
            let c = compare_rates((k1, n1), (k0, n0)).unwrap();
            assert!(
                close(c.ci_low, lo, 5e-5) && close(c.ci_high, hi, 5e-5),
                "{k1}/{n1} - {k0}/{n0}: {c:?}"
            );
        }
    }

    #[test]
    fn welch_matches_scipy() {
        // By hand: means 4 and 2, variances 2.5 and 2.5 over 5 each, se = sqrt(0.5 + 0.5)
        // = 1, t = 2, df = 8; scipy.stats.ttest_ind(a, b, equal_var=False) gives p =
        // 0.08051623795726262 and t.ppf(0.975, 8) = 2.306004135204166.
        let a = [2.0, 3.0, 4.0, 5.0, 6.0];
        let b = [0.0, 1.0, 2.0, 3.0, 4.0];
        let moments = |xs: &[f64]| Moments {
            n: xs.len() as f64,
            sum: xs.iter().sum(),
            sum_sq: xs.iter().map(|x| x * x).sum(),
        };
        let c = compare_means(&moments(&a), &moments(&b)).unwrap();
        assert!(close(c.statistic, 2.0, 1e-12));
        assert!(close(c.p_value, 0.080_516_237_957_262_62, 1e-9), "{c:?}");
        // 95% interval: 2 ± t.ppf(0.975, 8) * 1 = 2 ± 2.306004135204166.
        assert!(close(c.ci_low, 2.0 - 2.306_004_135_204_166, 1e-9));
        assert_eq!(c.rel_lift, Some(1.0));
    }
}
