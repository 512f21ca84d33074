//! Derivative-free minimisation (Nelder–Mead), used to fit the models by maximum
//! likelihood over log-parameters.

/// The outcome of a minimisation.
#[derive(Debug, Clone, PartialEq)]
pub struct Minimum {
    /// Where the minimum is.
    pub x: Vec<f64>,
    /// The function's value there.
    pub value: f64,
    /// Function evaluations spent.
    pub evaluations: usize,
    /// Whether the simplex shrank below the tolerances before the evaluation budget ran out.
    pub converged: bool,
}

/// Minimises `f` from `start` by Nelder–Mead (reflection 1, expansion 2, contraction ½,
/// shrink ½), restarting from the best point with a fresh simplex until a restart no
/// longer improves the value: restarts guard against a simplex that collapsed early.
/// Non-finite values count as +∞, so `f` may refuse points by returning NaN.
pub fn nelder_mead(f: impl Fn(&[f64]) -> f64, start: &[f64], max_evaluations: usize) -> Minimum {
    let mut best = simplex_search(&f, start, max_evaluations);
    for _ in 0..20 {
        if best.evaluations >= max_evaluations {
            break;
        }
        let again = simplex_search(&f, &best.x, max_evaluations - best.evaluations);
        let improved = again.value < best.value - 1e-12 * best.value.abs().max(1.0);
        let evaluations = best.evaluations + again.evaluations;
        if again.value <= best.value {
            best = Minimum {
                evaluations,
                ..again
            };
        } else {
            best.evaluations = evaluations;
        }
        if !improved {
            break;
        }
    }
    best
}

fn simplex_search(f: &impl Fn(&[f64]) -> f64, start: &[f64], budget: usize) -> Minimum {
    let n = start.len();
    let eval = |x: &[f64]| {
        let v = f(x);
        if v.is_finite() {
            v
        } else {
            f64::INFINITY
        }
    };
    let mut points: Vec<Vec<f64>> = vec![start.to_vec()];
    for i in 0..n {
        let mut p = start.to_vec();
        p[i] += if p[i].abs() > 1e-3 {
            0.1 * p[i].abs()
        } else {
            0.1
        };
        points.push(p);
    }
    let mut values: Vec<f64> = points.iter().map(|p| eval(p)).collect();
    let mut evaluations = n + 1;
    let mut converged = false;
    while evaluations < budget {
        let mut order: Vec<usize> = (0..=n).collect();
        order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
        points = order.iter().map(|&i| points[i].clone()).collect();
        values = order.iter().map(|&i| values[i]).collect();
        let spread = (values[n] - values[0]).abs();
        let size = points[1..]
            .iter()
            .flat_map(|p| p.iter().zip(&points[0]).map(|(a, b)| (a - b).abs()))
            .fold(0.0f64, f64::max);
        if size < 1e-10 && spread <= 1e-12 * values[0].abs().max(1e-300) {
            converged = true;
            break;
        }
        let centroid: Vec<f64> = (0..n)
            .map(|j| points[..n].iter().map(|p| p[j]).sum::<f64>() / n as f64)
            .collect();
        let towards = |t: f64| -> Vec<f64> {
            (0..n)
                .map(|j| centroid[j] + t * (points[n][j] - centroid[j]))
                .collect()
        };
        let reflected = towards(-1.0);
        let fr = eval(&reflected);
        evaluations += 1;
        if fr < values[0] {
            let expanded = towards(-2.0);
            let fe = eval(&expanded);
            evaluations += 1;
            (points[n], values[n]) = if fe < fr {
                (expanded, fe)
            } else {
                (reflected, fr)
            };
        } else if fr < values[n - 1] {
            (points[n], values[n]) = (reflected, fr);
        } else {
            let (contracted, fc) = if fr < values[n] {
                let c = towards(-0.5);
                let fc = eval(&c);
                (c, fc)
            } else {
                let c = towards(0.5);
                let fc = eval(&c);
                (c, fc)
            };
            evaluations += 1;
            if fc < values[n].min(fr) {
                (points[n], values[n]) = (contracted, fc);
            } else {
                let best = points[0].clone();
                for i in 1..=n {
                    for (v, b) in points[i].iter_mut().zip(&best) {
                        *v = b + 0.5 * (*v - b);
                    }
                    values[i] = eval(&points[i]);
                }
                evaluations += n;
            }
        }
    }
    let best = (0..=n)
        .min_by(|&a, &b| values[a].total_cmp(&values[b]))
        .unwrap_or(0);
    Minimum {
        x: points[best].clone(),
        value: values[best],
        evaluations,
        converged,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_rosenbrock_minimum() {
        // Rosenbrock's valley: minimum 0 at (1, 1), a classic hard case for simplex search.
        let f = |x: &[f64]| 100.0 * (x[1] - x[0] * x[0]).powi(2) + (1.0 - x[0]).powi(2);
        let m = nelder_mead(f, &[-1.2, 1.0], 10_000);
        assert!(m.converged);
        assert!(
            (m.x[0] - 1.0).abs() < 1e-6 && (m.x[1] - 1.0).abs() < 1e-6,
            "{m:?}"
        );
    }

    #[test]
    fn treats_nan_as_a_wall() {
        // The minimum of (x - 2)² restricted to x < 1 (NaN beyond) is at the wall, x → 1.
        let f = |x: &[f64]| {
            if x[0] < 1.0 {
                (x[0] - 2.0).powi(2)
            } else {
                f64::NAN
            }
        };
        let m = nelder_mead(f, &[0.0], 10_000);
        assert!(m.x[0] < 1.0 && m.x[0] > 0.999, "{m:?}");
    }
}
