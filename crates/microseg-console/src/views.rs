//! Each page's data, computed from the store as of an instant: what the console shows and
//! the report prints. Every view is one JSON document with its charts (`charts`, SVG
//! strings from [`crate::charts`]) so the console and the report draw the same thing.

use microseg_activate::decide::{workspace_decision, Decider, Slot};
use microseg_activate::{Campaign, Channel};
use microseg_core::condition::{parse, Condition};
use microseg_core::{Timestamp, DAY_MS};
use microseg_engine::analytics::{correlations, drill_down, overlaps, TreeNode};
use microseg_engine::metrics::KEY_METRICS;
use microseg_engine::models::discover::{
    discover, discover_uplift, items, Discovery, Settings, Target,
};
use microseg_engine::models::experiment::wilson;
use microseg_engine::models::personas::{personas as cluster, PersonaSettings};
use microseg_engine::METRIC_NAMES;
use microseg_store::{Store, Tables, Workspace};
use roaring::RoaringBitmap;
use serde::Deserialize;
use serde_json::{json, Map, Value as Json};

use crate::charts::{self, Bar, Format};
use crate::ConsoleError;

/// Fewest members a drill-down node needs before its share means something: the same
/// floor as discovery's `--min-support` default (a behaviour shared by 100 people).
pub const FLOOR: u64 = 100;

/// Equal-width bins from 0 (or the smallest value when negative) to the 99th percentile,
/// the last bin holding everything above.
fn bins(mut values: Vec<f64>, count: usize) -> (Vec<(f64, f64, u64)>, bool) {
    if values.is_empty() {
        return (Vec::new(), false);
    }
    values.sort_by(f64::total_cmp);
    let lo = values[0].min(0.0);
    let p99 = values[((values.len() - 1) as f64 * 0.99) as usize];
    let max = values[values.len() - 1];
    let overflow = max > p99;
    let top = if p99 > lo { p99 } else { lo + 1.0 };
    let width = (top - lo) / count as f64;
    let mut out: Vec<(f64, f64, u64)> = (0..count)
        .map(|i| (lo + width * i as f64, lo + width * (i + 1) as f64, 0))
        .collect();
    if overflow {
        out.push((top, max, 0));
    }
    for v in values {
        let i = if v > top {
            out.len() - 1
        } else {
            (((v - lo) / width) as usize).min(count - 1)
        };
        out[i].2 += 1;
    }
    (out, overflow)
}

fn format_of(metric: &str) -> Format {
    match metric {
        "revenue" | "aov" | "clv_12m" => Format::Amount,
        _ => Format::Count,
    }
}

/// The overview: profiles, customers, events, revenue, AOV, the 5 × 5 recency × frequency
/// heatmap (RFM scores of customers) and the key metrics' distributions.
pub fn overview(ws: &Workspace, store: &Store, at: Timestamp) -> Result<Json, ConsoleError> {
    let mut tables = Tables::open(ws, store, at)?;
    tables.need(&[], &["visits", "clv_12m"])?;
    // From the columnar events the metrics were computed from: `count(*)` in SQLite reads
    // the whole table (seconds on a large shop).
    let events = tables.events(&[])?.len();
    let everyone = tables.everyone();
    let data = tables.dataset();
    let m = data.metrics.expect("metrics loaded");
    let clv = |p: u32| m.clv.as_ref().and_then(|c| c.value("clv_12m", p as usize));
    let has_clv = everyone.iter().any(|p| clv(p).is_some_and(f64::is_finite));
    let (mut customers, mut orders, mut revenue) = (0u64, 0u64, 0.0);
    let mut rfm = vec![vec![0u64; 5]; 5];
    let mut rfm_revenue = vec![vec![0.0f64; 5]; 5];
    for p in &everyone {
        let row = m.row(p);
        if row.orders > 0 {
            customers += 1;
            orders += u64::from(row.orders);
            revenue += row.revenue;
            if let Some([r, f, _]) = m.rfm[p as usize] {
                let (i, j) = (
                    5 - usize::from(r).clamp(1, 5),
                    usize::from(f).clamp(1, 5) - 1,
                );
                rfm[i][j] += 1;
                rfm_revenue[i][j] += row.revenue;
            }
        }
    }
    let orders = orders as f64;
    let mut distributions = Vec::new();
    let mut charts = Map::new();
    let mut shown: Vec<&str> = KEY_METRICS.to_vec();
    if has_clv {
        shown.push("clv_12m");
    }
    // Typed reads of the metric columns (no `Value` per profile): the overview reads
    // every profile's metrics, a million on a large shop.
    let read = |metric: &str, p: u32| -> Option<f64> {
        let row = m.row(p);
        match metric {
            "visits" => Some(f64::from(row.visits)),
            "orders" => Some(f64::from(row.orders)),
            "revenue" => Some(row.revenue),
            "aov" => row.aov(),
            "recency_days" => row.recency_days(at).map(|d| d as f64),
            "tenure_days" => row.tenure_days(at).map(|d| d as f64),
            _ => clv(p),
        }
        .filter(|x| x.is_finite())
    };
    for metric in shown {
        let values: Vec<f64> = everyone.iter().filter_map(|p| read(metric, p)).collect();
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let (b, overflow) = bins(values, 12);
        let format = format_of(metric);
        charts.insert(
            format!("distribution_{metric}"),
            charts::histogram(metric, &b, overflow, format).into(),
        );
        distributions.push(json!({
            "metric": metric, "profiles": n, "mean": mean,
            "bins": b.iter().map(|(lo, hi, n)| json!({"low": lo, "high": hi, "count": n})).collect::<Vec<_>>(),
        }));
    }
    let rows: Vec<String> = (1..=5).rev().map(|r| format!("recency {r}")).collect();
    let cols: Vec<String> = (1..=5).map(|f| format!("frequency {f}")).collect();
    let cells: Vec<Vec<Option<f64>>> = rfm
        .iter()
        .map(|row| row.iter().map(|&n| Some(n as f64)).collect())
        .collect();
    charts.insert(
        "rfm".into(),
        charts::heatmap(
            "Customers by recency score (5 = most recent) and frequency score (5 = most orders)",
            &rows,
            &cols,
            &cells,
            Format::Count,
            false,
        )
        .into(),
    );
    Ok(json!({
        "as_of": at.to_string(),
        "profiles": everyone.len(),
        "customers": customers,
        "events": events,
        "orders": orders,
        "revenue": revenue,
        "aov": if orders > 0.0 { Some(revenue / orders) } else { None },
        "rfm": {
            "rows": "recency score 5 (top) to 1", "columns": "frequency score 1 to 5",
            "customers": rfm, "revenue": rfm_revenue,
        },
        "distributions": distributions,
        "charts": charts,
    }))
}

/// Every saved segment with its size now and at the end of each of the `weeks` weeks
/// before (from the stored events: a trend that needs no history kept).
pub fn segments(
    ws: &Workspace,
    store: &Store,
    at: Timestamp,
    weeks: usize,
) -> Result<Json, ConsoleError> {
    let saved = store.segments()?;
    let conditions: Vec<&Condition> = saved.iter().map(|s| &s.condition).collect();
    let mut trend = vec![Vec::new(); saved.len()];
    let mut total = 0;
    for k in (0..=weeks).rev() {
        let t = Timestamp(at.0 - k as i64 * 7 * DAY_MS);
        let mut tables = Tables::open(ws, store, t)?;
        tables.need(&conditions, &[])?;
        let data = tables.dataset();
        for (s, sizes) in saved.iter().zip(trend.iter_mut()) {
            // A segment whose condition no longer evaluates (a trait dropped) shows no size.
            sizes.push(data.evaluate(&s.condition).ok().map(|m| m.len()));
        }
        if k == 0 {
            total = tables.everyone().len();
        }
    }
    let list: Vec<Json> = saved
        .iter()
        .zip(&trend)
        .map(|(s, sizes)| {
            let points: Vec<f64> = sizes
                .iter()
                .map(|x| x.map_or(f64::NAN, |x| x as f64))
                .collect();
            let size = sizes.last().copied().flatten();
            json!({
                "name": s.name,
                "description": s.description,
                "condition": s.condition.to_string(),
                "version": s.version,
                "size": size,
                "share": size.map(|n| n as f64 / total.max(1) as f64),
                "trend": sizes,
                "sparkline": charts::sparkline(&format!("{} over {weeks} weeks", s.name), &points),
            })
        })
        .collect();
    Ok(json!({"as_of": at.to_string(), "profiles": total, "weeks": weeks, "segments": list}))
}

/// The size of a condition being typed: `{size, share, profiles}`, or `{error: {message,
/// line, column}}` for text that does not parse (line and column 1-based) or does not
/// evaluate (no position).
pub fn size(
    ws: &Workspace,
    store: &Store,
    at: Timestamp,
    text: &str,
) -> Result<Json, ConsoleError> {
    let condition = match parse(text) {
        Ok(c) => c,
        Err(e) => {
            return Ok(json!({"error": {
                "message": e.to_string(), "line": e.line, "column": e.column,
                "expected": e.expected, "found": e.found,
            }}))
        }
    };
    let mut tables = Tables::open(ws, store, at)?;
    if let Err(e) = tables.need(&[&condition], &[]) {
        return Ok(json!({"error": {"message": e.to_string()}}));
    }
    let total = tables.everyone().len();
    match tables.dataset().evaluate(&condition) {
        Ok(m) => Ok(json!({
            "condition": condition.to_string(), "size": m.len(), "profiles": total,
            "share": m.len() as f64 / total.max(1) as f64,
        })),
        Err(e) => Ok(json!({"error": {"message": e.to_string()}})),
    }
}

/// What the explore page asks for.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Explore {
    /// Saved segments to overlap (default the first six saved).
    #[serde(default)]
    pub segments: Vec<String>,
    /// Dimensions of the drill-down tree, outermost first.
    #[serde(default)]
    pub by: Vec<String>,
    /// A saved segment the tree starts from (default everyone).
    pub within: Option<String>,
    /// Numeric traits or metrics for the correlation heatmap (default [`KEY_METRICS`]).
    #[serde(default)]
    pub metrics: Vec<String>,
}

/// Most children a tree node shows (the largest; `more` counts the rest), and most nodes
/// in a tree: a dimension with a value per person (an e-mail) must not send a million.
const TREE_CHILDREN: usize = 30;
const TREE_NODES: usize = 2_000;

fn node_json(n: &TreeNode, parent: u64, total: u64, budget: &mut usize) -> Json {
    let size = n.members.len();
    let label = match (&n.dimension, &n.value) {
        (None, _) => "all".to_string(),
        (Some(d), Some(v)) => format!("{d} = {v}"),
        (Some(d), None) => format!("{d} (missing)"),
    };
    let mut children = Vec::new();
    for c in n.children.iter().take(TREE_CHILDREN) {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        children.push(node_json(c, size, total, budget));
    }
    json!({
        "label": label,
        "dimension": n.dimension,
        "value": n.value.as_ref().map(|v| v.to_string()),
        "size": size,
        "share_of_parent": size as f64 / parent.max(1) as f64,
        "share_of_all": size as f64 / total.max(1) as f64,
        "under_floor": size < FLOOR,
        "condition": n.condition.as_ref().map(|c| c.to_string()),
        "more": n.children.len() - children.len(),
        "children": children,
    })
}

fn find_segment<'a>(
    saved: &'a [microseg_store::StoredSegment],
    name: &str,
) -> Result<&'a microseg_store::StoredSegment, ConsoleError> {
    saved
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ConsoleError::NotFound(format!("no segment named '{name}'")))
}

/// The overlap heatmap of chosen segments (share of the row's segment also in the
/// column's), the drill-down tree with the statistical floor marked, and the correlation
/// heatmap of metrics.
pub fn explore(
    ws: &Workspace,
    store: &Store,
    at: Timestamp,
    q: &Explore,
) -> Result<Json, ConsoleError> {
    let saved = store.segments()?;
    let chosen: Vec<&microseg_store::StoredSegment> = if q.segments.is_empty() {
        saved.iter().take(6).collect()
    } else {
        q.segments
            .iter()
            .map(|n| find_segment(&saved, n))
            .collect::<Result<_, _>>()?
    };
    let within = q
        .within
        .as_deref()
        .map(|n| find_segment(&saved, n))
        .transpose()?;
    let metrics: Vec<String> = if q.metrics.is_empty() {
        KEY_METRICS.iter().map(|s| s.to_string()).collect()
    } else {
        q.metrics.clone()
    };
    let mut conditions: Vec<&Condition> = chosen.iter().map(|s| &s.condition).collect();
    conditions.extend(within.iter().map(|s| &s.condition));
    let mut names: Vec<&str> = q.by.iter().map(String::as_str).collect();
    names.extend(metrics.iter().map(String::as_str));
    let mut tables = Tables::open(ws, store, at)?;
    tables.need(&conditions, &names)?;
    let data = tables.dataset();
    let everyone = tables.everyone();
    let total = everyone.len();
    let mut charts = Map::new();
    let sets: Vec<RoaringBitmap> = chosen
        .iter()
        .map(|s| data.evaluate(&s.condition))
        .collect::<Result<_, _>>()?;
    let matrix = overlaps(&sets);
    let labels: Vec<String> = chosen.iter().map(|s| s.name.clone()).collect();
    let share: Vec<Vec<Option<f64>>> = matrix
        .iter()
        .zip(&sets)
        .map(|(row, set)| {
            row.iter()
                .map(|o| (!set.is_empty()).then(|| o.intersection as f64 / set.len() as f64))
                .collect()
        })
        .collect();
    if sets.len() >= 2 {
        charts.insert(
            "overlap".into(),
            charts::heatmap(
                "Share of the row's segment also in the column's",
                &labels,
                &labels,
                &share,
                Format::Percent,
                false,
            )
            .into(),
        );
    }
    let overlap = json!({
        "segments": labels.iter().zip(&sets).map(|(n, s)| json!({"name": n, "size": s.len()})).collect::<Vec<_>>(),
        "intersections": matrix.iter().map(|r| r.iter().map(|o| o.intersection).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "jaccard": matrix.iter().map(|r| r.iter().map(|o| o.jaccard).collect::<Vec<_>>()).collect::<Vec<_>>(),
        "share_of_row": share,
    });
    let tree = if q.by.is_empty() {
        Json::Null
    } else {
        let root = match within {
            Some(s) => data.evaluate(&s.condition)?,
            None => everyone.clone(),
        };
        let t = drill_down(&data, root, &q.by)?;
        node_json(&t, t.members.len(), total, &mut { TREE_NODES })
    };
    let members = everyone;
    let c = correlations(&data, &members, &metrics)?;
    charts.insert(
        "correlation".into(),
        charts::heatmap(
            "Spearman correlation of metrics (blue negative, red positive)",
            &metrics,
            &metrics,
            &c.spearman,
            Format::Coefficient,
            true,
        )
        .into(),
    );
    Ok(json!({
        "as_of": at.to_string(),
        "profiles": total,
        "floor": FLOOR,
        "all_segments": saved.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "overlap": overlap,
        "by": q.by,
        "within": q.within,
        "tree": tree,
        "correlation": {"metrics": metrics, "pearson": c.pearson, "spearman": c.spearman, "n": c.n},
        "charts": charts,
    }))
}

/// A person: identities, traits, metrics (with the predicted 12-month value when a CLV
/// model is fitted), saved segments they are in, recent events, and the decision each
/// channel makes for them now (computed, not recorded).
pub fn profile(
    ws: &Workspace,
    store: &Store,
    at: Timestamp,
    id: &str,
) -> Result<Json, ConsoleError> {
    let stored = store.profile(id)?;
    let p = stored.id;
    let saved = store.segments()?;
    let conditions: Vec<&Condition> = saved.iter().map(|s| &s.condition).collect();
    let mut tables = Tables::open(ws, store, at)?;
    let mut names: Vec<&str> = METRIC_NAMES.to_vec();
    names.extend(["clv_12m", "p_alive"]);
    tables.need(&conditions, &names)?;
    let data = tables.dataset();
    let metrics: Map<String, Json> = names
        .iter()
        .filter_map(|n| {
            let v = data.metrics?.value(n, p);
            Some((n.to_string(), v.map_or(Json::Null, |v| v.to_json())))
        })
        .collect();
    let segments: Vec<&str> = saved
        .iter()
        .filter(|s| data.evaluate(&s.condition).is_ok_and(|m| m.contains(p)))
        .map(|s| s.name.as_str())
        .collect();
    // From the columnar events (sorted by profile and time; merged profiles' events are
    // the survivor's), not the store: its events are in arrival order.
    let table = tables.events(&[])?;
    let events: Vec<Json> = table
        .events_of(p)
        .rev()
        .filter(|&i| table.time[i] <= at.0)
        .take(30)
        .map(|i| {
            let revenue = table.revenue[i];
            json!({
                "time": Timestamp(table.time[i]).to_string(),
                "event": table.names.value(table.name[i]),
                "revenue": revenue.is_finite().then_some(revenue),
            })
        })
        .collect();
    let mut channels: Vec<Channel> = Vec::new();
    for c in store.campaigns()? {
        if let Ok(campaign) = Campaign::from_json(&c.body) {
            if !channels.contains(&campaign.channel) {
                channels.push(campaign.channel);
            }
        }
    }
    let mut decisions = Map::new();
    if !channels.is_empty() {
        let decider = Decider::load(ws, store)?;
        tables.need_all_traits()?;
        for channel in channels {
            let slot = Slot::Channel(channel);
            let d = workspace_decision(&decider, store, &mut tables, p, id, &slot, at)?;
            decisions.insert(
                channel.name().to_string(),
                serde_json::to_value(d).unwrap_or(Json::Null),
            );
        }
    }
    Ok(json!({
        "id": stored.external_id,
        "as_of": at.to_string(),
        "identities": stored.identities.iter().map(|(k, v)| json!({"kind": k, "value": v})).collect::<Vec<_>>(),
        "traits": stored.traits.iter().map(|(k, v)| (k.clone(), v.to_json())).collect::<Map<_, _>>(),
        "metrics": metrics,
        "segments": segments,
        "recent_events": events,
        "decisions": decisions,
        "all_segments": saved.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
    }))
}

/// What a discovery run asks for.
#[derive(Debug, Clone, Deserialize)]
pub struct Discover {
    /// A condition or saved segment (its rate), or a numeric trait or metric (its mean).
    /// Not used for an uplift discovery.
    #[serde(default)]
    pub target: String,
    /// Search within this saved segment only.
    pub within: Option<String>,
    /// Dimensions (default every trait but timestamps).
    #[serde(default)]
    pub dims: Vec<String>,
    /// Fewest members a candidate needs (default [`FLOOR`]).
    pub min_support: Option<u64>,
    /// Most conditions in one segment (1 to 3, default 2).
    pub max_depth: Option<usize>,
    /// An uplift discovery over a stored experiment instead: its name, treatment arm and
    /// outcome.
    pub uplift: Option<Uplift>,
}

/// An uplift discovery's experiment.
#[derive(Debug, Clone, Deserialize)]
pub struct Uplift {
    /// The experiment (or a campaign saved as one).
    pub experiment: String,
    /// The treatment arm (default the first arm that is not the control).
    pub arm: Option<String>,
    /// The outcome (default the first).
    pub outcome: Option<String>,
}

fn discovery_rows(found: &Discovery, top: usize) -> Vec<Json> {
    found
        .segments
        .iter()
        .take(top)
        .enumerate()
        .map(|(i, f)| {
            let mut row = serde_json::to_value(f).unwrap_or(Json::Null);
            row["rank"] = json!(i + 1);
            row
        })
        .collect()
}

/// The smallest support a console discovery takes.
pub const MIN_SUPPORT: u64 = 20;
/// The most dimensions a console discovery combines.
pub const MAX_DIMS: usize = 16;

fn check_dims(dims: &[String]) -> Result<(), ConsoleError> {
    if dims.len() > MAX_DIMS {
        return Err(ConsoleError::Invalid(format!(
            "dims: at most {MAX_DIMS} dimensions ({} here): name the ones to combine",
            dims.len()
        )));
    }
    Ok(())
}

/// Runs a discovery (segments whose target rate or mean differs from the base, with
/// intervals and FDR control) or an uplift discovery (where a treatment works, makes no
/// difference, or backfires); the ranked table and a bar chart with interval whiskers.
pub fn discover_view(
    ws: &Workspace,
    store: &Store,
    at: Timestamp,
    q: &Discover,
) -> Result<Json, ConsoleError> {
    let max_depth = q.max_depth.unwrap_or(2);
    if !(1..=3).contains(&max_depth) {
        return Err(ConsoleError::Invalid(format!(
            "max_depth {max_depth}: give 1 to 3 conditions"
        )));
    }
    let settings = Settings {
        max_depth,
        // A search is bounded by its support (it prunes below it) and its dimensions: a
        // request cannot ask for millions of one-person candidates.
        min_support: q.min_support.unwrap_or(FLOOR).max(MIN_SUPPORT),
        fdr: 0.05,
        bins: 4,
    };
    let saved = store.segment_conditions()?;
    let lookup = |text: &str| -> Result<Condition, ConsoleError> {
        match saved.iter().find(|(n, _)| n.as_str() == text) {
            Some((_, c)) => Ok(c.clone()),
            None => parse(text).map_err(|e| ConsoleError::Invalid(format!("'{text}': {e}"))),
        }
    };
    let within = q.within.as_deref().map(lookup).transpose()?;
    let mut tables = Tables::open(ws, store, at)?;
    let dims_for = |tables: &Tables<'_>, exclude: &[String]| -> Vec<String> {
        if q.dims.is_empty() {
            tables.search_dimensions(exclude)
        } else {
            q.dims.clone()
        }
    };
    let started = std::time::Instant::now();
    let (found, kind, title, reference) = if let Some(u) = &q.uplift {
        let experiment = store.experiment(&u.experiment)?;
        let control = experiment.control_index();
        let arm = match &u.arm {
            Some(a) => experiment.arms.iter().position(|x| x == a).ok_or_else(|| {
                ConsoleError::NotFound(format!(
                    "arm '{a}': arms are {}",
                    experiment.arms.join(", ")
                ))
            })?,
            None => (0..experiment.arms.len())
                .find(|&i| i != control)
                .unwrap_or(0),
        };
        if arm == control {
            return Err(ConsoleError::Invalid(
                "the arm is the control; name a treatment arm".into(),
            ));
        }
        let o = match &u.outcome {
            Some(x) => experiment
                .outcomes
                .iter()
                .position(|y| y == x)
                .ok_or_else(|| {
                    ConsoleError::NotFound(format!(
                        "outcome '{x}': outcomes are {}",
                        experiment.outcomes.join(", ")
                    ))
                })?,
            None => 0,
        };
        let treated = experiment.arm_members(arm);
        let control_set = experiment.arm_members(control);
        let base = &treated | &control_set;
        let column = experiment.outcome_column(o, tables.len());
        let kind = experiment.outcome_kind(o);
        let dims = dims_for(&tables, &[]);
        check_dims(&dims)?;
        let names: Vec<&str> = dims.iter().map(String::as_str).collect();
        tables.need(&[], &names)?;
        let its = items(&tables.dataset(), &dims, &base, &settings)
            .map_err(|(d, e)| ConsoleError::Invalid(format!("dimension {d}: {e}")))?;
        let found = discover_uplift(&its, &treated, &control_set, &column, kind, &settings);
        let title = format!(
            "Effect of '{}' on {} by segment (treated − control, 95% interval)",
            experiment.arms[arm], experiment.outcomes[o]
        );
        let kind = if matches!(kind, microseg_engine::models::experiment::OutcomeKind::Rate) {
            "rate"
        } else {
            "mean"
        };
        (found, kind, title, 0.0)
    } else {
        if q.target.trim().is_empty() {
            return Err(ConsoleError::Invalid(
                "give a target: a condition, a segment or a numeric metric".into(),
            ));
        }
        let is_name = q
            .target
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_');
        let target_condition = match lookup(&q.target) {
            Ok(c) => Some(c),
            Err(_) if is_name => None,
            Err(e) => return Err(e),
        };
        let mut conditions: Vec<&Condition> = target_condition.iter().collect();
        conditions.extend(within.iter());
        let target_name = [q.target.as_str()];
        tables.need(
            &conditions,
            if target_condition.is_some() {
                &[]
            } else {
                &target_name
            },
        )?;
        let base = match &within {
            Some(c) => tables.dataset().evaluate(c)?,
            None => tables.everyone(),
        };
        let (target, exclude) = Target::named(
            &tables.dataset(),
            target_condition.as_ref(),
            &q.target,
            &base,
        )?;
        let dims = dims_for(&tables, &exclude);
        check_dims(&dims)?;
        let names: Vec<&str> = dims.iter().map(String::as_str).collect();
        tables.need(&[], &names)?;
        let its = items(&tables.dataset(), &dims, &base, &settings)
            .map_err(|(d, e)| ConsoleError::Invalid(format!("dimension {d}: {e}")))?;
        let found = discover(&its, &base, &target, &settings);
        let kind = if target_condition.is_some() {
            "rate"
        } else {
            "mean"
        };
        let title = format!(
            "{} by discovered segment (95% interval; line: everyone)",
            q.target
        );
        let reference = found.base;
        (found, kind, title, reference)
    };
    let seconds = started.elapsed().as_secs_f64();
    let reference_label = if q.uplift.is_some() {
        "no effect".to_string()
    } else if kind == "rate" {
        format!("everyone {}", Format::Percent.show(reference))
    } else {
        format!("everyone {}", Format::Amount.show(reference))
    };
    let format = if kind == "rate" {
        Format::Percent
    } else {
        Format::Amount
    };
    let uplift = q.uplift.is_some();
    let chart_bars: Vec<Bar> = found
        .segments
        .iter()
        .take(15)
        .map(|f| {
            let e = &f.estimate;
            let value = if uplift {
                e.value - e.control_value.unwrap_or(0.0)
            } else {
                e.value
            };
            Bar {
                label: f.condition.to_string(),
                value,
                interval: Some((e.ci_low, e.ci_high)),
            }
        })
        .collect();
    Ok(json!({
        "as_of": at.to_string(),
        "kind": kind,
        "uplift": uplift,
        "base": found.base,
        "base_size": found.base_size,
        "tested": found.tested,
        "found": found.segments.len(),
        "min_support": settings.min_support,
        "max_depth": settings.max_depth,
        "fdr": settings.fdr,
        "seconds": seconds,
        "segments": discovery_rows(&found, 50),
        "charts": {"segments": charts::bars(&title, &chart_bars, Some((reference, &reference_label)), format)},
    }))
}

/// Personas: k-means (3 seeded restarts) on standardised features (default visits, orders, revenue and
/// tenure, ln(1 + x) of the counts and money), each with its size, centre and the trait
/// values it over-indexes on; a bar chart of their sizes.
pub fn personas(
    ws: &Workspace,
    store: &Store,
    at: Timestamp,
    k: usize,
    features: &[String],
) -> Result<Json, ConsoleError> {
    let features: Vec<String> = if features.is_empty() {
        ["visits", "orders", "revenue", "tenure_days"]
            .map(String::from)
            .to_vec()
    } else {
        features.to_vec()
    };
    let log: Vec<String> = features
        .iter()
        .filter(|f| ["visits", "orders", "revenue", "aov"].contains(&f.as_str()))
        .cloned()
        .collect();
    if !(2..=8).contains(&k) {
        return Err(ConsoleError::Invalid(format!(
            "k {k}: give 2 to 8 personas"
        )));
    }
    let settings = PersonaSettings {
        k: Some(k),
        features: features.clone(),
        log: log.clone(),
        // Three restarts (scikit-learn takes 10): a look in 0.15 s on the demo shop;
        // `microseg cluster` takes 20 for personas to save.
        restarts: 3,
        seed: 42,
    };
    let mut tables = Tables::open(ws, store, at)?;
    let names: Vec<&str> = features.iter().map(String::as_str).collect();
    tables.need(&[], &names)?;
    tables.need_all_traits()?;
    let base = tables.everyone();
    let found = cluster(&tables.dataset(), &base, &settings)?;
    let n = found.profiles.max(1) as f64;
    let list: Vec<Json> = found
        .clusters
        .iter()
        .map(|c| {
            json!({
                "persona": c.cluster,
                "size": c.members.len(),
                "share": c.members.len() as f64 / n,
                "centre": features.iter().zip(&c.centroid).map(|(f, x)| (f.clone(), json!(x))).collect::<Map<_, _>>(),
                "over_indexes": c.over_indexes.iter().map(|o| json!({"trait": o.name, "value": o.value, "share": o.share, "lift": o.lift})).collect::<Vec<_>>(),
            })
        })
        .collect();
    let bars: Vec<Bar> = found
        .clusters
        .iter()
        .map(|c| Bar {
            label: format!(
                "persona {}: {}",
                c.cluster,
                c.over_indexes
                    .first()
                    .map_or("no distinct trait".to_string(), |o| format!(
                        "{} = {}",
                        o.name, o.value
                    ))
            ),
            value: c.members.len() as f64 / n,
            interval: None,
        })
        .collect();
    Ok(json!({
        "as_of": at.to_string(),
        "k": found.k,
        "features": features,
        "log": log,
        "profiles": found.profiles,
        "left_out": found.left_out,
        "personas": list,
        "charts": {"sizes": charts::bars("Share of profiles in each persona", &bars, None, Format::Percent)},
    }))
}

/// Every campaign with its status, channel, segment and messages by status.
pub fn campaigns(store: &Store) -> Result<Json, ConsoleError> {
    let list: Vec<Json> = store
        .campaigns()?
        .into_iter()
        .map(|c| {
            let parsed = Campaign::from_json(&c.body).ok();
            let outbox: Map<String, Json> = store
                .campaign_outbox(&c.name)?
                .into_iter()
                .map(|(s, n)| (s, json!(n)))
                .collect();
            Ok(json!({
                "name": c.name,
                "version": c.version,
                "status": c.status,
                "channel": parsed.as_ref().map(|p| p.channel.name().to_string()),
                "segment": parsed.as_ref().map(|p| p.segment.clone()),
                "priority": parsed.as_ref().map(|p| p.priority),
                "holdout": parsed.as_ref().map(|p| p.holdout),
                "outbox": outbox,
            }))
        })
        .collect::<Result<_, ConsoleError>>()?;
    Ok(json!({"campaigns": list}))
}

/// One campaign: its file, a dry run's counts now (active campaigns, `with_dry_run`), the outbox by
/// status and the last delivery attempts, and its results as an experiment (treated vs
/// holdout with intervals, the lift chart), money (ROI) and CAC vs predicted LTV.
pub fn campaign(
    ws: &Workspace,
    store: &Store,
    at: Timestamp,
    name: &str,
    window_days: f64,
    with_dry_run: bool,
) -> Result<Json, ConsoleError> {
    let stored = store.campaign(name)?;
    let file: Json = serde_json::from_str(&stored.body).unwrap_or(Json::Null);
    let window_ms = (window_days * DAY_MS as f64) as i64;
    // The dry run and the results each read the events: side by side, on their own
    // connections.
    let (dry_run, results) = std::thread::scope(|scope| {
        let dry = scope.spawn(|| -> Result<Json, ConsoleError> {
            if !with_dry_run || stored.status != "active" {
                return Ok(Json::Null);
            }
            let mut own = Store::open(ws)?;
            let outcome = microseg_activate::run::run(ws, &mut own, &stored, at, true)?;
            Ok(serde_json::to_value(outcome.counts).unwrap_or(Json::Null))
        });
        let results = microseg_activate::report::results(ws, store, name, window_ms, at);
        (dry.join().expect("the dry run does not panic"), results)
    });
    let (dry_run, results) = (dry_run?, results?);
    let outbox: Map<String, Json> = store
        .campaign_outbox(name)?
        .into_iter()
        .map(|(s, n)| (s, json!(n)))
        .collect();
    let deliveries: Vec<Json> = store
        .campaign_deliveries(name, 50)?
        .into_iter()
        .map(|d| {
            json!({"at": Timestamp(d.at).to_string(), "key": d.key, "channel": d.channel,
                   "variant": d.variant, "outcome": d.outcome, "error": d.error})
        })
        .collect();
    // The outcome columns are indexed by profile id: the members' largest bounds them.
    let profiles = results
        .experiment
        .members
        .iter()
        .map(|m| m.profile as usize + 1)
        .max()
        .unwrap_or(0);
    let arms = results.experiment.report(profiles, None);
    let mut arm_rows = Vec::new();
    let mut lift_bars = Vec::new();
    let mut value_bars = Vec::new();
    for a in &arms {
        let mut outcomes = Map::new();
        for (o, r) in results.experiment.outcomes.iter().zip(&a.outcomes) {
            outcomes.insert(
                o.clone(),
                json!({
                    "value": r.value.is_finite().then_some(r.value),
                    "abs_lift": r.comparison.map(|c| c.abs_lift),
                    "rel_lift": r.comparison.and_then(|c| c.rel_lift),
                    "ci_low": r.comparison.map(|c| c.ci_low),
                    "ci_high": r.comparison.map(|c| c.ci_high),
                    "p_value": r.comparison.map(|c| c.p_value),
                }),
            );
            if o == "conversion" {
                // Each arm's own rate with its Wilson interval, then the lift's.
                let n = a.n as f64;
                value_bars.push(Bar {
                    label: format!("{} (n = {})", a.arm, a.n),
                    value: r.value,
                    interval: (a.n > 0).then(|| wilson((r.value * n).round(), n)),
                });
                if let Some(c) = r.comparison {
                    lift_bars.push(Bar {
                        label: format!("{} − holdout", a.arm),
                        value: c.abs_lift,
                        interval: Some((c.ci_low, c.ci_high)),
                    });
                }
            }
        }
        arm_rows.push(json!({"arm": a.arm, "n": a.n, "outcomes": outcomes}));
    }
    let mut bars = value_bars;
    bars.extend(lift_bars);
    let lift = charts::bars(
        &format!("{name}: conversion of treated and holdout and the lift, with 95% intervals"),
        &bars,
        Some((0.0, "no lift")),
        Format::Percent,
    );
    Ok(json!({
        "name": name,
        "version": stored.version,
        "status": stored.status,
        "file": file,
        "as_of": at.to_string(),
        "dry_run": dry_run,
        "outbox": outbox,
        "deliveries": deliveries,
        "results": {
            "window_days": window_days,
            "arms": arm_rows,
            "money": results.money,
            "acquisition": results.acquisition(None),
        },
        "charts": {"lift": lift},
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_put_the_top_percent_in_an_overflow_bin() {
        // 0..=99 and one 1000: p99 is the value at index 99 (99), the overflow bin holds 1000.
        let mut v: Vec<f64> = (0..100).map(f64::from).collect();
        v.push(1000.0);
        let (b, overflow) = bins(v, 11);
        assert!(overflow);
        assert_eq!(b.len(), 12);
        assert_eq!(b.iter().map(|x| x.2).sum::<u64>(), 101);
        assert_eq!(b[11].2, 1);
        // Width 9: 0..8 in the first bin.
        assert_eq!(b[0].2, 9);
    }
}
