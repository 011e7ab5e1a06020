//! A stream's page in the portal (`/datasets/{id}/live`, issue 26): its
//! latest values on a map and in a table, a chart of one entity's recent
//! history per attribute (SVG, with the figures as a table), and the
//! reader's own subscriptions to it. Every value shown is read through the
//! same decision and log as an API read (`ngsi_query`, `ngsi_temporal`): a
//! shared stream shows its values only for a purpose under an agreement,
//! and says why not otherwise.

use std::fmt::Write as _;

use askama::Template;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::routing::get;
use citytrust_model::catalogue::Spectrum;
use citytrust_model::ngsi::query::EntityQuery;
use citytrust_model::ngsi::temporal::TemporalQuery;
use citytrust_model::ngsi::{Context, Rendering};
use citytrust_query::preview::xml_escape;
use citytrust_service::ServiceError;
use citytrust_service::streams::{StreamCaller, TemporalTarget};
use serde_json::Value;
use url::form_urlencoded;

use super::{Nav, PageError, PageResult, Viewer, render};
use crate::AppState;

pub(super) fn routes() -> Router<AppState> {
    Router::new().route("/datasets/{id}/live", get(stream_page))
}

/// One entity's latest values.
struct Latest {
    id: String,
    name: String,
    href: String,
    values: Vec<String>,
    observed: String,
}

/// One attribute's recent history: the chart and its figures.
struct History {
    attribute: String,
    unit: String,
    svg: String,
    rows: Vec<(String, String)>,
}

#[derive(Template)]
#[template(path = "stream.html")]
struct StreamPage {
    nav: Nav,
    id: String,
    title: String,
    types: String,
    open: bool,
    purpose: String,
    purposes: Vec<(String, String)>,
    refused: Option<String>,
    attributes: Vec<String>,
    latest: Vec<Latest>,
    map: String,
    entity: String,
    entity_name: String,
    history: Vec<History>,
    subscriptions: Vec<(String, String, String, String)>,
    log_index: Option<i64>,
    signed_in: bool,
}

/// The numeric attributes of entities (keyValues), in first-seen order.
fn numeric_attributes(entities: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for e in entities {
        if let Some(m) = e.as_object() {
            for (k, v) in m {
                if v.is_number() && !out.contains(k) {
                    out.push(k.clone());
                }
            }
        }
    }
    out
}

fn point_of(e: &Value) -> Option<(f64, f64)> {
    let c = e.get("location")?.get("coordinates")?;
    Some((c.get(0)?.as_f64()?, c.get(1)?.as_f64()?))
}

fn name_of(e: &Value) -> String {
    e.get("stationName")
        .or_else(|| e.get("name"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| e["id"].as_str().unwrap_or("").to_string())
}

/// The entities' points on a plain map (equirectangular, north up), each
/// labelled; the table beside it holds every figure.
fn map_svg(entities: &[Value], first: Option<&str>) -> String {
    let points: Vec<(f64, f64, String, String)> = entities
        .iter()
        .filter_map(|e| {
            point_of(e).map(|(x, y)| {
                (
                    x,
                    y,
                    name_of(e),
                    first.map(|a| e[a].to_string()).unwrap_or_default(),
                )
            })
        })
        .collect();
    if points.is_empty() {
        return String::new();
    }
    let (w, h, pad) = (640.0, 360.0, 40.0);
    let (minx, maxx) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (miny, maxy) = points
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    let k = ((miny + maxy) / 2.0).to_radians().cos().max(0.1);
    let sx = (maxx - minx).max(1e-4) * k;
    let sy = (maxy - miny).max(1e-4);
    let scale = ((w - 2.0 * pad) / sx).min((h - 2.0 * pad) / sy);
    let mut out = String::new();
    let _ = write!(
        out,
        "<svg class=\"stream-map\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"map-title map-desc\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"map-title\">Where each entity is</title><desc id=\"map-desc\">{} entities; the table below gives each one's latest values.</desc><rect width=\"{w}\" height=\"{h}\" fill=\"#f4f7f6\"/>",
        points.len()
    );
    for (x, y, name, value) in &points {
        let px = pad + (x - minx) * k * scale;
        let py = h - pad - (y - miny) * scale;
        let label = xml_escape(name);
        let _ = write!(
            out,
            "<g><circle cx=\"{px:.1}\" cy=\"{py:.1}\" r=\"7\" fill=\"#1d6f5f\"><title>{label}: {}</title></circle><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" fill=\"#1b1b1b\">{label}</text></g>",
            xml_escape(value),
            px + 10.0,
            py + 4.0
        );
    }
    out.push_str("</svg>");
    out
}

/// A line chart of (time, value) pairs.
fn line_svg(id: usize, attribute: &str, points: &[(String, f64)]) -> String {
    if points.is_empty() {
        return String::new();
    }
    let (w, h, left, bottom) = (640.0, 200.0, 50.0, 30.0);
    let min = points.iter().map(|p| p.1).fold(f64::MAX, f64::min);
    let max = points.iter().map(|p| p.1).fold(f64::MIN, f64::max);
    let span = (max - min).max(1e-9);
    let n = points.len().max(2) - 1;
    let coords: Vec<String> = points
        .iter()
        .enumerate()
        .map(|(i, (_, v))| {
            let x = left + (w - left - 10.0) * i as f64 / n as f64;
            let y = 10.0 + (h - bottom - 10.0) * (1.0 - (v - min) / span);
            format!("{x:.1},{y:.1}")
        })
        .collect();
    let a = xml_escape(attribute);
    format!(
        "<svg class=\"stream-chart\" viewBox=\"0 0 {w} {h}\" role=\"img\" aria-labelledby=\"chart-{id}-title chart-{id}-desc\" xmlns=\"http://www.w3.org/2000/svg\"><title id=\"chart-{id}-title\">{a}, the last {} readings</title><desc id=\"chart-{id}-desc\">From {} to {}, between {min} and {max}; every reading is in the table that follows.</desc><line x1=\"{left}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"#666\"/><text x=\"4\" y=\"16\" font-size=\"11\">{max}</text><text x=\"4\" y=\"{}\" font-size=\"11\">{min}</text><polyline fill=\"none\" stroke=\"#1d6f5f\" stroke-width=\"2\" points=\"{}\"/></svg>",
        points.len(),
        xml_escape(&points[0].0),
        xml_escape(&points[points.len() - 1].0),
        h - bottom,
        w - 10.0,
        h - bottom,
        h - bottom,
        coords.join(" ")
    )
}

async fn stream_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
) -> PageResult {
    let d = state.service.get_dataset(&id).await?;
    let Some(terms) = d.metadata.stream.clone() else {
        return Err(PageError::page(
            StatusCode::NOT_FOUND,
            format!("'{id}' is not a stream."),
        ));
    };
    let params: Vec<(String, String)> =
        form_urlencoded::parse(query.unwrap_or_default().as_bytes())
            .into_owned()
            .collect();
    let param = |name: &str| {
        params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let purpose = param("purpose");
    let actor = viewer.actor();
    let caller = StreamCaller::Actor(actor.clone());
    let ctx = Context::core();
    let q = EntityQuery {
        stream: Some(d.id.clone()),
        limit: citytrust_model::ngsi::MAX_LIMIT,
        ..Default::default()
    };
    let kv = Rendering {
        key_values: true,
        ..Default::default()
    };
    let purpose_arg = (!purpose.is_empty()).then_some(purpose.as_str());
    let mut refused = None;
    let mut entities: Vec<Value> = Vec::new();
    let mut log_index = None;
    match state
        .service
        .ngsi_query(&caller, ctx, &q, purpose_arg, &kv)
        .await
    {
        Ok(a) => {
            entities = serde_json::from_slice(&a.body).unwrap_or_default();
            log_index = Some(a.log_index);
        }
        Err(
            e @ (ServiceError::Refused { .. }
            | ServiceError::SignInToRead { .. }
            | ServiceError::Unauthenticated
            | ServiceError::Unprocessable { .. }),
        ) => {
            refused = Some(match e {
                ServiceError::SignInToRead { message, .. } => {
                    format!("{message}. Sign in, then choose the purpose you read for.")
                }
                ServiceError::Unauthenticated => {
                    "Sign in to read this stream's values.".to_string()
                }
                other => other.to_string(),
            });
        }
        Err(e) => return Err(e.into()),
    }
    let attributes = numeric_attributes(&entities);
    let entity = {
        let asked = param("entity");
        if entities.iter().any(|e| e["id"] == asked.as_str()) {
            asked
        } else {
            entities
                .first()
                .and_then(|e| e["id"].as_str())
                .unwrap_or("")
                .to_string()
        }
    };
    let base = format!(
        "/datasets/{}/live?purpose={}",
        d.id,
        form_urlencoded::byte_serialize(purpose.as_bytes()).collect::<String>()
    );
    let latest: Vec<Latest> = entities
        .iter()
        .map(|e| {
            let eid = e["id"].as_str().unwrap_or("").to_string();
            Latest {
                href: format!(
                    "{base}&entity={}",
                    form_urlencoded::byte_serialize(eid.as_bytes()).collect::<String>()
                ),
                name: name_of(e),
                values: attributes
                    .iter()
                    .map(|a| {
                        e.get(a)
                            .map(|v| v.to_string())
                            .unwrap_or_else(|| "—".into())
                    })
                    .collect(),
                observed: e
                    .get("dateObserved")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string(),
                id: eid,
            }
        })
        .collect();
    let map = map_svg(&entities, attributes.first().map(String::as_str));
    // The chosen entity's recent history, one chart per numeric attribute.
    let mut history = Vec::new();
    let mut entity_name = String::new();
    if !entity.is_empty() {
        entity_name = entities
            .iter()
            .find(|e| e["id"] == entity.as_str())
            .map(name_of)
            .unwrap_or_default();
        let tq = TemporalQuery {
            last_n: Some(48),
            temporal_values: true,
            ..Default::default()
        };
        if let Ok(a) = state
            .service
            .ngsi_temporal(
                &caller,
                ctx,
                TemporalTarget::One(&entity),
                &tq,
                purpose_arg,
                false,
            )
            .await
        {
            let t: Value = serde_json::from_slice(&a.body).unwrap_or(Value::Null);
            for (i, attr) in attributes.iter().enumerate() {
                let points: Vec<(String, f64)> = t[attr.as_str()]["values"]
                    .as_array()
                    .map(|vs| {
                        vs.iter()
                            .filter_map(|p| {
                                Some((p.get(1)?.as_str()?.to_string(), p.get(0)?.as_f64()?))
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                if points.is_empty() {
                    continue;
                }
                history.push(History {
                    attribute: attr.clone(),
                    unit: if ["NO2", "O3", "PM10"].contains(&attr.as_str()) {
                        "µg/m³".into()
                    } else {
                        String::new()
                    },
                    svg: line_svg(i, attr, &points),
                    rows: points
                        .iter()
                        .rev()
                        .map(|(t, v)| (t.clone(), v.to_string()))
                        .collect(),
                });
            }
        }
    }
    let subscriptions = state
        .service
        .stream_subscriptions(&actor, &d.id)
        .await
        .unwrap_or_default();
    let purposes = state
        .service
        .purposes()
        .await?
        .into_iter()
        .map(|p| (p.id, p.name))
        .collect();
    let page = StreamPage {
        nav: viewer.nav("datasets"),
        id: d.id.clone(),
        title: d.metadata.title.clone(),
        types: if terms.entity_types.is_empty() {
            "any".into()
        } else {
            terms.entity_types.join(", ")
        },
        open: d.metadata.spectrum == Spectrum::Open,
        purpose,
        purposes,
        refused,
        attributes,
        latest,
        map,
        entity,
        entity_name,
        history,
        subscriptions,
        log_index,
        signed_in: viewer.session().is_some(),
    };
    render(&page)
}
