//! NGSI-LD subscriptions (ETSI GS CIM 009 5.2.12): what a subscriber asks
//! to be told about — entities by type, id or id pattern, `watchedAttributes`,
//! `q`, `geoQ` — where and how (`notification.endpoint` with its `accept`,
//! `notification.attributes`, `format`), how often (`throttling`), until when
//! (`expiresAt`); and the broker's side of it (`status`, `timesSent`,
//! `lastNotification`, `lastSuccess`, `lastFailure`). Kept with names
//! expanded and the subscriber's `@context`, so matching and rendering use
//! the context it was made under. Governance (the subscriber, the purpose,
//! the agreements it was made under) is kept beside it by the service.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::geo::GeoQuery;
use super::query::Q;
use super::{Context, Entity, NgsiError, check_uri};

type R<T> = Result<T, NgsiError>;

/// One `entities` selector.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_pattern: Option<String>,
    /// Expanded.
    pub types: Vec<String>,
}

/// A subscription as kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Subscription {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub entities: Vec<Selector>,
    /// Expanded; `None`: any attribute's change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watched: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub geo_q: Option<Value>,
    /// Expanded; `None`: every attribute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Vec<String>>,
    pub key_values: bool,
    pub endpoint: String,
    pub accept: String,
    /// Seconds between two notifications at least.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttling: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The subscriber paused it (`isActive: false`).
    pub paused: bool,
    /// The `@context` it was made under (`None`: the core context).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// `active`, `paused` or `expired`.
    pub status: String,
    pub times_sent: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_notification: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_success: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_because: Option<String>,
    pub created_at: String,
    pub modified_at: String,
}

fn strings(v: &Value, what: &str) -> R<Vec<String>> {
    match v {
        Value::String(s) => Ok(vec![s.clone()]),
        Value::Array(a) => a
            .iter()
            .map(|x| {
                x.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| NgsiError::bad(format!("{what} is a list of strings")))
            })
            .collect(),
        _ => Err(NgsiError::bad(format!("{what} is a list of strings"))),
    }
}

fn datetime(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// The members a subscription takes (others are refused, naming them).
const MEMBERS: &[&str] = &[
    "id",
    "type",
    "@context",
    "subscriptionName",
    "name",
    "description",
    "entities",
    "watchedAttributes",
    "q",
    "geoQ",
    "notification",
    "throttling",
    "expiresAt",
    "isActive",
    "timeInterval",
    "scopeQ",
    "lang",
    "notificationTrigger",
    "status",
    "timesSent",
    "lastNotification",
    "lastSuccess",
    "lastFailure",
    "jsonldContext",
];

impl Subscription {
    /// Parse a new subscription, or (with `base`) a patch of one.
    pub fn parse(
        body: &Value,
        ctx: &Context,
        base: Option<&Subscription>,
        now: &str,
        new_id: &str,
    ) -> R<Subscription> {
        let m = body
            .as_object()
            .ok_or_else(|| NgsiError::bad("a subscription is a JSON object"))?;
        if let Some(k) = m.keys().find(|k| !MEMBERS.contains(&k.as_str())) {
            return Err(NgsiError::bad(format!(
                "'{k}' is not a member of a subscription"
            )));
        }
        if let Some(t) = m.get("type")
            && t != "Subscription"
        {
            return Err(NgsiError::bad("a subscription's type is Subscription"));
        }
        if m.contains_key("timeInterval") {
            return Err(NgsiError::new(
                super::ErrorType::OperationNotSupported,
                "timeInterval (periodic) subscriptions are not supported: subscribe to changes",
            ));
        }
        let mut s = match base {
            Some(b) => b.clone(),
            None => {
                let id = match m.get("id") {
                    Some(Value::String(id)) => {
                        check_uri("the subscription id", id)?;
                        id.clone()
                    }
                    Some(_) => return Err(NgsiError::bad("the subscription id is a URI")),
                    None => new_id.to_string(),
                };
                Subscription {
                    id,
                    name: None,
                    description: None,
                    entities: Vec::new(),
                    watched: None,
                    q: None,
                    geo_q: None,
                    attributes: None,
                    key_values: false,
                    endpoint: String::new(),
                    accept: "application/json".into(),
                    throttling: None,
                    expires_at: None,
                    paused: false,
                    context: ctx.source.clone(),
                    status: "active".into(),
                    times_sent: 0,
                    last_notification: None,
                    last_success: None,
                    last_failure: None,
                    expired_because: None,
                    created_at: now.to_string(),
                    modified_at: now.to_string(),
                }
            }
        };
        if base.is_some() && m.contains_key("id") {
            return Err(NgsiError::bad("a subscription's id cannot be changed"));
        }
        if let Some(v) = m.get("subscriptionName").or_else(|| m.get("name")) {
            s.name = Some(
                v.as_str()
                    .ok_or_else(|| NgsiError::bad("subscriptionName is a string"))?
                    .to_string(),
            );
        }
        if let Some(v) = m.get("description") {
            s.description = Some(
                v.as_str()
                    .ok_or_else(|| NgsiError::bad("description is a string"))?
                    .to_string(),
            );
        }
        if let Some(v) = m.get("entities") {
            let items = v
                .as_array()
                .filter(|a| !a.is_empty())
                .ok_or_else(|| NgsiError::bad("entities is a non-empty list of selectors"))?;
            s.entities = items
                .iter()
                .map(|e| {
                    let types = strings(
                        e.get("type")
                            .ok_or_else(|| NgsiError::bad("each entities selector names a type"))?,
                        "an entities selector's type",
                    )?;
                    let id = e.get("id").and_then(Value::as_str).map(str::to_string);
                    if let Some(id) = &id {
                        check_uri("an entities selector's id", id)?;
                    }
                    let id_pattern = e
                        .get("idPattern")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                    if let Some(p) = &id_pattern {
                        regex::RegexBuilder::new(p)
                            .size_limit(1 << 20)
                            .build()
                            .map_err(|_| {
                                NgsiError::bad(format!(
                                    "idPattern '{p}' is not a regular expression"
                                ))
                            })?;
                    }
                    Ok(Selector {
                        id,
                        id_pattern,
                        types: types.iter().map(|t| ctx.expand(t)).collect(),
                    })
                })
                .collect::<R<Vec<_>>>()?;
        }
        if let Some(v) = m.get("watchedAttributes") {
            let w = strings(v, "watchedAttributes")?;
            if w.is_empty() {
                return Err(NgsiError::bad("watchedAttributes is not empty"));
            }
            s.watched = Some(w.iter().map(|a| ctx.expand(a)).collect());
        }
        if s.entities.is_empty() && s.watched.is_none() {
            return Err(NgsiError::bad(
                "a subscription names entities or watchedAttributes",
            ));
        }
        if let Some(v) = m.get("q") {
            let q = v.as_str().ok_or_else(|| NgsiError::bad("q is a string"))?;
            Q::parse(q, ctx)?;
            s.q = Some(q.to_string());
        }
        if let Some(v) = m.get("geoQ") {
            GeoQuery::from_json(v, ctx)?;
            s.geo_q = Some(v.clone());
        }
        if let Some(v) = m.get("throttling") {
            s.throttling = Some(
                v.as_u64()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| NgsiError::bad("throttling is a positive number of seconds"))?,
            );
        }
        if let Some(v) = m.get("expiresAt") {
            let e = v
                .as_str()
                .filter(|e| datetime(e))
                .ok_or_else(|| NgsiError::bad("expiresAt is a date-time"))?;
            if super::temporal::instant(e) <= super::temporal::instant(now) {
                return Err(NgsiError::bad("expiresAt is in the future"));
            }
            s.expires_at = Some(e.to_string());
        }
        if let Some(v) = m.get("isActive") {
            s.paused = !v
                .as_bool()
                .ok_or_else(|| NgsiError::bad("isActive is true or false"))?;
        }
        match m.get("notification") {
            Some(n) => s.apply_notification(n, ctx)?,
            None if base.is_none() => {
                return Err(NgsiError::bad("a subscription has a notification"));
            }
            None => {}
        }
        if s.status != "expired" {
            s.status = if s.paused { "paused" } else { "active" }.into();
        }
        s.modified_at = now.to_string();
        Ok(s)
    }

    fn apply_notification(&mut self, n: &Value, ctx: &Context) -> R<()> {
        let n = n
            .as_object()
            .ok_or_else(|| NgsiError::bad("notification is an object"))?;
        if let Some(a) = n.get("attributes") {
            let list = strings(a, "notification.attributes")?;
            self.attributes =
                (!list.is_empty()).then(|| list.iter().map(|a| ctx.expand(a)).collect());
        }
        if let Some(f) = n.get("format") {
            self.key_values = match f.as_str() {
                Some("keyValues" | "simplified") => true,
                Some("normalized" | "concise") => false,
                _ => {
                    return Err(NgsiError::bad(
                        "notification.format is keyValues or normalized",
                    ));
                }
            };
        }
        if let Some(e) = n.get("endpoint") {
            let uri = e
                .get("uri")
                .and_then(Value::as_str)
                .ok_or_else(|| NgsiError::bad("notification.endpoint has a uri"))?;
            let url = url::Url::parse(uri).map_err(|_| {
                NgsiError::bad(format!("notification.endpoint.uri '{uri}' is not a URL"))
            })?;
            if !matches!(url.scheme(), "http" | "https")
                || !url.username().is_empty()
                || url.password().is_some()
            {
                return Err(NgsiError::bad(
                    "notification.endpoint.uri is an http(s) URL without credentials",
                ));
            }
            self.endpoint = uri.to_string();
            if let Some(a) = e.get("accept") {
                let a = a.as_str().unwrap_or("");
                if !matches!(a, "application/json" | "application/ld+json") {
                    return Err(NgsiError::bad(
                        "notification.endpoint.accept is application/json or application/ld+json",
                    ));
                }
                self.accept = a.to_string();
            }
        } else if self.endpoint.is_empty() {
            return Err(NgsiError::bad("notification.endpoint is required"));
        }
        Ok(())
    }

    /// The context it was made under.
    pub fn context(&self) -> R<Context> {
        Context::resolve(self.context.as_ref())
    }

    /// Whether a change to `e` (the attributes `changed`, expanded) is news to it.
    pub fn matches(&self, e: &Entity, changed: &[String], ctx: &Context) -> bool {
        let selected = self.entities.is_empty()
            || self.entities.iter().any(|s| {
                s.types.iter().any(|t| e.types.contains(t))
                    && s.id.as_ref().is_none_or(|id| *id == e.id)
                    && s.id_pattern
                        .as_ref()
                        .is_none_or(|p| regex::Regex::new(p).is_ok_and(|re| re.is_match(&e.id)))
            });
        let watched = self
            .watched
            .as_ref()
            .is_none_or(|w| changed.iter().any(|c| w.contains(c)));
        selected
            && watched
            && self
                .q
                .as_ref()
                .is_none_or(|q| Q::parse(q, ctx).is_ok_and(|q| q.matches(e)))
            && self
                .geo_q
                .as_ref()
                .is_none_or(|g| GeoQuery::from_json(g, ctx).is_ok_and(|g| g.matches(e)))
    }

    /// The entity types it may be told about (expanded; empty: any).
    pub fn types(&self) -> Vec<String> {
        self.entities.iter().flat_map(|s| s.types.clone()).collect()
    }

    /// The subscription as the API shows it, under `ctx`.
    pub fn render(&self, ctx: &Context, with_context: bool) -> Value {
        let mut o = Map::new();
        o.insert("id".into(), self.id.clone().into());
        o.insert("type".into(), "Subscription".into());
        if let Some(n) = &self.name {
            o.insert("subscriptionName".into(), n.clone().into());
        }
        if let Some(d) = &self.description {
            o.insert("description".into(), d.clone().into());
        }
        if !self.entities.is_empty() {
            let sel: Vec<Value> = self
                .entities
                .iter()
                .map(|s| {
                    let mut m = Map::new();
                    if let Some(id) = &s.id {
                        m.insert("id".into(), id.clone().into());
                    }
                    if let Some(p) = &s.id_pattern {
                        m.insert("idPattern".into(), p.clone().into());
                    }
                    let t: Vec<Value> = s.types.iter().map(|t| ctx.compact(t).into()).collect();
                    m.insert(
                        "type".into(),
                        if t.len() == 1 {
                            t[0].clone()
                        } else {
                            Value::Array(t)
                        },
                    );
                    Value::Object(m)
                })
                .collect();
            o.insert("entities".into(), Value::Array(sel));
        }
        if let Some(w) = &self.watched {
            o.insert(
                "watchedAttributes".into(),
                w.iter().map(|a| Value::from(ctx.compact(a))).collect(),
            );
        }
        if let Some(q) = &self.q {
            o.insert("q".into(), q.clone().into());
        }
        if let Some(g) = &self.geo_q {
            o.insert("geoQ".into(), g.clone());
        }
        let mut n = Map::new();
        if let Some(a) = &self.attributes {
            n.insert(
                "attributes".into(),
                a.iter().map(|a| Value::from(ctx.compact(a))).collect(),
            );
        }
        n.insert(
            "format".into(),
            if self.key_values {
                "keyValues"
            } else {
                "normalized"
            }
            .into(),
        );
        n.insert(
            "endpoint".into(),
            serde_json::json!({"uri": self.endpoint, "accept": self.accept}),
        );
        n.insert(
            "status".into(),
            if self
                .last_failure
                .as_ref()
                .is_some_and(|f| self.last_success.as_ref().is_none_or(|s| f > s))
            {
                "failed"
            } else {
                "ok"
            }
            .into(),
        );
        n.insert("timesSent".into(), self.times_sent.into());
        for (k, v) in [
            ("lastNotification", &self.last_notification),
            ("lastSuccess", &self.last_success),
            ("lastFailure", &self.last_failure),
        ] {
            if let Some(v) = v {
                n.insert(k.into(), v.clone().into());
            }
        }
        o.insert("notification".into(), Value::Object(n));
        if let Some(t) = self.throttling {
            o.insert("throttling".into(), t.into());
        }
        if let Some(e) = &self.expires_at {
            o.insert("expiresAt".into(), e.clone().into());
        }
        o.insert("isActive".into(), (!self.paused).into());
        o.insert("status".into(), self.status.clone().into());
        if let Some(why) = &self.expired_because {
            o.insert("citytrust:expiredBecause".into(), why.clone().into());
        }
        if with_context {
            o.insert(
                "@context".into(),
                ctx.source
                    .clone()
                    .unwrap_or_else(|| super::CORE_CONTEXT.into()),
            );
        }
        Value::Object(o)
    }
}

#[cfg(test)]
mod tests {
    use super::super::Fragment;
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-12-06T10:00:00Z";

    fn sub(body: Value) -> R<Subscription> {
        Subscription::parse(
            &body,
            Context::core(),
            None,
            NOW,
            "urn:ngsi-ld:Subscription:1",
        )
    }

    #[test]
    fn a_subscription_matches_the_changes_it_watches() {
        let s = sub(json!({
            "type": "Subscription",
            "entities": [{"type": "AirQualityObserved"}],
            "watchedAttributes": ["NO2"],
            "q": "NO2>40",
            "notification": {"endpoint": {"uri": "http://127.0.0.1:9/notify"}, "format": "keyValues"}
        }))
        .unwrap();
        let ctx = Context::core();
        let e = |no2: f64| {
            Entity::create(
                Fragment::parse(
                    ctx,
                    &json!({"id": "urn:a", "type": "AirQualityObserved", "NO2": no2}),
                    true,
                )
                .unwrap(),
                NOW,
            )
            .unwrap()
        };
        let no2 = ctx.expand("NO2");
        assert!(s.matches(&e(42.0), std::slice::from_ref(&no2), ctx));
        assert!(!s.matches(&e(12.0), std::slice::from_ref(&no2), ctx));
        assert!(!s.matches(&e(42.0), &[ctx.expand("O3")], ctx));
        let out = s.render(ctx, false);
        assert_eq!(out["entities"][0]["type"], "AirQualityObserved");
        assert_eq!(out["notification"]["format"], "keyValues");
        assert_eq!(out["status"], "active");
    }

    #[test]
    fn a_wrong_subscription_says_what_is_wrong() {
        for (body, says) in [
            (
                json!({"notification": {"endpoint": {"uri": "http://x/"}}}),
                "entities or watchedAttributes",
            ),
            (json!({"entities": [{"type": "T"}]}), "has a notification"),
            (
                json!({"entities": [{"type": "T"}], "notification": {"endpoint": {"uri": "ftp://x/"}}}),
                "http(s)",
            ),
            (
                json!({"entities": [{"type": "T"}], "notification": {"endpoint": {"uri": "http://u:p@x/"}}}),
                "without credentials",
            ),
            (
                json!({"entities": [{"type": "T"}], "q": "a>", "notification": {"endpoint": {"uri": "http://x/"}}}),
                "q:",
            ),
            (
                json!({"entities": [{"type": "T"}], "expiresAt": "2020-01-01T00:00:00Z", "notification": {"endpoint": {"uri": "http://x/"}}}),
                "future",
            ),
            (
                json!({"entities": [{"type": "T"}], "colour": "red", "notification": {"endpoint": {"uri": "http://x/"}}}),
                "colour",
            ),
        ] {
            let e = sub(body.clone()).unwrap_err();
            assert!(e.detail.contains(says), "{body}: {}", e.detail);
        }
    }
}
