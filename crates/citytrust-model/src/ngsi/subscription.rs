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
use super::{Context, Entity, ErrorType, NgsiError, check_uri};

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
    /// Periodic: every so many seconds, the matching entities as they are
    /// (instead of on each change).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_interval: Option<u64>,
    /// The kinds of change notified (`notificationTrigger`); `None`: the default ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub triggers: Option<Vec<String>>,
    /// The context notifications are compacted with (`jsonldContext`), as given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jsonld_context: Option<String>,
    /// Only attribute instances with these datasetIds (`@none`: the default instance).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_ids: Option<Vec<String>>,
    /// `notification.pick` / `omit`: core members as named, attributes expanded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pick: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub omit: Option<Vec<String>>,
    /// `notification.sysAttrs`: createdAt and modifiedAt in what is sent.
    #[serde(default)]
    pub sys_attrs: bool,
    /// `notification.join` / `joinLevel`: linked entities in what is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub join: Option<super::Join>,
    /// `notification.showChanges`: each changed attribute with its previous value.
    #[serde(default)]
    pub show_changes: bool,
    /// When a periodic subscription was last owed its entities.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_period: Option<String>,
    /// `endpoint.receiverInfo`: headers sent with each notification.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub receiver_info: Vec<(String, String)>,
    /// `endpoint.notifierInfo`: kept and shown (HTTP needs none of it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notifier_info: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// The subscriber paused it (`isActive: false`).
    pub paused: bool,
    /// `isActive` was given (it is shown only then, or when paused).
    #[serde(default)]
    pub active_given: bool,
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
    "datasetId",
];

/// `%XX` escapes decoded (an invalid escape, or invalid UTF-8, is kept as it is).
fn percent_decoded(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| s.to_string())
}

/// The members only the broker sets (Table 5.2.12-2), top level and in `notification`.
const READ_ONLY: &[&str] = &[
    "status",
    "timesSent",
    "lastNotification",
    "lastSuccess",
    "lastFailure",
    "createdAt",
    "modifiedAt",
];

/// The triggers shown for a subscription that names none (5.2.12).
pub const DEFAULT_TRIGGERS: &[&str] = &["attributeCreated", "attributeUpdated"];

/// The values `notificationTrigger` takes (5.2.12).
const TRIGGERS: &[&str] = &[
    "entityCreated",
    "entityUpdated",
    "entityDeleted",
    "attributeCreated",
    "attributeUpdated",
    "attributeDeleted",
];

/// `key`/`value` pairs (`receiverInfo`, `notifierInfo`), both strings.
fn key_values(v: &Value, what: &str) -> R<Vec<(String, String)>> {
    let bad = || {
        NgsiError::bad(format!(
            "{what} is a list of {{\"key\": string, \"value\": string}}"
        ))
    };
    v.as_array()
        .ok_or_else(bad)?
        .iter()
        .map(|p| match (p.get("key"), p.get("value")) {
            (Some(Value::String(k)), Some(Value::String(v))) if !k.is_empty() => {
                Ok((k.clone(), v.clone()))
            }
            _ => Err(bad()),
        })
        .collect()
}

/// Headers a notification's receiverInfo may not set: the broker's own
/// (its log entry and nonce, the body's type and length, the context).
fn reserved_header(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    n.starts_with("citytrust-")
        || matches!(
            n.as_str(),
            "content-type"
                | "content-length"
                | "content-encoding"
                | "transfer-encoding"
                | "host"
                | "link"
                | "connection"
                | "te"
                | "trailer"
                | "upgrade"
        )
}

/// A non-empty list of names (`attributes`, `pick`, `omit`).
fn names(v: &Value, what: &str) -> R<Vec<String>> {
    let list = strings(v, what)?;
    if list.is_empty() {
        return Err(NgsiError::bad(format!("{what} names at least one member")));
    }
    Ok(list)
}

/// Core members are named as they are; attributes are expanded.
fn expand_member(ctx: &Context, name: &str) -> String {
    if matches!(name, "id" | "type" | "scope" | "createdAt" | "modifiedAt") {
        name.to_string()
    } else {
        ctx.expand(name)
    }
}

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
        // The members the broker sets (Table 5.2.12-2) are ignored when a
        // client gives them, as are members named with a leading `_` (no
        // NGSI-LD term is); any other unknown member is refused.
        let m: serde_json::Map<String, Value> = m
            .iter()
            .filter(|(k, _)| !READ_ONLY.contains(&k.as_str()) && !k.starts_with('_'))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let m = &m;
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
                    time_interval: None,
                    triggers: None,
                    jsonld_context: None,
                    dataset_ids: None,
                    pick: None,
                    omit: None,
                    sys_attrs: false,
                    show_changes: false,
                    join: None,
                    last_period: None,
                    receiver_info: Vec::new(),
                    notifier_info: Vec::new(),
                    expires_at: None,
                    paused: false,
                    active_given: false,
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
                    // A type selection of alternatives (`(A|B)`, `A,B`) names each.
                    let mut expanded = Vec::new();
                    for t in &types {
                        if t.contains(';') {
                            return Err(NgsiError::bad(format!(
                                "the entities selector's type '{t}' asks for several types at once \
                                 (;): a subscription's selection takes alternatives only, such as (A|B)"
                            )));
                        }
                        for alt in t.split([',', '|']) {
                            let alt = alt.trim_matches(|c: char| c == '(' || c == ')' || c.is_whitespace());
                            if !alt.is_empty() {
                                expanded.push(ctx.expand(alt));
                            }
                        }
                    }
                    if expanded.is_empty() {
                        return Err(NgsiError::bad("each entities selector names a type"));
                    }
                    Ok(Selector {
                        id,
                        id_pattern,
                        types: expanded,
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
            // As in a query string, a q may arrive percent-encoded.
            let decoded = percent_decoded(q);
            let q = decoded.as_str();
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
        if let Some(v) = m.get("timeInterval") {
            s.time_interval =
                Some(v.as_u64().filter(|n| *n > 0).ok_or_else(|| {
                    NgsiError::bad("timeInterval is a positive number of seconds")
                })?);
        }
        if s.time_interval.is_some() && (s.watched.is_some() || s.throttling.is_some()) {
            return Err(NgsiError::bad(
                "a periodic subscription (timeInterval) has no watchedAttributes and no throttling",
            ));
        }
        if let Some(v) = m.get("notificationTrigger") {
            let t = names(v, "notificationTrigger")?;
            if let Some(bad) = t.iter().find(|t| !TRIGGERS.contains(&t.as_str())) {
                return Err(NgsiError::bad(format!(
                    "notificationTrigger '{bad}' is not one of {}",
                    TRIGGERS.join(", ")
                )));
            }
            s.triggers = Some(t);
        }
        if let Some(v) = m.get("jsonldContext") {
            let c = v
                .as_str()
                .ok_or_else(|| NgsiError::bad("jsonldContext is the URI of a context"))?;
            let url = url::Url::parse(c)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https"));
            if url.is_none() {
                return Err(NgsiError::bad(format!(
                    "jsonldContext '{c}' is not the http(s) URI of a context"
                )));
            }
            // Notifications are compacted with it: it must be one held here
            // (none is fetched).
            Context::resolve(Some(&Value::String(c.to_string()))).map_err(|e| {
                if e.kind == ErrorType::LdContextNotAvailable {
                    NgsiError::new(ErrorType::LdContextNotFetched, e.detail)
                } else {
                    e
                }
            })?;
            s.jsonld_context = Some(c.to_string());
        }
        if let Some(v) = m.get("datasetId") {
            let d = names(v, "datasetId")?;
            for id in d.iter().filter(|d| *d != "@none") {
                check_uri("a datasetId", id)?;
            }
            s.dataset_ids = Some(d);
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
            s.active_given = true;
            s.paused = !v
                .as_bool()
                .ok_or_else(|| NgsiError::bad("isActive is true or false"))?;
        }
        if base.is_some()
            && let Some(n) = m.get("notification")
            && n.get("endpoint").is_none()
        {
            return Err(NgsiError::bad(
                "a notification replaces the subscription's whole: it names its endpoint",
            ));
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
            let list = names(a, "notification.attributes")?;
            self.attributes = Some(list.iter().map(|a| ctx.expand(a)).collect());
        }
        if let Some(p) = n.get("pick") {
            let list = names(p, "notification.pick")?;
            self.pick = Some(list.iter().map(|a| expand_member(ctx, a)).collect());
        }
        if let Some(p) = n.get("omit") {
            let list = names(p, "notification.omit")?;
            self.omit = Some(list.iter().map(|a| expand_member(ctx, a)).collect());
        }
        if let (Some(p), Some(o)) = (&self.pick, &self.omit)
            && let Some(both) = p.iter().find(|p| o.contains(p))
        {
            return Err(NgsiError::bad(format!(
                "notification.pick and notification.omit both name '{}'",
                ctx.compact(both)
            )));
        }
        if self.attributes.is_some() && (self.pick.is_some() || self.omit.is_some()) {
            return Err(NgsiError::bad(
                "notification.attributes is not given with pick or omit (use pick)",
            ));
        }
        if let Some(v) = n.get("sysAttrs") {
            self.sys_attrs = v
                .as_bool()
                .ok_or_else(|| NgsiError::bad("notification.sysAttrs is true or false"))?;
        }
        if n.contains_key("join") || n.contains_key("joinLevel") {
            let level = match n.get("joinLevel") {
                None => 1,
                Some(v) => v
                    .as_u64()
                    .and_then(|l| u32::try_from(l).ok())
                    .filter(|l| (1..=super::MAX_JOIN_LEVEL).contains(l))
                    .ok_or_else(|| {
                        NgsiError::bad(format!(
                            "notification.joinLevel is a whole number from 1 to {}",
                            super::MAX_JOIN_LEVEL
                        ))
                    })?,
            };
            self.join = match n.get("join").and_then(Value::as_str) {
                Some("inline") => Some(super::Join { flat: false, level }),
                Some("flat") => Some(super::Join { flat: true, level }),
                Some("@none") | None => None,
                Some(other) => {
                    return Err(NgsiError::bad(format!(
                        "notification.join '{other}' is inline, flat or @none"
                    )));
                }
            };
        }
        if let Some(v) = n.get("showChanges") {
            self.show_changes = v
                .as_bool()
                .ok_or_else(|| NgsiError::bad("notification.showChanges is true or false"))?;
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
            if let Some(r) = e.get("receiverInfo") {
                let pairs = key_values(r, "notification.endpoint.receiverInfo")?;
                if let Some((k, _)) = pairs.iter().find(|(k, _)| reserved_header(k)) {
                    return Err(NgsiError::bad(format!(
                        "receiverInfo may not set the header '{k}': the broker sets it"
                    )));
                }
                self.receiver_info = pairs;
            }
            if let Some(r) = e.get("notifierInfo") {
                self.notifier_info = key_values(r, "notification.endpoint.notifierInfo")?;
            }
        } else if self.endpoint.is_empty() {
            return Err(NgsiError::bad("notification.endpoint is required"));
        }
        if self.show_changes && self.key_values {
            return Err(NgsiError::bad(
                "notification.showChanges needs the normalized format: keyValues has no room \
                 for previous values",
            ));
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
        for (k, list) in [("pick", &self.pick), ("omit", &self.omit)] {
            if let Some(l) = list {
                n.insert(
                    k.into(),
                    l.iter().map(|a| Value::from(ctx.compact(a))).collect(),
                );
            }
        }
        if self.sys_attrs {
            n.insert("sysAttrs".into(), true.into());
        }
        if self.show_changes {
            n.insert("showChanges".into(), true.into());
        }
        if let Some(j) = self.join {
            n.insert("join".into(), if j.flat { "flat" } else { "inline" }.into());
            n.insert("joinLevel".into(), j.level.into());
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
        let mut endpoint = serde_json::json!({"uri": self.endpoint, "accept": self.accept});
        for (k, pairs) in [
            ("receiverInfo", &self.receiver_info),
            ("notifierInfo", &self.notifier_info),
        ] {
            if !pairs.is_empty()
                && let Some(m) = endpoint.as_object_mut()
            {
                m.insert(
                    k.into(),
                    pairs
                        .iter()
                        .map(|(k, v)| serde_json::json!({"key": k, "value": v}))
                        .collect(),
                );
            }
        }
        n.insert("endpoint".into(), endpoint);
        // How the last attempt went (nothing to say before the first).
        if self.last_notification.is_some() {
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
        }
        if self.times_sent > 0 {
            n.insert("timesSent".into(), self.times_sent.into());
        }
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
        if let Some(t) = self.time_interval {
            o.insert("timeInterval".into(), t.into());
        }
        match (&self.triggers, self.time_interval) {
            (Some(t), _) => {
                o.insert("notificationTrigger".into(), t.clone().into());
            }
            (None, None) => {
                o.insert("notificationTrigger".into(), DEFAULT_TRIGGERS.into());
            }
            (None, Some(_)) => {}
        }
        if let Some(c) = &self.jsonld_context {
            o.insert("jsonldContext".into(), c.clone().into());
        }
        if let Some(d) = &self.dataset_ids {
            o.insert("datasetId".into(), d.clone().into());
        }
        if let Some(e) = &self.expires_at {
            o.insert("expiresAt".into(), e.clone().into());
        }
        if self.active_given || self.paused {
            o.insert("isActive".into(), (!self.paused).into());
        }
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
        // A q sent percent-encoded (as in a query string) is decoded.
        let encoded = sub(json!({
            "entities": [{"type": "T"}], "q": "name==%22Eiffel%20Tower%22",
            "timeInterval": 5,
            "notification": {"endpoint": {"uri": "http://x/"}}
        }))
        .unwrap();
        assert_eq!(encoded.q.as_deref(), Some("name==\"Eiffel Tower\""));
        assert_eq!(encoded.render(ctx, false)["timeInterval"], 5);
        assert_eq!(out["entities"][0]["type"], "AirQualityObserved");
        // A type selection of alternatives names each type.
        let alt = Subscription::parse(
            &json!({"entities": [{"type": "(Building|Tower)"}], "notification": {"endpoint": {"uri": "http://x/"}}}),
            Context::core(),
            None,
            "2026-01-01T00:00:00Z",
            "urn:ngsi-ld:Subscription:alt",
        )
        .unwrap();
        assert_eq!(
            alt.types(),
            vec![
                Context::core().expand("Building"),
                Context::core().expand("Tower")
            ]
        );
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
            (
                json!({"entities": [{"type": "T"}], "notification": {"format": "keyValues", "showChanges": true, "endpoint": {"uri": "http://x/"}}}),
                "showChanges",
            ),
            (
                json!({"entities": [{"type": "T"}], "notification": {"endpoint": {"uri": "http://x/", "receiverInfo": [{"key": "K", "value": 42}]}}}),
                "receiverInfo",
            ),
            (
                json!({"entities": [{"type": "T"}], "notification": {"endpoint": {"uri": "http://x/", "receiverInfo": [{"key": "CityTrust-Log-Entry", "value": "1"}]}}}),
                "the broker sets it",
            ),
            (
                json!({"entities": [{"type": "T"}], "notificationTrigger": ["entityChanged"], "notification": {"endpoint": {"uri": "http://x/"}}}),
                "entityChanged",
            ),
            (
                json!({"entities": [{"type": "(A;B)"}], "notification": {"endpoint": {"uri": "http://x/"}}}),
                "alternatives only",
            ),
            (
                json!({"entities": [{"type": "T"}], "notification": {"pick": ["id"], "omit": ["id"], "endpoint": {"uri": "http://x/"}}}),
                "both name",
            ),
            (
                json!({"entities": [{"type": "T"}], "notification": {"attributes": [], "endpoint": {"uri": "http://x/"}}}),
                "at least one",
            ),
            (
                json!({"entities": [{"type": "T"}], "jsonldContext": "unknownContext", "notification": {"endpoint": {"uri": "http://x/"}}}),
                "jsonldContext",
            ),
            (
                json!({"entities": [{"type": "T"}], "timeInterval": 5, "watchedAttributes": ["a"], "notification": {"endpoint": {"uri": "http://x/"}}}),
                "periodic",
            ),
        ] {
            let e = sub(body.clone()).unwrap_err();
            assert!(e.detail.contains(says), "{body}: {}", e.detail);
        }
    }
}
