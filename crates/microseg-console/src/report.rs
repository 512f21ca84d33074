//! The shareable report: one self-contained HTML file (inline CSS and SVG, no script, no
//! external request) with the overview, RFM, segments, discovery, personas, predicted
//! value and campaign results, made to be mailed and printed.

use std::fmt::Write;

use microseg_core::Timestamp;
use microseg_store::{Store, Workspace};
use serde_json::Value as Json;

use crate::charts::{escape, number, Format};
use crate::views;
use crate::ConsoleError;

/// What the report covers.
#[derive(Debug, Clone)]
pub struct ReportOptions {
    /// Its title.
    pub title: String,
    /// The discovery's target: a condition or saved segment (a rate), or a numeric metric.
    pub discover_target: String,
    /// The discovery's dimensions (empty: every trait but timestamps).
    pub dims: Vec<String>,
    /// Personas made.
    pub personas: usize,
    /// The campaigns' attribution window, in days.
    pub window_days: f64,
}

impl Default for ReportOptions {
    fn default() -> Self {
        ReportOptions {
            title: "microseg report".into(),
            discover_target: "orders >= 2".into(),
            dims: Vec::new(),
            personas: 4,
            window_days: 7.0,
        }
    }
}

const STYLE: &str = r#"
:root { color: #1d2b45; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; }
body { max-width: 1100px; margin: 0 auto; padding: 24px; line-height: 1.45; }
h1 { font-size: 1.7rem; margin-bottom: 0; } h2 { border-bottom: 2px solid #dde3ee; padding-bottom: 4px; margin-top: 2.2rem; }
.sub { color: #5a6782; margin-top: 4px; }
.kpis { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.kpi { border: 1px solid #dde3ee; border-radius: 8px; padding: 10px 12px; }
.kpi b { display: block; font-size: 1.35rem; overflow-wrap: anywhere; }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr)); gap: 12px; }
svg.chart { max-width: 100%; height: auto; }
table { border-collapse: collapse; width: 100%; font-size: 0.9rem; margin: 8px 0; }
th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid #e6eaf2; vertical-align: top; }
td.n, th.n { text-align: right; font-variant-numeric: tabular-nums; }
code { font-size: 0.85rem; background: #f3f5f9; padding: 1px 4px; border-radius: 3px; }
.note { color: #5a6782; font-size: 0.9rem; }
section { break-inside: avoid-page; }
@media print { body { padding: 0; } h2 { break-after: avoid; } .grid { grid-template-columns: 1fr 1fr; } }
"#;

fn f(v: &Json) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn kpi(out: &mut String, label: &str, value: &str) {
    let _ = write!(
        out,
        "<div class=\"kpi\">{}<b>{}</b></div>",
        escape(label),
        escape(value)
    );
}

fn table(out: &mut String, header: &[&str], numeric: &[bool], rows: &[Vec<String>]) {
    out.push_str("<table><thead><tr>");
    for (h, n) in header.iter().zip(numeric) {
        let _ = write!(
            out,
            "<th{}>{}</th>",
            if *n { " class=\"n\"" } else { "" },
            escape(h)
        );
    }
    out.push_str("</tr></thead><tbody>");
    for row in rows {
        out.push_str("<tr>");
        for (cell, n) in row.iter().zip(numeric) {
            let _ = write!(
                out,
                "<td{}>{}</td>",
                if *n { " class=\"n\"" } else { "" },
                escape(cell)
            );
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table>");
}

fn opt(v: &Json, format: Format) -> String {
    v.as_f64().map_or("–".to_string(), |x| format.show(x))
}

/// The report of workspace `ws` as of `at`, as one HTML document.
///
/// # Errors
///
/// [`ConsoleError`]: the store, or a discovery target that does not evaluate.
pub fn report(
    ws: &Workspace,
    store: &mut Store,
    at: Timestamp,
    options: &ReportOptions,
) -> Result<String, ConsoleError> {
    let overview = views::overview(ws, store, at)?;
    let segments = views::segments(ws, store, at, 8)?;
    let names: Vec<String> = segments["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| s["name"].as_str().map(String::from))
        .take(8)
        .collect();
    let explore = views::explore(
        ws,
        store,
        at,
        &views::Explore {
            segments: if names.len() >= 2 { names } else { Vec::new() },
            ..Default::default()
        },
    )?;
    let discovered = views::discover_view(
        ws,
        store,
        at,
        &views::Discover {
            target: options.discover_target.clone(),
            within: None,
            dims: options.dims.clone(),
            min_support: None,
            max_depth: None,
            uplift: None,
        },
    )?;
    // Personas need profiles with the features; a workspace without them still reports.
    let personas = views::personas(ws, store, at, options.personas, &[]).ok();
    let mut campaigns = Vec::new();
    for c in views::campaigns(store)?["campaigns"]
        .as_array()
        .cloned()
        .unwrap_or_default()
    {
        let name = c["name"].as_str().unwrap_or_default().to_string();
        // The report shows results, not what a run would do now.
        campaigns.push(views::campaign(
            ws,
            store,
            at,
            &name,
            options.window_days,
            false,
        )?);
    }

    let mut out = String::new();
    let _ = write!(
        out,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>{t}</title><style>{STYLE}</style></head><body><h1>{t}</h1><p class=\"sub\">{ws} · data as of {at}</p>",
        t = escape(&options.title),
        ws = escape(&ws.dir.display().to_string()),
    );

    // Overview.
    out.push_str("<section id=\"overview\"><h2>Overview</h2><div class=\"kpis\">");
    kpi(&mut out, "Profiles", &number(f(&overview["profiles"]), 0));
    kpi(&mut out, "Customers", &number(f(&overview["customers"]), 0));
    kpi(&mut out, "Events", &number(f(&overview["events"]), 0));
    kpi(&mut out, "Orders", &number(f(&overview["orders"]), 0));
    kpi(&mut out, "Revenue", &number(f(&overview["revenue"]), 2));
    kpi(
        &mut out,
        "Average order value",
        &opt(&overview["aov"], Format::Amount),
    );
    out.push_str("</div><div class=\"grid\">");
    for d in overview["distributions"].as_array().into_iter().flatten() {
        let m = d["metric"].as_str().unwrap_or_default();
        if m == "clv_12m" {
            continue;
        }
        out.push_str(
            overview["charts"][format!("distribution_{m}")]
                .as_str()
                .unwrap_or_default(),
        );
    }
    out.push_str("</div></section>");

    // RFM.
    out.push_str("<section id=\"rfm\"><h2>Recency × frequency (RFM)</h2><p class=\"note\">Customers (at least one order) by their recency and frequency scores: quintiles, 5 the best. Top right: recent and frequent; bottom left: lapsed one-off buyers.</p>");
    out.push_str(overview["charts"]["rfm"].as_str().unwrap_or_default());
    out.push_str("</section>");

    // Segments.
    out.push_str("<section id=\"segments\"><h2>Segments</h2>");
    let rows: Vec<Vec<String>> = segments["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            let first = s["trend"]
                .as_array()
                .and_then(|t| t.first())
                .cloned()
                .unwrap_or_default();
            vec![
                s["name"].as_str().unwrap_or_default().to_string(),
                opt(&s["size"], Format::Count),
                opt(&s["share"], Format::Percent),
                format!(
                    "{} → {}",
                    opt(&first, Format::Count),
                    opt(&s["size"], Format::Count)
                ),
                s["description"].as_str().unwrap_or_default().to_string(),
            ]
        })
        .collect();
    table(
        &mut out,
        &[
            "segment",
            "size",
            "share",
            "8 weeks ago → now",
            "description",
        ],
        &[false, true, true, false, false],
        &rows,
    );
    if let Some(svg) = explore["charts"]["overlap"].as_str() {
        out.push_str("<h3>Overlaps</h3>");
        out.push_str(svg);
    }
    out.push_str("<h3>How the metrics move together</h3>");
    out.push_str(
        explore["charts"]["correlation"]
            .as_str()
            .unwrap_or_default(),
    );
    out.push_str("</section>");

    // Discovery.
    let _ = write!(
        out,
        "<section id=\"discovery\"><h2>Discovered micro-segments: {}</h2><p class=\"note\">Base {} over {} profiles; {} candidates of at most {} conditions and at least {} people tested, {} kept at a false discovery rate of {} (Benjamini–Hochberg).</p>",
        escape(&options.discover_target),
        if discovered["kind"] == "rate" { opt(&discovered["base"], Format::Percent) } else { opt(&discovered["base"], Format::Amount) },
        number(f(&discovered["base_size"]), 0),
        number(f(&discovered["tested"]), 0),
        discovered["max_depth"],
        discovered["min_support"],
        number(f(&discovered["found"]), 0),
        discovered["fdr"],
    );
    out.push_str(
        discovered["charts"]["segments"]
            .as_str()
            .unwrap_or_default(),
    );
    let format = if discovered["kind"] == "rate" {
        Format::Percent
    } else {
        Format::Amount
    };
    let rows: Vec<Vec<String>> = discovered["segments"]
        .as_array()
        .into_iter()
        .flatten()
        .take(15)
        .map(|s| {
            vec![
                s["condition"].as_str().unwrap_or_default().to_string(),
                opt(&s["support"], Format::Count),
                opt(&s["value"], format),
                format!(
                    "{} – {}",
                    opt(&s["ci_low"], format),
                    opt(&s["ci_high"], format)
                ),
                opt(&s["lift"], Format::Coefficient),
                s["q_value"]
                    .as_f64()
                    .map_or("–".into(), |q| format!("{q:.2e}")),
            ]
        })
        .collect();
    table(
        &mut out,
        &["segment", "people", "value", "95% interval", "lift", "q"],
        &[false, true, true, true, true, true],
        &rows,
    );
    out.push_str("</section>");

    // Personas.
    out.push_str("<section id=\"personas\"><h2>Personas</h2>");
    match &personas {
        Some(p) => {
            let _ = write!(
                out,
                "<p class=\"note\">k-means ({} clusters) on {} (standardised; ln(1 + x) of {}).</p>",
                p["k"],
                escape(&p["features"].as_array().into_iter().flatten().filter_map(Json::as_str).collect::<Vec<_>>().join(", ")),
                escape(&p["log"].as_array().into_iter().flatten().filter_map(Json::as_str).collect::<Vec<_>>().join(", ")),
            );
            out.push_str(p["charts"]["sizes"].as_str().unwrap_or_default());
            let features: Vec<String> = p["features"].as_array().into_iter().flatten().filter_map(|x| x.as_str().map(String::from)).collect();
            let rows: Vec<Vec<String>> = p["personas"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|c| {
                    let mut row = vec![format!("persona {}", c["persona"]), opt(&c["size"], Format::Count), opt(&c["share"], Format::Percent)];
                    row.extend(features.iter().map(|ft| opt(&c["centre"][ft], Format::Amount)));
                    row.push(
                        c["over_indexes"].as_array().into_iter().flatten()
                            .map(|o| format!("{} = {} ({:.1}×)", o["trait"].as_str().unwrap_or_default(), o["value"].as_str().unwrap_or_default(), f(&o["lift"])))
                            .collect::<Vec<_>>().join(", "),
                    );
                    row
                })
                .collect();
            let mut header: Vec<&str> = vec!["persona", "people", "share"];
            header.extend(features.iter().map(String::as_str));
            header.push("over-indexes on");
            let mut numeric = vec![false, true, true];
            numeric.extend(features.iter().map(|_| true));
            numeric.push(false);
            table(&mut out, &header, &numeric, &rows);
        }
        None => out.push_str("<p class=\"note\">Not enough profiles with visits, orders, revenue and tenure for personas.</p>"),
    }
    out.push_str("</section>");

    // Predicted value.
    out.push_str("<section id=\"clv\"><h2>Predicted customer value (12 months)</h2>");
    match overview["charts"]["distribution_clv_12m"].as_str() {
        Some(svg) => {
            let d = overview["distributions"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|d| d["metric"] == "clv_12m");
            if let Some(d) = d {
                let _ = write!(
                    out,
                    "<p class=\"note\">BG/NBD and Gamma-Gamma (<code>microseg clv fit</code>): {} profiles with a prediction, mean {}.</p>",
                    number(f(&d["profiles"]), 0),
                    opt(&d["mean"], Format::Amount)
                );
            }
            out.push_str(svg);
        }
        None => out.push_str(
            "<p class=\"note\">No CLV model fitted yet: run <code>microseg clv fit</code>.</p>",
        ),
    }
    out.push_str("</section>");

    // Campaigns.
    out.push_str("<section id=\"campaigns\"><h2>Campaign results (lift)</h2>");
    if campaigns.is_empty() {
        out.push_str("<p class=\"note\">No campaigns yet.</p>");
    }
    for c in &campaigns {
        let money = &c["results"]["money"];
        let acq = &c["results"]["acquisition"];
        let _ = write!(
            out,
            "<h3>{} <span class=\"note\">({}, {}-day window)</span></h3>",
            escape(c["name"].as_str().unwrap_or_default()),
            escape(c["status"].as_str().unwrap_or_default()),
            number(f(&c["results"]["window_days"]), 0)
        );
        out.push_str(c["charts"]["lift"].as_str().unwrap_or_default());
        let rows: Vec<Vec<String>> = c["results"]["arms"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|a| {
                let conv = &a["outcomes"]["conversion"];
                let rev = &a["outcomes"]["revenue"];
                vec![
                    a["arm"].as_str().unwrap_or_default().to_string(),
                    opt(&a["n"], Format::Count),
                    opt(&conv["value"], Format::Percent),
                    conv["abs_lift"].as_f64().map_or("control".into(), |l| {
                        format!(
                            "{} pts ({} – {})",
                            number(l * 100.0, 2),
                            number(f(&conv["ci_low"]) * 100.0, 2),
                            number(f(&conv["ci_high"]) * 100.0, 2)
                        )
                    }),
                    opt(&rev["value"], Format::Amount),
                    opt(&conv["p_value"], Format::Coefficient),
                ]
            })
            .collect();
        table(
            &mut out,
            &[
                "arm",
                "people",
                "conversion",
                "lift, 95% interval",
                "revenue per person",
                "p",
            ],
            &[false, true, true, true, true, true],
            &rows,
        );
        out.push_str("<div class=\"kpis\">");
        for (label, value) in [
            ("Sent", opt(&money["sent"], Format::Count)),
            ("Cost", opt(&money["cost"], Format::Amount)),
            (
                "Incremental revenue",
                opt(&money["incremental_revenue"], Format::Amount),
            ),
            ("ROI", opt(&money["roi"], Format::Percent)),
            ("CAC", opt(&acq["cac"], Format::Amount)),
            ("LTV 12m (predicted)", opt(&acq["ltv_12m"], Format::Amount)),
            ("LTV / CAC", opt(&acq["ltv_to_cac"], Format::Amount)),
        ] {
            kpi(&mut out, label, &value);
        }
        out.push_str("</div>");
    }
    out.push_str("</section>");
    let _ = writeln!(
        out,
        "<p class=\"note\">Written by microseg {} at {}.</p></body></html>",
        env!("CARGO_PKG_VERSION"),
        at
    );
    Ok(out)
}
