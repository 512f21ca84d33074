//! `microseg clv`: fit the lifetime-value models and predict with them.

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context as _, Result};
use clap::{Args, Subcommand, ValueEnum};
use microseg_core::time::{parse_duration, parse_timestamp};
use microseg_engine::models::clv::{BgNbd, Calibration, Summary, TimeUnit};
use microseg_store::Tables;
use serde_json::json;

use super::{as_of, print_json, Context};
use crate::failure::{not_found, usage};
use crate::output::{money, print_table, thousands, writer};

/// Predicted lifetime value: BG/NBD (how often customers buy, and when they drop out) and
/// Gamma-Gamma (how much they spend), fitted by maximum likelihood on the order events.
#[derive(Debug, Subcommand)]
pub enum ClvCommand {
    Fit(FitArgs),
    Predict(PredictArgs),
}

/// Fit BG/NBD and Gamma-Gamma to the orders up to the calibration end and store the model.
///
/// Repeat purchases count distinct order days after the first (orders of one day are one
/// purchase, their spend summed). With --as-of after --calibration-end, the orders in
/// between are a holdout period: the fit's predictions for it are printed beside what
/// happened. Once fitted, p_alive, predicted_orders_90d, expected_aov and clv_12m can be
/// used in segments like any metric.
#[derive(Debug, Args)]
#[command(after_help = "Example (the BG/NBD paper's CDNOW calibration):
  microseg clv fit --calibration-end 1997-09-30 --unit week --as-of 1998-06-30")]
pub struct FitArgs {
    /// End of the calibration period (default: --as-of).
    #[arg(long, value_name = "T")]
    calibration_end: Option<String>,
    /// End of the data, and of the holdout period when after the calibration end (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Time unit of the parameters.
    #[arg(long, value_enum, default_value = "week")]
    unit: UnitArg,
    /// Monthly discount rate of clv_12m.
    #[arg(long, default_value_t = 0.01, value_name = "RATE")]
    discount: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum UnitArg {
    Week,
    Day,
}

/// Predict per customer with the stored model: p_alive, expected orders over the horizon,
/// expected order value and the discounted value of the next 12 months.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// How far ahead to count expected orders: 90d, 52w, ...
    #[arg(long, default_value = "90d", value_name = "DURATION")]
    horizon: String,
    /// The instant the predictions start from (default now).
    #[arg(long, value_name = "T")]
    as_of: Option<String>,
    /// Output format (table: the most valuable customers).
    #[arg(long, value_enum, default_value = "table")]
    format: Format,
    /// Rows in the table.
    #[arg(long, default_value_t = 20, value_name = "N")]
    top: usize,
    /// Write csv or json to this file instead of stdout (the table always prints).
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

pub fn run(ctx: &Context, cmd: ClvCommand) -> Result<()> {
    match cmd {
        ClvCommand::Fit(args) => fit(ctx, args),
        ClvCommand::Predict(args) => predict(ctx, args),
    }
}

fn fit(ctx: &Context, args: FitArgs) -> Result<()> {
    let (ws, mut store) = ctx.open()?;
    let as_of = as_of(args.as_of.as_deref())?;
    let end = match &args.calibration_end {
        Some(t) => parse_timestamp(t).context("--calibration-end")?,
        None => as_of,
    };
    if end > as_of {
        return Err(usage(format!(
            "--calibration-end {end} is after --as-of {as_of}"
        )));
    }
    if !(0.0..1.0).contains(&args.discount) {
        return Err(usage(format!(
            "--discount {}: give a monthly rate between 0 and 1, e.g. 0.01",
            args.discount
        )));
    }
    let unit = match args.unit {
        UnitArg::Week => TimeUnit::Week,
        UnitArg::Day => TimeUnit::Day,
    };
    let started = Instant::now();
    let mut tables = Tables::open(&ws, &store, as_of)?;
    let events = tables.events(&[])?;
    let config = ws.config.metrics_config();
    let is_order = config.order_codes(&events.names);
    let calibration = Calibration::new(events, &is_order, end, unit);
    let load_seconds = started.elapsed().as_secs_f64();
    let orders = || {
        format!(
            "orders are {} events up to {end}",
            config.order_events.join(" or ")
        )
    };
    let started = Instant::now();
    let bg = BgNbd::fit(calibration.customers()).with_context(orders)?;
    let bg_seconds = started.elapsed().as_secs_f64();
    let fitted = calibration
        .finish(bg, events, &is_order, as_of, args.discount)
        .with_context(orders)?;
    let fit_seconds = started.elapsed().as_secs_f64();
    drop(tables);
    store.save_model("clv", &fitted.model)?;
    let (bg, gg, zero_spend) = (&fitted.bgnbd, &fitted.gamma_gamma, fitted.zero_spend);
    let frequency: Vec<(String, u64, f64)> = fitted
        .repeat_histogram
        .iter()
        .enumerate()
        .map(|(x, &(actual, expected))| {
            let label = if x < 7 { x.to_string() } else { "7+".into() };
            (label, actual, expected)
        })
        .collect();
    let holdout = fitted.holdout.map(|h| (h.length, h.actual, h.predicted));
    let repeaters = fitted.repeat_buyers;
    if args.json {
        return print_json(&json!({
            "bgnbd": {
                "r": bg.params.r, "alpha": bg.params.alpha, "a": bg.params.a, "b": bg.params.b,
                "log_likelihood": bg.log_likelihood, "evaluations": bg.evaluations,
            },
            "gamma_gamma": {
                "p": gg.params.p, "q": gg.params.q, "gamma": gg.params.gamma,
                "log_likelihood": gg.log_likelihood, "customers": gg.customers,
                "excluded_zero_spend": zero_spend,
            },
            "unit": unit,
            "calibration_end": end.to_string(),
            "as_of": as_of.to_string(),
            "customers": fitted.customers,
            "repeat_buyers": repeaters,
            "monthly_discount": args.discount,
            "diagnostics": {
                "repeat_purchases": frequency.iter().map(|(x, a, e)| json!({
                    "repeat_purchases": x, "actual": a, "expected": e,
                })).collect::<Vec<_>>(),
                "holdout": holdout.map(|(h, a, p)| json!({
                    "length": h, "actual": a, "predicted": p,
                })),
            },
            "seconds": {"load": load_seconds, "fit": fit_seconds, "bgnbd": bg_seconds},
        }));
    }
    let unit_name = unit.name();
    println!(
        "CLV model fitted on {} customers ({} repeat buyers), orders up to {end}, time in {unit_name}s",
        thousands(fitted.customers as u64),
        thousands(repeaters as u64),
    );
    println!(
        "  BG/NBD       r = {:.4}  alpha = {:.4}  a = {:.4}  b = {:.4}   log-likelihood {:.2}",
        bg.params.r, bg.params.alpha, bg.params.a, bg.params.b, bg.log_likelihood
    );
    println!(
        "  Gamma-Gamma  p = {:.4}  q = {:.4}  gamma = {:.4}   on {} repeat buyers{}",
        gg.params.p,
        gg.params.q,
        gg.params.gamma,
        thousands(gg.customers as u64),
        if zero_spend > 0 {
            format!(" ({zero_spend} with zero spend left out)")
        } else {
            String::new()
        }
    );
    println!(
        "  mean purchase rate {:.3} per {unit_name}, mean spend per order {}",
        bg.params.r / bg.params.alpha,
        if gg.params.q > 1.0 {
            money(gg.params.expected_spend(0.0, 0.0))
        } else {
            "unbounded (q <= 1)".into()
        }
    );
    println!("\nRepeat purchases in the calibration period, customers:");
    let rows: Vec<Vec<String>> = frequency
        .iter()
        .map(|(x, a, e)| vec![x.clone(), thousands(*a), format!("{e:.1}")])
        .collect();
    print_table(&["repeat purchases", "actual", "model"], &rows);
    if let Some((h, a, p)) = holdout {
        println!(
            "\nHoldout ({h:.1} {unit_name}s after the calibration end): {} repeat purchases predicted, {} actual ({:+.1}%)",
            thousands(p.round() as u64),
            thousands(a as u64),
            if a > 0.0 { (p / a - 1.0) * 100.0 } else { 0.0 },
        );
    }
    println!(
        "\nStored. Segments can now use p_alive, predicted_orders_90d, expected_aov, clv_12m; \
         per customer: microseg clv predict. ({load_seconds:.2} s loading, {fit_seconds:.2} s fitting)"
    );
    Ok(())
}

fn predict(ctx: &Context, args: PredictArgs) -> Result<()> {
    let (ws, store) = ctx.open()?;
    let as_of = as_of(args.as_of.as_deref())?;
    let horizon_ms = parse_duration(&args.horizon).context("--horizon")?;
    let mut tables = Tables::open(&ws, &store, as_of)?;
    let Some((model, summaries)) = tables.clv_summaries()? else {
        return Err(not_found(
            "no CLV model in this workspace: fit one with `microseg clv fit`",
        ));
    };
    let horizon = model.unit.of_ms(horizon_ms);
    let mut rows: Vec<(usize, Summary, microseg_engine::models::clv::Prediction)> = summaries
        .iter()
        .enumerate()
        .filter_map(|(p, s)| s.map(|s| (p, s, model.predict(&s, horizon))))
        .collect();
    match args.format {
        Format::Csv => {
            let mut w = csv::Writer::from_writer(writer(args.out.as_deref())?);
            w.write_record([
                "id",
                "repeat_purchases",
                "t_x",
                "t",
                "p_alive",
                "predicted_orders",
                "expected_aov",
                "clv_12m",
            ])?;
            for (p, s, pr) in &rows {
                w.write_record([
                    tables.external_id(*p as u32).to_string(),
                    s.x.to_string(),
                    s.t_x.to_string(),
                    s.t.to_string(),
                    pr.p_alive.to_string(),
                    pr.predicted_orders.to_string(),
                    pr.expected_aov.to_string(),
                    pr.clv_12m.to_string(),
                ])?;
            }
            w.flush()?;
        }
        Format::Json => {
            let profiles: Vec<_> = rows
                .iter()
                .map(|(p, s, pr)| {
                    json!({
                        "id": tables.external_id(*p as u32), "repeat_purchases": s.x, "t_x": s.t_x, "t": s.t,
                        "p_alive": pr.p_alive, "predicted_orders": pr.predicted_orders,
                        "expected_aov": pr.expected_aov, "clv_12m": pr.clv_12m,
                    })
                })
                .collect();
            let doc = json!({
                "as_of": as_of.to_string(), "horizon": args.horizon, "unit": model.unit,
                "count": profiles.len(), "profiles": profiles,
            });
            let mut out = writer(args.out.as_deref())?;
            writeln!(out, "{}", serde_json::to_string_pretty(&doc)?)?;
            out.flush()?;
        }
        Format::Table => {
            let total: f64 = rows.iter().map(|r| r.2.clv_12m).sum();
            let orders: f64 = rows.iter().map(|r| r.2.predicted_orders).sum();
            let active = rows.iter().filter(|r| r.2.p_alive >= 0.5).count();
            println!(
                "{} customers as of {as_of}: {} likely active (p_alive >= 0.5), {} repeat orders expected in {}, 12-month value {}",
                thousands(rows.len() as u64),
                thousands(active as u64),
                thousands(orders.round() as u64),
                args.horizon,
                money(total),
            );
            rows.sort_by(|a, b| b.2.clv_12m.total_cmp(&a.2.clv_12m));
            let table: Vec<Vec<String>> = rows
                .iter()
                .take(args.top)
                .map(|(p, s, pr)| {
                    vec![
                        tables.external_id(*p as u32).to_string(),
                        format!("{}", s.x),
                        format!("{:.2}", pr.p_alive),
                        format!("{:.2}", pr.predicted_orders),
                        money(pr.expected_aov),
                        money(pr.clv_12m),
                    ]
                })
                .collect();
            println!("\nMost valuable customers:");
            let orders_col = format!("orders next {}", args.horizon);
            print_table(
                &[
                    "id",
                    "repeat purchases",
                    "p_alive",
                    &orders_col,
                    "expected aov",
                    "clv 12m",
                ],
                &table,
            );
        }
    }
    Ok(())
}
