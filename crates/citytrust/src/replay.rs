//! `citytrust replay`: feed a stream from a file of real readings, at their
//! real times, accelerated — as a gateway would, over the NGSI-LD API with
//! the stream's write credential (batch upserts, one per instant, each
//! attribute's `observedAt` the reading's own time). The Barcelona
//! air-quality file (one row per station and hour) becomes Smart Data
//! Models `AirQualityObserved` entities at the stations' coordinates. With
//! `--loop`, the readings start again shifted past the last, so history
//! keeps moving forward. The demo runs it in the background.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::{Value, json};

/// The readings of one instant: (seconds since the epoch, entities).
pub type Instant = (i64, Vec<Value>);

fn slug(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        let c = match c {
            'à' | 'á' | 'À' | 'Á' => 'a',
            'è' | 'é' | 'È' | 'É' => 'e',
            'í' | 'ï' | 'Í' => 'i',
            'ò' | 'ó' | 'Ò' | 'Ó' => 'o',
            'ú' | 'ü' | 'Ú' => 'u',
            'ç' | 'Ç' => 'c',
            'ñ' | 'Ñ' => 'n',
            other => other,
        };
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('-') {
            out.push('-');
        }
    }
    out.trim_matches('-').to_string()
}

fn at(epoch: i64) -> anyhow::Result<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(epoch)?;
    Ok(t.format(&time::format_description::well_known::Rfc3339)?)
}

/// Read the Barcelona air-quality file into instants, oldest first.
pub fn air_quality(path: &Path) -> anyhow::Result<Vec<Instant>> {
    let mut reader = csv::Reader::from_path(path)
        .with_context(|| format!("could not read {}", path.display()))?;
    let headers = reader.headers()?.clone();
    let col = |name: &str| {
        headers
            .iter()
            .position(|h| h == name)
            .with_context(|| format!("{} has no column '{name}'", path.display()))
    };
    let (station, level, lon, lat, epoch) = (
        col("Station")?,
        col("Air Quality")?,
        col("Longitude")?,
        col("Latitude")?,
        col("Date Time")?,
    );
    let pollutants = [
        ("NO2", col("NO2 Value")?),
        ("O3", col("O3 Value")?),
        ("PM10", col("PM10 Value")?),
    ];
    let mut by_time: std::collections::BTreeMap<i64, Vec<Value>> = Default::default();
    for (i, record) in reader.records().enumerate() {
        let line = i + 2;
        let r = record.with_context(|| format!("{}: line {line}", path.display()))?;
        let field = |c: usize| r.get(c).unwrap_or("").trim();
        let t: i64 = field(epoch)
            .parse()
            .with_context(|| format!("line {line}: 'Date Time' is not seconds since the epoch"))?;
        let (x, y): (f64, f64) = (
            field(lon)
                .parse()
                .with_context(|| format!("line {line}: bad Longitude"))?,
            field(lat)
                .parse()
                .with_context(|| format!("line {line}: bad Latitude"))?,
        );
        let observed = at(t)?;
        let name = field(station);
        let mut e = json!({
            "id": format!("urn:ngsi-ld:AirQualityObserved:{}", slug(name)),
            "type": "AirQualityObserved",
            "stationName": {"type": "Property", "value": name},
            "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [x, y]}},
            "dateObserved": {"type": "Property", "value": observed},
        });
        if !matches!(field(level), "" | "NA") {
            e["airQualityLevel"] =
                json!({"type": "Property", "value": field(level), "observedAt": observed});
        }
        for (name, c) in pollutants {
            if let Ok(v) = field(c).parse::<f64>() {
                // µg/m³ (UN/CEFACT GQ).
                e[name] = json!({"type": "Property", "value": v, "unitCode": "GQ", "observedAt": observed});
            }
        }
        by_time.entry(t).or_default().push(e);
    }
    if by_time.is_empty() {
        bail!("{} holds no readings", path.display());
    }
    Ok(by_time.into_iter().collect())
}

/// Shift every reading of an instant by `by` seconds.
fn shifted(instant: &Instant, by: i64) -> anyhow::Result<Instant> {
    if by == 0 {
        return Ok(instant.clone());
    }
    let t = instant.0 + by;
    let new = at(t)?;
    let entities = instant
        .1
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if let Some(m) = e.as_object_mut() {
                for v in m.values_mut() {
                    if v.get("observedAt").is_some() {
                        v["observedAt"] = new.clone().into();
                    }
                }
                if m.contains_key("dateObserved") {
                    m.insert(
                        "dateObserved".into(),
                        json!({"type": "Property", "value": new}),
                    );
                }
            }
            e
        })
        .collect();
    Ok((t, entities))
}

/// Send the instants to `url`'s NGSI-LD API as `token`, `speed` times faster
/// than they happened (`looping`: for ever; `after`: resume past that time,
/// in the pass it falls in). `on_sent` hears each instant.
#[allow(clippy::too_many_arguments)]
pub async fn replay(
    url: &str,
    token: &str,
    stream: &str,
    instants: &[Instant],
    speed: f64,
    looping: bool,
    after: Option<i64>,
    mut on_sent: impl FnMut(usize, i64),
) -> anyhow::Result<()> {
    if !(speed.is_finite() && speed > 0.0) {
        bail!("--speed must be a positive number");
    }
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()?;
    let endpoint = format!(
        "{}/ngsi-ld/v1/entityOperations/upsert?options=update",
        url.trim_end_matches('/')
    );
    let span = instants.last().map(|l| l.0).unwrap_or(0)
        - instants.first().map(|f| f.0).unwrap_or(0)
        + 3600;
    let first = instants.first().map(|f| f.0).unwrap_or(0);
    let mut offset = match after {
        Some(a) if looping && a >= first => (a - first) / span * span,
        _ => 0,
    };
    loop {
        let mut previous: Option<i64> = None;
        for (i, instant) in instants.iter().enumerate() {
            if after.is_some_and(|a| instant.0 + offset <= a) {
                continue;
            }
            if let Some(p) = previous {
                let wait = (instant.0 - p).max(0) as f64 / speed;
                tokio::time::sleep(Duration::from_secs_f64(wait.min(3600.0))).await;
            }
            previous = Some(instant.0);
            let (t, entities) = shifted(instant, offset)?;
            let res = client
                .post(&endpoint)
                .bearer_auth(token)
                .header("CityTrust-Stream", stream)
                .json(&entities)
                .send()
                .await
                .with_context(|| format!("could not reach {url}"))?;
            let status = res.status();
            if !status.is_success() {
                let body = res.text().await.unwrap_or_default();
                bail!(
                    "the trust answered {status} to the readings of {}: {body}",
                    at(t)?
                );
            }
            on_sent(i, t);
        }
        if !looping {
            return Ok(());
        }
        offset += span;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_barcelona_file_becomes_air_quality_entities_at_their_stations() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../demo/data/barcelona/air_quality_Nov2017.csv");
        let instants = air_quality(&path).unwrap();
        assert!(instants.len() > 600, "{}", instants.len());
        assert!(instants.windows(2).all(|w| w[0].0 < w[1].0));
        let (t, first) = &instants[0];
        let eixample = first
            .iter()
            .find(|e| e["id"] == "urn:ngsi-ld:AirQualityObserved:barcelona-eixample")
            .unwrap();
        assert_eq!(
            eixample["location"]["value"]["coordinates"],
            json!([2.1538, 41.3853])
        );
        assert_eq!(eixample["NO2"]["value"], 113.0);
        assert_eq!(eixample["NO2"]["observedAt"], at(*t).unwrap().as_str());
        // "NA" readings are left out, not sent as values.
        let sants = first
            .iter()
            .find(|e| e["id"] == "urn:ngsi-ld:AirQualityObserved:barcelona-sants")
            .unwrap();
        assert!(sants.get("O3").is_none());
        let later = shifted(&instants[0], 3600).unwrap();
        assert_eq!(
            later.1[0]["dateObserved"]["value"],
            at(t + 3600).unwrap().as_str()
        );
    }
}
