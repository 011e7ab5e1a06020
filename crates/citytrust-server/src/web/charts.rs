//! Bar charts drawn on the server as inline SVG. Each has a title and a
//! description that states every figure, and the pages that use them show
//! the same figures in a table, so nothing depends on seeing the bars.

use std::fmt::Write as _;

use citytrust_query::preview::xml_escape;

/// One horizontal bar: its label, its length as a share of the track (0–1),
/// the figure written after it, and whether to draw it as a warning.
pub struct Bar {
    pub label: String,
    pub share: f64,
    pub text: String,
    pub low: bool,
}

/// Bars whose length is `count / largest count`.
pub fn count_bars<'a>(rows: impl IntoIterator<Item = (&'a str, i64)>) -> Vec<Bar> {
    let rows: Vec<(&str, i64)> = rows.into_iter().collect();
    let max = rows.iter().map(|r| r.1).max().unwrap_or(0).max(1) as f64;
    rows.into_iter()
        .map(|(label, n)| Bar {
            label: label.to_string(),
            share: n as f64 / max,
            text: compact(n),
            low: false,
        })
        .collect()
}

/// Horizontal bars, one row each (`id` makes the title and description ids unique in the page).
pub fn horizontal(id: &str, title: &str, bars: &[Bar]) -> String {
    if bars.is_empty() {
        return String::new();
    }
    let (label_w, bar_w, row_h) = (190.0, 420.0, 24.0);
    let height = row_h * bars.len() as f64 + 8.0;
    let mut out = String::new();
    let mut described = Vec::new();
    for (i, b) in bars.iter().enumerate() {
        let y = 4.0 + row_h * i as f64;
        let mut name: String = b.label.chars().take(26).collect();
        if b.label.chars().count() > 26 {
            name.push('…');
        }
        let _ = write!(
            out,
            "<text class=\"chart-label\" x=\"{x:.0}\" y=\"{ty:.0}\" text-anchor=\"end\">{name}</text>\
             <rect class=\"bar-track\" x=\"{label_w:.0}\" y=\"{y:.0}\" width=\"{bar_w:.0}\" height=\"16\"/>\
             <rect class=\"bar-fill{low}\" x=\"{label_w:.0}\" y=\"{y:.0}\" width=\"{w:.1}\" height=\"16\"/>\
             <text class=\"chart-value\" x=\"{vx:.0}\" y=\"{ty:.0}\">{text}</text>",
            x = label_w - 8.0,
            ty = y + 12.5,
            name = xml_escape(&name),
            low = if b.low { " bar-low" } else { "" },
            w = bar_w * b.share.clamp(0.0, 1.0),
            vx = label_w + bar_w + 8.0,
            text = xml_escape(&b.text),
        );
        described.push(format!("{} {}", b.label, b.text));
    }
    svg(
        id,
        title,
        &described.join(", "),
        label_w + bar_w + 60.0,
        height,
        &out,
    )
}

/// Vertical bars in the order given (oldest first for time), labelled below;
/// `unit` names what is counted in the description ("rows", "uses").
pub fn vertical(id: &str, title: &str, unit: &str, columns: &[(String, i64)]) -> String {
    if columns.is_empty() {
        return String::new();
    }
    let max = columns.iter().map(|c| c.1).max().unwrap_or(0).max(1) as f64;
    let slot = if columns.len() > 24 { 16.0 } else { 44.0 };
    let (top, plot_h) = (20.0, 120.0);
    // Room either side for a label wider than its bar (a date is ~64 px).
    let pad = columns
        .iter()
        .map(|c| c.0.chars().count())
        .max()
        .unwrap_or(0) as f64
        * 3.5;
    let pad = pad.max(10.0);
    let width = slot * columns.len() as f64 + 2.0 * pad;
    // Label every bar when there is room, else about every seventh.
    let every = if slot >= 44.0 { 1 } else { 7 };
    let mut out = String::new();
    for (i, (label, n)) in columns.iter().enumerate() {
        let h = plot_h * *n as f64 / max;
        let x = pad + slot * i as f64;
        let cx = x + slot / 2.0;
        let _ = write!(
            out,
            "<rect class=\"bar-fill\" x=\"{:.1}\" y=\"{:.1}\" width=\"{:.1}\" height=\"{h:.1}\"/>",
            x + slot * 0.15,
            top + plot_h - h,
            slot * 0.7,
        );
        if slot >= 44.0 {
            let _ = write!(
                out,
                "<text class=\"chart-value\" x=\"{cx:.0}\" y=\"{:.1}\" text-anchor=\"middle\">{}</text>",
                top + plot_h - h - 4.0,
                compact(*n),
            );
        }
        if i % every == 0 {
            let _ = write!(
                out,
                "<text class=\"chart-label\" x=\"{cx:.0}\" y=\"{:.0}\" text-anchor=\"middle\">{}</text>",
                top + plot_h + 16.0,
                xml_escape(label),
            );
        }
    }
    let described: Vec<String> = columns
        .iter()
        .map(|(l, n)| format!("{l}: {n} {unit}"))
        .collect();
    svg(
        id,
        title,
        &described.join(", "),
        width,
        top + plot_h + 24.0,
        &out,
    )
}

fn svg(id: &str, title: &str, described: &str, width: f64, height: f64, body: &str) -> String {
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"chart\" width=\"{width:.0}\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         role=\"img\" aria-labelledby=\"{id}-title {id}-desc\">\
         <title id=\"{id}-title\">{}</title>\
         <desc id=\"{id}-desc\">{}.</desc>{body}</svg>",
        xml_escape(title),
        xml_escape(described),
    )
}

/// 1234 → "1.2k", 12345678 → "12M".
pub fn compact(n: i64) -> String {
    match n {
        n if n >= 10_000_000 => format!("{}M", n / 1_000_000),
        n if n >= 1_000_000 => format!("{:.1}M", n as f64 / 1e6),
        n if n >= 10_000 => format!("{}k", n / 1000),
        n if n >= 1000 => format!("{:.1}k", n as f64 / 1e3),
        n => n.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_escaped_and_every_figure_is_described() {
        let svg = horizontal(
            "t",
            "Uses <by> dataset",
            &count_bars([("a<b>", 10), ("c&d", 5)]),
        );
        assert!(svg.contains("a&lt;b&gt;") && svg.contains("c&amp;d"));
        assert!(svg.contains("<title id=\"t-title\">Uses &lt;by&gt; dataset</title>"));
        assert!(svg.contains("a&lt;b&gt; 10, c&amp;d 5."));
        let columns = vertical(
            "v",
            "Per day",
            "uses",
            &[("2026-11-22".into(), 3), ("2026-11-23".into(), 0)],
        );
        assert!(columns.contains("2026-11-22: 3 uses, 2026-11-23: 0 uses."));
        assert_eq!(horizontal("e", "Empty", &[]), "");
    }
}
