//! `microseg experiment`: load a past campaign's results, report lift per arm and segment,
//! and discover where a treatment works, does nothing, or backfires.

use std::collections::HashMap;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand};
use microseg_core::condition::Condition;
use microseg_engine::models::discover::{
    dimension_items, discover_uplift, exclusion, partition, Measure, Settings, Verdict,
};
use microseg_engine::models::experiment::{ArmResult, Experiment, Member, Moments, OutcomeKind};
use microseg_store::reader::{self, Cell, Row};
use microseg_store::{FileOptions, ProfileImport, Tables};
use roaring::RoaringBitmap;
use serde_json::{json, Value as Json};

use super::discover::{
    add_search_fields, print_findings, print_partition, search_items, show, SearchArgs,
};
use super::import::{parse_types, print_summary, FileArgs};
use super::segment::check_name;
use super::{as_of, print_json, Context};
use crate::failure::{bad_input, not_found, usage};
use crate::output::{print_table, thousands};
use crate::progress::Bar;

/// Experiments: profiles assigned to arms (one is the control) and their outcomes.
#[derive(Debug, Subcommand)]
pub enum ExperimentCommand {
    Import(ImportArgs),
    Report(ReportArgs),
    Discover(DiscoverArgs),
    List,
}

/// Load a past campaign's results: one row per profile with its arm and outcomes.
///
/// The other columns of the file become the profiles' traits (as `import profiles` does),
/// so the report can be split by them. Outcomes are numbers; an outcome with only 0 and 1
/// (or true/false) is a rate, any other a mean.
#[derive(Debug, Args)]
#[command(
    after_help = "Example (an e-mail test with two campaigns and a control):
  microseg experiment import emails.csv --id customer_id --arm segment \\
    --control 'No E-Mail' --outcomes visit,conversion,spend --name email_test"
)]
pub struct ImportArgs {
    #[command(flatten)]
    file: FileArgs,
    /// Column with the profile's external id.
    #[arg(long, value_name = "COL")]
    id: String,
    /// Column with the arm.
    #[arg(long, value_name = "COL")]
    arm: String,
    /// The control arm's value.
    #[arg(long, value_name = "VALUE")]
    control: String,
    /// Outcome columns.
    #[arg(long, value_delimiter = ',', required = true, value_name = "A,B,..")]
    outcomes: Vec<String>,
    /// The experiment's name (default: the file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Declare a trait type, e.g. --type zip_code=string.
    #[arg(long = "type", value_name = "TRAIT=TYPE")]
    types: Vec<String>,
}

/// Per arm: n and each outcome's rate or mean, with the lift over the control (absolute and
/// relative), its 95% interval (Newcombe for rates, Welch for means) and p-value; with
/// --by, the same within each value of each dimension or segment.
#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The experiment.
    name: String,
    /// Split by these traits, metrics or saved segments (numbers with many values in
    /// quartiles).
    #[arg(long, value_delimiter = ',', value_name = "A,B,..")]
    by: Vec<String>,
    /// The instant traits and metrics are evaluated at (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Find the micro-segments where an arm works best, where it does nothing, and where it
/// backfires, with the false discovery rate controlled over every candidate tested.
///
/// `works` and `backfires` segments pass the FDR; `no_effect` segments have a 95% interval
/// that covers zero and lies below the overall effect: they gain measurably less than
/// average, possibly nothing. Those with a high control-group value are the people who
/// act anyway: --save-exclusion stores them as one segment to leave out of discounts.
/// --partition splits the experiment's members into non-overlapping groups by where the
/// effect differs, and says who to send to and who to hold back.
#[derive(Debug, Args)]
pub struct DiscoverArgs {
    /// The experiment.
    name: String,
    /// The treatment arm compared with the control.
    #[arg(long)]
    arm: String,
    /// The outcome.
    #[arg(long)]
    outcome: String,
    #[command(flatten)]
    search: SearchArgs,
    /// Save the no-effect segments whose control value is above the control's overall value
    /// as one segment under this name (`or` of at most 5, broadest first, none inside another).
    #[arg(long, value_name = "NAME")]
    save_exclusion: Option<String>,
    /// The instant traits and metrics are evaluated at (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(ctx: &Context, cmd: ExperimentCommand) -> Result<()> {
    match cmd {
        ExperimentCommand::Import(args) => import(ctx, args),
        ExperimentCommand::Report(args) => report(ctx, args),
        ExperimentCommand::Discover(args) => uplift(ctx, args),
        ExperimentCommand::List => {
            let (_, store) = ctx.open()?;
            for name in store.experiment_names()? {
                println!("{name}");
            }
            Ok(())
        }
    }
}

fn import(ctx: &Context, args: ImportArgs) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    let name = match &args.name {
        Some(n) => n.clone(),
        None => args
            .file
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default(),
    };
    check_name(&name).context("--name")?;
    let options = args.file.options()?;
    // Everything is checked before anything is written.
    let file = read_assignments(&options, &args)?;
    let mut rejected = file.rejected;
    if !file.arms.contains(&args.control) {
        return Err(bad_input(format!(
            "--control '{}' is not an arm of {} (arms: {})",
            args.control,
            options.path.display(),
            file.arms.join(", ")
        )));
    }
    if file.arms.len() < 2 {
        return Err(bad_input(format!(
            "{}: only one arm ('{}'); an experiment needs a control and a treatment",
            options.path.display(),
            file.arms[0]
        )));
    }
    // Every column but the arm and the outcomes is a trait of the profile.
    let mut skip = args.outcomes.clone();
    skip.push(args.arm.clone());
    let profiles = store.import_profiles(
        &ws,
        &ProfileImport {
            file: options.clone(),
            id_column: args.id.clone(),
            types: parse_types(&args.types)?,
            skip_columns: skip,
        },
        &Bar::new("profiles"),
    )?;
    let ids: HashMap<String, u32> = store
        .external_ids()?
        .into_iter()
        .enumerate()
        .map(|(i, id)| (id, i as u32))
        .collect();
    let mut members: Vec<Member> = Vec::new();
    let mut first_line: HashMap<u32, u64> = HashMap::new();
    for a in file.assignments {
        let Some(&profile) = ids.get(&a.id) else {
            rejected.push((a.line, format!("profile '{}' was not imported", a.id)));
            continue;
        };
        match first_line.insert(profile, a.line) {
            Some(first) => {
                rejected.push((a.line, format!("profile already assigned on line {first}")))
            }
            None => members.push(Member {
                profile,
                arm: a.arm,
                outcomes: a.outcomes,
            }),
        }
    }
    rejected.sort();
    let (rows, arms) = (file.rows, file.arms);
    let experiment = Experiment {
        name: name.clone(),
        control: args.control.clone(),
        arms,
        outcomes: args.outcomes.clone(),
        members,
    };
    store.save_experiment(&experiment, &options.path.display().to_string())?;
    let counts: Vec<(String, usize)> = experiment
        .arms
        .iter()
        .enumerate()
        .map(|(i, a)| {
            (
                a.clone(),
                experiment.members.iter().filter(|m| m.arm == i).count(),
            )
        })
        .collect();
    let kinds: Vec<(String, OutcomeKind)> = (0..experiment.outcomes.len())
        .map(|o| (experiment.outcomes[o].clone(), experiment.outcome_kind(o)))
        .collect();
    if args.file.json {
        return print_json(&json!({
            "name": name,
            "rows": rows,
            "members": experiment.members.len(),
            "rejected": rejected.len(),
            "rejects": rejected.iter().take(20).map(|(l, r)| json!({"line": l, "reason": r})).collect::<Vec<_>>(),
            "control": experiment.control,
            "arms": counts.iter().map(|(a, n)| json!({"arm": a, "n": n})).collect::<Vec<_>>(),
            "outcomes": kinds.iter().map(|(o, k)| json!({"outcome": o, "kind": k})).collect::<Vec<_>>(),
            "profiles": profiles,
        }));
    }
    print_summary(&profiles);
    println!(
        "experiment {name}: {} profiles in {} arms ({}), control '{}'; outcomes {}; {} rows rejected",
        thousands(experiment.members.len() as u64),
        counts.len(),
        counts
            .iter()
            .map(|(a, n)| format!("{a} {}", thousands(*n as u64)))
            .collect::<Vec<_>>()
            .join(", "),
        experiment.control,
        kinds
            .iter()
            .map(|(o, k)| format!("{o} ({})", if *k == OutcomeKind::Rate { "rate" } else { "mean" }))
            .collect::<Vec<_>>()
            .join(", "),
        thousands(rejected.len() as u64),
    );
    for (line, reason) in rejected.iter().take(5) {
        println!("  line {line}: {reason}");
    }
    Ok(())
}

/// One usable row of an experiment file.
struct Assignment {
    line: u64,
    id: String,
    arm: usize,
    outcomes: Vec<f64>,
}

/// What an experiment file holds: its usable rows, the arms in the order first seen, the
/// rows rejected (line, reason) and the number of data rows.
struct ExperimentFile {
    assignments: Vec<Assignment>,
    arms: Vec<String>,
    rejected: Vec<(u64, String)>,
    rows: u64,
}

/// Reads the arm and outcomes of every row; a missing outcome column is an error.
fn read_assignments(options: &FileOptions, args: &ImportArgs) -> Result<ExperimentFile> {
    let mut reader = reader::open(
        &options.path,
        options.format,
        options.delimiter,
        options.columns.as_deref(),
    )?;
    let mut file = ExperimentFile {
        assignments: Vec::new(),
        arms: Vec::new(),
        rejected: Vec::new(),
        rows: 0,
    };
    let mut row = Row::default();
    while reader.next_row(&mut row)? {
        file.rows += 1;
        match assignment(reader.columns(), &row, args, &mut file.arms) {
            Ok(a) => file.assignments.push(a),
            Err(reason) => file.rejected.push((row.line, reason)),
        }
    }
    for o in &args.outcomes {
        if !reader.columns().contains(o) {
            return Err(bad_input(format!(
                "{}: no outcome column '{o}' (columns: {})",
                options.path.display(),
                reader.columns().join(", ")
            )));
        }
    }
    Ok(file)
}

/// One row's id, arm (added to `arms` when new) and outcomes, or why the row is rejected.
fn assignment(
    columns: &[String],
    row: &Row,
    args: &ImportArgs,
    arms: &mut Vec<String>,
) -> Result<Assignment, String> {
    if let Some(problem) = &row.problem {
        return Err(problem.clone());
    }
    let cell = |name: &str| {
        columns
            .iter()
            .position(|c| c == name)
            .map(|i| &row.cells[i])
    };
    let text = |name: &str| -> Result<String, String> {
        cell(name)
            .and_then(Cell::as_text)
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| format!("no {name}"))
    };
    let id = text(&args.id)?;
    let arm_name = text(&args.arm)?;
    let mut outcomes = Vec::with_capacity(args.outcomes.len());
    for o in &args.outcomes {
        let value = cell(o).map_or(Ok(f64::NAN), outcome_value);
        outcomes.push(value.map_err(|e| format!("{o}: {e}"))?);
    }
    let arm = match arms.iter().position(|a| a == &arm_name) {
        Some(i) => i,
        None => {
            arms.push(arm_name);
            arms.len() - 1
        }
    };
    Ok(Assignment {
        line: row.line,
        id,
        arm,
        outcomes,
    })
}

/// An outcome cell as a number: numbers, true/false, yes/no; empty is missing.
fn outcome_value(cell: &Cell) -> Result<f64, String> {
    match cell {
        Cell::Null => Ok(f64::NAN),
        Cell::Int(i) => Ok(*i as f64),
        Cell::Float(x) if x.is_finite() => Ok(*x),
        Cell::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Cell::Text(t) => {
            let t = t.trim();
            if t.is_empty() {
                return Ok(f64::NAN);
            }
            if let Some(b) = microseg_core::value::parse_bool(t) {
                return Ok(if b { 1.0 } else { 0.0 });
            }
            match microseg_core::value::parse_float(t) {
                Some(x) if x.is_finite() => Ok(x),
                _ => Err(format!("'{t}' is not a number")),
            }
        }
        other => Err(format!("{other:?} is not a number")),
    }
}

fn finite(x: f64) -> Json {
    if x.is_finite() {
        json!(x)
    } else {
        Json::Null
    }
}

fn arms_json(experiment: &Experiment, rows: &[ArmResult]) -> Vec<Json> {
    rows.iter()
        .map(|ArmResult { arm, n, outcomes }| {
            let mut map = serde_json::Map::new();
            for (o, r) in experiment.outcomes.iter().zip(outcomes) {
                let (value, cmp) = (&r.value, &r.comparison);
                map.insert(
                    o.clone(),
                    json!({
                        "value": finite(*value),
                        "abs_lift": cmp.map(|c| finite(c.abs_lift)),
                        "rel_lift": cmp.and_then(|c| c.rel_lift).map(finite),
                        "ci_low": cmp.map(|c| finite(c.ci_low)),
                        "ci_high": cmp.map(|c| finite(c.ci_high)),
                        "statistic": cmp.map(|c| finite(c.statistic)),
                        "p_value": cmp.map(|c| finite(c.p_value)),
                    }),
                );
            }
            json!({"arm": arm, "n": n, "outcomes": map})
        })
        .collect()
}

fn print_arms(experiment: &Experiment, kinds: &[OutcomeKind], rows: &[ArmResult]) {
    let mut table = Vec::new();
    for (o, name) in experiment.outcomes.iter().enumerate() {
        let kind = if kinds[o] == OutcomeKind::Rate {
            "rate"
        } else {
            "mean"
        };
        for ArmResult { arm, n, outcomes } in rows {
            let (value, cmp) = (&outcomes[o].value, &outcomes[o].comparison);
            let diff = |x: f64| {
                if kinds[o] == OutcomeKind::Rate {
                    format!("{:+.2} pts", x * 100.0)
                } else {
                    format!("{x:+.3}")
                }
            };
            table.push(vec![
                name.clone(),
                arm.clone(),
                thousands(*n),
                show(kind, *value),
                cmp.map_or("control".into(), |c| diff(c.abs_lift)),
                cmp.and_then(|c| c.rel_lift)
                    .map_or(String::new(), |r| format!("{:+.1}%", r * 100.0)),
                cmp.map_or(String::new(), |c| {
                    format!("{} to {}", diff(c.ci_low), diff(c.ci_high))
                }),
                cmp.map_or(String::new(), |c| format!("{:.4}", c.p_value)),
            ]);
        }
    }
    print_table(
        &[
            "outcome",
            "arm",
            "n",
            "value",
            "lift",
            "relative",
            "95% interval",
            "p",
        ],
        &table,
    );
}

fn report(ctx: &Context, args: ReportArgs) -> Result<()> {
    let (ws, store) = ctx.open()?;
    let experiment = store.experiment(&args.name)?;
    let at = as_of(args.as_of.as_deref())?;
    let reported = analyse(&ws, &store, &experiment, &args.by, at)?;
    if args.json {
        return print_json(&document(&experiment, &reported));
    }
    println!(
        "experiment {}: {} profiles, control '{}' (intervals 95%: Newcombe for rates, Welch for means)",
        experiment.name,
        thousands(experiment.members.len() as u64),
        experiment.control
    );
    print_reported(&experiment, &reported);
    Ok(())
}

/// An experiment's arms compared with its control, overall and by dimension.
pub(crate) struct Reported {
    kinds: Vec<OutcomeKind>,
    overall: Vec<ArmResult>,
    by: Vec<(String, String, Vec<ArmResult>)>,
    /// The members of each `by` group, in its order.
    pub(crate) groups: Vec<RoaringBitmap>,
}

/// Compares the arms of `experiment` overall and within each value of each `by`
/// dimension (a saved segment: in / not in; a trait or metric: its values or bins).
pub(crate) fn analyse(
    ws: &microseg_store::Workspace,
    store: &microseg_store::Store,
    experiment: &Experiment,
    by_dims: &[String],
    at: microseg_core::Timestamp,
) -> Result<Reported> {
    let kinds: Vec<OutcomeKind> = (0..experiment.outcomes.len())
        .map(|o| experiment.outcome_kind(o))
        .collect();
    let mut tables = Tables::open(ws, store, at)?;
    let profiles = tables.len();
    let overall = experiment.report(profiles, None);
    let mut by = Vec::new();
    let mut group_members = Vec::new();
    if !by_dims.is_empty() {
        let saved = tables.segments().clone();
        let segment_conditions: Vec<&Condition> =
            by_dims.iter().filter_map(|b| saved.get(b)).collect();
        let names: Vec<&str> = by_dims
            .iter()
            .filter(|b| !saved.contains_key(*b))
            .map(String::as_str)
            .collect();
        tables.need(&segment_conditions, &names)?;
        let data = tables.dataset();
        let all = experiment.all_members();
        let settings = Settings {
            min_support: 1,
            ..Settings::default()
        };
        for (i, dim) in by_dims.iter().enumerate() {
            let groups: Vec<(String, RoaringBitmap)> = match saved.get(dim) {
                Some(c) => {
                    let members = data.evaluate(c)?;
                    vec![
                        ("in".to_string(), &members & &all),
                        ("not in".to_string(), &all - &members),
                    ]
                }
                None => dimension_items(&data, i, dim, &all, &settings)
                    .map_err(|e| bad_input(format!("--by {dim}: {e}")))?
                    .into_iter()
                    .map(|item| (item.label, item.members))
                    .collect(),
            };
            for (value, members) in groups {
                by.push((
                    dim.clone(),
                    value,
                    experiment.report(profiles, Some(&members)),
                ));
                group_members.push(members);
            }
        }
    }
    Ok(Reported {
        kinds,
        overall,
        by,
        groups: group_members,
    })
}

impl Reported {
    /// `dimension = value` of each `by` group, in the order of [`Reported::groups`].
    pub(crate) fn group_labels(&self) -> Vec<String> {
        self.by
            .iter()
            .map(|(d, v, _)| format!("{d} = {v}"))
            .collect()
    }
}

/// The `experiment report --json` document.
pub(crate) fn document(experiment: &Experiment, r: &Reported) -> Json {
    json!({
        "experiment": experiment.name,
        "control": experiment.control,
        "outcomes": experiment.outcomes.iter().zip(&r.kinds).map(|(o, k)| json!({"outcome": o, "kind": k})).collect::<Vec<_>>(),
        "arms": arms_json(experiment, &r.overall),
        "by": r.by.iter().map(|(d, v, rows)| json!({
            "dimension": d, "value": v, "arms": arms_json(experiment, rows),
        })).collect::<Vec<_>>(),
    })
}

/// The tables of a report.
pub(crate) fn print_reported(experiment: &Experiment, r: &Reported) {
    print_arms(experiment, &r.kinds, &r.overall);
    for (dim, value, rows) in &r.by {
        println!("\n{dim} = {value}");
        print_arms(experiment, &r.kinds, rows);
    }
}

fn uplift(ctx: &Context, args: DiscoverArgs) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    let experiment = store.experiment(&args.name)?;
    let at = as_of(args.as_of.as_deref())?;
    let settings = args.search.settings()?;
    let arm = experiment
        .arms
        .iter()
        .position(|a| a == &args.arm)
        .ok_or_else(|| {
            not_found(format!(
                "--arm '{}': arms of {} are {}",
                args.arm,
                experiment.name,
                experiment.arms.join(", ")
            ))
        })?;
    if arm == experiment.control_index() {
        return Err(usage(format!(
            "--arm '{}' is the control; name a treatment arm",
            args.arm
        )));
    }
    let o = experiment
        .outcomes
        .iter()
        .position(|x| x == &args.outcome)
        .ok_or_else(|| {
            not_found(format!(
                "--outcome '{}': outcomes of {} are {}",
                args.outcome,
                experiment.name,
                experiment.outcomes.join(", ")
            ))
        })?;
    if let Some(name) = &args.save_exclusion {
        check_name(name).context("--save-exclusion")?;
    }
    let mut tables = Tables::open(&ws, &store, at)?;
    let treated = experiment.arm_members(arm);
    let control = experiment.arm_members(experiment.control_index());
    let base = &treated | &control;
    let column = experiment.outcome_column(o, tables.len());
    let kind = experiment.outcome_kind(o);
    let started = std::time::Instant::now();
    let dims = args.search.dimensions(&tables, &[])?;
    let items = search_items(&mut tables, &dims, &base, &settings)?;
    let found = discover_uplift(&items, &treated, &control, &column, kind, &settings);
    let groups = args.search.partition.then(|| {
        let measure = Measure::Uplift {
            treated: &treated,
            control: &control,
            outcome: &column,
            kind,
        };
        partition(&items, &base, measure, &settings, settings.max_depth)
    });
    let seconds = started.elapsed().as_secs_f64();
    drop(tables);
    let control_overall = Moments::of(&column, &control).mean();
    let chosen = exclusion(&found, control_overall);
    let mut saved = None;
    if let (Some(name), Some(condition)) = (&args.save_exclusion, chosen) {
        let description = format!(
            "people for whom '{}' in experiment {} made no measurable difference to {} (they act anyway)",
            args.arm, experiment.name, args.outcome
        );
        let version = store.save_segment(name, &condition, Some(&description), true)?;
        saved = Some((name.clone(), version, condition));
    }
    let kind_text = kind_name(kind);
    if args.json {
        let mut doc = json!({
            "experiment": experiment.name,
            "arm": args.arm,
            "control": experiment.control,
            "outcome": args.outcome,
            "kind": kind,
            "exclusion": saved.as_ref().map(|(n, v, c)| {
                json!({"name": n, "version": v, "condition": c.to_string()})
            }),
        });
        add_search_fields(&mut doc, &found, &dims, &settings, seconds, groups.as_ref());
        return print_json(&doc);
    }
    let effect_text = |x: f64| {
        if kind == OutcomeKind::Rate {
            format!("{:+.2} pts", x * 100.0)
        } else {
            format!("{x:+.3}")
        }
    };
    if let Some(groups) = &groups {
        println!(
            "{} vs {} on {} ({kind_text}): overall effect {}; {} groups, depth <= {}, each >= {} ({seconds:.2} s)",
            args.arm,
            experiment.control,
            args.outcome,
            effect_text(groups.base),
            groups.groups.len(),
            settings.max_depth,
            settings.min_support,
        );
        print_partition(groups, kind_text, true);
    } else {
        let count = |v: Verdict| {
            found
                .segments
                .iter()
                .filter(|f| f.estimate.verdict == v)
                .count() as u64
        };
        println!(
        "{} vs {} on {} ({kind_text}): overall effect {}; {} candidates tested, depth <= {}, support >= {}; {} work, {} no effect, {} backfire at FDR {} ({seconds:.2} s)",
        args.arm,
        experiment.control,
        args.outcome,
        effect_text(found.base),
        thousands(found.tested as u64),
        settings.max_depth,
        settings.min_support,
        thousands(count(Verdict::Works)),
        thousands(count(Verdict::NoEffect)),
        thousands(count(Verdict::Backfires)),
        settings.fdr,
    );
        print_findings(&found, kind_text, args.search.top, true);
    }
    match (saved, &args.save_exclusion) {
        (Some((name, version, condition)), _) => {
            println!("\nsaved exclusion segment {name} (version {version}): {condition}")
        }
        (None, Some(name)) => println!(
            "\nno no-effect segment has a control value above the control's overall {}: {name} not saved",
            show(kind_text, control_overall)
        ),
        (None, None) => {}
    }
    Ok(())
}

fn kind_name(kind: OutcomeKind) -> &'static str {
    match kind {
        OutcomeKind::Rate => "rate",
        OutcomeKind::Mean => "mean",
    }
}
