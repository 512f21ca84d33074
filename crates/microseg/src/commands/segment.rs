//! `microseg segment ...`: define segments in the condition language and see who is in them.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use microseg_core::condition::{parse, Condition};
use microseg_engine::check_references;
use microseg_store::{Store, Tables, Workspace};
use roaring::RoaringBitmap;

use super::{as_of, print_json, Context};
use crate::failure::{bad_input, not_found};
use crate::output::{percent, print_table, thousands};

/// Define segments with the condition language (docs/conditions.md) and see their members.
#[derive(Debug, Subcommand)]
pub enum SegmentCommand {
    Create(CreateArgs),
    Delete(DeleteArgs),
    List(ListArgs),
    Show(ShowArgs),
    Size(SizeArgs),
    Members(MembersArgs),
    Overlap(OverlapArgs),
    Tree(TreeArgs),
    Explain(ExplainArgs),
    Sql(SqlArgs),
}

/// Print a segment as one SQL query over the `profiles` / `events` layout of docs/sql.md,
/// returning the members' external ids as `id`.
#[derive(Debug, Args)]
pub struct SqlArgs {
    /// A segment name, or a condition.
    segment_or_condition: String,
    /// The SQL dialect.
    #[arg(long, default_value = "sqlite")]
    dialect: String,
    /// The as-of instant written into the query (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON: `{"sql", "dialect", "as_of", "segment"}`.
    #[arg(long)]
    json: bool,
}

/// Explain why a profile is or is not in a segment: every condition with what it saw.
#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// The segment's name.
    name: String,
    /// The profile's external id.
    profile: String,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Pairwise overlaps of segments: members in common and Jaccard similarity.
#[derive(Debug, Args)]
pub struct OverlapArgs {
    /// Two or more segment names.
    #[arg(required = true, num_args = 2..)]
    names: Vec<String>,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Drill down: split profiles by dimensions in turn, with counts at every node.
///
/// Example: microseg segment tree --by discipline,skill,gender
#[derive(Debug, Args)]
pub struct TreeArgs {
    /// Traits or metrics to split by, in order (comma separated).
    #[arg(long, value_delimiter = ',', required = true, value_name = "DIMS")]
    by: Vec<String>,
    /// Only the members of this segment (default everyone).
    #[arg(long, value_name = "SEGMENT")]
    within: Option<String>,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON (every node with its condition).
    #[arg(long)]
    json: bool,
}

/// Save a segment: a name and a condition, validated against the data before saving.
///
/// Example: microseg segment create female_amateur_mtb
///   'gender = "f" and discipline = "mountain" and skill = "amateur"'
#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The segment's name.
    name: String,
    /// The condition (quote it for the shell).
    condition: String,
    /// What the segment is for.
    #[arg(long, value_name = "TEXT")]
    description: Option<String>,
    /// Save a new version of an existing segment.
    #[arg(long)]
    replace: bool,
    /// The size shown is as of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

/// Delete a segment (also one that no longer reads back); its history of versions stays.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// The segment's name.
    name: String,
    /// Print the result as JSON: `{"name", "deleted"}`.
    #[arg(long)]
    json: bool,
}

/// List segments with their sizes.
#[derive(Debug, Args)]
pub struct ListArgs {
    /// Sizes as of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// Show a segment: condition, version, description and size.
#[derive(Debug, Args)]
pub struct ShowArgs {
    /// The segment's name.
    name: String,
    /// Size as of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON (the condition also as its JSON tree).
    #[arg(long)]
    json: bool,
}

/// Count the members of a saved segment or of a condition.
#[derive(Debug, Args)]
pub struct SizeArgs {
    /// A segment name, or a condition such as 'orders >= 2 and city = "Budapest"'.
    segment_or_condition: String,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
}

/// List the members of a segment by external id.
#[derive(Debug, Args)]
pub struct MembersArgs {
    /// The segment's name.
    name: String,
    /// As of this instant (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "csv")]
    format: MembersFormat,
    /// Write to this file instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum MembersFormat {
    Csv,
    Json,
}

pub fn run(ctx: &Context, cmd: SegmentCommand) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    match cmd {
        SegmentCommand::Create(args) => create(&ws, &mut store, args),
        SegmentCommand::Delete(args) => delete(&mut store, args),
        SegmentCommand::List(args) => list(&ws, &store, args),
        SegmentCommand::Show(args) => show(&ws, &store, args),
        SegmentCommand::Size(args) => size(&ws, &store, args),
        SegmentCommand::Members(args) => members(&ws, &store, args),
        SegmentCommand::Overlap(args) => overlap(&ws, &store, args),
        SegmentCommand::Tree(args) => tree(&ws, &store, args),
        SegmentCommand::Explain(args) => explain(&ws, &store, args),
        SegmentCommand::Sql(args) => sql(&ws, &store, args),
    }
}

pub(super) fn parse_condition(text: &str) -> Result<Condition> {
    parse(text).map_err(|e| bad_input(format!("condition: {e}")))
}

/// A saved segment's name and condition, or (name `None`) `text` parsed as a condition.
pub(super) fn named_or_parsed(
    saved: &BTreeMap<String, Condition>,
    text: &str,
) -> Result<(Option<String>, Condition)> {
    Ok(match saved.get(text) {
        Some(c) => (Some(text.to_string()), c.clone()),
        None => (None, parse_condition(text)?),
    })
}

/// `N of M profiles (P%) as of T`.
fn print_size(size: u64, total: u64, at: microseg_core::Timestamp) {
    println!(
        "{} of {} profiles ({}) as of {at}",
        thousands(size),
        thousands(total),
        percent(size, total)
    );
}

pub(super) fn check_name(name: &str) -> Result<()> {
    microseg_core::condition::check_segment_name(name).map_err(anyhow::Error::msg)
}

fn create(ws: &Workspace, store: &mut Store, args: CreateArgs) -> Result<()> {
    check_name(&args.name)?;
    let condition = parse_condition(&args.condition)?;
    let saved = store.segment_conditions()?;
    check_references(&args.name, &condition, &saved)
        .with_context(|| format!("segment '{}'", args.name))?;
    // Evaluating once now catches unknown names and type errors before saving (and
    // makes the snapshot columns of the event properties it reads).
    let now = as_of(args.as_of.as_deref())?;
    let mut tables = Tables::open(ws, store, now)?;
    let members = tables
        .evaluate(&condition)
        .with_context(|| format!("segment '{}'", args.name))?;
    let total = tables.everyone().len();
    let version = store.save_segment(
        &args.name,
        &condition,
        args.description.as_deref(),
        args.replace,
    )?;
    let size = members.len();
    if args.json {
        return print_json(&serde_json::json!({
            "name": args.name,
            "version": version,
            "condition": condition.to_string(),
            "size": size,
            "as_of": now.to_string(),
        }));
    }
    let verb = if args.replace && version > 1 {
        "updated"
    } else {
        "created"
    };
    println!(
        "{verb} segment {} (version {version}): {} of {} profiles as of {now}",
        args.name,
        thousands(size),
        thousands(total)
    );
    Ok(())
}

fn delete(store: &mut Store, args: DeleteArgs) -> Result<()> {
    if !store.delete_segment(&args.name)? {
        return Err(not_found(format!(
            "no segment named '{}' (see `microseg segment list`)",
            args.name
        )));
    }
    if args.json {
        return print_json(&serde_json::json!({"name": args.name, "deleted": true}));
    }
    println!("deleted segment {}", args.name);
    Ok(())
}

fn list(ws: &Workspace, store: &Store, args: ListArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let stored = store.segments()?;
    let conditions: Vec<&Condition> = stored.iter().map(|s| &s.condition).collect();
    let mut tables = Tables::open(ws, store, at)?;
    tables.need(&conditions, &[])?;
    let total = tables.everyone().len();
    let data = tables.dataset();
    let mut rows = Vec::new();
    let mut json = Vec::new();
    // One segment that cannot be evaluated (it refers to an unreadable one) or read is
    // listed with its error; the others are still sized.
    for s in &stored {
        match data.evaluate(&s.condition) {
            Ok(members) => {
                let size = members.len();
                rows.push(vec![
                    s.name.clone(),
                    thousands(size),
                    percent(size, total),
                    s.version.to_string(),
                    s.description.clone().unwrap_or_default(),
                ]);
                json.push(serde_json::json!({
                    "name": s.name,
                    "size": size,
                    "share": if total > 0 { size as f64 / total as f64 } else { 0.0 },
                    "version": s.version,
                    "description": s.description,
                    "condition": s.condition.to_string(),
                }));
            }
            Err(e) => {
                rows.push(vec![
                    s.name.clone(),
                    String::new(),
                    String::new(),
                    s.version.to_string(),
                    format!("error: {e}"),
                ]);
                json.push(serde_json::json!({
                    "name": s.name, "size": null, "share": null, "version": s.version,
                    "description": s.description, "condition": s.condition.to_string(),
                    "error": e.to_string(),
                }));
            }
        }
    }
    for u in store.unreadable_segments()? {
        rows.push(vec![
            u.name.clone(),
            String::new(),
            String::new(),
            u.version.to_string(),
            format!("unreadable ({}): delete it or save it again", u.reason),
        ]);
        json.push(serde_json::json!({
            "name": u.name, "size": null, "share": null, "version": u.version,
            "error": format!("unreadable: {}", u.reason),
        }));
    }
    if args.json {
        return print_json(
            &serde_json::json!({"as_of": at.to_string(), "total": total, "segments": json}),
        );
    }
    if rows.is_empty() {
        println!("no segments yet (create one with `microseg segment create NAME 'CONDITION'`)");
        return Ok(());
    }
    println!("segments as of {at} ({} profiles)", thousands(total));
    print_table(&["name", "size", "share", "version", "description"], &rows);
    Ok(())
}

fn find(store: &Store, name: &str) -> Result<microseg_store::StoredSegment> {
    store
        .segments()?
        .into_iter()
        .find(|s| s.name == name)
        .ok_or_else(|| {
            not_found(format!(
                "no segment named '{name}' (see `microseg segment list`)"
            ))
        })
}

fn show(ws: &Workspace, store: &Store, args: ShowArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let s = find(store, &args.name)?;
    let mut tables = Tables::open(ws, store, at)?;
    let size = tables.evaluate(&s.condition)?.len();
    let total = tables.everyone().len();
    if args.json {
        return print_json(&serde_json::json!({
            "name": s.name,
            "version": s.version,
            "description": s.description,
            "condition": s.condition.to_string(),
            "definition": s.condition,
            "updated_at": s.updated_at.to_string(),
            "size": size,
            "total": total,
            "as_of": at.to_string(),
        }));
    }
    println!(
        "segment {} (version {}, saved {})",
        s.name, s.version, s.updated_at
    );
    if let Some(d) = &s.description {
        println!("  {d}");
    }
    println!("\n  {}\n", s.condition);
    print_size(size, total, at);
    Ok(())
}

fn size(ws: &Workspace, store: &Store, args: SizeArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let saved = store.segment_conditions()?;
    let (segment, condition) = named_or_parsed(&saved, &args.segment_or_condition)?;
    let mut tables = Tables::open(ws, store, at)?;
    let size = tables.evaluate(&condition)?.len();
    let total = tables.everyone().len();
    if args.json {
        return print_json(&serde_json::json!({
            "size": size,
            "as_of": at.to_string(),
            "total": total,
            "share": if total > 0 { size as f64 / total as f64 } else { 0.0 },
            "segment": segment,
            "condition": condition.to_string(),
        }));
    }
    print_size(size, total, at);
    Ok(())
}

fn sql(ws: &Workspace, store: &Store, args: SqlArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let dialect =
        microseg_store::sql::Dialect::from_name(&args.dialect).map_err(anyhow::Error::msg)?;
    let compiler = microseg_warehouse::SegmentSql::open(ws, store)?;
    let (segment, condition) = named_or_parsed(compiler.segments(), &args.segment_or_condition)?;
    let sql = compiler.compile(&condition, dialect, at)?;
    if args.json {
        return print_json(&serde_json::json!({
            "sql": sql,
            "dialect": args.dialect,
            "as_of": at.to_string(),
            "segment": segment,
        }));
    }
    println!("{sql};");
    Ok(())
}

fn members(ws: &Workspace, store: &Store, args: MembersArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let s = find(store, &args.name)?;
    let mut tables = Tables::open(ws, store, at)?;
    let members = tables.evaluate(&s.condition)?;
    let mut out = crate::output::writer(args.out.as_deref())?;
    let ids = members.iter().map(|p| tables.external_id(p));
    match args.format {
        MembersFormat::Csv => {
            let mut w = csv::Writer::from_writer(out);
            w.write_record(["id"])?;
            for id in ids {
                w.write_record([id])?;
            }
            w.flush()?;
        }
        MembersFormat::Json => {
            let ids: Vec<&str> = ids.collect();
            serde_json::to_writer_pretty(
                &mut out,
                &serde_json::json!({
                    "segment": s.name,
                    "as_of": at.to_string(),
                    "size": ids.len(),
                    "members": ids,
                }),
            )?;
            writeln!(out)?;
        }
    }
    Ok(())
}

fn overlap(ws: &Workspace, store: &Store, args: OverlapArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let found: Vec<microseg_store::StoredSegment> = args
        .names
        .iter()
        .map(|n| find(store, n))
        .collect::<Result<_>>()?;
    let conditions: Vec<&Condition> = found.iter().map(|s| &s.condition).collect();
    let mut tables = Tables::open(ws, store, at)?;
    tables.need(&conditions, &[])?;
    let data = tables.dataset();
    let sets: Vec<RoaringBitmap> = conditions
        .iter()
        .map(|c| data.evaluate(c))
        .collect::<Result<_, _>>()?;
    let matrix = microseg_engine::analytics::overlaps(&sets);
    if args.json {
        let mut pairs = Vec::new();
        for (i, row) in matrix.iter().enumerate() {
            for (j, o) in row.iter().enumerate().skip(i + 1) {
                pairs.push(serde_json::json!({
                    "a": args.names[i], "b": args.names[j],
                    "intersection": o.intersection,
                    "jaccard": o.jaccard,
                }));
            }
        }
        let segments: Vec<serde_json::Value> = args
            .names
            .iter()
            .zip(&sets)
            .map(|(n, s)| serde_json::json!({"name": n, "size": s.len()}))
            .collect();
        return print_json(
            &serde_json::json!({"as_of": at.to_string(), "segments": segments, "pairs": pairs}),
        );
    }
    let mut header = vec!["members in common"];
    header.extend(args.names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = args
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut row = vec![n.clone()];
            row.extend(matrix[i].iter().map(|o| thousands(o.intersection)));
            row
        })
        .collect();
    println!("as of {at}; the diagonal is each segment's size\n");
    print_table(&header, &rows);
    let mut header = vec!["jaccard"];
    header.extend(args.names.iter().map(String::as_str));
    let rows: Vec<Vec<String>> = args
        .names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let mut row = vec![n.clone()];
            row.extend(matrix[i].iter().map(|o| format!("{:.3}", o.jaccard)));
            row
        })
        .collect();
    println!();
    print_table(&header, &rows);
    Ok(())
}

fn tree(ws: &Workspace, store: &Store, args: TreeArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let within = match &args.within {
        Some(name) => Some(find(store, name)?),
        None => None,
    };
    let conditions: Vec<&Condition> = within.iter().map(|s| &s.condition).collect();
    let mut tables = Tables::open(ws, store, at)?;
    let by: Vec<&str> = args.by.iter().map(String::as_str).collect();
    tables.need(&conditions, &by)?;
    let root = match &within {
        Some(s) => tables.dataset().evaluate(&s.condition)?,
        None => tables.everyone(),
    };
    let tree = microseg_engine::analytics::drill_down(&tables.dataset(), root, &args.by)?;
    if args.json {
        return print_json(&serde_json::json!({
            "as_of": at.to_string(),
            "within": args.within,
            "by": args.by,
            "root": node_json(&tree, None),
        }));
    }
    let title = args.within.as_deref().unwrap_or("all profiles");
    println!("{title}: {} as of {at}", thousands(tree.members.len()));
    print_node(&tree, 1);
    Ok(())
}

fn node_label(n: &microseg_engine::analytics::TreeNode) -> String {
    let dim = n.dimension.as_deref().unwrap_or_default();
    match &n.value {
        Some(v) => format!("{dim} = {v}"),
        None => format!("{dim} (missing)"),
    }
}

fn print_node(n: &microseg_engine::analytics::TreeNode, depth: usize) {
    for child in &n.children {
        let label = format!("{}{}", "  ".repeat(depth), node_label(child));
        println!(
            "{label:<48} {:>10}  {:>6} of parent",
            thousands(child.members.len()),
            percent(child.members.len(), n.members.len())
        );
        print_node(child, depth + 1);
    }
}

fn node_json(n: &microseg_engine::analytics::TreeNode, parent: Option<u64>) -> serde_json::Value {
    serde_json::json!({
        "dimension": n.dimension,
        "value": n.value.as_ref().map(|v| v.to_json()),
        "size": n.members.len(),
        "share_of_parent": parent.map(|p| if p > 0 { n.members.len() as f64 / p as f64 } else { 0.0 }),
        "condition": n.condition.as_ref().map(|c| c.to_string()),
        "children": n.children.iter().map(|c| node_json(c, Some(n.members.len()))).collect::<Vec<_>>(),
    })
}

fn explain(ws: &Workspace, store: &Store, args: ExplainArgs) -> Result<()> {
    let at = as_of(args.as_of.as_deref())?;
    let s = find(store, &args.name)?;
    let profile = store.profile(&args.profile)?;
    let mut tables = Tables::open(ws, store, at)?;
    tables.need(&[&s.condition], &[])?;
    let e = tables.dataset().explain(&s.condition, profile.id)?;
    if args.json {
        return print_json(&serde_json::json!({
            "segment": s.name,
            "profile": args.profile,
            "as_of": at.to_string(),
            "member": e.matched,
            "explanation": explanation_json(&e),
        }));
    }
    let verdict = if e.matched { "is in" } else { "is not in" };
    println!("{} {verdict} {} as of {at}\n", args.profile, s.name);
    print_explanation(&e, 1);
    Ok(())
}

fn print_explanation(e: &microseg_engine::Explanation, depth: usize) {
    let mark = if e.matched { "yes" } else { "no " };
    let saw = if e.saw.is_empty() {
        String::new()
    } else {
        format!("   (saw {})", e.saw)
    };
    println!("{}{mark}  {}{saw}", "  ".repeat(depth), e.condition);
    for c in &e.children {
        print_explanation(c, depth + 1);
    }
}

fn explanation_json(e: &microseg_engine::Explanation) -> serde_json::Value {
    serde_json::json!({
        "condition": e.condition,
        "matched": e.matched,
        "saw": if e.saw.is_empty() { None } else { Some(&e.saw) },
        "children": e.children.iter().map(explanation_json).collect::<Vec<_>>(),
    })
}
