//! Generalisation hierarchies: for each value of a column, a ladder of ever
//! coarser labels (`39` → `35-39` → `30-39` → `20-39` → `*`).
//!
//! A hierarchy comes from a CSV file in ARX's format (one row per original
//! value: the value, then its label at each level, `;`-separated) or is built
//! from the values themselves: intervals for numbers, truncation for dates and
//! times, character redaction for codes and postcodes, grid snapping for
//! coordinates.

use ahash::AHashMap;
use serde::Serialize;

/// A full-domain generalisation hierarchy of one column.
#[derive(Debug, Clone)]
pub struct Hierarchy {
    /// `labels[l][id]`: the distinct labels at level `l`; level 0 holds the original values.
    labels: Vec<Vec<String>>,
    /// `up[l][leaf]`: the id at level `l` of the original value `leaf`.
    up: Vec<Vec<u32>>,
    leaf: AHashMap<String, u32>,
    /// How it was made, for the report.
    kind: HierarchyKind,
}

/// How a hierarchy was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum HierarchyKind {
    /// Given as a CSV file.
    File,
    /// Numbers grouped into intervals of growing width.
    Intervals,
    /// Dates and times truncated (hour, day, month, year).
    Dates,
    /// Codes with characters redacted from the right.
    Redaction,
    /// Coordinates snapped to grids of growing cell size.
    Grid,
}

impl HierarchyKind {
    pub fn parse(s: &str) -> Option<HierarchyKind> {
        Some(match s {
            "intervals" | "interval" => HierarchyKind::Intervals,
            "dates" | "date" | "time" => HierarchyKind::Dates,
            "redaction" | "redact" => HierarchyKind::Redaction,
            "grid" => HierarchyKind::Grid,
            _ => return None,
        })
    }
}

/// Why a hierarchy could not be read or built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum HierarchyError {
    #[error("line {line}: {message}")]
    Line { line: u64, message: String },
    #[error("the hierarchy has no rows")]
    Empty,
    #[error("value {value:?} cannot be used for a {kind} hierarchy: {reason}")]
    Value {
        value: String,
        kind: &'static str,
        reason: String,
    },
}

impl Hierarchy {
    /// Reads a hierarchy in ARX's CSV format: no header, one row per original
    /// value, every row with the same number of fields, each label at level
    /// `l` generalising to exactly one label at level `l + 1`.
    pub fn from_csv(bytes: &[u8], delimiter: u8) -> Result<Hierarchy, HierarchyError> {
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .delimiter(delimiter)
            .flexible(true)
            .from_reader(bytes);
        let mut rows: Vec<Vec<String>> = Vec::new();
        let mut width = 0usize;
        for record in reader.records() {
            let record = record.map_err(|e| HierarchyError::Line {
                line: e.position().map_or(0, |p| p.line()),
                message: e.to_string(),
            })?;
            let line = record
                .position()
                .map_or(rows.len() as u64 + 1, |p| p.line());
            if record.iter().all(|f| f.is_empty()) {
                continue;
            }
            if rows.is_empty() {
                width = record.len();
            } else if record.len() != width {
                return Err(HierarchyError::Line {
                    line,
                    message: format!(
                        "{} fields where the first row has {width}: every value needs a label at every level",
                        record.len()
                    ),
                });
            }
            rows.push(record.iter().map(str::to_owned).collect());
        }
        Self::from_rows(rows)
    }

    /// Builds a hierarchy from rows of labels (original value first).
    pub fn from_rows(rows: Vec<Vec<String>>) -> Result<Hierarchy, HierarchyError> {
        Self::build(rows, HierarchyKind::File)
    }

    fn build(rows: Vec<Vec<String>>, kind: HierarchyKind) -> Result<Hierarchy, HierarchyError> {
        let width = rows.first().map_or(0, Vec::len);
        if width == 0 {
            return Err(HierarchyError::Empty);
        }
        let mut labels: Vec<Vec<String>> = vec![Vec::new(); width];
        let mut ids: Vec<AHashMap<String, u32>> = vec![AHashMap::new(); width];
        let mut up: Vec<Vec<u32>> = vec![Vec::with_capacity(rows.len()); width];
        // parent[l][id at l] = (id at l + 1, the line that said so)
        let mut parent: Vec<AHashMap<u32, (u32, usize)>> = vec![AHashMap::new(); width];
        for (i, row) in rows.into_iter().enumerate() {
            let line = i as u64 + 1;
            if row.len() != width {
                return Err(HierarchyError::Line {
                    line,
                    message: format!("{} fields where the first row has {width}", row.len()),
                });
            }
            let mut previous: Option<u32> = None;
            for (level, label) in row.into_iter().enumerate() {
                let next = ids[level].len() as u32;
                let id = *ids[level].entry(label.clone()).or_insert_with(|| {
                    labels[level].push(label.clone());
                    next
                });
                if level == 0 && id != next {
                    return Err(HierarchyError::Line {
                        line,
                        message: format!("value {label:?} is listed twice"),
                    });
                }
                if let Some(child) = previous {
                    let entry = parent[level - 1].entry(child).or_insert((id, i));
                    if entry.0 != id {
                        return Err(HierarchyError::Line {
                            line,
                            message: format!(
                                "{:?} at level {} generalises to {:?} here but to {:?} on line {}: a hierarchy must be a tree",
                                labels[level - 1][child as usize],
                                level - 1,
                                label,
                                labels[level][entry.0 as usize],
                                entry.1 + 1
                            ),
                        });
                    }
                }
                up[level].push(id);
                previous = Some(id);
            }
        }
        let leaf = ids.swap_remove(0);
        Ok(Hierarchy {
            labels,
            up,
            leaf,
            kind,
        })
    }

    /// How many levels, the original values' included.
    pub fn levels(&self) -> usize {
        self.labels.len()
    }

    /// How many original values it knows.
    pub fn leaves(&self) -> usize {
        self.labels[0].len()
    }

    /// The distinct labels at `level`.
    pub fn cardinality(&self, level: usize) -> usize {
        self.labels[level].len()
    }

    pub fn kind(&self) -> HierarchyKind {
        self.kind
    }

    /// The id of an original value.
    pub fn leaf_id(&self, value: &str) -> Option<u32> {
        self.leaf.get(value).copied()
    }

    /// The id at `level` of the original value `leaf`.
    pub fn generalise(&self, level: usize, leaf: u32) -> u32 {
        self.up[level][leaf as usize]
    }

    /// The label of id `id` at `level`.
    pub fn label(&self, level: usize, id: u32) -> &str {
        &self.labels[level][id as usize]
    }

    /// The value's label at `level`, if the value is known.
    pub fn label_of(&self, value: &str, level: usize) -> Option<&str> {
        self.leaf_id(value)
            .map(|leaf| self.label(level, self.generalise(level, leaf)))
    }

    /// Builds a hierarchy of the given kind from a column's distinct values.
    /// `column` is the column's name (only used to pick a kind when `kind` is `None`).
    pub fn automatic<'a>(
        values: impl IntoIterator<Item = &'a str>,
        column: &str,
        kind: Option<HierarchyKind>,
    ) -> Result<Hierarchy, HierarchyError> {
        let mut distinct: Vec<&str> = values.into_iter().collect();
        distinct.sort_unstable();
        distinct.dedup();
        let kind = match kind {
            Some(kind) => kind,
            None => infer_kind(&distinct, column),
        };
        let rows = match kind {
            HierarchyKind::Intervals => interval_rows(&distinct)?,
            HierarchyKind::Grid => grid_rows(&distinct)?,
            HierarchyKind::Dates => date_rows(&distinct)?,
            HierarchyKind::Redaction | HierarchyKind::File => redaction_rows(&distinct),
        };
        Self::build(rows, kind)
    }
}

fn infer_kind(distinct: &[&str], column: &str) -> HierarchyKind {
    let present = || distinct.iter().filter(|v| !v.is_empty());
    if present().next().is_none() {
        return HierarchyKind::Redaction;
    }
    if present().all(|v| parse_datetime(v).is_some()) {
        return HierarchyKind::Dates;
    }
    if present().all(|v| parse_number(v).is_some()) {
        let name = column.to_ascii_lowercase();
        let coordinate = ["lat", "lon", "lng", "coord"]
            .iter()
            .any(|word| name.contains(word));
        // Codes with leading zeros (postcodes) are codes, not quantities.
        let leading_zero = present().any(|v| v.len() > 1 && v.starts_with('0') && !v.contains('.'));
        if coordinate {
            return HierarchyKind::Grid;
        }
        if !leading_zero {
            return HierarchyKind::Intervals;
        }
    }
    HierarchyKind::Redaction
}

fn parse_number(value: &str) -> Option<f64> {
    value.trim().parse::<f64>().ok().filter(|v| v.is_finite())
}

/// A missing value stays itself until the top level.
fn missing_row(value: &str, width: usize) -> Vec<String> {
    let mut row = vec![value.to_owned(); width - 1];
    row.push("*".to_owned());
    row
}

/// The widths 1, 2, 5, 10, 20, 50, … × 10^k.
fn nice_width(at_least: f64) -> f64 {
    if at_least <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(at_least.log10().floor());
    for step in [1.0, 2.0, 5.0, 10.0] {
        if step * magnitude >= at_least {
            return step * magnitude;
        }
    }
    10.0 * magnitude
}

/// The next level's width: a whole multiple of `width` (so every interval
/// lies inside one of the next level's — the hierarchy stays a tree) and
/// still a "nice" 1, 2 or 5 × 10ⁿ: 1 → 2 → 10 → 20 → 100, 5 → 10.
fn next_nice(width: f64) -> f64 {
    let magnitude = 10f64.powf(width.log10().floor());
    let leading = (width / magnitude).round();
    if leading == 2.0 {
        width * 5.0
    } else {
        width * 2.0
    }
}

fn format_bound(value: f64, width: f64) -> String {
    if width >= 1.0 && value.fract() == 0.0 {
        format!("{value:.0}")
    } else {
        let decimals = (-width.log10().floor()).max(0.0) as usize;
        format!("{value:.decimals$}")
    }
}

fn interval_rows(distinct: &[&str]) -> Result<Vec<Vec<String>>, HierarchyError> {
    let mut numbers = Vec::with_capacity(distinct.len());
    for value in distinct.iter().filter(|v| !v.is_empty()) {
        let number = parse_number(value).ok_or_else(|| HierarchyError::Value {
            value: (*value).to_owned(),
            kind: "intervals",
            reason: "it is not a number".into(),
        })?;
        numbers.push(number);
    }
    let (min, max) = numbers
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(*v), hi.max(*v))
        });
    let range = if numbers.is_empty() { 0.0 } else { max - min };
    // About 32 intervals at the first level, each next level about twice as wide,
    // until one interval covers the range; then `*`.
    let mut widths = Vec::new();
    let mut width = nice_width(range / 32.0);
    if numbers.iter().all(|v| v.fract() == 0.0) {
        width = width.max(1.0);
    }
    while widths.len() < 12 {
        widths.push(width);
        if width > range {
            break;
        }
        width = next_nice(width);
    }
    let height = widths.len() + 2;
    let mut rows = Vec::with_capacity(distinct.len());
    for value in distinct {
        let Some(number) = parse_number(value) else {
            rows.push(missing_row(value, height));
            continue;
        };
        let mut row = Vec::with_capacity(height);
        row.push((*value).to_owned());
        for width in &widths {
            let lo = (number / width).floor() * width;
            row.push(format!(
                "[{}, {})",
                format_bound(lo, *width),
                format_bound(lo + width, *width)
            ));
        }
        row.push("*".to_owned());
        rows.push(row);
    }
    Ok(rows)
}

fn grid_rows(distinct: &[&str]) -> Result<Vec<Vec<String>>, HierarchyError> {
    // Cells of 0.001° (about 100 m), 0.01°, 0.1°, 1°, 10°, then `*`.
    const CELLS: [f64; 5] = [0.001, 0.01, 0.1, 1.0, 10.0];
    let mut rows = Vec::with_capacity(distinct.len());
    for value in distinct {
        if value.is_empty() {
            rows.push(missing_row(value, CELLS.len() + 2));
            continue;
        }
        let number = parse_number(value).ok_or_else(|| HierarchyError::Value {
            value: (*value).to_owned(),
            kind: "grid",
            reason: "it is not a coordinate in degrees".into(),
        })?;
        let mut row = vec![(*value).to_owned()];
        for cell in CELLS {
            row.push(snap_label(number, cell));
        }
        row.push("*".to_owned());
        rows.push(row);
    }
    Ok(rows)
}

/// A coordinate snapped down to a grid of `cell` degrees, as text.
pub fn snap_label(value: f64, cell: f64) -> String {
    let decimals = (-cell.log10().floor()).max(0.0) as usize;
    let snapped = snap(value, cell);
    format!("{snapped:.decimals$}")
}

/// A coordinate snapped down to a grid of `cell` degrees (the cell's south-west corner).
pub fn snap(value: f64, cell: f64) -> f64 {
    // Round before flooring so 41.3 / 0.1 (= 412.99999…) lands in cell 413.
    let scaled = value / cell;
    let nearest = scaled.round();
    let index = if (scaled - nearest).abs() < 1e-9 {
        nearest
    } else {
        scaled.floor()
    };
    index * cell
}

/// A date (`YYYY-MM-DD`) or time (`YYYY-MM-DD[T ]HH:MM[:SS…]`): its parts.
fn parse_datetime(value: &str) -> Option<(&str, &str, &str, Option<&str>)> {
    let bytes = value.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range.clone())
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    if !(digits(0..4)
        && bytes.get(4) == Some(&b'-')
        && digits(5..7)
        && bytes.get(7) == Some(&b'-')
        && digits(8..10))
    {
        return None;
    }
    let month: u32 = value[5..7].parse().ok()?;
    let day: u32 = value[8..10].parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    if bytes.len() == 10 {
        return Some((&value[0..4], &value[5..7], &value[8..10], None));
    }
    if matches!(bytes.get(10), Some(b'T' | b' ')) && digits(11..13) && bytes.get(13) == Some(&b':')
    {
        return Some((
            &value[0..4],
            &value[5..7],
            &value[8..10],
            Some(&value[11..13]),
        ));
    }
    None
}

fn date_rows(distinct: &[&str]) -> Result<Vec<Vec<String>>, HierarchyError> {
    let mut parsed = Vec::with_capacity(distinct.len());
    for value in distinct {
        if value.is_empty() {
            parsed.push(None);
            continue;
        }
        let parts = parse_datetime(value).ok_or_else(|| HierarchyError::Value {
            value: (*value).to_owned(),
            kind: "dates",
            reason: "it is not a date (YYYY-MM-DD) or a time (YYYY-MM-DDTHH:MM…)".into(),
        })?;
        parsed.push(Some(parts));
    }
    let with_time = parsed.iter().flatten().any(|p| p.3.is_some());
    let height = if with_time { 6 } else { 4 };
    let mut rows = Vec::with_capacity(distinct.len());
    for (value, parts) in distinct.iter().zip(parsed) {
        let Some((year, month, day, hour)) = parts else {
            rows.push(missing_row(value, height));
            continue;
        };
        let mut row = vec![(*value).to_owned()];
        if with_time {
            row.push(match hour {
                Some(hour) => format!("{year}-{month}-{day} {hour}h"),
                None => format!("{year}-{month}-{day}"),
            });
            row.push(format!("{year}-{month}-{day}"));
        }
        row.push(format!("{year}-{month}"));
        row.push(year.to_owned());
        row.push("*".to_owned());
        rows.push(row);
    }
    Ok(rows)
}

fn redaction_rows(distinct: &[&str]) -> Vec<Vec<String>> {
    let longest = distinct
        .iter()
        .map(|v| v.chars().count())
        .max()
        .unwrap_or(0);
    // Level i hides the last i characters; the top is `*`.
    let height = longest.max(1) + 1;
    distinct
        .iter()
        .map(|value| {
            let chars: Vec<char> = value.chars().collect();
            let mut row = vec![(*value).to_owned()];
            for hidden in 1..height {
                if hidden >= chars.len() {
                    row.push("*".to_owned());
                } else {
                    let kept: String = chars[..chars.len() - hidden].iter().collect();
                    row.push(format!("{kept}{}", "*".repeat(hidden)));
                }
            }
            row
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_arx_format_and_refuses_bad_files() {
        let h = Hierarchy::from_csv(b"1;0-4;*\n2;0-4;*\n7;5-9;*\n", b';').unwrap();
        assert_eq!(h.levels(), 3);
        assert_eq!(h.label_of("7", 1), Some("5-9"));
        assert_eq!(h.cardinality(1), 2);
        assert_eq!(h.label_of("8", 1), None);

        let err = Hierarchy::from_csv(b"1;0-4;*\n2;0-4\n", b';').unwrap_err();
        assert!(err.to_string().starts_with("line 2:"), "{err}");
        let err = Hierarchy::from_csv(b"1;a;*\n1;a;*\n", b';').unwrap_err();
        assert!(err.to_string().contains("listed twice"), "{err}");
        let err = Hierarchy::from_csv(b"1;a;x\n2;a;y\n", b';').unwrap_err();
        assert!(err.to_string().contains("must be a tree"), "{err}");
        assert_eq!(
            Hierarchy::from_csv(b"", b';').unwrap_err(),
            HierarchyError::Empty
        );
    }

    #[test]
    fn automatic_hierarchies() {
        let ages = ["17", "25", "39", "90"];
        let h = Hierarchy::automatic(ages, "age", None).unwrap();
        assert_eq!(h.kind(), HierarchyKind::Intervals);
        // range 73 → about 32 intervals → width 5
        assert_eq!(h.label_of("39", 1), Some("[35, 40)"));
        assert_eq!(h.label_of("39", 2), Some("[30, 40)"));
        assert_eq!(h.label_of("39", h.levels() - 1), Some("*"));
        // every level is coarser than the last
        for level in 1..h.levels() {
            assert!(h.cardinality(level) <= h.cardinality(level - 1));
        }
        // Nested widths at every level (5, 10, 20, 100 …: each a multiple of the
        // last), so the intervals form a tree whatever the values.
        let all: Vec<String> = (17..=90).map(|a| a.to_string()).collect();
        let h = Hierarchy::automatic(all.iter().map(String::as_str), "age", None).unwrap();
        assert_eq!(h.label_of("45", 3), Some("[40, 60)"));
        assert_eq!(h.label_of("45", 4), Some("[0, 100)"));
        for (w, next) in [
            (1.0, 2.0),
            (2.0, 10.0),
            (5.0, 10.0),
            (10.0, 20.0),
            (0.2, 1.0),
            (50.0, 100.0),
        ] {
            assert!((next_nice(w) - next).abs() < 1e-9, "{w} → {}", next_nice(w));
        }

        let h = Hierarchy::automatic(["08001", "08002", "08010"], "postcode", None).unwrap();
        assert_eq!(h.kind(), HierarchyKind::Redaction);
        assert_eq!(h.label_of("08001", 1), Some("0800*"));
        assert_eq!(h.label_of("08010", 2), Some("080**"));

        let h = Hierarchy::automatic(["2017-10-13T08:15:00", "2017-10-14T09:00:00"], "when", None)
            .unwrap();
        assert_eq!(h.kind(), HierarchyKind::Dates);
        assert_eq!(h.label_of("2017-10-13T08:15:00", 1), Some("2017-10-13 08h"));
        assert_eq!(h.label_of("2017-10-13T08:15:00", 3), Some("2017-10"));

        let h = Hierarchy::automatic(["41.38512", "41.30001"], "latitude", None).unwrap();
        assert_eq!(h.kind(), HierarchyKind::Grid);
        assert_eq!(h.label_of("41.38512", 2), Some("41.38"));
        assert_eq!(h.label_of("41.30001", 3), Some("41.3"));

        let err =
            Hierarchy::automatic(["12", "x"], "n", Some(HierarchyKind::Intervals)).unwrap_err();
        assert!(err.to_string().contains("not a number"), "{err}");
    }

    #[test]
    fn snapping_is_stable_at_cell_edges() {
        assert_eq!(snap_label(41.3, 0.1), "41.3");
        assert_eq!(snap_label(-74.0334588, 0.01), "-74.04");
        assert_eq!(snap_label(2.12562442, 0.001), "2.125");
    }
}
