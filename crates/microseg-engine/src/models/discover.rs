//! Micro-segment discovery: conjunctions of `dimension = value` conditions searched on
//! bitmaps, each tested against the base (a target rate or mean) or, in an experiment,
//! for a treatment effect (uplift), with the false discovery rate controlled by
//! Benjamini–Hochberg over every candidate tested.
//!
//! Dimensions: strings and string sets give one item per value (the 50 most common),
//! booleans two, numbers with at most 12 distinct values one per value, other numbers one
//! per quantile bin (`x < c1`, `c1 <= x < c2`, ..., `x >= ck`). A candidate joins items of
//! different dimensions; a candidate with fewer members than the minimum support is not
//! tested, and neither is any refinement of it (support only shrinks).

use microseg_core::condition::{CompareOp, Condition, Literal, Operand};
use microseg_core::{TraitType, Value};
use roaring::RoaringBitmap;
use serde::Serialize;

use super::experiment::{compare, Moments, OutcomeKind};
use crate::analytics::leaf_condition;
use crate::evaluate::{Dataset, EvalError};
use crate::special::{normal_two_sided_p, t_quantile, t_two_sided_p};

/// Most values of one categorical dimension that become items.
const MAX_VALUES: usize = 50;
/// Numbers with at most this many distinct values are used value by value.
const MAX_EXACT_NUMBERS: usize = 12;

/// One `dimension = value` condition and its members.
#[derive(Debug, Clone)]
pub struct Item {
    /// Index of its dimension.
    pub dimension: usize,
    /// What it stands for: the value, or the condition of a numeric bin.
    pub label: String,
    /// The condition.
    pub condition: Condition,
    /// Its members within the base.
    pub members: RoaringBitmap,
}

/// How the search runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settings {
    /// Most items in one conjunction.
    pub max_depth: usize,
    /// Fewest members a candidate needs to be tested.
    pub min_support: u64,
    /// The false discovery rate.
    pub fdr: f64,
    /// Quantile bins of numeric dimensions.
    pub bins: usize,
}

impl Default for Settings {
    /// Depth 3, 100 members (a behaviour shared by 1 person in 10 is no segment; by 100 in
    /// 1,000 it deserves a look), FDR 5%, quartiles.
    fn default() -> Self {
        Settings {
            max_depth: 3,
            min_support: 100,
            fdr: 0.05,
            bins: 4,
        }
    }
}

/// The items of dimension `name` (index `dimension`) within `base`.
pub fn dimension_items(
    dataset: &Dataset<'_>,
    dimension: usize,
    name: &str,
    base: &RoaringBitmap,
    settings: &Settings,
) -> Result<Vec<Item>, EvalError> {
    let ty = dataset.type_of(name)?;
    let conditions = match ty {
        TraitType::Timestamp => {
            return Err(EvalError::WrongType {
                name: name.to_string(),
                ty,
                hint: "discovery dimensions are categorical or numeric".into(),
            })
        }
        TraitType::Integer | TraitType::Float => number_items(dataset, name, ty, base, settings)?,
        _ => value_items(dataset, name, ty == TraitType::StringSet, base)?,
    };
    let mut items = Vec::new();
    for (label, condition) in conditions {
        let members = dataset.evaluate(&condition)? & base;
        if members.len() >= settings.min_support.max(1) {
            items.push(Item {
                dimension,
                label,
                condition,
                members,
            });
        }
    }
    Ok(items)
}

/// `name = value` (`name has value` for sets) for the most common values in `base`,
/// labelled by the value.
fn value_items(
    dataset: &Dataset<'_>,
    name: &str,
    is_set: bool,
    base: &RoaringBitmap,
) -> Result<Vec<(String, Condition)>, EvalError> {
    let mut counts: std::collections::HashMap<String, (Value, u64)> = Default::default();
    let mut count = |v: Value| counts.entry(v.to_string()).or_insert((v, 0)).1 += 1;
    for p in base {
        match dataset.value_of(name, p)? {
            Some(Value::Set(items)) => items.into_iter().map(Value::Str).for_each(&mut count),
            Some(v) => count(v),
            None => {}
        }
    }
    let mut values: Vec<(String, (Value, u64))> = counts.into_iter().collect();
    values.sort_by(|a, b| b.1 .1.cmp(&a.1 .1).then_with(|| a.0.cmp(&b.0)));
    values.truncate(MAX_VALUES);
    Ok(values
        .into_iter()
        .map(|(label, (v, _))| (label, leaf_condition(name, Some(&v), is_set)))
        .collect())
}

/// The items of every dimension of `dims` within `base`; an error names the dimension.
pub fn items(
    data: &Dataset<'_>,
    dims: &[String],
    base: &RoaringBitmap,
    settings: &Settings,
) -> Result<Vec<Item>, (String, EvalError)> {
    let mut items = Vec::new();
    for (i, name) in dims.iter().enumerate() {
        items
            .extend(dimension_items(data, i, name, base, settings).map_err(|e| (name.clone(), e))?);
    }
    Ok(items)
}

/// One item per value of a number with few values, else quantile bins
/// (`x < c1`, `c1 <= x < c2`, ..., `x >= ck`) labelled by their condition.
fn number_items(
    dataset: &Dataset<'_>,
    name: &str,
    ty: TraitType,
    base: &RoaringBitmap,
    settings: &Settings,
) -> Result<Vec<(String, Condition)>, EvalError> {
    let mut values: Vec<f64> = Vec::new();
    for p in base {
        if let Some(x) = dataset.value_of(name, p)?.as_ref().and_then(Value::as_f64) {
            values.push(x);
        }
    }
    values.sort_by(f64::total_cmp);
    let value = |x: f64| match ty {
        TraitType::Integer => Value::Int(x as i64),
        _ => Value::Float(x),
    };
    let mut distinct = values.clone();
    distinct.dedup();
    if distinct.len() <= MAX_EXACT_NUMBERS {
        return Ok(distinct
            .into_iter()
            .map(|x| {
                (
                    value(x).to_string(),
                    leaf_condition(name, Some(&value(x)), false),
                )
            })
            .collect());
    }
    let bins = settings.bins.max(2);
    let mut cuts: Vec<f64> = (1..bins).map(|i| values[i * values.len() / bins]).collect();
    cuts.dedup();
    let compare = |op, x: f64| Condition::Compare {
        left: Operand::Name(name.to_string()),
        op,
        right: match value(x) {
            Value::Int(i) => Literal::Int(i),
            _ => Literal::Float(x),
        },
    };
    let mut out = vec![compare(CompareOp::Lt, cuts[0])];
    for w in cuts.windows(2) {
        out.push(Condition::And {
            all: vec![compare(CompareOp::Ge, w[0]), compare(CompareOp::Lt, w[1])],
        });
    }
    out.push(compare(CompareOp::Ge, cuts[cuts.len() - 1]));
    Ok(out.into_iter().map(|c| (c.to_string(), c)).collect())
}

/// The conjunction of items as one flat `and`.
pub fn conjunction(items: &[Item], chosen: &[usize]) -> Condition {
    let mut all = Vec::new();
    for &i in chosen {
        match &items[i].condition {
            Condition::And { all: parts } => all.extend(parts.iter().cloned()),
            c => all.push(c.clone()),
        }
    }
    if all.len() == 1 {
        all.pop().expect("one condition")
    } else {
        Condition::And { all }
    }
}

/// Visits every conjunction of up to `max_depth` items of distinct dimensions with at least
/// `min_support` members, splitting the first items across threads; returns what `score`
/// kept, with the chosen items.
pub fn search<S: Send>(
    items: &[Item],
    settings: &Settings,
    score: &(dyn Fn(&RoaringBitmap) -> Option<S> + Sync),
) -> Vec<(Vec<usize>, S)> {
    fn descend<S>(
        items: &[Item],
        settings: &Settings,
        score: &(dyn Fn(&RoaringBitmap) -> Option<S> + Sync),
        chosen: &mut Vec<usize>,
        members: &RoaringBitmap,
        out: &mut Vec<(Vec<usize>, S)>,
    ) {
        if let Some(s) = score(members) {
            out.push((chosen.clone(), s));
        }
        if chosen.len() >= settings.max_depth {
            return;
        }
        let last = *chosen.last().expect("a first item");
        for next in last + 1..items.len() {
            if chosen
                .iter()
                .any(|&c| items[c].dimension == items[next].dimension)
            {
                continue;
            }
            let narrowed = members & &items[next].members;
            if narrowed.len() < settings.min_support.max(1) {
                continue;
            }
            chosen.push(next);
            descend(items, settings, score, chosen, &narrowed, out);
            chosen.pop();
        }
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(items.len().max(1));
    let mut results: Vec<Vec<(Vec<usize>, S)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut out = Vec::new();
                    // Round robin: early items have the most refinements.
                    for first in (t..items.len()).step_by(threads) {
                        let mut chosen = vec![first];
                        descend(
                            items,
                            settings,
                            score,
                            &mut chosen,
                            &items[first].members,
                            &mut out,
                        );
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("discovery thread"))
            .collect()
    });
    let mut all: Vec<(Vec<usize>, S)> = results.drain(..).flatten().collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

/// Benjamini–Hochberg adjusted p-values (q-values), in the order given.
pub fn benjamini_hochberg(p: &[f64]) -> Vec<f64> {
    let m = p.len();
    let mut order: Vec<usize> = (0..m).collect();
    order.sort_by(|&a, &b| p[a].total_cmp(&p[b]));
    let mut q = vec![1.0; m];
    let mut running = 1.0f64;
    for (rank, &i) in order.iter().enumerate().rev() {
        running = running.min(p[i] * m as f64 / (rank + 1) as f64);
        q[i] = running.min(1.0);
    }
    q
}

/// What discovery looks for.
#[derive(Debug, Clone)]
pub enum Target {
    /// Members of a condition: their rate.
    Rate(RoaringBitmap),
    /// A number per profile (`NaN` when missing): its mean.
    Mean(Vec<f64>),
}

impl Target {
    /// The target's value over `base`, and how many profiles it is measured on.
    pub fn base(&self, base: &RoaringBitmap) -> (f64, u64) {
        match self {
            Target::Rate(t) => (
                t.intersection_len(base) as f64 / base.len() as f64,
                base.len(),
            ),
            Target::Mean(values) => {
                let m = Moments::of(values, base);
                (m.mean(), m.n as u64)
            }
        }
    }

    /// The target as a user names it: the rate of `condition` when there is one, else
    /// the mean of the numeric trait or metric `name` over `base`; with the names it is
    /// made of, which a discovery leaves out of its dimensions (they would only
    /// rediscover the target).
    ///
    /// # Errors
    ///
    /// A condition or name the data cannot evaluate, a name that is not a number.
    pub fn named(
        data: &Dataset<'_>,
        condition: Option<&Condition>,
        name: &str,
        base: &RoaringBitmap,
    ) -> Result<(Target, Vec<String>), EvalError> {
        match condition {
            Some(c) => Ok((Target::Rate(data.evaluate(c)?), c.profile_names())),
            None => Ok((Target::mean_of(data, name, base)?, vec![name.to_string()])),
        }
    }

    /// The mean of numeric trait or metric `name` over `base` (values of other profiles
    /// are left out).
    pub fn mean_of(
        data: &Dataset<'_>,
        name: &str,
        base: &RoaringBitmap,
    ) -> Result<Target, EvalError> {
        let ty = data.type_of(name)?;
        if !matches!(ty, TraitType::Integer | TraitType::Float) {
            return Err(EvalError::WrongType {
                name: name.to_string(),
                ty,
                hint: "give a condition or a numeric trait or metric".into(),
            });
        }
        let mut values = vec![f64::NAN; data.profile_count() as usize];
        for p in base {
            if let Some(v) = data.value_of(name, p)?.and_then(|v| v.as_f64()) {
                values[p as usize] = v;
            }
        }
        Ok(Target::Mean(values))
    }
}

/// The verdict on a discovered segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// The target is higher than in the base.
    Above,
    /// The target is lower than in the base.
    Below,
    /// The treatment raises the outcome.
    Works,
    /// The treatment does nothing measurable here.
    NoEffect,
    /// The treatment lowers the outcome.
    Backfires,
    /// No measurable difference from the base (a partition's group).
    AsBase,
}

/// What the numbers say about one group of people: a discovered segment or a partition's
/// group.
#[derive(Debug, Clone, Serialize)]
pub struct Estimate {
    /// Members (in an experiment: in the two arms compared).
    pub support: u64,
    /// The target rate or mean (uplift: the treated arm's).
    pub value: f64,
    /// `value / base` (uplift: the treatment effect, treated − control).
    pub lift: f64,
    /// 95% interval of the rate or mean (uplift: of the effect).
    pub ci_low: f64,
    /// 95% interval of the rate or mean (uplift: of the effect).
    pub ci_high: f64,
    /// Two-sided p-value (against the base; uplift: of no effect).
    pub p_value: f64,
    /// The verdict.
    pub verdict: Verdict,
    /// Uplift: the control arm's rate or mean among the members.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub control_value: Option<f64>,
}

/// A discovered segment.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// Its condition, in the condition language.
    #[serde(serialize_with = "as_text")]
    pub condition: Condition,
    /// Its numbers.
    #[serde(flatten)]
    pub estimate: Estimate,
    /// Benjamini–Hochberg adjusted p-value over every candidate tested.
    pub q_value: f64,
}

fn as_text<S: serde::Serializer>(c: &Condition, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&c.to_string())
}

fn as_optional_text<S: serde::Serializer>(c: &Option<Condition>, s: S) -> Result<S::Ok, S::Error> {
    match c {
        Some(c) => s.serialize_str(&c.to_string()),
        None => s.serialize_none(),
    }
}

/// The outcome of a discovery run.
#[derive(Debug, Clone, Serialize)]
pub struct Discovery {
    /// The base's rate or mean (uplift: the overall treatment effect).
    pub base: f64,
    /// Profiles in the base.
    pub base_size: u64,
    /// Candidates tested (with at least the minimum support).
    pub tested: usize,
    /// Surviving segments, best first.
    pub segments: Vec<Finding>,
}

/// The rate or mean of `target` in `members`, with its interval and its test against
/// `base_value` (Wilson and a score test for a rate, t for a mean).
fn target_stat(target: &Target, base_value: f64, members: &RoaringBitmap) -> Option<Stat> {
    match target {
        Target::Rate(t) => {
            let n = members.len() as f64;
            let k = t.intersection_len(members) as f64;
            let p = k / n;
            let se0 = (base_value * (1.0 - base_value) / n).sqrt();
            let pv = if se0 > 0.0 {
                normal_two_sided_p((p - base_value) / se0)
            } else {
                1.0
            };
            Some(Stat {
                members: members.len(),
                support: members.len(),
                value: p,
                ci: super::experiment::wilson(k, n),
                p: pv,
                control: None,
                variance: p * (1.0 - p) / n,
            })
        }
        Target::Mean(values) => {
            let m = Moments::of(values, members);
            if m.n < 2.0 {
                return None;
            }
            let se = (m.variance() / m.n).sqrt();
            let df = m.n - 1.0;
            let q = t_quantile(0.975, df);
            let mean = m.mean();
            let pv = if se > 0.0 {
                t_two_sided_p((mean - base_value) / se, df)
            } else if mean == base_value {
                1.0
            } else {
                0.0
            };
            Some(Stat {
                members: members.len(),
                support: members.len(),
                value: mean,
                ci: (mean - q * se, mean + q * se),
                p: pv,
                control: None,
                variance: se * se,
            })
        }
    }
}

/// The effect of `treated` over `control` on `outcome` in `members` (Newcombe for a rate,
/// Welch for a mean); `None` unless each arm has two members there.
fn uplift_stat(
    kind: OutcomeKind,
    outcome: &[f64],
    treated: &RoaringBitmap,
    control: &RoaringBitmap,
    members: &RoaringBitmap,
) -> Option<Stat> {
    let t = Moments::of(outcome, &(members & treated));
    let c = Moments::of(outcome, &(members & control));
    if t.n < 2.0 || c.n < 2.0 {
        return None;
    }
    let cmp = compare(kind, &t, &c)?;
    let arm_variance = |m: &Moments| match kind {
        OutcomeKind::Rate => m.mean() * (1.0 - m.mean()) / m.n,
        OutcomeKind::Mean => m.variance() / m.n,
    };
    Some(Stat {
        members: members.len(),
        support: (t.n + c.n) as u64,
        value: t.mean(),
        ci: (cmp.ci_low, cmp.ci_high),
        p: cmp.p_value,
        control: Some(c.mean()),
        variance: arm_variance(&t) + arm_variance(&c),
    })
}

struct Stat {
    /// Members of the candidate (within the base).
    members: u64,
    support: u64,
    value: f64,
    ci: (f64, f64),
    p: f64,
    control: Option<f64>,
    /// The variance of the estimate (the rate or mean, or the effect).
    variance: f64,
}

impl Stat {
    /// The estimate two groups are compared on: the rate or mean, or the effect.
    fn estimate(&self) -> f64 {
        self.value - self.control.unwrap_or(0.0)
    }
}

/// Segments whose target rate or mean differs from the base's: a Wilson interval and a
/// score test against the base rate, or a t interval and test against the base mean.
/// Keeps those with q ≤ FDR, ranked by the near end of their interval over the base (the
/// conservative lift: highest first), repeats of a shorter conjunction dropped.
pub fn discover(
    items: &[Item],
    base: &RoaringBitmap,
    target: &Target,
    settings: &Settings,
) -> Discovery {
    let (base_value, base_n) = target.base(base);
    let score = |members: &RoaringBitmap| target_stat(target, base_value, members);
    let found = search(items, settings, &score);
    let (mut out, tested) = finish(
        items,
        found,
        settings.fdr,
        |s, significant| {
            if !significant {
                return None;
            }
            Some(if s.value > base_value {
                Verdict::Above
            } else {
                Verdict::Below
            })
        },
        |s| {
            if base_value != 0.0 {
                s.value / base_value
            } else {
                f64::NAN
            }
        },
    );
    // Ranked by the interval's near end: the lift the data supports at 97.5%, so a small
    // noisy segment with a large point estimate does not come before a large one measured
    // precisely.
    let conservative = |f: &Finding| {
        let near = if f.estimate.value >= base_value {
            f.estimate.ci_low
        } else {
            f.estimate.ci_high
        };
        if base_value != 0.0 {
            near / base_value
        } else {
            near
        }
    };
    out.sort_by(|a, b| {
        conservative(b)
            .total_cmp(&conservative(a))
            .then(b.estimate.support.cmp(&a.estimate.support))
    });
    Discovery {
        base: base_value,
        base_size: base_n,
        tested,
        segments: out,
    }
}

/// Drops every candidate whose members are those of one of its sub-conjunctions (one of
/// its conditions adds nobody: `a and b` when every `a` is a `b`): it would repeat that
/// test under a longer name. A candidate's members are a subset of each sub-conjunction's,
/// so equal counts mean equal members; every sub-conjunction of a candidate was visited
/// (it has at least as many members).
fn drop_repeats(found: Vec<(Vec<usize>, Stat)>) -> Vec<(Vec<usize>, Stat)> {
    let sizes: std::collections::HashMap<Vec<usize>, u64> = found
        .iter()
        .map(|(chosen, s)| (chosen.clone(), s.members))
        .collect();
    found
        .into_iter()
        .filter(|(chosen, s)| {
            chosen.len() < 2
                || !(0..chosen.len()).any(|i| {
                    let mut sub = chosen.clone();
                    sub.remove(i);
                    sizes.get(&sub) == Some(&s.members)
                })
        })
        .collect()
}

/// Turns scored candidates into findings: repeats dropped, BH over the rest, then
/// `verdict` (given whether the candidate passed the FDR) decides who stays.
fn finish(
    items: &[Item],
    found: Vec<(Vec<usize>, Stat)>,
    fdr: f64,
    verdict: impl Fn(&Stat, bool) -> Option<Verdict>,
    lift: impl Fn(&Stat) -> f64,
) -> (Vec<Finding>, usize) {
    let found = drop_repeats(found);
    let tested = found.len();
    let q = benjamini_hochberg(&found.iter().map(|(_, s)| s.p).collect::<Vec<_>>());
    let findings = found
        .iter()
        .zip(q)
        .filter_map(|((chosen, s), q)| {
            let verdict = verdict(s, q <= fdr)?;
            Some(Finding {
                condition: conjunction(items, chosen),
                estimate: Estimate {
                    support: s.support,
                    value: s.value,
                    lift: lift(s),
                    ci_low: s.ci.0,
                    ci_high: s.ci.1,
                    p_value: s.p,
                    verdict,
                    control_value: s.control,
                },
                q_value: q,
            })
        })
        .collect();
    (findings, tested)
}

/// Segments where `treated` differs from `control` in `outcome` (values per profile,
/// `NaN` when missing): the effect with its interval (Newcombe for rates, Welch for means)
/// in each candidate, BH over every candidate. `works` and `backfires` pass the FDR;
/// `no_effect` segments have an interval that covers zero and stays below the overall
/// effect (so the segment measurably gains less than average, and possibly nothing). Each
/// arm needs two members in a candidate; repeats of a shorter conjunction are dropped.
/// Ranked: works by the lower end of the effect's interval (the effect the data supports
/// at 97.5%), then no_effect by the control arm's value (those who act without the
/// treatment first), then backfires by the upper end of the interval.
pub fn discover_uplift(
    items: &[Item],
    treated: &RoaringBitmap,
    control: &RoaringBitmap,
    outcome: &[f64],
    kind: OutcomeKind,
    settings: &Settings,
) -> Discovery {
    let overall = compare(
        kind,
        &Moments::of(outcome, treated),
        &Moments::of(outcome, control),
    )
    .map_or(0.0, |c| c.abs_lift);
    let score = |members: &RoaringBitmap| uplift_stat(kind, outcome, treated, control, members);
    let found = search(items, settings, &score);
    let (mut out, tested) = finish(
        items,
        found,
        settings.fdr,
        |s, significant| {
            let effect = s.value - s.control.unwrap_or(0.0);
            if significant && effect > 0.0 && s.ci.0 > 0.0 {
                Some(Verdict::Works)
            } else if significant && effect < 0.0 && s.ci.1 < 0.0 {
                Some(Verdict::Backfires)
            } else if s.ci.0 <= 0.0 && 0.0 <= s.ci.1 && below_overall(s.ci, overall) {
                Some(Verdict::NoEffect)
            } else {
                None
            }
        },
        |s| s.value - s.control.unwrap_or(0.0),
    );
    let rank = |v: Verdict| match v {
        Verdict::Works => 0,
        Verdict::NoEffect => 1,
        _ => 2,
    };
    // Within a verdict, by the interval's near end (the effect the data supports at
    // 97.5%): works by its lower end, backfires by its upper end.
    out.sort_by(|a, b| {
        rank(a.estimate.verdict)
            .cmp(&rank(b.estimate.verdict))
            .then_with(|| match a.estimate.verdict {
                Verdict::Works => b.estimate.ci_low.total_cmp(&a.estimate.ci_low),
                Verdict::NoEffect => b
                    .estimate
                    .control_value
                    .unwrap_or(0.0)
                    .total_cmp(&a.estimate.control_value.unwrap_or(0.0))
                    .then(b.estimate.support.cmp(&a.estimate.support)),
                _ => a.estimate.ci_high.total_cmp(&b.estimate.ci_high),
            })
    });
    Discovery {
        base: overall,
        base_size: (treated | control).len(),
        tested,
        segments: out,
    }
}

/// Most segments an exclusion joins with `or`.
pub const MAX_EXCLUSION_PARTS: usize = 5;

/// The people a treatment did not move but who act anyway: the `no_effect` segments of an
/// uplift discovery whose control value is above `control_overall` (the control arm's
/// value over everyone), broadest first (fewest conditions), each left out when one
/// already chosen covers it (its conditions are a subset), at most
/// [`MAX_EXCLUSION_PARTS`]. `None` when there are none; one condition, or their `or`.
pub fn exclusion(found: &Discovery, control_overall: f64) -> Option<Condition> {
    let conjuncts = |c: &Condition| match c {
        Condition::And { all } => all.clone(),
        other => vec![other.clone()],
    };
    let mut candidates: Vec<&Finding> = found
        .segments
        .iter()
        .filter(|f| {
            f.estimate.verdict == Verdict::NoEffect
                && f.estimate
                    .control_value
                    .is_some_and(|c| c > control_overall)
        })
        .collect();
    candidates.sort_by_key(|f| conjuncts(&f.condition).len());
    let mut parts: Vec<Condition> = Vec::new();
    for f in candidates {
        let mine = conjuncts(&f.condition);
        let covered = parts
            .iter()
            .any(|e| conjuncts(e).iter().all(|part| mine.contains(part)));
        if !covered && parts.len() < MAX_EXCLUSION_PARTS {
            parts.push(f.condition.clone());
        }
    }
    match parts.len() {
        0 => None,
        1 => parts.pop(),
        _ => Some(Condition::Or { any: parts }),
    }
}

/// Whether an interval lies on the zero side of the overall effect.
fn below_overall(ci: (f64, f64), overall: f64) -> bool {
    if overall >= 0.0 {
        ci.1 < overall
    } else {
        ci.0 > overall
    }
}

/// What a partition measures in each group.
#[derive(Debug, Clone, Copy)]
pub enum Measure<'a> {
    /// A target's rate or mean (as [`discover`]).
    Target(&'a Target),
    /// A treatment's effect on an outcome (as [`discover_uplift`]).
    Uplift {
        /// The treated arm.
        treated: &'a RoaringBitmap,
        /// The control arm.
        control: &'a RoaringBitmap,
        /// The outcome per profile (`NaN` when missing).
        outcome: &'a [f64],
        /// A rate or a mean.
        kind: OutcomeKind,
    },
}

/// One group of a partition.
#[derive(Debug, Clone, Serialize)]
pub struct Group {
    /// Its condition (a conjunction of items and negated items); `None` for the whole
    /// base, when no split differs.
    #[serde(serialize_with = "as_optional_text")]
    pub condition: Option<Condition>,
    /// Its numbers; the verdict is `above`, `below` or `as_base`, in an uplift `works`
    /// (send), `no_effect` or `backfires`, each at 95% unadjusted.
    #[serde(flatten)]
    pub estimate: Estimate,
    /// Its members.
    #[serde(skip)]
    pub members: RoaringBitmap,
}

/// Everyone in non-overlapping groups; see [`partition`].
#[derive(Debug, Clone, Serialize)]
pub struct Partition {
    /// The base's rate or mean (uplift: the overall effect).
    pub base: f64,
    /// Profiles partitioned.
    pub base_size: u64,
    /// The groups, in tree order (each split: the item's side, then the rest).
    pub groups: Vec<Group>,
}

/// The significance a partition's split needs, Bonferroni-adjusted over the splits tried
/// at its group.
const SPLIT_LEVEL: f64 = 0.05;

/// Splits `base` into non-overlapping groups that together hold everyone, by a tree of
/// at most `depth` levels: each split is one item against the rest of its group, the one
/// whose two sides' estimates (rate or mean, or treatment effect) differ most
/// significantly, `(e₁ − e₂)² / (v₁ + v₂)` with `v` each estimate's variance, among the
/// splits that leave both sides at least the minimum support (for an uplift, the
/// treatment-by-split interaction test of Su et al. 2009, "Subgroup analysis via recursive
/// partitioning"). A group is split only when its best split is significant at 5%
/// Bonferroni-adjusted over the m splits tried there (two-sided normal p ≤ 0.05 / m), so
/// chance differences among many candidate splits do not become groups. So "send to these,
/// not to those" is one answer: the groups' verdicts.
pub fn partition(
    items: &[Item],
    base: &RoaringBitmap,
    measure: Measure<'_>,
    settings: &Settings,
    depth: usize,
) -> Partition {
    let (base_value, base_size, scored) = match measure {
        Measure::Target(target) => {
            let (value, n) = target.base(base);
            (value, n, None)
        }
        Measure::Uplift {
            treated,
            control,
            outcome,
            kind,
        } => {
            let overall = compare(
                kind,
                &Moments::of(outcome, treated),
                &Moments::of(outcome, control),
            )
            .map_or(0.0, |c| c.abs_lift);
            (overall, (treated | control).len(), Some(kind))
        }
    };
    let stat = |members: &RoaringBitmap| match measure {
        Measure::Target(target) => target_stat(target, base_value, members),
        Measure::Uplift {
            treated,
            control,
            outcome,
            kind,
        } => uplift_stat(kind, outcome, treated, control, members),
    };
    let min = settings.min_support.max(1);
    let mut leaves: Vec<(RoaringBitmap, Vec<(usize, bool)>)> = Vec::new();
    let mut todo = vec![(base.clone(), Vec::<(usize, bool)>::new())];
    while let Some((members, path)) = todo.pop() {
        let mut best: Option<(f64, usize, RoaringBitmap, RoaringBitmap)> = None;
        let mut candidates = 0usize;
        if path.len() < depth {
            for (i, item) in items.iter().enumerate() {
                if path.iter().any(|(j, _)| *j == i) {
                    continue;
                }
                let inside = &members & &item.members;
                if inside.len() < min || members.len() - inside.len() < min {
                    continue;
                }
                let outside = &members - &inside;
                let (Some(a), Some(b)) = (stat(&inside), stat(&outside)) else {
                    continue;
                };
                let spread = a.variance + b.variance;
                if spread <= 0.0 {
                    continue;
                }
                candidates += 1;
                let z2 = (a.estimate() - b.estimate()).powi(2) / spread;
                if best.as_ref().is_none_or(|(z, ..)| z2 > *z) {
                    best = Some((z2, i, inside, outside));
                }
            }
        }
        match best {
            Some((z2, i, inside, outside))
                if normal_two_sided_p(z2.sqrt()) <= SPLIT_LEVEL / candidates as f64 =>
            {
                // Pushed in reverse: the item's side is split (and listed) first. The rest
                // is named by an item when one has exactly its members there (the other
                // value of a two-valued dimension), else as `not` the item.
                let mut rest = path.clone();
                let named = items
                    .iter()
                    .position(|other| (&members & &other.members) == outside);
                rest.push(named.map_or((i, false), |j| (j, true)));
                todo.push((outside, rest));
                let mut within = path;
                within.push((i, true));
                todo.push((inside, within));
            }
            _ => leaves.push((members, path)),
        }
    }
    let groups = leaves
        .into_iter()
        .map(|(members, path)| {
            let s = stat(&members);
            let mut all = Vec::new();
            // `not b` says nothing once a group is within an `a` that no `b` is in (two
            // values of one dimension): it is left out of the condition.
            let implied = |j: usize| {
                path.iter()
                    .any(|&(i, inside)| inside && items[i].members.is_disjoint(&items[j].members))
            };
            for &(i, inside) in &path {
                if !inside && implied(i) {
                    continue;
                }
                match (&items[i].condition, inside) {
                    (Condition::And { all: parts }, true) => all.extend(parts.iter().cloned()),
                    (c, true) => all.push(c.clone()),
                    (c, false) => all.push(Condition::Not {
                        not: Box::new(c.clone()),
                    }),
                }
            }
            let condition = match all.len() {
                0 => None,
                1 => all.pop(),
                _ => Some(Condition::And { all }),
            };
            let (value, ci, p, control) = s
                .as_ref()
                .map_or((f64::NAN, (f64::NAN, f64::NAN), f64::NAN, None), |s| {
                    (s.value, s.ci, s.p, s.control)
                });
            let (lift, verdict) = match scored {
                Some(_) => {
                    let effect = s.as_ref().map_or(f64::NAN, Stat::estimate);
                    let verdict = if ci.0 > 0.0 {
                        Verdict::Works
                    } else if ci.1 < 0.0 {
                        Verdict::Backfires
                    } else {
                        Verdict::NoEffect
                    };
                    (effect, verdict)
                }
                None => {
                    let verdict = if p >= 0.05 || p.is_nan() {
                        Verdict::AsBase
                    } else if value > base_value {
                        Verdict::Above
                    } else {
                        Verdict::Below
                    };
                    let lift = if base_value != 0.0 {
                        value / base_value
                    } else {
                        f64::NAN
                    };
                    (lift, verdict)
                }
            };
            Group {
                condition,
                estimate: Estimate {
                    support: s.as_ref().map_or(members.len(), |s| s.support),
                    value,
                    lift,
                    ci_low: ci.0,
                    ci_high: ci.1,
                    p_value: p,
                    verdict,
                    control_value: control,
                },
                members,
            }
        })
        .collect();
    Partition {
        base: base_value,
        base_size,
        groups,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bh_matches_r_p_adjust() {
        // By hand (p·m/rank, then the running minimum from the largest p), as R's
        // p.adjust(c(0.01, 0.04, 0.03, 0.005, 0.2), "BH") = 0.025 0.05 0.05 0.025 0.2.
        let q = benjamini_hochberg(&[0.01, 0.04, 0.03, 0.005, 0.2]);
        let expected = [0.025, 0.05, 0.05, 0.025, 0.2];
        for (a, b) in q.iter().zip(expected) {
            assert!((a - b).abs() < 1e-12, "{q:?}");
        }
    }

    fn item(dimension: usize, name: &str, members: impl IntoIterator<Item = u32>) -> Item {
        Item {
            dimension,
            label: "yes".into(),
            condition: microseg_core::condition::parse(&format!("{name} = \"yes\"")).unwrap(),
            members: members.into_iter().collect(),
        }
    }

    #[test]
    fn a_conjunction_that_adds_nobody_is_not_reported() {
        // 1,000 people; `a` (the first 200) all have `b` (the first 400): `a and b` has
        // exactly a's members. The target is a's members plus a few, so both a and b
        // differ from the base; only `a`, `b` and `c`-conjunctions that narrow may appear.
        let a = item(0, "a", 0..200);
        let b = item(1, "b", 0..400);
        let c = item(2, "c", (0..1000).filter(|i| i % 2 == 0));
        let target = Target::Rate((0..220).collect());
        let base: RoaringBitmap = (0..1000).collect();
        let found = discover(&[a, b, c], &base, &target, &Settings::default());
        let names: Vec<String> = found
            .segments
            .iter()
            .map(|f| f.condition.to_string())
            .collect();
        assert!(names.contains(&"a = \"yes\"".to_string()), "{names:?}");
        assert!(
            !names
                .iter()
                .any(|n| n.contains("a = ") && n.contains("b = ")),
            "a and b repeats a: {names:?}"
        );
        // Tested: a, b, c, a∧c, b∧c (a∧b, a∧b∧c repeat a and a∧c).
        assert_eq!(found.tested, 5, "{names:?}");
    }

    #[test]
    fn a_partition_splits_where_the_rates_differ_and_stops_where_they_do_not() {
        // 400 people; `a` is the first 200. Targets: in a, i % 10 < 6 (rate 0.6); outside,
        // i % 10 < 2 (rate 0.2). `b` (even ids) has the same rate as odd ids on both sides
        // (3 of 5 and 1 of 5 per ten), so it never splits (z = 0). By hand: the split on
        // `a` has z² = (0.6 − 0.2)² / (0.6·0.4/200 + 0.2·0.8/200) = 0.16 / 0.002 = 80, far
        // past the 2.24² that two splits tried at 5% Bonferroni need.
        let a = item(0, "a", 0..200);
        let b = item(1, "b", (0..400).filter(|i| i % 2 == 0));
        let target = Target::Rate(
            (0..400u32)
                .filter(|i| if *i < 200 { i % 10 < 6 } else { i % 10 < 2 })
                .collect(),
        );
        let base: RoaringBitmap = (0..400).collect();
        let settings = Settings {
            min_support: 50,
            ..Settings::default()
        };
        let p = partition(&[a, b], &base, Measure::Target(&target), &settings, 3);
        assert_eq!(p.base, 0.4);
        assert_eq!(p.base_size, 400);
        let rows: Vec<(String, u64, f64, Verdict)> = p
            .groups
            .iter()
            .map(|g| {
                (
                    g.condition.as_ref().unwrap().to_string(),
                    g.estimate.support,
                    g.estimate.value,
                    g.estimate.verdict,
                )
            })
            .collect();
        assert_eq!(
            rows,
            vec![
                ("a = \"yes\"".to_string(), 200, 0.6, Verdict::Above),
                ("not a = \"yes\"".to_string(), 200, 0.2, Verdict::Below),
            ]
        );
        assert!((p.groups[0].estimate.lift - 1.5).abs() < 1e-12);
        // Score test against the base, by hand: z = 0.2 / √(0.4·0.6/200) = 5.7735.
        assert!(
            (p.groups[0].estimate.p_value - normal_two_sided_p(5.773_502_691_896_258)).abs()
                < 1e-12
        );
    }

    #[test]
    fn a_partition_of_a_uniform_base_is_one_group() {
        let b = item(0, "b", (0..400).filter(|i| i % 2 == 0));
        let target = Target::Rate((0..400u32).filter(|i| i % 4 < 2).collect());
        let base: RoaringBitmap = (0..400).collect();
        let p = partition(
            &[b],
            &base,
            Measure::Target(&target),
            &Settings::default(),
            3,
        );
        assert_eq!(p.groups.len(), 1);
        assert!(p.groups[0].condition.is_none());
        assert_eq!(p.groups[0].estimate.verdict, Verdict::AsBase);
        assert_eq!(p.groups[0].estimate.support, 400);
    }
}
