//! SVG charts as strings, the same for the console and the report: bars with interval
//! whiskers, heatmaps, histograms and sparklines. Every text is escaped (labels come from
//! traits, which anyone with a write key can set); sizes are fixed in the `viewBox` so a
//! chart scales with its container and prints.

use std::fmt::Write;

/// Text made safe inside HTML or SVG (element content and quoted attributes).
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A number for a chart label: thousands separated, `digits` decimals.
pub fn number(x: f64, digits: usize) -> String {
    if !x.is_finite() {
        return "–".to_string();
    }
    let text = format!("{:.*}", digits, x.abs());
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), ""), |(i, f)| (i, f));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    let sign = if x < 0.0 && text.chars().any(|c| c.is_ascii_digit() && c != '0') {
        "-"
    } else {
        ""
    };
    if frac.is_empty() {
        format!("{sign}{grouped}")
    } else {
        format!("{sign}{grouped}.{frac}")
    }
}

/// At most `n` characters of `text`, with an ellipsis when cut.
fn clip(text: &str, n: usize) -> String {
    if text.chars().count() <= n {
        return text.to_string();
    }
    let mut out: String = text.chars().take(n - 1).collect();
    out.push('…');
    out
}

/// How a chart's values read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// A count: `12,345`.
    Count,
    /// A share or rate: `12.3%`.
    Percent,
    /// Money or a mean: `1,234.56`.
    Amount,
    /// A coefficient: `0.123`.
    Coefficient,
}

impl Format {
    /// `x` as this format reads it.
    pub fn show(self, x: f64) -> String {
        match self {
            Format::Count => number(x, 0),
            Format::Percent => format!("{}%", number(x * 100.0, 1)),
            Format::Amount => number(x, 2),
            Format::Coefficient => number(x, 3),
        }
    }
}

/// One bar: its label, value and, when known, its 95% interval.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    /// What the bar is.
    pub label: String,
    /// Its value.
    pub value: f64,
    /// The interval's ends.
    pub interval: Option<(f64, f64)>,
}

const FONT: &str = "font-family=\"system-ui, sans-serif\" font-size=\"12\"";

fn open(svg: &mut String, width: f64, height: f64, title: &str) {
    let _ = write!(
        svg,
        "<svg class=\"chart\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{t}\" {FONT}><title>{t}</title>",
        t = escape(title)
    );
}

/// Horizontal bars with their interval whiskers and a labelled reference line (the base
/// rate, or "no effect" at 0 for a lift),
/// for a lift), one row per bar: long labels stay readable.
pub fn bars(title: &str, bars: &[Bar], reference: Option<(f64, &str)>, format: Format) -> String {
    let value = reference.map(|r| r.0);
    let label_w = 300.0;
    let plot_w = 300.0;
    let value_w = 150.0;
    let row = 24.0;
    let top = 8.0;
    let height = top + row * bars.len().max(1) as f64 + 26.0;
    let width = label_w + plot_w + value_w;
    let mut lo = value.unwrap_or(0.0).min(0.0);
    let mut hi = value.unwrap_or(0.0).max(0.0);
    for b in bars {
        let (l, h) = b.interval.unwrap_or((b.value, b.value));
        for x in [b.value, l, h] {
            if x.is_finite() {
                lo = lo.min(x);
                hi = hi.max(x);
            }
        }
    }
    if hi <= lo {
        hi = lo + 1.0;
    }
    let x = |v: f64| label_w + (v - lo) / (hi - lo) * plot_w;
    let mut svg = String::new();
    open(&mut svg, width, height, title);
    for (i, b) in bars.iter().enumerate() {
        let y = top + row * i as f64;
        let label = clip(&b.label, 46);
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"currentColor\">{}</text>",
            label_w - 8.0,
            y + 15.0,
            escape(&label)
        );
        if b.value.is_finite() {
            let (a, z) = (x(0.0f64.max(lo)), x(b.value));
            let _ = write!(
                svg,
                "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"14\" fill=\"#4a7bd0\"><title>{}</title></rect>",
                a.min(z),
                y + 4.0,
                (z - a).abs().max(1.0),
                escape(&format!("{}: {}", b.label, format.show(b.value)))
            );
        }
        if let Some((l, h)) = b.interval.filter(|(l, h)| l.is_finite() && h.is_finite()) {
            let (xl, xh, ym) = (x(l), x(h), y + 11.0);
            let _ = write!(
                svg,
                "<path class=\"whisker\" d=\"M{xl:.1} {ym:.1}H{xh:.1}M{xl:.1} {:.1}V{:.1}M{xh:.1} {:.1}V{:.1}\" stroke=\"#1d2b45\" stroke-width=\"1.5\" fill=\"none\"/>",
                ym - 5.0,
                ym + 5.0,
                ym - 5.0,
                ym + 5.0
            );
        }
        let shown = match b.interval {
            Some((l, h)) => format!(
                "{} ({} – {})",
                format.show(b.value),
                format.show(l),
                format.show(h)
            ),
            None => format.show(b.value),
        };
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{}\" fill=\"currentColor\">{}</text>",
            label_w + plot_w + 8.0,
            y + 15.0,
            escape(&shown)
        );
    }
    if let Some((r, label)) = reference {
        let xr = x(r);
        let _ = write!(
            svg,
            "<path d=\"M{xr:.1} {top}V{:.1}\" stroke=\"#c0392b\" stroke-dasharray=\"4 3\"/><text x=\"{xr:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"#c0392b\">{}</text>",
            height - 22.0,
            height - 8.0,
            escape(label)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A heatmap: rows × columns of values (`None` blank), each cell shaded by its value
/// between the smallest and the largest (or, `diverging`, from −1 blue to +1 red) and
/// labelled.
pub fn heatmap(
    title: &str,
    rows: &[String],
    columns: &[String],
    values: &[Vec<Option<f64>>],
    format: Format,
    diverging: bool,
) -> String {
    let label_w = 150.0;
    let cell_w = (560.0 / columns.len().max(1) as f64).clamp(48.0, 110.0);
    let cell_h = 30.0;
    let top = 86.0;
    let width = label_w + cell_w * columns.len() as f64 + 90.0;
    let height = top + cell_h * rows.len() as f64 + 8.0;
    let finite = values
        .iter()
        .flatten()
        .flatten()
        .copied()
        .filter(|v| v.is_finite());
    let (lo, hi) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), v| {
        (l.min(v), h.max(v))
    });
    let mut svg = String::new();
    open(&mut svg, width, height, title);
    for (j, c) in columns.iter().enumerate() {
        let label = clip(c, 18);
        let (x, y) = (label_w + cell_w * (j as f64 + 0.5), top - 8.0);
        let _ = write!(
            svg,
            "<text x=\"{x:.1}\" y=\"{y}\" transform=\"rotate(-30 {x:.1} {y})\" fill=\"currentColor\">{}</text>",
            escape(&label)
        );
    }
    for (i, r) in rows.iter().enumerate() {
        let y = top + cell_h * i as f64;
        let label = clip(r, 22);
        let _ = write!(
            svg,
            "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"currentColor\">{}</text>",
            label_w - 8.0,
            y + 19.0,
            escape(&label)
        );
        for (j, v) in values
            .get(i)
            .map(Vec::as_slice)
            .unwrap_or(&[])
            .iter()
            .enumerate()
        {
            let x = label_w + cell_w * j as f64;
            let Some(v) = v.filter(|v| v.is_finite()) else {
                continue;
            };
            let (fill, dark) = if diverging {
                let t = v.clamp(-1.0, 1.0);
                let a = t.abs();
                let (r0, g0, b0) = if t >= 0.0 {
                    (192.0, 57.0, 43.0)
                } else {
                    (41.0, 98.0, 175.0)
                };
                let mix = |c: f64| (255.0 + (c - 255.0) * a) as u8;
                (
                    format!("rgb({},{},{})", mix(r0), mix(g0), mix(b0)),
                    a > 0.55,
                )
            } else {
                let t = if hi > lo { (v - lo) / (hi - lo) } else { 0.5 };
                let mix = |from: f64, to: f64| (from + (to - from) * t) as u8;
                (
                    format!(
                        "rgb({},{},{})",
                        mix(236.0, 29.0),
                        mix(242.0, 78.0),
                        mix(250.0, 160.0)
                    ),
                    t > 0.55,
                )
            };
            let _ = write!(
                svg,
                "<rect class=\"cell\" x=\"{x:.1}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{:.1}\" fill=\"{fill}\" stroke=\"#fff\"><title>{}</title></rect><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\" fill=\"{}\">{}</text>",
                cell_w,
                cell_h,
                escape(&format!("{r} × {}: {}", columns.get(j).map_or("", String::as_str), format.show(v))),
                x + cell_w / 2.0,
                y + 19.0,
                if dark { "#fff" } else { "#1d2b45" },
                escape(&format.show(v))
            );
        }
    }
    svg.push_str("</svg>");
    svg
}

/// A histogram: `bins` of (low end, high end, count); the last bin may hold everything
/// above the range (`overflow` labels it).
pub fn histogram(title: &str, bins: &[(f64, f64, u64)], overflow: bool, format: Format) -> String {
    let (width, height, left, bottom, top) = (360.0, 170.0, 60.0, 34.0, 22.0);
    let plot_w = width - left - 8.0;
    let plot_h = height - bottom - top;
    let most = bins.iter().map(|b| b.2).max().unwrap_or(0).max(1) as f64;
    let mut svg = String::new();
    open(&mut svg, width, height, title);
    let _ = write!(
        svg,
        "<text x=\"{left}\" y=\"14\" font-weight=\"600\" fill=\"currentColor\">{}</text>",
        escape(title)
    );
    let w = plot_w / bins.len().max(1) as f64;
    for (i, (lo, hi, n)) in bins.iter().enumerate() {
        let h = *n as f64 / most * plot_h;
        let last = overflow && i + 1 == bins.len();
        let range = if last {
            format!("≥ {}", format.show(*lo))
        } else {
            format!("{} – {}", format.show(*lo), format.show(*hi))
        };
        let _ = write!(
            svg,
            "<rect class=\"bar\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\" fill=\"#4a7bd0\"><title>{}</title></rect>",
            left + w * i as f64 + 1.0,
            top + plot_h - h,
            (w - 2.0).max(1.0),
            escape(&format!("{range}: {}", number(*n as f64, 0)))
        );
    }
    let _ = write!(
        svg,
        "<path d=\"M{left} {top}V{:.1}H{:.1}\" stroke=\"#888\" fill=\"none\"/>",
        top + plot_h,
        left + plot_w
    );
    let _ = write!(
        svg,
        "<text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"currentColor\">{}</text><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"currentColor\">0</text>",
        left - 4.0,
        top + 10.0,
        number(most, 0),
        left - 4.0,
        top + plot_h
    );
    if let (Some(first), Some(last)) = (bins.first(), bins.last()) {
        let end = if overflow {
            format!("{}+", format.show(last.0))
        } else {
            format.show(last.1)
        };
        let _ = write!(
            svg,
            "<text x=\"{left}\" y=\"{:.1}\" fill=\"currentColor\">{}</text><text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\" fill=\"currentColor\">{}</text>",
            height - 12.0,
            escape(&format.show(first.0)),
            left + plot_w,
            height - 12.0,
            escape(&end)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A small line of `values` (a segment's size over time), without axes.
pub fn sparkline(title: &str, values: &[f64]) -> String {
    let (width, height) = (120.0, 28.0);
    let mut svg = String::new();
    let _ = write!(
        svg,
        "<svg class=\"spark\" xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 {width} {height}\" width=\"{width}\" height=\"{height}\" role=\"img\" aria-label=\"{t}\"><title>{t}</title>",
        t = escape(title)
    );
    let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    if finite.len() >= 2 {
        let lo = finite.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = finite.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let span = if hi > lo { hi - lo } else { 1.0 };
        let mut d = String::new();
        for (i, v) in finite.iter().enumerate() {
            let x = 2.0 + (width - 4.0) * i as f64 / (finite.len() - 1) as f64;
            let y = height - 3.0 - (v - lo) / span * (height - 6.0);
            let _ = write!(d, "{}{x:.1} {y:.1}", if i == 0 { "M" } else { "L" });
        }
        let _ = write!(
            svg,
            "<path d=\"{d}\" stroke=\"#4a7bd0\" stroke-width=\"1.5\" fill=\"none\"/>"
        );
    }
    svg.push_str("</svg>");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_everywhere() {
        let evil = "<script>alert('x')</script>&";
        let bar = Bar {
            label: evil.into(),
            value: 0.5,
            interval: Some((0.4, 0.6)),
        };
        let charts = [
            bars(evil, &[bar], Some((0.3, evil)), Format::Percent),
            heatmap(
                evil,
                &[evil.into()],
                &[evil.into()],
                &[vec![Some(1.0)]],
                Format::Count,
                false,
            ),
            histogram(evil, &[(0.0, 1.0, 3)], false, Format::Count),
            sparkline(evil, &[1.0, 2.0]),
        ];
        for svg in charts {
            assert!(!svg.contains("<script"), "{svg}");
            assert!(svg.contains("&lt;script&gt;"), "{svg}");
        }
    }

    #[test]
    fn numbers_read_as_written_by_hand() {
        assert_eq!(number(1234567.891, 2), "1,234,567.89");
        assert_eq!(number(-1234.0, 0), "-1,234");
        assert_eq!(number(-0.0001, 2), "0.00");
        assert_eq!(number(999.0, 0), "999");
        assert_eq!(Format::Percent.show(0.1234), "12.3%");
        assert_eq!(number(f64::NAN, 2), "–");
    }

    #[test]
    fn bars_place_whiskers_on_the_scale() {
        // Scale 0..1 over 300 px from x = 300: 0.25 is at 375 and 0.75 at 525.
        let svg = bars(
            "t",
            &[
                Bar {
                    label: "a".into(),
                    value: 0.5,
                    interval: Some((0.25, 0.75)),
                },
                Bar {
                    label: "b".into(),
                    value: 1.0,
                    interval: None,
                },
            ],
            Some((0.5, "base 50%")),
            Format::Percent,
        );
        assert!(svg.contains("base 50%"), "{svg}");
        assert!(svg.contains("M375.0 19.0H525.0"), "{svg}");
        assert_eq!(svg.matches("class=\"bar\"").count(), 2);
    }
}
