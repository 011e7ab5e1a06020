//! A map of a version's geometry, drawn as SVG on the server: no tile
//! server, no script, no third-party request from a resident's browser.
//!
//! The geometry is the `geometry` column (GeoJSON text) or a longitude and
//! latitude pair, as for the GeoJSON export. Coordinates are projected
//! equirectangularly with the x axis shrunk by the cosine of the middle
//! latitude (good enough at city scale), and the drawing is bounded: at most
//! [`MAX_FEATURES`] features and [`MAX_POINTS`] vertices, thinned evenly
//! beyond that, so a preview stays small whatever the size of the data.

use std::fmt::Write as _;

use datafusion::arrow::array::{Array, AsArray};
use datafusion::arrow::datatypes::Float64Type;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::Result;
use crate::export::Geometry;

/// Features drawn at most.
pub const MAX_FEATURES: usize = 20_000;
/// Vertices drawn at most, over all features.
pub const MAX_POINTS: usize = 200_000;
/// Width of the drawing in SVG user units.
const WIDTH: f64 = 800.0;

/// One shape, in (longitude, latitude).
#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Point(f64, f64),
    Line(Vec<(f64, f64)>),
    /// Rings: the first is the outer boundary.
    Polygon(Vec<Vec<(f64, f64)>>),
}

/// A map of the version in the Parquet `file`, or `None` when it has no
/// geometry (or no feature with valid coordinates).
pub fn map_svg(file: std::fs::File, title: &str) -> Result<Option<String>> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let Some(geometry) = Geometry::find(builder.schema()) else {
        return Ok(None);
    };
    let columns: Vec<usize> = match geometry {
        Geometry::Column(g) => vec![g],
        Geometry::Point { lon, lat } => vec![lon, lat],
    };
    let mask = ProjectionMask::roots(builder.parquet_schema(), columns.iter().copied());
    let rows = builder.metadata().file_metadata().num_rows().max(0) as usize;
    // Read every k-th row when there are more rows than features to draw.
    let step = rows.div_ceil(MAX_FEATURES).max(1);
    let reader = builder
        .with_projection(mask)
        .with_batch_size(8192)
        .build()?;
    let mut shapes = Vec::new();
    let mut row = 0usize;
    for batch in reader {
        let batch = batch?;
        for i in 0..batch.num_rows() {
            row += 1;
            if !(row - 1).is_multiple_of(step) {
                continue;
            }
            match geometry {
                Geometry::Column(_) => {
                    let col = batch.column(0).as_string::<i32>();
                    if col.is_valid(i)
                        && let Ok(value) = serde_json::from_str::<Value>(col.value(i))
                    {
                        collect(&value, &mut shapes);
                    }
                }
                Geometry::Point { .. } => {
                    let lon = batch.column(0).as_primitive::<Float64Type>();
                    let lat = batch.column(1).as_primitive::<Float64Type>();
                    if lon.is_valid(i) && lat.is_valid(i) {
                        push_point(lon.value(i), lat.value(i), &mut shapes);
                    }
                }
            }
        }
    }
    Ok(draw(&shapes, rows, title))
}

fn valid(lon: f64, lat: f64) -> bool {
    lon.is_finite()
        && lat.is_finite()
        && (-180.0..=180.0).contains(&lon)
        && (-90.0..=90.0).contains(&lat)
}

fn push_point(lon: f64, lat: f64, shapes: &mut Vec<Shape>) {
    // (0, 0) is almost always a missing position, not a point in the Gulf of Guinea.
    if valid(lon, lat) && !(lon == 0.0 && lat == 0.0) {
        shapes.push(Shape::Point(lon, lat));
    }
}

fn position(v: &Value) -> Option<(f64, f64)> {
    let a = v.as_array()?;
    let (lon, lat) = (a.first()?.as_f64()?, a.get(1)?.as_f64()?);
    valid(lon, lat).then_some((lon, lat))
}

fn positions(v: &Value) -> Vec<(f64, f64)> {
    v.as_array()
        .map(|a| a.iter().filter_map(position).collect())
        .unwrap_or_default()
}

fn rings(v: &Value) -> Vec<Vec<(f64, f64)>> {
    v.as_array()
        .map(|a| a.iter().map(positions).filter(|r| r.len() >= 3).collect())
        .unwrap_or_default()
}

/// The shapes of one GeoJSON geometry (a Feature's geometry, or a bare one).
fn collect(geometry: &Value, shapes: &mut Vec<Shape>) {
    let coordinates = &geometry["coordinates"];
    match geometry["type"].as_str() {
        Some("Point") => {
            if let Some((lon, lat)) = position(coordinates) {
                push_point(lon, lat, shapes);
            }
        }
        Some("MultiPoint") => {
            for (lon, lat) in positions(coordinates) {
                push_point(lon, lat, shapes);
            }
        }
        Some("LineString") => {
            let line = positions(coordinates);
            if line.len() >= 2 {
                shapes.push(Shape::Line(line));
            }
        }
        Some("MultiLineString") => {
            for line in coordinates.as_array().into_iter().flatten() {
                let line = positions(line);
                if line.len() >= 2 {
                    shapes.push(Shape::Line(line));
                }
            }
        }
        Some("Polygon") => {
            let r = rings(coordinates);
            if !r.is_empty() {
                shapes.push(Shape::Polygon(r));
            }
        }
        Some("MultiPolygon") => {
            for polygon in coordinates.as_array().into_iter().flatten() {
                let r = rings(polygon);
                if !r.is_empty() {
                    shapes.push(Shape::Polygon(r));
                }
            }
        }
        Some("GeometryCollection") => {
            for g in geometry["geometries"].as_array().into_iter().flatten() {
                collect(g, shapes);
            }
        }
        _ => {}
    }
}

fn vertices(shape: &Shape) -> Box<dyn Iterator<Item = &(f64, f64)> + '_> {
    match shape {
        Shape::Point(..) => Box::new(std::iter::empty()),
        Shape::Line(l) => Box::new(l.iter()),
        Shape::Polygon(r) => Box::new(r.iter().flatten()),
    }
}

fn draw(shapes: &[Shape], rows: usize, title: &str) -> Option<String> {
    let mut all = shapes.iter().flat_map(|s| match s {
        Shape::Point(lon, lat) => {
            Box::new(std::iter::once((*lon, *lat))) as Box<dyn Iterator<Item = (f64, f64)>>
        }
        other => Box::new(vertices(other).copied()),
    });
    let first = all.next()?;
    let (mut west, mut east, mut south, mut north) = (first.0, first.0, first.1, first.1);
    for (lon, lat) in all {
        west = west.min(lon);
        east = east.max(lon);
        south = south.min(lat);
        north = north.max(lat);
    }
    let shrink = ((south + north) / 2.0).to_radians().cos().max(0.01);
    let span_x = ((east - west) * shrink).max(1e-6);
    let span_y = (north - south).max(1e-6);
    let margin = 10.0;
    let scale = (WIDTH - 2.0 * margin) / span_x.max(span_y);
    let height = (span_y * scale + 2.0 * margin).max(120.0);
    let width = span_x * scale + 2.0 * margin;
    let x = |lon: f64| margin + (lon - west) * shrink * scale;
    let y = |lat: f64| margin + (north - lat) * scale;

    // Thin long outlines evenly so the whole map stays within MAX_POINTS.
    let total: usize = shapes.iter().map(|s| vertices(s).count()).sum();
    let keep_every = total.div_ceil(MAX_POINTS).max(1);
    let path_of = |points: &[(f64, f64)], close: bool| {
        let mut d = String::new();
        let last = points.len() - 1;
        for (i, (lon, lat)) in points.iter().enumerate() {
            if !i.is_multiple_of(keep_every) && i != last {
                continue;
            }
            let _ = write!(
                d,
                "{}{:.1} {:.1}",
                if d.is_empty() { "M" } else { "L" },
                x(*lon),
                y(*lat)
            );
        }
        if close {
            d.push('Z');
        }
        d
    };

    let (mut areas, mut lines, mut points) = (String::new(), String::new(), String::new());
    let mut counts = (0usize, 0usize, 0usize);
    let radius = if shapes.len() > 2000 { 1.5 } else { 3.0 };
    for shape in shapes {
        match shape {
            Shape::Point(lon, lat) => {
                counts.2 += 1;
                let _ = write!(
                    points,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"{radius}\"/>",
                    x(*lon),
                    y(*lat)
                );
            }
            Shape::Line(l) => {
                counts.1 += 1;
                let _ = write!(lines, "<path d=\"{}\"/>", path_of(l, false));
            }
            Shape::Polygon(r) => {
                counts.0 += 1;
                let d: String = r.iter().map(|ring| path_of(ring, true)).collect();
                let _ = write!(areas, "<path d=\"{d}\"/>");
            }
        }
    }
    let mut what = Vec::new();
    for (n, one, many) in [
        (counts.0, "area", "areas"),
        (counts.1, "line", "lines"),
        (counts.2, "point", "points"),
    ] {
        if n > 0 {
            what.push(format!("{n} {}", if n == 1 { one } else { many }));
        }
    }
    let sampled = if rows > MAX_FEATURES {
        format!(" (an even sample of the {rows} rows)")
    } else {
        String::new()
    };
    let description = format!(
        "{}{sampled}, between longitude {west:.4} and {east:.4} and latitude {south:.4} and {north:.4}.",
        what.join(", ")
    );
    Some(format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"map\" viewBox=\"0 0 {width:.0} {height:.0}\" \
         role=\"img\" aria-labelledby=\"map-title map-desc\" preserveAspectRatio=\"xMidYMid meet\">\
         <title id=\"map-title\">{}</title><desc id=\"map-desc\">{}</desc>\
         <g class=\"map-areas\">{areas}</g><g class=\"map-lines\">{lines}</g><g class=\"map-points\">{points}</g></svg>",
        xml_escape(title),
        xml_escape(&description)
    ))
}

/// Escape text for XML content and attribute values.
pub fn xml_escape(text: &str) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shapes_come_from_every_geometry_type() {
        let mut shapes = Vec::new();
        collect(
            &json!({"type": "Point", "coordinates": [2.17, 41.38]}),
            &mut shapes,
        );
        collect(
            &json!({"type": "Point", "coordinates": [0.0, 0.0]}),
            &mut shapes,
        );
        collect(
            &json!({"type": "Point", "coordinates": [500.0, 41.0]}),
            &mut shapes,
        );
        collect(
            &json!({"type": "MultiPolygon", "coordinates": [[[[2.1, 41.3], [2.2, 41.3], [2.2, 41.4], [2.1, 41.3]]]]}),
            &mut shapes,
        );
        collect(
            &json!({"type": "GeometryCollection", "geometries": [{"type": "LineString", "coordinates": [[2.1, 41.3], [2.2, 41.4]]}]}),
            &mut shapes,
        );
        assert_eq!(shapes.len(), 3, "{shapes:?}");
        assert_eq!(shapes[0], Shape::Point(2.17, 41.38));
        assert!(matches!(shapes[1], Shape::Polygon(_)));
        assert!(matches!(shapes[2], Shape::Line(_)));
    }

    #[test]
    fn a_drawing_is_titled_described_and_escaped() {
        let shapes = vec![Shape::Point(2.1, 41.3), Shape::Point(2.2, 41.4)];
        let svg = draw(&shapes, 2, "Stations <&> \"map\"").unwrap();
        assert!(
            svg.contains("<title id=\"map-title\">Stations &lt;&amp;&gt; &quot;map&quot;</title>")
        );
        assert!(svg.contains("2 points"));
        assert_eq!(svg.matches("<circle").count(), 2);
        assert!(draw(&[], 0, "x").is_none());
    }
}
