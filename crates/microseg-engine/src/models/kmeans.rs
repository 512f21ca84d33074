//! k-means with k-means++ initialisation and restarts (personas), and the silhouette
//! that picks k.
//!
//! Follows scikit-learn's `KMeans` (Lloyd's algorithm, greedy k-means++ with
//! 2 + ⌊ln k⌋ candidates per centre, the best of several restarts by inertia), so results
//! are comparable; Lloyd runs until no point changes cluster, where scikit-learn may stop
//! earlier on a centre-shift tolerance, so the inertia here is equal or slightly lower.

/// A seeded SplitMix64 generator (the engine's only randomness).
#[derive(Debug, Clone)]
pub struct SplitMix(u64);

impl SplitMix {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> SplitMix {
        SplitMix(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in 0..n.
    pub fn below(&mut self, n: usize) -> usize {
        (self.f64() * n as f64) as usize % n.max(1)
    }
}

/// Points in `d` dimensions, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Points<'a> {
    /// `n × d` values.
    pub values: &'a [f64],
    /// Dimensions.
    pub d: usize,
}

impl Points<'_> {
    /// Number of points.
    pub fn len(&self) -> usize {
        self.values.len() / self.d
    }

    /// True without points.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    fn row(&self, i: usize) -> &[f64] {
        &self.values[i * self.d..(i + 1) * self.d]
    }
}

fn distance2(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// A clustering.
#[derive(Debug, Clone, PartialEq)]
pub struct Clustering {
    /// `k × d` centres, row-major, largest cluster first.
    pub centres: Vec<f64>,
    /// The cluster of each point.
    pub labels: Vec<usize>,
    /// Sum of squared distances to the assigned centres.
    pub inertia: f64,
    /// Lloyd iterations of the best restart.
    pub iterations: usize,
}

/// Standardises columns in place (mean 0, population standard deviation 1; a constant
/// column becomes 0); returns the means and deviations.
pub fn standardise(values: &mut [f64], d: usize) -> (Vec<f64>, Vec<f64>) {
    let n = (values.len() / d).max(1) as f64;
    let mut mean = vec![0.0; d];
    let mut sd = vec![0.0; d];
    for row in values.chunks(d) {
        for j in 0..d {
            mean[j] += row[j] / n;
        }
    }
    for row in values.chunks(d) {
        for j in 0..d {
            sd[j] += (row[j] - mean[j]).powi(2) / n;
        }
    }
    for s in &mut sd {
        *s = s.sqrt();
    }
    for row in values.chunks_mut(d) {
        for j in 0..d {
            row[j] = if sd[j] > 0.0 {
                (row[j] - mean[j]) / sd[j]
            } else {
                0.0
            };
        }
    }
    (mean, sd)
}

/// k-means++ seeding (greedy, as scikit-learn).
fn seed_centres(points: &Points<'_>, k: usize, rng: &mut SplitMix) -> Vec<f64> {
    let n = points.len();
    let d = points.d;
    let trials = 2 + (k as f64).ln().floor() as usize;
    let mut centres = Vec::with_capacity(k * d);
    centres.extend_from_slice(points.row(rng.below(n)));
    let mut closest: Vec<f64> = (0..n)
        .map(|i| distance2(points.row(i), &centres[..d]))
        .collect();
    let mut potential: f64 = closest.iter().sum();
    for _ in 1..k {
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            // Sample a point with probability proportional to its squared distance.
            let target = rng.f64() * potential;
            let mut acc = 0.0;
            let mut pick = n - 1;
            for (i, c) in closest.iter().enumerate() {
                acc += c;
                if acc > target {
                    pick = i;
                    break;
                }
            }
            let candidate = points.row(pick);
            let updated: Vec<f64> = (0..n)
                .map(|i| closest[i].min(distance2(points.row(i), candidate)))
                .collect();
            let total: f64 = updated.iter().sum();
            if best.as_ref().is_none_or(|b| total < b.0) {
                best = Some((total, pick, updated));
            }
        }
        let (total, pick, updated) = best.expect("at least one trial");
        centres.extend_from_slice(points.row(pick));
        closest = updated;
        potential = total;
    }
    centres
}

/// The squared distance to the nearest of `centres` (row-major, `d` wide) and its index.
fn nearest(row: &[f64], centres: &[f64], d: usize) -> (f64, usize) {
    let mut best = (f64::INFINITY, 0);
    for (c, centre) in centres.chunks(d).enumerate() {
        let dist = distance2(row, centre);
        if dist < best.0 {
            best = (dist, c);
        }
    }
    best
}

/// Lloyd iterations from `centres` until no point changes cluster (at most 300).
fn lloyd(points: &Points<'_>, mut centres: Vec<f64>, k: usize) -> Clustering {
    let (n, d) = (points.len(), points.d);
    let mut labels = vec![usize::MAX; n];
    let mut iterations = 0;
    for _ in 0..300 {
        iterations += 1;
        let mut changed = false;
        for (i, label) in labels.iter_mut().enumerate() {
            let (_, nearest) = nearest(points.row(i), &centres, d);
            changed |= *label != nearest;
            *label = nearest;
        }
        // Strict convergence: no point changed cluster.
        if !changed {
            break;
        }
        let mut sums = vec![0.0; k * d];
        let mut counts = vec![0usize; k];
        for (i, &c) in labels.iter().enumerate() {
            counts[c] += 1;
            for (s, v) in sums[c * d..(c + 1) * d].iter_mut().zip(points.row(i)) {
                *s += v;
            }
        }
        for c in 0..k {
            if counts[c] == 0 {
                // An empty cluster takes the point farthest from its centre.
                let far = (0..n)
                    .max_by(|&a, &b| {
                        let da =
                            distance2(points.row(a), &centres[labels[a] * d..(labels[a] + 1) * d]);
                        let db =
                            distance2(points.row(b), &centres[labels[b] * d..(labels[b] + 1) * d]);
                        da.total_cmp(&db)
                    })
                    .unwrap_or(0);
                sums[c * d..(c + 1) * d].copy_from_slice(points.row(far));
                counts[c] = 1;
            }
            for j in 0..d {
                centres[c * d + j] = sums[c * d + j] / counts[c] as f64;
            }
        }
    }
    // Final assignment against the final centres.
    let mut inertia = 0.0;
    for (i, label) in labels.iter_mut().enumerate() {
        let (distance, nearest) = nearest(points.row(i), &centres, d);
        *label = nearest;
        inertia += distance;
    }
    Clustering {
        centres,
        labels,
        inertia,
        iterations,
    }
}

/// The best of `restarts` k-means runs (k-means++ seeding, then Lloyd) by inertia.
pub fn kmeans(points: &Points<'_>, k: usize, restarts: usize, seed: u64) -> Clustering {
    let k = k.clamp(1, points.len().max(1));
    let mut rng = SplitMix::new(seed);
    let mut best: Option<Clustering> = None;
    for _ in 0..restarts.max(1) {
        let centres = seed_centres(points, k, &mut rng);
        let c = lloyd(points, centres, k);
        if best.as_ref().is_none_or(|b| c.inertia < b.inertia) {
            best = Some(c);
        }
    }
    largest_first(best.expect("at least one restart"), points.d)
}

/// Renumbers clusters by size, largest first (ties by the old number), so results read
/// the same whatever order the restarts found them in.
fn largest_first(mut c: Clustering, d: usize) -> Clustering {
    let k = c.centres.len() / d.max(1);
    let mut sizes = vec![0usize; k];
    for &l in &c.labels {
        sizes[l] += 1;
    }
    let mut order: Vec<usize> = (0..k).collect();
    order.sort_by(|&a, &b| sizes[b].cmp(&sizes[a]).then(a.cmp(&b)));
    let mut rank = vec![0; k];
    for (r, &old) in order.iter().enumerate() {
        rank[old] = r;
    }
    for l in &mut c.labels {
        *l = rank[*l];
    }
    c.centres = order
        .iter()
        .flat_map(|&old| c.centres[old * d..(old + 1) * d].to_vec())
        .collect();
    c
}

/// The mean silhouette of `labels` over the points `sample` (indices), distances to every
/// point of the sample.
pub fn silhouette(points: &Points<'_>, labels: &[usize], k: usize, sample: &[usize]) -> f64 {
    let mut total = 0.0;
    let mut counted = 0usize;
    for &i in sample {
        let mut sums = vec![0.0; k];
        let mut counts = vec![0usize; k];
        for &j in sample {
            if i != j {
                sums[labels[j]] += distance2(points.row(i), points.row(j)).sqrt();
                counts[labels[j]] += 1;
            }
        }
        let own = labels[i];
        if counts[own] == 0 {
            counted += 1; // a singleton scores 0
            continue;
        }
        let a = sums[own] / counts[own] as f64;
        let b = (0..k)
            .filter(|&c| c != own && counts[c] > 0)
            .map(|c| sums[c] / counts[c] as f64)
            .fold(f64::INFINITY, f64::min);
        if b.is_finite() {
            total += (b - a) / a.max(b);
        }
        counted += 1;
    }
    total / counted.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_well_separated_blobs() {
        // Three tight blobs of sizes 50, 30 and 20 around (0, 0), (10, 0) and (0, 10).
        let mut rng = SplitMix::new(7);
        let mut values = Vec::new();
        for (n, cx, cy) in [(50, 0.0, 0.0), (30, 10.0, 0.0), (20, 0.0, 10.0)] {
            for _ in 0..n {
                values.push(cx + rng.f64() - 0.5);
                values.push(cy + rng.f64() - 0.5);
            }
        }
        let points = Points {
            values: &values,
            d: 2,
        };
        let c = kmeans(&points, 3, 5, 1);
        let mut sizes = vec![0; 3];
        for &l in &c.labels {
            sizes[l] += 1;
        }
        assert_eq!(sizes, [50, 30, 20], "numbered largest first");
        // Inertia by hand: each coordinate is uniform on ±0.5 around its centre, so each
        // point contributes about 2 × 1/12; 100 points → about 16.7.
        assert!(c.inertia > 12.0 && c.inertia < 21.0, "{}", c.inertia);
        let sample: Vec<usize> = (0..100).collect();
        assert!(silhouette(&points, &c.labels, 3, &sample) > 0.9);
        let two = kmeans(&points, 2, 5, 1);
        assert!(silhouette(&points, &two.labels, 2, &sample) < 0.9);
    }

    #[test]
    fn standardises_like_standard_scaler() {
        // StandardScaler: population deviation; [1, 2, 3] -> [-1.2247, 0, 1.2247].
        let mut v = vec![1.0, 5.0, 2.0, 5.0, 3.0, 5.0];
        let (mean, sd) = standardise(&mut v, 2);
        assert_eq!(mean, [2.0, 5.0]);
        assert!((sd[0] - (2.0f64 / 3.0).sqrt()).abs() < 1e-15 && sd[1] == 0.0);
        assert!((v[0] + 1.224_744_871_391_589).abs() < 1e-12 && v[1] == 0.0);
    }
}
