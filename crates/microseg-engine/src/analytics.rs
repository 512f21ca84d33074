//! Segment analytics over member bitmaps: pairwise overlaps and drill-down trees.

use std::collections::BTreeMap;

use microseg_core::condition::{CompareOp, Condition, Literal};
use microseg_core::{TraitType, Value};
use roaring::RoaringBitmap;

use crate::evaluate::{Dataset, EvalError};

/// The overlap of two segments.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Overlap {
    /// Members in both.
    pub intersection: u64,
    /// Intersection over union (0 when both are empty).
    pub jaccard: f64,
}

/// Pairwise overlaps of `sets`: `result[i][j]` for every pair (the diagonal holds sizes).
/// Each unordered pair is intersected once.
pub fn overlaps(sets: &[RoaringBitmap]) -> Vec<Vec<Overlap>> {
    let n = sets.len();
    let sizes: Vec<u64> = sets.iter().map(RoaringBitmap::len).collect();
    let overlap = |i: usize, j: usize, intersection: u64| {
        let union = sizes[i] + sizes[j] - intersection;
        Overlap {
            intersection,
            jaccard: if union == 0 {
                0.0
            } else {
                intersection as f64 / union as f64
            },
        }
    };
    let mut matrix: Vec<Vec<Overlap>> = (0..n)
        .map(|i| (0..n).map(|_| overlap(i, i, sizes[i])).collect())
        .collect();
    for i in 0..n {
        for j in i + 1..n {
            let o = overlap(i, j, sets[i].intersection_len(&sets[j]));
            matrix[i][j] = o;
            matrix[j][i] = o;
        }
    }
    matrix
}

/// Pearson and Spearman correlations of numeric traits or metrics, pair by pair.
#[derive(Debug, Clone, PartialEq)]
pub struct Correlations {
    /// Profiles with both values, per pair.
    pub n: Vec<Vec<u64>>,
    /// Pearson's r per pair (`None` without variance or with fewer than 2 pairs).
    pub pearson: Vec<Vec<Option<f64>>>,
    /// Spearman's rho per pair.
    pub spearman: Vec<Vec<Option<f64>>>,
}

/// The correlations of `names` (numeric traits or metrics) over `members`: each pair over
/// the profiles that have both values.
pub fn correlations(
    data: &Dataset<'_>,
    members: &RoaringBitmap,
    names: &[String],
) -> Result<Correlations, EvalError> {
    for name in names {
        let ty = data.type_of(name)?;
        if !matches!(ty, TraitType::Integer | TraitType::Float) {
            return Err(EvalError::WrongType {
                name: name.clone(),
                ty,
                hint: "correlations need numbers".into(),
            });
        }
    }
    // One column of optional numbers per name, over the members.
    let columns: Vec<Vec<Option<f64>>> = names
        .iter()
        .map(|n| {
            members
                .iter()
                .map(|p| Ok(data.value_of(n, p)?.as_ref().and_then(Value::as_f64)))
                .collect::<Result<_, EvalError>>()
        })
        .collect::<Result<_, _>>()?;
    let k = names.len();
    let mut out = Correlations {
        n: vec![vec![0; k]; k],
        pearson: vec![vec![None; k]; k],
        spearman: vec![vec![None; k]; k],
    };
    // Each column's ranks over the profiles that have a value: a pair of columns present
    // for the same profiles ranks its pairs exactly so, and needs no sort of its own.
    let present: Vec<Vec<bool>> = columns
        .iter()
        .map(|c| c.iter().map(Option::is_some).collect())
        .collect();
    let ranks: Vec<Vec<f64>> = columns
        .iter()
        .map(|c| crate::stats::average_ranks(&c.iter().flatten().copied().collect::<Vec<_>>()))
        .collect();
    // Symmetric: each pair once.
    for i in 0..k {
        for j in i..k {
            let (xs, ys): (Vec<f64>, Vec<f64>) = columns[i]
                .iter()
                .zip(&columns[j])
                .filter_map(|(x, y)| Some(((*x)?, (*y)?)))
                .unzip();
            let n = xs.len() as u64;
            let pearson = crate::stats::pearson(&xs, &ys);
            let spearman = if present[i] == present[j] {
                crate::stats::pearson(&ranks[i], &ranks[j])
            } else {
                crate::stats::spearman(&xs, &ys)
            };
            for (a, b) in [(i, j), (j, i)] {
                out.n[a][b] = n;
                out.pearson[a][b] = pearson;
                out.spearman[a][b] = spearman;
            }
        }
    }
    Ok(out)
}

/// One node of a drill-down tree.
#[derive(Debug, Clone, PartialEq)]
pub struct TreeNode {
    /// The dimension split on to reach this node (`None` at the root).
    pub dimension: Option<String>,
    /// The dimension's value here (`None` at the root and for "missing").
    pub value: Option<Value>,
    /// The node's members.
    pub members: RoaringBitmap,
    /// The condition selecting exactly this node within the root set, e.g.
    /// `discipline = "mountain" and skill = "amateur"` (`None` at the root).
    pub condition: Option<Condition>,
    /// Children, largest first.
    pub children: Vec<TreeNode>,
}

/// Splits `within` by each dimension in turn (traits or metrics). String sets split into
/// one child per item (a member can be in several); profiles without a value go to a
/// child whose condition is `not exists`.
pub fn drill_down(
    data: &Dataset<'_>,
    within: RoaringBitmap,
    dims: &[String],
) -> Result<TreeNode, EvalError> {
    let dims: Vec<(String, bool)> = dims
        .iter()
        .map(|d| Ok((d.clone(), data.type_of(d)? == TraitType::StringSet)))
        .collect::<Result<_, EvalError>>()?;
    Ok(split(data, None, None, within, None, &dims))
}

fn split(
    data: &Dataset<'_>,
    dimension: Option<String>,
    value: Option<Value>,
    members: RoaringBitmap,
    condition: Option<Condition>,
    dims: &[(String, bool)],
) -> TreeNode {
    let mut children = Vec::new();
    if let Some(((dim, is_set), rest)) = dims.split_first() {
        let mut groups: BTreeMap<String, (Option<Value>, RoaringBitmap)> = BTreeMap::new();
        for p in &members {
            match data.value_of(dim, p).ok().flatten() {
                Some(Value::Set(items)) => {
                    for item in items {
                        groups
                            .entry(format!("1{item}"))
                            .or_insert_with(|| {
                                (Some(Value::Str(item.clone())), RoaringBitmap::new())
                            })
                            .1
                            .insert(p);
                    }
                }
                Some(v) => {
                    groups
                        .entry(format!("1{v}"))
                        .or_insert_with(|| (Some(v.clone()), RoaringBitmap::new()))
                        .1
                        .insert(p);
                }
                None => {
                    groups
                        .entry("0".into())
                        .or_insert((None, RoaringBitmap::new()))
                        .1
                        .insert(p);
                }
            }
        }
        for (_, (v, bitmap)) in groups {
            let leaf = leaf_condition(dim, v.as_ref(), *is_set);
            let cond = match &condition {
                None => leaf,
                Some(Condition::And { all }) => {
                    let mut all = all.clone();
                    all.push(leaf);
                    Condition::And { all }
                }
                Some(c) => Condition::And {
                    all: vec![c.clone(), leaf],
                },
            };
            children.push(split(data, Some(dim.clone()), v, bitmap, Some(cond), rest));
        }
        children.sort_by_key(|c| std::cmp::Reverse(c.members.len()));
    }
    TreeNode {
        dimension,
        value,
        members,
        condition,
        children,
    }
}

/// `dim = value` (`dim has value` for a set item; `dim not exists` without a value).
pub(crate) fn leaf_condition(dim: &str, value: Option<&Value>, is_set: bool) -> Condition {
    let literal = match value {
        None => {
            return Condition::Exists {
                name: dim.to_string(),
                negated: true,
            }
        }
        Some(Value::Str(s)) if is_set => {
            return Condition::Has {
                name: dim.to_string(),
                value: s.clone(),
            }
        }
        Some(Value::Str(s)) => Literal::Str(s.clone()),
        Some(Value::Int(i)) => Literal::Int(*i),
        Some(Value::Float(x)) => Literal::Float(*x),
        Some(Value::Bool(b)) => Literal::Bool(*b),
        Some(Value::Time(t)) => Literal::Time(*t),
        Some(Value::Set(_)) => unreachable!("sets are split into items"),
    };
    Condition::Compare {
        left: microseg_core::condition::Operand::Name(dim.to_string()),
        op: CompareOp::Eq,
        right: literal,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use microseg_core::condition::parse;
    use microseg_core::{Schema, Timestamp, TraitSpec};

    use super::*;
    use crate::columnar::ProfileTable;

    #[test]
    fn overlaps_count_intersections_and_jaccard() {
        let a: RoaringBitmap = [1, 2, 3, 4].into_iter().collect();
        let b: RoaringBitmap = [3, 4, 5].into_iter().collect();
        let m = overlaps(&[a, b, RoaringBitmap::new()]);
        assert_eq!(m[0][1].intersection, 2);
        assert_eq!(m[0][1].jaccard, 2.0 / 5.0, "2 shared of 5 distinct");
        assert_eq!(m[1][1].intersection, 3);
        assert_eq!(m[2][2].jaccard, 0.0);
    }

    #[test]
    fn drill_down_counts_every_node_and_names_it() {
        let mut schema = Schema::new();
        schema.insert("discipline".into(), TraitSpec::new(TraitType::String));
        schema.insert("gender".into(), TraitSpec::new(TraitType::String));
        schema.insert("tags".into(), TraitSpec::new(TraitType::StringSet));
        let mut table = ProfileTable::with_schema(&schema);
        let rows = [
            ("mountain", Some("f"), vec!["a"]),
            ("mountain", Some("m"), vec!["a", "b"]),
            ("mountain", Some("f"), vec![]),
            ("road", None, vec!["b"]),
        ];
        for (i, (d, g, tags)) in rows.iter().enumerate() {
            let mut traits = HashMap::new();
            traits.insert("discipline", Value::Str(d.to_string()));
            if let Some(g) = g {
                traits.insert("gender", Value::Str(g.to_string()));
            }
            traits.insert(
                "tags",
                Value::Set(tags.iter().map(|t| t.to_string()).collect()),
            );
            table.push(&format!("p{i}"), &traits);
        }
        let data = Dataset {
            profiles: &table,
            metrics: None,
            events: None,
            as_of: Timestamp(0),
            segments: None,
        };
        let all: RoaringBitmap = (0..4).collect();
        let tree = drill_down(&data, all.clone(), &["discipline".into(), "gender".into()]).unwrap();
        assert_eq!(tree.members.len(), 4);
        let mtb = &tree.children[0];
        assert_eq!(
            (mtb.value.clone(), mtb.members.len()),
            (Some(Value::Str("mountain".into())), 3)
        );
        let f = &mtb.children[0];
        assert_eq!(f.members.len(), 2);
        let c = f.condition.clone().unwrap();
        assert_eq!(c.to_string(), r#"discipline = "mountain" and gender = "f""#);
        assert_eq!(
            data.evaluate(&c).unwrap(),
            f.members,
            "the node's condition selects it"
        );
        let road = &tree.children[1];
        assert_eq!(
            road.children[0].condition.clone().unwrap(),
            parse(r#"discipline = "road" and gender not exists"#).unwrap()
        );
        let tags = drill_down(&data, all, &["tags".into()]).unwrap();
        let sizes: Vec<(String, u64)> = tags
            .children
            .iter()
            .map(|n| (n.condition.clone().unwrap().to_string(), n.members.len()))
            .collect();
        // p2's empty set is present, so there is no "not exists" child.
        assert_eq!(
            sizes,
            [
                (r#"tags has "a""#.to_string(), 2),
                (r#"tags has "b""#.to_string(), 2)
            ]
        );
        assert!(drill_down(&data, RoaringBitmap::new(), &["nope".into()]).is_err());
    }
}
