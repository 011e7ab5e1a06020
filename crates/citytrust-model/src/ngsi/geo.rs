//! NGSI-LD geo-queries (ETSI GS CIM 009 4.10): `georel` (`near;maxDistance==m`,
//! `near;minDistance==m`, `within`, `contains`, `intersects`, `disjoint`,
//! `overlaps`, `equals`) against a `geometry` and its `coordinates`, on the
//! entity's `location` or another geo-property. Distances are great-circle
//! (haversine, metres) from the nearest position of the entity's geometry;
//! containment is decided by ray casting on each ring (holes excluded) —
//! exact for points, and for other geometries taken position by position.

use serde_json::Value;

use super::{Context, Entity, NgsiError, check_geometry};

type R<T> = Result<T, NgsiError>;

const EARTH_RADIUS_M: f64 = 6_371_008.8;

#[derive(Debug, Clone, PartialEq)]
enum Rel {
    Near { max: Option<f64>, min: Option<f64> },
    Within,
    Contains,
    Intersects,
    Disjoint,
    Equals,
    Overlaps,
}

/// A parsed geo-query.
#[derive(Debug, Clone, PartialEq)]
pub struct GeoQuery {
    rel: Rel,
    geometry: Value,
    /// The geo-property compared (expanded); `location` by default.
    property: String,
}

impl GeoQuery {
    /// From `georel`, `geometry`, `coordinates` (JSON text) and `geoproperty`.
    pub fn parse(
        georel: &str,
        geometry: &str,
        coordinates: &str,
        geoproperty: Option<&str>,
        ctx: &Context,
    ) -> R<GeoQuery> {
        let bad = |why: String| NgsiError::bad(format!("geo-query: {why}"));
        let mut parts = georel.split(';');
        let rel = match parts.next().unwrap_or("") {
            "near" => {
                let (mut max, mut min) = (None, None);
                for p in parts.by_ref() {
                    let (k, v) = p.split_once("==").ok_or_else(|| {
                        bad(format!("'{p}' is not maxDistance==m or minDistance==m"))
                    })?;
                    let m: f64 = v
                        .parse()
                        .ok()
                        .filter(|m: &f64| m.is_finite() && *m >= 0.0)
                        .ok_or_else(|| bad(format!("'{v}' is not a distance in metres")))?;
                    if max.is_some() || min.is_some() {
                        return Err(bad("near takes one of maxDistance and minDistance".into()));
                    }
                    match k {
                        "maxDistance" if m > 0.0 => max = Some(m),
                        "maxDistance" => {
                            return Err(bad("maxDistance is more than 0 metres".into()));
                        }
                        "minDistance" => min = Some(m),
                        other => {
                            return Err(bad(format!(
                                "'{other}' is not maxDistance or minDistance"
                            )));
                        }
                    }
                }
                if max.is_none() && min.is_none() {
                    return Err(bad("near needs maxDistance or minDistance".into()));
                }
                Rel::Near { max, min }
            }
            "within" => Rel::Within,
            "contains" => Rel::Contains,
            "intersects" => Rel::Intersects,
            "disjoint" => Rel::Disjoint,
            "equals" => Rel::Equals,
            "overlaps" => Rel::Overlaps,
            other => return Err(bad(format!("'{other}' is not a georel"))),
        };
        if !matches!(rel, Rel::Near { .. }) && parts.next().is_some() {
            return Err(bad(format!("{georel} takes no modifier")));
        }
        let coords: Value = serde_json::from_str(coordinates)
            .map_err(|_| bad(format!("coordinates '{coordinates}' are not a JSON array")))?;
        let geometry = serde_json::json!({"type": geometry, "coordinates": coords});
        check_geometry("geo-query", &geometry)?;
        if matches!(rel, Rel::Near { .. }) && geometry["type"] != "Point" {
            return Err(bad("near is measured from a Point".into()));
        }
        if matches!(rel, Rel::Within)
            && !matches!(geometry["type"].as_str(), Some("Polygon" | "MultiPolygon"))
        {
            return Err(bad("within is within a Polygon or MultiPolygon".into()));
        }
        Ok(GeoQuery {
            rel,
            geometry,
            property: ctx.expand(geoproperty.unwrap_or("location")),
        })
    }

    /// From the JSON `geoQ` of a subscription (or of a POST query).
    pub fn from_json(v: &Value, ctx: &Context) -> R<GeoQuery> {
        let s = |k: &str| v.get(k).and_then(Value::as_str);
        let coords = match v.get("coordinates") {
            Some(Value::String(c)) => c.clone(),
            Some(c) => c.to_string(),
            None => return Err(NgsiError::bad("geoQ: coordinates are missing")),
        };
        GeoQuery::parse(
            s("georel").ok_or_else(|| NgsiError::bad("geoQ: georel is missing"))?,
            s("geometry").ok_or_else(|| NgsiError::bad("geoQ: geometry is missing"))?,
            &coords,
            s("geoproperty"),
            ctx,
        )
    }

    /// Whether an entity's geo-property stands in the relation.
    pub fn matches(&self, e: &Entity) -> bool {
        let Some(g) = e.value_of(&self.property) else {
            return false;
        };
        let mine = positions(g);
        if mine.is_empty() {
            return false;
        }
        match &self.rel {
            Rel::Near { max, min } => {
                let Some(p) = point(&self.geometry) else {
                    return false;
                };
                let d = mine
                    .iter()
                    .map(|q| haversine(p, *q))
                    .fold(f64::INFINITY, f64::min);
                max.is_none_or(|m| d <= m) && min.is_none_or(|m| d >= m)
            }
            Rel::Within => mine.iter().all(|p| inside(&self.geometry, *p)),
            // A point or line contains the positions it is made of.
            Rel::Contains => positions(&self.geometry)
                .iter()
                .all(|p| inside(g, *p) || on_positions(g, *p)),
            Rel::Intersects | Rel::Overlaps => self.intersects(g, &mine),
            Rel::Disjoint => !self.intersects(g, &mine),
            Rel::Equals => same_geometry(g, &self.geometry),
        }
    }

    /// The geo-property compared (expanded).
    pub fn property(&self) -> &str {
        &self.property
    }

    /// A box (west, south, east, north, in degrees) that every matching
    /// entity's geometry meets, when the query has one: `near` with a
    /// `maxDistance` (the circle's box, widened a little), `within` (the
    /// query geometry's box). `None`: no such bound (other relations, a box
    /// crossing the antimeridian or reaching a pole). A prefilter only:
    /// `matches` still decides.
    pub fn bounds(&self) -> Option<[f64; 4]> {
        match &self.rel {
            Rel::Near { max: Some(m), .. } => {
                let (lon, lat) = point(&self.geometry)?;
                let dlat = (m / EARTH_RADIUS_M).to_degrees() * 1.01 + 1e-6;
                if lat.abs() + dlat >= 89.0 {
                    return None;
                }
                let dlon = dlat / (lat.abs() + dlat).to_radians().cos();
                if lon.abs() + dlon >= 180.0 {
                    return None;
                }
                Some([lon - dlon, lat - dlat, lon + dlon, lat + dlat])
            }
            Rel::Within => bbox(&self.geometry),
            _ => None,
        }
    }

    fn intersects(&self, g: &Value, mine: &[(f64, f64)]) -> bool {
        mine.iter()
            .any(|p| inside(&self.geometry, *p) || on_positions(&self.geometry, *p))
            || positions(&self.geometry).iter().any(|p| inside(g, *p))
    }
}

fn point(g: &Value) -> Option<(f64, f64)> {
    let c = g.get("coordinates")?;
    Some((c.get(0)?.as_f64()?, c.get(1)?.as_f64()?))
}

/// Every position of a geometry (longitude, latitude).
/// The box (west, south, east, north) of a geometry's positions.
pub fn bbox(g: &Value) -> Option<[f64; 4]> {
    let ps = positions(g);
    let first = ps.first()?;
    let mut b = [first.0, first.1, first.0, first.1];
    for (x, y) in &ps {
        b[0] = b[0].min(*x);
        b[1] = b[1].min(*y);
        b[2] = b[2].max(*x);
        b[3] = b[3].max(*y);
    }
    Some(b)
}

/// Whether two boxes meet.
pub fn boxes_meet(a: &[f64; 4], b: &[f64; 4]) -> bool {
    a[0] <= b[2] && b[0] <= a[2] && a[1] <= b[3] && b[1] <= a[3]
}

fn positions(g: &Value) -> Vec<(f64, f64)> {
    fn walk(v: &Value, out: &mut Vec<(f64, f64)>) {
        if let Some(a) = v.as_array() {
            if let (Some(x), Some(y)) = (
                a.first().and_then(Value::as_f64),
                a.get(1).and_then(Value::as_f64),
            ) {
                out.push((x, y));
            } else {
                for item in a {
                    walk(item, out);
                }
            }
        }
    }
    let mut out = Vec::new();
    if let Some(parts) = g.get("geometries").and_then(Value::as_array) {
        for p in parts {
            out.extend(positions(p));
        }
    } else if let Some(c) = g.get("coordinates") {
        walk(c, &mut out);
    }
    out
}

fn on_positions(g: &Value, p: (f64, f64)) -> bool {
    positions(g)
        .iter()
        .any(|q| (q.0 - p.0).abs() < 1e-9 && (q.1 - p.1).abs() < 1e-9)
}

fn same_geometry(a: &Value, b: &Value) -> bool {
    a.get("type") == b.get("type") && {
        let (pa, pb) = (positions(a), positions(b));
        pa.len() == pb.len()
            && pa
                .iter()
                .zip(&pb)
                .all(|(x, y)| (x.0 - y.0).abs() < 1e-9 && (x.1 - y.1).abs() < 1e-9)
    }
}

/// Great-circle distance in metres.
pub(crate) fn haversine(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (lat1, lat2) = (a.1.to_radians(), b.1.to_radians());
    let dlat = lat2 - lat1;
    let dlon = (b.0 - a.0).to_radians();
    let h = (dlat / 2.0).sin().powi(2) + lat1.cos() * lat2.cos() * (dlon / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().asin()
}

fn ring_contains(ring: &[Value], p: (f64, f64)) -> bool {
    let pts: Vec<(f64, f64)> = ring
        .iter()
        .filter_map(|v| Some((v.get(0)?.as_f64()?, v.get(1)?.as_f64()?)))
        .collect();
    let mut inside = false;
    let n = pts.len();
    for i in 0..n {
        let (a, b) = (pts[i], pts[(i + n - 1) % n]);
        if (a.1 > p.1) != (b.1 > p.1) && p.0 < (b.0 - a.0) * (p.1 - a.1) / (b.1 - a.1) + a.0 {
            inside = !inside;
        }
    }
    inside
}

fn polygon_contains(rings: &[Value], p: (f64, f64)) -> bool {
    let Some(outer) = rings.first().and_then(Value::as_array) else {
        return false;
    };
    ring_contains(outer, p)
        && !rings[1..]
            .iter()
            .filter_map(Value::as_array)
            .any(|hole| ring_contains(hole, p))
}

/// Whether a position lies inside a (multi)polygon.
fn inside(g: &Value, p: (f64, f64)) -> bool {
    let c = g.get("coordinates").and_then(Value::as_array);
    match (g.get("type").and_then(Value::as_str), c) {
        (Some("Polygon"), Some(rings)) => polygon_contains(rings, p),
        (Some("MultiPolygon"), Some(polys)) => polys
            .iter()
            .filter_map(Value::as_array)
            .any(|rings| polygon_contains(rings, p)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Entity, Fragment};
    use super::*;
    use serde_json::json;

    /// The prefilter's box never leaves out an entity `near` matches: over a
    /// grid of places and distances, every point the query matches is in the box.
    #[test]
    fn a_near_box_holds_every_match() {
        for (lon, lat) in [
            (2.17, 41.39),
            (-70.6, -33.4),
            (139.7, 35.7),
            (18.0, 69.6),
            (-0.1, 51.5),
        ] {
            for max in [10.0, 1_500.0, 50_000.0] {
                let q = GeoQuery::parse(
                    &format!("near;maxDistance=={max}"),
                    "Point",
                    &format!("[{lon},{lat}]"),
                    None,
                    Context::core(),
                )
                .unwrap();
                let b = q.bounds().unwrap();
                let step = max / EARTH_RADIUS_M * 180.0 / std::f64::consts::PI / 10.0;
                let mut matched = 0;
                for i in -30..=30 {
                    for j in -30..=30 {
                        let (x, y) = (lon + f64::from(i) * step * 2.0, lat + f64::from(j) * step);
                        if q.matches(&at(x, y)) {
                            matched += 1;
                            assert!(boxes_meet(&b, &[x, y, x, y]), "({x}, {y}) outside {b:?}");
                        }
                    }
                }
                assert!(matched > 10);
            }
        }
    }

    fn at(lon: f64, lat: f64) -> Entity {
        let body = json!({"id": "urn:x", "type": "T", "location": {"type": "Point", "coordinates": [lon, lat]}});
        Entity::create(
            Fragment::parse(Context::core(), &body, true).unwrap(),
            "2026-01-01T00:00:00Z",
        )
        .unwrap()
    }

    fn q(rel: &str, geometry: &str, coords: &str) -> GeoQuery {
        GeoQuery::parse(rel, geometry, coords, None, Context::core()).unwrap()
    }

    #[test]
    fn near_within_and_disjoint_decide_as_the_map_does() {
        // Plaça de Catalunya to the Sagrada Família is about 1.9 km as the crow flies.
        let sagrada = at(2.1744, 41.4036);
        assert!(q("near;maxDistance==2000", "Point", "[2.1700, 41.3870]").matches(&sagrada));
        assert!(!q("near;maxDistance==1800", "Point", "[2.1700, 41.3870]").matches(&sagrada));
        assert!(q("near;minDistance==1800", "Point", "[2.1700, 41.3870]").matches(&sagrada));
        assert!(!q("near;minDistance==2000", "Point", "[2.1700, 41.3870]").matches(&sagrada));
        let eixample = "[[[2.14,41.38],[2.19,41.38],[2.19,41.41],[2.14,41.41],[2.14,41.38]]]";
        assert!(q("within", "Polygon", eixample).matches(&sagrada));
        assert!(q("intersects", "Polygon", eixample).matches(&sagrada));
        assert!(!q("disjoint", "Polygon", eixample).matches(&sagrada));
        assert!(!q("within", "Polygon", eixample).matches(&at(2.10, 41.38)));
        assert!(q("equals", "Point", "[2.1744, 41.4036]").matches(&sagrada));
        let holed = "[[[2.14,41.38],[2.19,41.38],[2.19,41.41],[2.14,41.41],[2.14,41.38]],[[2.17,41.40],[2.18,41.40],[2.18,41.41],[2.17,41.41],[2.17,41.40]]]";
        assert!(!q("within", "Polygon", holed).matches(&sagrada));
    }

    #[test]
    fn a_malformed_geo_query_says_what() {
        for (rel, g, c) in [
            ("near", "Point", "[1,2]"),
            ("near;maxDistance==-1", "Point", "[1,2]"),
            (
                "near;maxDistance==10",
                "Polygon",
                "[[[0,0],[1,0],[1,1],[0,0]]]",
            ),
            ("within", "Point", "[1,2]"),
            ("inside", "Point", "[1,2]"),
            ("within", "Polygon", "[[[0,0],[1,0]]]"),
            ("equals", "Point", "not json"),
        ] {
            assert!(
                GeoQuery::parse(rel, g, c, None, Context::core()).is_err(),
                "{rel} {g} {c}"
            );
        }
    }
}
