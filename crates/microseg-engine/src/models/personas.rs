//! Personas: k-means on standardised features of a set of profiles, each cluster described
//! by its size, its centroid in the features' own units and the trait values it
//! over-indexes on.
//!
//! Steps: the features (numeric traits or metrics) of every profile that has them all
//! (the others are left out), optionally ln(1 + x), standardised (mean 0, population
//! standard deviation 1, as scikit-learn's `StandardScaler`), then k-means with k-means++
//! seeding and the best of several restarts by inertia ([`super::kmeans`]). With k chosen
//! automatically, k = 2..=8 are tried and the best mean silhouette on a sample of 2,000
//! profiles wins. Clusters are numbered from 1, largest first.

use microseg_core::{TraitType, Value};
use roaring::RoaringBitmap;

use super::kmeans::{kmeans, silhouette, standardise, Points, SplitMix};
use crate::evaluate::{Dataset, EvalError};

/// Most distinct values a trait may have to be looked at for over-indexing.
const MAX_VALUES: usize = 50;
/// Profiles the silhouette of an automatic k is measured on.
const SILHOUETTE_SAMPLE: usize = 2_000;

/// How personas are made.
#[derive(Debug, Clone, PartialEq)]
pub struct PersonaSettings {
    /// The number of clusters; `None` chooses 2 to 8 by silhouette.
    pub k: Option<usize>,
    /// Numeric traits or metrics to cluster on.
    pub features: Vec<String>,
    /// Features transformed with ln(1 + x) first (skewed counts and money).
    pub log: Vec<String>,
    /// k-means++ restarts; the best by inertia is kept.
    pub restarts: usize,
    /// Random seed.
    pub seed: u64,
}

/// Why personas cannot be made.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PersonaError {
    /// A feature the data cannot give.
    #[error("--features {0}")]
    Eval(String, #[source] EvalError),
    /// A feature that is not a number.
    #[error("--features {name}: is {ty}; clustering needs numbers")]
    NotNumeric {
        /// The feature.
        name: String,
        /// Its type.
        ty: TraitType,
    },
    /// A `log` name that is not a feature.
    #[error("--log {0}: not one of --features")]
    LogNotFeature(String),
    /// ln(1 + x) of a value at or below -1.
    #[error("--log {name}: a value {value} is at or below -1")]
    LogDomain {
        /// The feature.
        name: String,
        /// The value.
        value: f64,
    },
    /// Fewer profiles than clusters.
    #[error("{profiles} profiles have every feature; k-means with k = {k} needs at least {k}")]
    TooFew {
        /// Profiles with every feature.
        profiles: usize,
        /// Clusters asked for.
        k: usize,
    },
}

/// A trait value a cluster over-indexes on.
#[derive(Debug, Clone, PartialEq)]
pub struct OverIndex {
    /// The trait.
    pub name: String,
    /// The value.
    pub value: String,
    /// Its share in the cluster.
    pub share: f64,
    /// Share in the cluster over share among everyone clustered.
    pub lift: f64,
}

/// One cluster.
#[derive(Debug, Clone, PartialEq)]
pub struct Persona {
    /// Its number, from 1, largest first.
    pub cluster: usize,
    /// Its members.
    pub members: RoaringBitmap,
    /// The members' mean of each feature, in the feature's own units.
    pub centroid: Vec<f64>,
    /// Up to 3 categorical trait values whose share in the cluster is at least 1.2 times
    /// their share among everyone clustered (and at least 10% of the cluster).
    pub over_indexes: Vec<OverIndex>,
}

/// Personas of a set of profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct Personas {
    /// Clusters made.
    pub k: usize,
    /// Sum of squared distances to the centres, on the standardised features (as
    /// scikit-learn reports it).
    pub inertia: f64,
    /// Profiles clustered.
    pub profiles: usize,
    /// Profiles of the base left out for a missing feature.
    pub left_out: u64,
    /// Mean silhouette of each k tried (automatic k only).
    pub silhouette: Vec<(usize, f64)>,
    /// The clusters, largest first.
    pub clusters: Vec<Persona>,
}

/// Clusters the profiles of `base` in `data` into personas.
pub fn personas(
    data: &Dataset<'_>,
    base: &RoaringBitmap,
    settings: &PersonaSettings,
) -> Result<Personas, PersonaError> {
    for l in &settings.log {
        if !settings.features.contains(l) {
            return Err(PersonaError::LogNotFeature(l.clone()));
        }
    }
    for f in &settings.features {
        let ty = data
            .type_of(f)
            .map_err(|e| PersonaError::Eval(f.clone(), e))?;
        if !matches!(ty, TraitType::Integer | TraitType::Float) {
            return Err(PersonaError::NotNumeric {
                name: f.clone(),
                ty,
            });
        }
    }
    // The features of every profile that has them all, in their own units.
    let d = settings.features.len();
    let mut members: Vec<u32> = Vec::new();
    let mut raw: Vec<f64> = Vec::new();
    'profiles: for p in base {
        let start = raw.len();
        for f in &settings.features {
            let value = data
                .value_of(f, p)
                .map_err(|e| PersonaError::Eval(f.clone(), e))?;
            match value.as_ref().and_then(Value::as_f64) {
                Some(x) => raw.push(x),
                None => {
                    raw.truncate(start);
                    continue 'profiles;
                }
            }
        }
        members.push(p);
    }
    let n = members.len();
    let mut values = raw.clone();
    for (j, f) in settings.features.iter().enumerate() {
        if settings.log.contains(f) {
            for row in values.chunks_mut(d) {
                if row[j] <= -1.0 {
                    return Err(PersonaError::LogDomain {
                        name: f.clone(),
                        value: row[j],
                    });
                }
                row[j] = row[j].ln_1p();
            }
        }
    }
    standardise(&mut values, d);
    let points = Points { values: &values, d };
    let mut scores = Vec::new();
    let k = match settings.k {
        Some(k) => k.max(1),
        None => {
            let mut rng = SplitMix::new(settings.seed ^ 0x5117);
            let sample: Vec<usize> = if n <= SILHOUETTE_SAMPLE {
                (0..n).collect()
            } else {
                (0..SILHOUETTE_SAMPLE).map(|_| rng.below(n)).collect()
            };
            for k in 2..=8usize.min(n.saturating_sub(1)) {
                let c = kmeans(&points, k, settings.restarts, settings.seed);
                scores.push((k, silhouette(&points, &c.labels, k, &sample)));
            }
            scores
                .iter()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|s| s.0)
                .ok_or(PersonaError::TooFew { profiles: n, k: 2 })?
        }
    };
    if n < k {
        return Err(PersonaError::TooFew { profiles: n, k });
    }
    let result = kmeans(&points, k, settings.restarts, settings.seed);
    // Members and feature sums per cluster, in one pass (clusters come largest first).
    let mut bitmaps = vec![RoaringBitmap::new(); k];
    let mut sums = vec![0.0; k * d];
    for (i, &l) in result.labels.iter().enumerate() {
        bitmaps[l].insert(members[i]);
        for j in 0..d {
            sums[l * d + j] += raw[i * d + j];
        }
    }
    let all: RoaringBitmap = members.iter().copied().collect();
    let mut over = over_indexing(data, &all, &bitmaps)?;
    let clusters = bitmaps
        .into_iter()
        .enumerate()
        .map(|(c, members)| {
            let size = members.len().max(1) as f64;
            Persona {
                cluster: c + 1,
                centroid: (0..d).map(|j| sums[c * d + j] / size).collect(),
                over_indexes: std::mem::take(&mut over[c]),
                members,
            }
        })
        .collect();
    Ok(Personas {
        k,
        inertia: result.inertia,
        profiles: n,
        left_out: base.len() - n as u64,
        silhouette: scores,
        clusters,
    })
}

/// Per cluster, up to 3 categorical trait values (strings and booleans with at most
/// [`MAX_VALUES`] values among those clustered) whose share in the cluster is at least 1.2
/// times their share in `all` and at least 10% of the cluster, highest lift first.
fn over_indexing(
    data: &Dataset<'_>,
    all: &RoaringBitmap,
    clusters: &[RoaringBitmap],
) -> Result<Vec<Vec<OverIndex>>, PersonaError> {
    let mut out = vec![Vec::new(); clusters.len()];
    for (name, column) in &data.profiles.columns {
        if !matches!(column.trait_type(), TraitType::String | TraitType::Bool) {
            continue;
        }
        let mut values: std::collections::HashMap<String, RoaringBitmap> = Default::default();
        for p in all {
            if let Some(v) = column.get(p) {
                values.entry(v.to_string()).or_default().insert(p);
            }
            if values.len() > MAX_VALUES {
                break;
            }
        }
        if values.len() > MAX_VALUES {
            continue;
        }
        for (value, members) in &values {
            let base_share = members.len() as f64 / all.len() as f64;
            for (c, cluster) in clusters.iter().enumerate() {
                let share = members.intersection_len(cluster) as f64 / cluster.len().max(1) as f64;
                if share >= 0.1 && share >= 1.2 * base_share {
                    out[c].push(OverIndex {
                        name: name.clone(),
                        value: value.clone(),
                        share,
                        lift: share / base_share,
                    });
                }
            }
        }
    }
    for list in &mut out {
        list.sort_by(|a, b| {
            b.lift
                .total_cmp(&a.lift)
                .then_with(|| (&a.name, &a.value).cmp(&(&b.name, &b.value)))
        });
        list.truncate(3);
    }
    Ok(out)
}
