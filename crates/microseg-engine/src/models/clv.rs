//! Predicted customer lifetime value: the BG/NBD model of purchase frequency and dropout
//! (Fader, Hardie and Lee 2005, "Counting your customers the easy way") and the
//! Gamma-Gamma model of spend (Fader and Hardie, note 025), both fitted by maximum
//! likelihood.
//!
//! A customer is summarised by the days on which they ordered: `x` repeat purchases (the
//! distinct order days after the first), `t_x` the time from the first to the last order
//! day, `T` the time from the first order day to the end of the period, all in the model's
//! time unit, and the mean spend of the repeat days (orders of one day summed).

use std::collections::HashMap;

use microseg_core::Timestamp;
use serde::{Deserialize, Serialize};

use super::optimize::nelder_mead;
use crate::columnar::EventTable;
use crate::special::{hyp2f1, ln_beta, ln_gamma};

const DAY_MS: i64 = 86_400_000;

/// The smallest data a fit accepts.
pub const MIN_CUSTOMERS: usize = 30;
/// The fewest repeat buyers a fit accepts (for each of the two models).
pub const MIN_REPEATERS: usize = 10;

/// Why a model cannot be fitted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClvError {
    /// Too little data for the model to mean anything.
    #[error("cannot fit {model}: {reason}")]
    TooLittleData {
        /// Which model.
        model: &'static str,
        /// What is missing.
        reason: String,
    },
    /// The optimiser did not find a maximum.
    #[error("cannot fit {model}: the likelihood has no maximum at finite parameters ({detail})")]
    NoMaximum {
        /// Which model.
        model: &'static str,
        /// Where it ended.
        detail: String,
    },
}

/// The time unit of `x`, `t_x` and `T`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeUnit {
    /// Days.
    Day,
    /// Weeks (7 days).
    Week,
}

impl TimeUnit {
    /// Days in one unit.
    pub fn days(self) -> f64 {
        match self {
            TimeUnit::Day => 1.0,
            TimeUnit::Week => 7.0,
        }
    }

    /// One month in this unit, as the `lifetimes` package counts it for discounting
    /// (30 days, or 4.345 weeks).
    pub fn month(self) -> f64 {
        match self {
            TimeUnit::Day => 30.0,
            TimeUnit::Week => 4.345,
        }
    }

    /// `ms` milliseconds in this unit.
    pub fn of_ms(self, ms: i64) -> f64 {
        ms as f64 / (self.days() * DAY_MS as f64)
    }

    /// The unit's name: `day` or `week`.
    pub fn name(self) -> &'static str {
        match self {
            TimeUnit::Day => "day",
            TimeUnit::Week => "week",
        }
    }
}

/// One customer's purchase history, as the models see it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Repeat purchases: distinct order days after the first.
    pub x: f64,
    /// First to last order day.
    pub t_x: f64,
    /// First order day to the end of the period.
    pub t: f64,
    /// Mean spend of the repeat order days (`None` without repeats).
    pub monetary: Option<f64>,
}

/// Summarises every profile's orders (events whose name code `is_order` marks) up to `end`,
/// day by day in UTC; `None` for profiles without orders by then.
pub fn summarise(
    events: &EventTable,
    is_order: &[bool],
    end: Timestamp,
    unit: TimeUnit,
) -> Vec<Option<Summary>> {
    let end_day = end.0.div_euclid(DAY_MS);
    let mut out = Vec::with_capacity(events.profiles());
    let mut days: Vec<(i64, f64)> = Vec::new();
    for p in 0..events.profiles() {
        days.clear();
        for row in events.events_of(p as u32) {
            if !is_order[events.name[row] as usize] || events.time[row] > end.0 {
                continue;
            }
            let revenue = events.revenue[row];
            let revenue = if revenue.is_nan() { 0.0 } else { revenue };
            days.push((events.time[row].div_euclid(DAY_MS), revenue));
        }
        out.push(summary_of_days(&mut days, end_day, unit));
    }
    out
}

/// Distinct order days per profile with an order after `start` and at or before `end`
/// (the holdout period of a fit).
pub fn order_days_between(
    events: &EventTable,
    is_order: &[bool],
    start: Timestamp,
    end: Timestamp,
) -> Vec<u32> {
    (0..events.profiles())
        .map(|p| {
            let mut last = None;
            let mut days = 0;
            for row in events.events_of(p as u32) {
                let t = events.time[row];
                if is_order[events.name[row] as usize] && t > start.0 && t <= end.0 {
                    let day = t.div_euclid(DAY_MS);
                    if last != Some(day) {
                        days += 1;
                        last = Some(day);
                    }
                }
            }
            days
        })
        .collect()
}

/// The summary of orders `(day, spend)` in time order up to `end_day`; orders of one day
/// are merged into one purchase, their spend summed.
fn summary_of_days(days: &mut Vec<(i64, f64)>, end_day: i64, unit: TimeUnit) -> Option<Summary> {
    days.dedup_by(|b, a| {
        if a.0 == b.0 {
            a.1 += b.1;
            true
        } else {
            false
        }
    });
    let (first, _) = *days.first()?;
    let (last, _) = *days.last()?;
    let x = days.len() - 1;
    let monetary = (x > 0).then(|| days[1..].iter().map(|d| d.1).sum::<f64>() / x as f64);
    Some(Summary {
        x: x as f64,
        t_x: (last - first) as f64 / unit.days(),
        t: (end_day - first) as f64 / unit.days(),
        monetary,
    })
}

/// BG/NBD parameters: purchase rates are Gamma(r, α) across customers, dropout
/// probabilities Beta(a, b).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BgNbd {
    /// Shape of the purchase-rate distribution.
    pub r: f64,
    /// Scale of the purchase-rate distribution (in the model's time unit).
    pub alpha: f64,
    /// Dropout Beta a.
    pub a: f64,
    /// Dropout Beta b.
    pub b: f64,
}

/// Gamma-Gamma parameters of spend per transaction.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct GammaGamma {
    /// Shape of a transaction's spend.
    pub p: f64,
    /// Shape of the spend-scale distribution.
    pub q: f64,
    /// Scale of the spend-scale distribution.
    pub gamma: f64,
}

/// A fitted parameter set with its log-likelihood and the work it took.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fitted<P> {
    /// The maximum-likelihood parameters.
    pub params: P,
    /// The log-likelihood there.
    pub log_likelihood: f64,
    /// Customers the fit used.
    pub customers: usize,
    /// Likelihood evaluations.
    pub evaluations: usize,
}

/// The distinct values of `values`, sorted, and each value's index among them: terms of the
/// likelihoods that depend only on `x` are computed once per distinct `x`.
fn distinct_index(values: impl Iterator<Item = f64> + Clone) -> (Vec<f64>, Vec<usize>) {
    let mut distinct: Vec<f64> = values.clone().collect();
    distinct.sort_by(f64::total_cmp);
    distinct.dedup();
    let index = values
        .map(|v| distinct.partition_point(|&d| d < v))
        .collect();
    (distinct, index)
}

/// Distinct `(x, t_x, T)` triples with their counts: customers with one history share one
/// likelihood term.
fn grouped(customers: &[Summary]) -> Vec<(Summary, f64)> {
    let mut groups: HashMap<(u64, u64, u64), usize> = HashMap::new();
    let mut out: Vec<(Summary, f64)> = Vec::new();
    for c in customers {
        let key = (c.x.to_bits(), c.t_x.to_bits(), c.t.to_bits());
        match groups.get(&key) {
            Some(&i) => out[i].1 += 1.0,
            None => {
                groups.insert(key, out.len());
                out.push((*c, 1.0));
            }
        }
    }
    out
}

impl BgNbd {
    /// Parameters from their logarithms (the optimiser's coordinates).
    fn from_log(theta: &[f64]) -> BgNbd {
        BgNbd {
            r: theta[0].exp(),
            alpha: theta[1].exp(),
            a: theta[2].exp(),
            b: theta[3].exp(),
        }
    }

    /// Fits the model by maximum likelihood to customers with at least one purchase.
    pub fn fit(customers: &[Summary]) -> Result<Fitted<BgNbd>, ClvError> {
        let repeaters = customers.iter().filter(|c| c.x > 0.0).count();
        if customers.len() < MIN_CUSTOMERS || repeaters < MIN_REPEATERS {
            return Err(ClvError::TooLittleData {
                model: "BG/NBD",
                reason: format!(
                    "{} customers with orders and {repeaters} repeat buyers; it needs at least \
                     {MIN_CUSTOMERS} customers and {MIN_REPEATERS} repeat buyers",
                    customers.len()
                ),
            });
        }
        let groups = grouped(customers);
        let (xs, x_index) = distinct_index(groups.iter().map(|g| g.0.x));
        let groups: Vec<(Summary, f64, usize)> = groups
            .into_iter()
            .zip(x_index)
            .map(|((c, w), xi)| (c, w, xi))
            .collect();
        let n = customers.len() as f64;
        let mean_t = customers.iter().map(|c| c.t).sum::<f64>() / n;
        let objective =
            |theta: &[f64]| -BgNbd::from_log(theta).log_likelihood_grouped(&groups, &xs) / n;
        let start = [0.0, mean_t.max(1e-3).ln(), 0.0, 0.0];
        let m = nelder_mead(objective, &start, 20_000);
        check_finite("BG/NBD", &m.x, m.value, m.converged)?;
        Ok(Fitted {
            params: BgNbd::from_log(&m.x),
            log_likelihood: -m.value * n,
            customers: customers.len(),
            evaluations: m.evaluations,
        })
    }

    /// The log-likelihood of grouped customers: the terms that depend only on `x` are
    /// computed once per distinct `x` (`xs`, with each group's index into it).
    fn log_likelihood_grouped(&self, groups: &[(Summary, f64, usize)], xs: &[f64]) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let constant = -ln_gamma(r) + r * alpha.ln() - ln_beta(a, b);
        let by_x: Vec<(f64, f64)> = xs
            .iter()
            .map(|&x| {
                let front = ln_gamma(r + x) + ln_beta(a, b + x) + constant;
                let repeat = if x > 0.0 {
                    a.ln() - (b + x - 1.0).ln()
                } else {
                    0.0
                };
                (front, repeat)
            })
            .collect();
        let part = |groups: &[(Summary, f64, usize)]| -> f64 {
            groups
                .iter()
                .map(|(c, w, xi)| {
                    let (front, repeat) = by_x[*xi];
                    let a3 = -(r + c.x) * (alpha + c.t).ln();
                    let ll = if c.x > 0.0 {
                        let a4 = repeat - (r + c.x) * (alpha + c.t_x).ln();
                        let hi = a3.max(a4);
                        front + hi + ((a3 - hi).exp() + (a4 - hi).exp()).ln()
                    } else {
                        front + a3
                    };
                    w * ll
                })
                .sum()
        };
        // Large fits sum on every core (a thread per chunk; each evaluation is a pass).
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        if groups.len() < 20_000 || threads < 2 {
            return part(groups);
        }
        let chunk = groups.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let handles: Vec<_> = groups
                .chunks(chunk)
                .map(|g| scope.spawn(move || part(g)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().expect("likelihood thread"))
                .sum()
        })
    }

    /// The probability that a customer with this history is still active (eq. 13 of the
    /// paper); 1 without repeat purchases, as the model cannot have seen them drop out.
    pub fn p_alive(&self, c: &Summary) -> f64 {
        if c.x == 0.0 {
            return 1.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let ratio = (r + c.x) * ((alpha + c.t) / (alpha + c.t_x)).ln();
        1.0 / (1.0 + (a / (b + c.x - 1.0)) * ratio.exp())
    }

    /// Expected repeat purchases in the next `horizon` units for a customer with this
    /// history (eq. 10 of the paper).
    pub fn expected_purchases(&self, c: &Summary, horizon: f64) -> f64 {
        if horizon <= 0.0 {
            return 0.0;
        }
        let BgNbd { r, alpha, a, b } = *self;
        let x = c.x;
        let z = horizon / (alpha + c.t + horizon);
        let power = ((alpha + c.t) / (alpha + c.t + horizon)).powf(r + x);
        // Eq. (10)'s denominator is 1 / P(alive).
        (a + b + x - 1.0) / (a - 1.0)
            * (1.0 - power * hyp2f1(r + x, b + x, a + b + x - 1.0, z))
            * self.p_alive(c)
    }

    /// Customers by repeat purchases 0, 1, .., `top − 1` and `top` or more: how many there
    /// are, and how many the model expects (Σ P(X(Tᵢ) = x) over the customers, eq. 8; the
    /// paper's figure 2), each probability computed once per distinct `T`.
    pub fn repeat_histogram(&self, customers: &[Summary], top: u32) -> Vec<(u64, f64)> {
        let mut out = vec![(0u64, 0.0); top as usize + 1];
        for c in customers {
            out[(c.x as usize).min(top as usize)].0 += 1;
        }
        let (ts, t_index) = distinct_index(customers.iter().map(|c| c.t));
        let mut weights = vec![0.0; ts.len()];
        for i in t_index {
            weights[i] += 1.0;
        }
        for (t, w) in ts.iter().zip(weights) {
            for x in 0..top {
                out[x as usize].1 += w * self.probability_of_count(x, *t);
            }
        }
        let below: f64 = out[..top as usize].iter().map(|b| b.1).sum();
        out[top as usize].1 = customers.len() as f64 - below;
        out
    }

    /// The probability that a new customer makes exactly `x` repeat purchases in a period of
    /// length `t` (eq. 8 of the paper).
    pub fn probability_of_count(&self, x: u32, t: f64) -> f64 {
        let BgNbd { r, alpha, a, b } = *self;
        let xf = x as f64;
        let ln_nb = |j: f64| {
            ln_gamma(r + j) - ln_gamma(r) - ln_gamma(j + 1.0)
                + r * (alpha / (alpha + t)).ln()
                + j * (t / (alpha + t)).ln()
        };
        let first = (ln_beta(a, b + xf) - ln_beta(a, b) + ln_nb(xf)).exp();
        if x == 0 {
            return first;
        }
        let tail: f64 = (0..x).map(|j| ln_nb(j as f64).exp()).sum();
        let second = (ln_beta(a + 1.0, b + xf - 1.0) - ln_beta(a, b)).exp() * (1.0 - tail);
        first + second
    }
}

impl GammaGamma {
    /// Fits the model by maximum likelihood to the repeat buyers (customers with `x > 0`
    /// and a positive mean repeat spend); returns how many were left out for spending 0.
    pub fn fit(customers: &[Summary]) -> Result<(Fitted<GammaGamma>, usize), ClvError> {
        let buyers: Vec<(f64, f64)> = customers
            .iter()
            .filter(|c| c.x > 0.0)
            .filter_map(|c| c.monetary.map(|m| (c.x, m)))
            .collect();
        let usable: Vec<(f64, f64)> = buyers.iter().copied().filter(|b| b.1 > 0.0).collect();
        let zero = buyers.len() - usable.len();
        if usable.len() < MIN_REPEATERS {
            return Err(ClvError::TooLittleData {
                model: "Gamma-Gamma",
                reason: format!(
                    "{} repeat buyers with a positive spend; it needs at least {MIN_REPEATERS}",
                    usable.len()
                ),
            });
        }
        let n = usable.len() as f64;
        let mean = usable.iter().map(|b| b.1).sum::<f64>() / n;
        // Terms of one x are computed once per distinct x; ln m and ln x once per buyer.
        let (xs, x_index) = distinct_index(usable.iter().map(|b| b.0));
        let rows: Vec<(usize, f64, f64, f64)> = usable
            .iter()
            .zip(x_index)
            .map(|(&(x, m), xi)| (xi, x, m, m.ln()))
            .collect();
        let objective = |theta: &[f64]| {
            let (p, q, gamma) = (theta[0].exp(), theta[1].exp(), theta[2].exp());
            let constant = q * gamma.ln() - ln_gamma(q);
            let by_x: Vec<f64> = xs
                .iter()
                .map(|&x| ln_gamma(p * x + q) - ln_gamma(p * x) + p * x * x.ln() + constant)
                .collect();
            -rows
                .iter()
                .map(|&(xi, x, m, ln_m)| {
                    by_x[xi] + (p * x - 1.0) * ln_m - (p * x + q) * (gamma + m * x).ln()
                })
                .sum::<f64>()
                / n
        };
        let m = nelder_mead(objective, &[0.0, 0.0, mean.ln()], 20_000);
        check_finite("Gamma-Gamma", &m.x, m.value, m.converged)?;
        Ok((
            Fitted {
                params: GammaGamma {
                    p: m.x[0].exp(),
                    q: m.x[1].exp(),
                    gamma: m.x[2].exp(),
                },
                log_likelihood: -m.value * n,
                customers: usable.len(),
                evaluations: m.evaluations,
            },
            zero,
        ))
    }

    /// The expected spend per transaction of a customer with `x` repeat transactions of mean
    /// `m` (the population mean p γ / (q − 1) when `x` is 0).
    pub fn expected_spend(&self, x: f64, m: f64) -> f64 {
        let GammaGamma { p, q, gamma } = *self;
        p * (gamma + x * m) / (p * x + q - 1.0)
    }
}

fn check_finite(
    model: &'static str,
    theta: &[f64],
    value: f64,
    converged: bool,
) -> Result<(), ClvError> {
    if !value.is_finite() || theta.iter().any(|t| t.abs() > 25.0) || !converged {
        let params: Vec<String> = theta.iter().map(|t| format!("{:.3e}", t.exp())).collect();
        return Err(ClvError::NoMaximum {
            model,
            detail: format!(
                "parameters [{}], {}",
                params.join(", "),
                if converged {
                    "diverging"
                } else {
                    "not converged"
                }
            ),
        });
    }
    Ok(())
}

/// A stored CLV model: both parameter sets and how they were fitted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClvModel {
    /// The time unit the parameters are in.
    pub unit: TimeUnit,
    /// The end of the calibration period.
    pub calibration_end: Timestamp,
    /// Purchase frequency and dropout.
    pub bgnbd: BgNbd,
    /// Spend per transaction.
    pub gamma_gamma: GammaGamma,
    /// Monthly discount rate for `clv_12m`.
    pub monthly_discount: f64,
}

/// A fitted model with what it was fitted on and how well it describes the data.
#[derive(Debug, Clone, PartialEq)]
pub struct ClvFit {
    /// The model to store.
    pub model: ClvModel,
    /// The BG/NBD fit.
    pub bgnbd: Fitted<BgNbd>,
    /// The Gamma-Gamma fit.
    pub gamma_gamma: Fitted<GammaGamma>,
    /// Repeat buyers left out of Gamma-Gamma for a zero spend.
    pub zero_spend: usize,
    /// Customers (profiles with an order by the calibration end).
    pub customers: usize,
    /// Customers with a repeat purchase.
    pub repeat_buyers: usize,
    /// Customers by repeat purchases in the calibration period, 0 to 6 and 7 or more:
    /// (actual, expected by the model).
    pub repeat_histogram: Vec<(u64, f64)>,
    /// With an as-of after the calibration end: the period in between as a holdout.
    pub holdout: Option<Holdout>,
}

/// Repeat purchases after the calibration end: predicted by the fit beside what happened.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Holdout {
    /// Its length in the model's unit (whole days).
    pub length: f64,
    /// Distinct order days of the calibration's customers in it.
    pub actual: f64,
    /// The model's expected purchases in it, summed over the same customers.
    pub predicted: f64,
}

/// Fits BG/NBD and Gamma-Gamma to the orders (events whose name code `is_order` marks)
/// up to `calibration_end`, in `unit`; with `as_of` after the calibration end, compares
/// the fit's predictions for the period in between with what happened. The three steps
/// ([`Calibration::new`], [`BgNbd::fit`], [`Calibration::finish`]) are public for callers
/// that time them.
pub fn fit(
    events: &EventTable,
    is_order: &[bool],
    calibration_end: Timestamp,
    as_of: Timestamp,
    unit: TimeUnit,
    monthly_discount: f64,
) -> Result<ClvFit, ClvError> {
    let calibration = Calibration::new(events, is_order, calibration_end, unit);
    let bg = BgNbd::fit(calibration.customers())?;
    calibration.finish(bg, events, is_order, as_of, monthly_discount)
}

/// Every profile's orders up to the calibration end, summarised: the input of both fits.
#[derive(Debug, Clone)]
pub struct Calibration {
    /// Per profile (`None` without an order by the end).
    summaries: Vec<Option<Summary>>,
    /// The customers: profiles with an order.
    customers: Vec<Summary>,
    end: Timestamp,
    unit: TimeUnit,
}

impl Calibration {
    /// Summarises the orders (events whose name code `is_order` marks) up to `end`.
    pub fn new(events: &EventTable, is_order: &[bool], end: Timestamp, unit: TimeUnit) -> Self {
        let summaries = summarise(events, is_order, end, unit);
        let customers = summaries.iter().flatten().copied().collect();
        Calibration {
            summaries,
            customers,
            end,
            unit,
        }
    }

    /// The customers' summaries, [`BgNbd::fit`]'s input.
    pub fn customers(&self) -> &[Summary] {
        &self.customers
    }

    /// Fits Gamma-Gamma beside the BG/NBD fit `bg` and, with `as_of` after the
    /// calibration end, compares `bg`'s predictions for the period in between with what
    /// happened.
    pub fn finish(
        self,
        bg: Fitted<BgNbd>,
        events: &EventTable,
        is_order: &[bool],
        as_of: Timestamp,
        monthly_discount: f64,
    ) -> Result<ClvFit, ClvError> {
        let Calibration {
            summaries,
            customers,
            end: calibration_end,
            unit,
        } = self;
        let (gg, zero_spend) = GammaGamma::fit(&customers)?;
        let holdout = (as_of > calibration_end).then(|| {
            let days = order_days_between(events, is_order, calibration_end, as_of);
            let whole_days =
                (as_of.0.div_euclid(DAY_MS) - calibration_end.0.div_euclid(DAY_MS)) * DAY_MS;
            let length = unit.of_ms(whole_days);
            let (mut actual, mut predicted) = (0.0, 0.0);
            for (p, s) in summaries.iter().enumerate() {
                if let Some(s) = s {
                    actual += days[p] as f64;
                    predicted += bg.params.expected_purchases(s, length);
                }
            }
            Holdout {
                length,
                actual,
                predicted,
            }
        });
        Ok(ClvFit {
            model: ClvModel {
                unit,
                calibration_end,
                bgnbd: bg.params,
                gamma_gamma: gg.params,
                monthly_discount,
            },
            repeat_histogram: bg.params.repeat_histogram(&customers, 7),
            repeat_buyers: customers.iter().filter(|c| c.x > 0.0).count(),
            customers: customers.len(),
            bgnbd: bg,
            gamma_gamma: gg,
            zero_spend,
            holdout,
        })
    }
}

/// The CLV predictions that behave like metrics, with their names.
pub const PREDICTION_NAMES: [&str; 4] =
    ["p_alive", "predicted_orders_90d", "expected_aov", "clv_12m"];

/// One customer's predictions.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prediction {
    /// Probability of being active.
    pub p_alive: f64,
    /// Expected repeat orders in the horizon.
    pub predicted_orders: f64,
    /// Expected spend per order.
    pub expected_aov: f64,
    /// Discounted value of the next 12 months.
    pub clv_12m: f64,
}

impl ClvModel {
    /// Predictions for one customer over `horizon` units.
    pub fn predict(&self, c: &Summary, horizon: f64) -> Prediction {
        let aov = self
            .gamma_gamma
            .expected_spend(c.x, c.monetary.unwrap_or(0.0));
        Prediction {
            p_alive: self.bgnbd.p_alive(c),
            predicted_orders: self.bgnbd.expected_purchases(c, horizon),
            expected_aov: aov,
            clv_12m: self.lifetime_value(c, aov, 12),
        }
    }

    /// Discounted value of the next `months`: Σᵢ (E[Y(i)] − E[Y(i − 1)]) · aov / (1 + d)ⁱ
    /// over months i (as `lifetimes`' `customer_lifetime_value`).
    pub fn lifetime_value(&self, c: &Summary, aov: f64, months: u32) -> f64 {
        let month = self.unit.month();
        let mut previous = 0.0;
        let mut value = 0.0;
        for i in 1..=months {
            let expected = self.bgnbd.expected_purchases(c, i as f64 * month);
            value += (expected - previous) * aov / (1.0 + self.monthly_discount).powi(i as i32);
            previous = expected;
        }
        value
    }
}

/// Predictions for every profile, the columns behind the CLV metrics.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Predictions {
    /// Per profile; `None` for profiles without orders.
    pub rows: Vec<Option<Prediction>>,
}

impl Predictions {
    /// Predicts for every summarised profile with a horizon of `horizon` units.
    pub fn compute(model: &ClvModel, summaries: &[Option<Summary>], horizon: f64) -> Predictions {
        Predictions {
            rows: summaries
                .iter()
                .map(|s| s.as_ref().map(|s| model.predict(s, horizon)))
                .collect(),
        }
    }

    /// The value of prediction `name` for profile `p`.
    pub fn value(&self, name: &str, p: usize) -> Option<f64> {
        let row = self.rows.get(p)?.as_ref()?;
        Some(match name {
            "p_alive" => row.p_alive,
            "predicted_orders_90d" => row.predicted_orders,
            "expected_aov" => row.expected_aov,
            "clv_12m" => row.clv_12m,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(x: f64, t_x: f64, t: f64) -> Summary {
        Summary {
            x,
            t_x,
            t,
            monetary: None,
        }
    }

    // Reference values: the `lifetimes` package 0.11.3 (BetaGeoFitter with these params_)
    // at the paper's CDNOW parameters (r, α, a, b) = (0.243, 4.414, 0.793, 2.426).
    const PAPER: BgNbd = BgNbd {
        r: 0.243,
        alpha: 4.414,
        a: 0.793,
        b: 2.426,
    };

    #[test]
    fn predictions_match_lifetimes() {
        // (x, t_x, T) -> lifetimes' conditional_probability_alive and
        // conditional_expected_number_of_purchases_up_to_time(13 and 52, ...).
        let cases = [
            (
                (0.0, 0.0, 30.0),
                1.0,
                0.087_034_588_602_775_28,
                0.307_638_301_286_435_4,
            ),
            (
                (4.0, 30.0, 32.0),
                0.843_360_537_770_84,
                1.164_021_479_631_200_3,
                3.791_131_317_344_442,
            ),
            (
                (4.0, 5.0, 32.0),
                0.021_528_652_616_320_55,
                0.029_714_236_024_314_51,
                0.096_777_055_006_265_42,
            ),
            (
                (2.0, 30.0, 35.0),
                0.761_159_22,
                0.522_642_444_176_205_8,
                1.761_784_931_307_332_2,
            ),
        ];
        for ((x, t_x, t), alive, y13, y52) in cases {
            let c = s(x, t_x, t);
            assert!((PAPER.p_alive(&c) - alive).abs() < 1e-8, "{x} {t_x} {t}");
            assert!((PAPER.expected_purchases(&c, 13.0) - y13).abs() < 1e-10);
            assert!((PAPER.expected_purchases(&c, 52.0) - y52).abs() < 1e-10);
        }
    }

    #[test]
    fn the_histogram_counts_customers_and_spreads_the_model_over_them() {
        let customers = [s(0.0, 0.0, 39.0), s(1.0, 3.0, 39.0), s(9.0, 30.0, 20.0)];
        let h = PAPER.repeat_histogram(&customers, 2);
        assert_eq!(h.iter().map(|b| b.0).collect::<Vec<_>>(), [1, 1, 1]);
        let p0 = 2.0 * PAPER.probability_of_count(0, 39.0) + PAPER.probability_of_count(0, 20.0);
        assert!((h[0].1 - p0).abs() < 1e-12);
        assert!((h.iter().map(|b| b.1).sum::<f64>() - 3.0).abs() < 1e-12);
    }

    #[test]
    fn count_probabilities_sum_to_one() {
        let total: f64 = (0..400).map(|x| PAPER.probability_of_count(x, 39.0)).sum();
        assert!((total - 1.0).abs() < 1e-9, "{total}");
    }

    #[test]
    fn expected_purchases_grow_with_the_horizon_and_start_at_zero() {
        let c = s(2.0, 30.0, 35.0);
        assert_eq!(PAPER.expected_purchases(&c, 0.0), 0.0);
        let short = PAPER.expected_purchases(&c, 13.0);
        let long = PAPER.expected_purchases(&c, 52.0);
        assert!(0.0 < short && short < long, "{short} {long}");
    }

    #[test]
    fn days_merge_and_spend_averages_over_repeat_days() {
        let mut days = vec![(10, 5.0), (10, 7.0), (17, 20.0), (24, 10.0)];
        let sm = summary_of_days(&mut days, 38, TimeUnit::Week).unwrap();
        assert_eq!((sm.x, sm.t_x, sm.t), (2.0, 2.0, 4.0));
        assert_eq!(sm.monetary, Some(15.0));
        assert_eq!(summary_of_days(&mut Vec::new(), 38, TimeUnit::Day), None);
    }

    #[test]
    fn refuses_too_little_data() {
        let few = vec![s(1.0, 2.0, 10.0); 5];
        let err = BgNbd::fit(&few).unwrap_err();
        assert!(err.to_string().contains("at least 30 customers"), "{err}");
        let no_repeats = vec![s(0.0, 0.0, 10.0); 100];
        assert!(BgNbd::fit(&no_repeats).is_err());
    }
}

/// The published CDNOW estimates, reproduced from the paper's 1/10 sample.
#[cfg(test)]
mod cdnow {
    use super::*;

    /// Summaries of the CDNOW sample (tests/data/CDNOW_sample.txt: master id, sample id,
    /// YYYYMMDD, CDs, dollars) with the paper's 39-week calibration ending 1997-09-30.
    fn calibration() -> Vec<Summary> {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../tests/data/CDNOW_sample.txt"
        );
        let text = std::fs::read_to_string(path).unwrap();
        let mut by_customer: std::collections::BTreeMap<u32, Vec<(i64, f64)>> = Default::default();
        for line in text.lines() {
            let f: Vec<&str> = line.split_whitespace().collect();
            let day = microseg_core::time::parse_timestamp(&format!(
                "{}-{}-{}",
                &f[2][..4],
                &f[2][4..6],
                &f[2][6..]
            ))
            .unwrap()
            .0
            .div_euclid(DAY_MS);
            by_customer
                .entry(f[1].parse().unwrap())
                .or_default()
                .push((day, f[4].parse().unwrap()));
        }
        let end = microseg_core::time::parse_timestamp("1997-09-30")
            .unwrap()
            .0
            / DAY_MS;
        by_customer
            .into_values()
            .filter_map(|mut days| {
                days.sort_by_key(|d| d.0);
                days.retain(|d| d.0 <= end);
                summary_of_days(&mut days, end, TimeUnit::Week)
            })
            .collect()
    }

    #[test]
    fn reproduces_the_published_estimates() {
        let customers = calibration();
        assert_eq!(customers.len(), 2357);
        let fit = BgNbd::fit(&customers).unwrap();
        let p = fit.params;
        eprintln!(
            "BG/NBD {p:?} LL {} after {} evaluations",
            fit.log_likelihood, fit.evaluations
        );
        // Fader, Hardie and Lee (2005), table 1: r = 0.243, α = 4.414, a = 0.793,
        // b = 2.426, LL = -9582.4.
        let round = |x: f64, digits: i32| (x * 10f64.powi(digits)).round() / 10f64.powi(digits);
        assert_eq!(
            (
                round(p.r, 3),
                round(p.alpha, 3),
                round(p.a, 3),
                round(p.b, 3)
            ),
            (0.243, 4.414, 0.793, 2.426),
            "{p:?}"
        );
        assert_eq!(round(fit.log_likelihood, 1), -9582.4);
        // Fader and Hardie, note 025: p = 6.25, q = 3.74, γ = 15.44 on the 946 repeat buyers.
        let (gg, zero) = GammaGamma::fit(&customers).unwrap();
        assert_eq!((gg.customers, zero), (946, 0));
        let g = gg.params;
        eprintln!("Gamma-Gamma {g:?} LL {}", gg.log_likelihood);
        assert_eq!(
            (round(g.p, 2), round(g.q, 2), round(g.gamma, 2)),
            (6.25, 3.74, 15.44),
            "{g:?}"
        );
    }
}
