//! Streams and NGSI-LD (issue 26), no IO: what makes a catalogue entry a
//! stream (`StreamTerms`), the NGSI-LD error types (`NgsiError`), JSON-LD
//! contexts resolved from the copies built in and never fetched
//! (`Context`), and entities — parsed from the normalised or concise form,
//! checked attribute by attribute, kept with every name expanded to its IRI,
//! merged as the API's append, update, partial update and replace say, and
//! rendered back (normalised or `keyValues`, with or without `sysAttrs`)
//! under the reader's context. The query language is in `ngsi/query.rs`,
//! geo-queries in `ngsi/geo.rs`, the temporal representation in
//! `ngsi/temporal.rs`, subscriptions in `ngsi/subscription.rs`.

pub mod geo;
pub mod query;
pub mod subscription;
pub mod temporal;

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use crate::validation::ValidationErrors;

/// The NGSI-LD core context's URL (v1.8), which every answer's `Link` names.
pub const CORE_CONTEXT: &str = "https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context-v1.8.jsonld";
/// Where terms no context defines expand (NGSI-LD's default context).
pub const DEFAULT_VOCAB: &str = "https://uri.etsi.org/ngsi-ld/default-context/";
/// The most entities one batch operation takes.
pub const MAX_BATCH: usize = 1000;
/// The most entities one query answers (`limit`'s ceiling).
pub const MAX_LIMIT: usize = 1000;
/// The most contexts one `@context` array lists.
const MAX_CONTEXTS: usize = 32;
/// The longest entity id, attribute name or type accepted.
const MAX_NAME: usize = 512;

// ---- streams ---------------------------------------------------------------------------

/// What makes a catalogue entry a stream: the entity types it holds and how
/// long their history is kept. Every entity belongs to exactly one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StreamTerms {
    /// The NGSI-LD entity types the stream holds: terms of the NGSI-LD core
    /// context (other terms are in its default context) or full IRIs. Empty:
    /// any type (a stream fed by a general-purpose client).
    #[serde(default)]
    pub entity_types: Vec<String>,
    /// Days of history kept; older readings are deleted (and the deletion logged).
    #[serde(default = "default_retention")]
    #[schema(minimum = 1, maximum = 36500)]
    pub retention_days: u32,
    /// How often the history kept is compacted into a version of the
    /// dataset (one row per entity and instant, a column per attribute), so
    /// SQL, downloads, the privacy levels and erasure work on it.
    #[serde(default)]
    pub compaction: Compaction,
}

fn default_retention() -> u32 {
    365
}

/// The period of a stream's compaction: its history up to the start of the
/// current period becomes a version, once per period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Compaction {
    Hour,
    #[default]
    Day,
}

impl Compaction {
    /// The start of the period `t` falls in (UTC).
    pub fn period_start(self, t: time::OffsetDateTime) -> time::OffsetDateTime {
        let t = t.to_offset(time::UtcOffset::UTC);
        let hour = match self {
            Compaction::Hour => t.hour(),
            Compaction::Day => 0,
        };
        t.replace_time(time::Time::from_hms(hour, 0, 0).unwrap_or(time::Time::MIDNIGHT))
    }

    /// How long a period is.
    pub fn length(self) -> time::Duration {
        match self {
            Compaction::Hour => time::Duration::HOUR,
            Compaction::Day => time::Duration::DAY,
        }
    }
}

impl StreamTerms {
    pub fn check(&self, e: &mut ValidationErrors) {
        if self.entity_types.len() > 100 {
            e.push("stream.entity_types", "has more than 100 types");
        }
        for (i, t) in self.entity_types.iter().enumerate() {
            if let Err(why) = check_name(t) {
                e.push(format!("stream.entity_types[{i}]"), why);
            }
        }
        if !(1..=36_500).contains(&self.retention_days) {
            e.push("stream.retention_days", "must be between 1 and 36500 days");
        }
    }

    /// The declared types, expanded to IRIs.
    pub fn expanded_types(&self) -> Vec<String> {
        let core = Context::core();
        self.entity_types.iter().map(|t| core.expand(t)).collect()
    }

    /// Whether an entity of these (expanded) types may be kept here.
    pub fn holds(&self, types: &[String]) -> bool {
        self.entity_types.is_empty() || {
            let declared = self.expanded_types();
            types.iter().all(|t| declared.contains(t))
        }
    }

    /// Whether the stream may hold entities of this (expanded) type.
    pub fn may_hold(&self, ty: &str) -> bool {
        self.entity_types.is_empty() || self.expanded_types().iter().any(|t| t == ty)
    }
}

/// A name NGSI-LD accepts: not empty, not too long, none of the characters
/// its query language and URLs reserve.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("is longer than {MAX_NAME} bytes"));
    }
    if let Some(c) = name.chars().find(|c| {
        c.is_whitespace() || c.is_control() || invisible(*c) || "<>\"'=;()&?".contains(*c)
    }) {
        return Err(format!(
            "holds the character {c:?}, which NGSI-LD names may not"
        ));
    }
    Ok(())
}

/// An attribute name given in a path (`/attrs/{attr}`): a name NGSI-LD
/// accepts, or 400 naming what is wrong.
pub fn check_attribute_name(name: &str) -> R<()> {
    if name.starts_with('@') {
        return Err(NgsiError::bad(format!(
            "attribute name '{name}' is a JSON-LD keyword's form"
        )));
    }
    check_name(name).map_err(|why| NgsiError::bad(format!("attribute name '{name}' {why}")))
}

/// Characters that change how text reads without showing (format and
/// bidirectional controls, zero-width characters, variation selectors,
/// fillers, noncharacters): an id or name holding one can pass for another.
pub fn invisible(c: char) -> bool {
    let u = c as u32;
    matches!(u,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180E | 0x2800 | 0x3164
        | 0xFEFF | 0xFFA0 | 0xFFF9..=0xFFFB
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F
        | 0xFE00..=0xFE0F | 0xE0000..=0xE0FFF | 0xFDD0..=0xFDEF)
        || u & 0xFFFE == 0xFFFE
}

/// A name that is not an IRI starts with a letter (NGSI-LD's names).
fn starts_well(name: &str) -> bool {
    name.contains(':')
        || name
            .chars()
            .next()
            .is_some_and(|c| c.is_alphabetic() || c == '_' || c == '@')
}

// ---- errors ----------------------------------------------------------------------------

/// The NGSI-LD API's error types (ETSI GS CIM 009, 5.5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorType {
    InvalidRequest,
    BadRequestData,
    AlreadyExists,
    OperationNotSupported,
    ResourceNotFound,
    InternalError,
    TooComplexQuery,
    TooManyResults,
    LdContextNotAvailable,
    /// LdContextNotAvailable where the broker would have had to fetch the
    /// context to do its own work (a subscription's `jsonldContext`):
    /// 504, as for a gateway that could not reach what it depends on.
    LdContextNotFetched,
}

impl ErrorType {
    pub fn name(self) -> &'static str {
        match self {
            ErrorType::InvalidRequest => "InvalidRequest",
            ErrorType::BadRequestData => "BadRequestData",
            ErrorType::AlreadyExists => "AlreadyExists",
            ErrorType::OperationNotSupported => "OperationNotSupported",
            ErrorType::ResourceNotFound => "ResourceNotFound",
            ErrorType::InternalError => "InternalError",
            ErrorType::TooComplexQuery => "TooComplexQuery",
            ErrorType::TooManyResults => "TooManyResults",
            ErrorType::LdContextNotAvailable | ErrorType::LdContextNotFetched => {
                "LdContextNotAvailable"
            }
        }
    }

    /// The error's type URI, as problem details carry it.
    pub fn uri(self) -> String {
        format!("https://uri.etsi.org/ngsi-ld/errors/{}", self.name())
    }

    /// The HTTP status the specification gives it.
    pub fn status(self) -> u16 {
        match self {
            ErrorType::InvalidRequest | ErrorType::BadRequestData => 400,
            ErrorType::AlreadyExists => 409,
            ErrorType::OperationNotSupported => 422,
            ErrorType::ResourceNotFound => 404,
            ErrorType::InternalError => 500,
            ErrorType::TooComplexQuery | ErrorType::TooManyResults => 403,
            ErrorType::LdContextNotAvailable => 503,
            ErrorType::LdContextNotFetched => 504,
        }
    }
}

/// An NGSI-LD error: its type and what was wrong, and where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: {detail}", kind.name())]
pub struct NgsiError {
    pub kind: ErrorType,
    pub detail: String,
}

impl NgsiError {
    pub fn new(kind: ErrorType, detail: impl Into<String>) -> NgsiError {
        NgsiError {
            kind,
            detail: detail.into(),
        }
    }
    pub fn bad(detail: impl Into<String>) -> NgsiError {
        NgsiError::new(ErrorType::BadRequestData, detail)
    }
    pub fn invalid(detail: impl Into<String>) -> NgsiError {
        NgsiError::new(ErrorType::InvalidRequest, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> NgsiError {
        NgsiError::new(ErrorType::ResourceNotFound, detail)
    }
}

type R<T> = Result<T, NgsiError>;

// ---- contexts --------------------------------------------------------------------------

/// The contexts a request may name by URL: copies built in (the NGSI-LD core
/// context, every published version of it answered by v1.8; the ETSI test
/// suite's contexts). Nothing else is ever fetched.
fn preloaded(url: &str) -> Option<&'static str> {
    const CORE: &str = include_str!("../assets/ngsi-ld/ngsi-ld-core-context-v1.8.jsonld");
    const SUITE: &str = include_str!("../assets/ngsi-ld/ngsi-ld-test-suite.jsonld");
    const SUITE_COMPOUND: &str =
        include_str!("../assets/ngsi-ld/ngsi-ld-test-suite-compound.jsonld");
    // The published names only: `ngsi-ld-core-context.jsonld` and
    // `ngsi-ld-core-context-v1.N[.M].jsonld`.
    let core = url
        .strip_prefix("https://uri.etsi.org/ngsi-ld/v1/ngsi-ld-core-context")
        .and_then(|rest| rest.strip_suffix(".jsonld"))
        .is_some_and(|version| {
            version.is_empty()
                || version.strip_prefix("-v1.").is_some_and(|v| {
                    !v.is_empty()
                        && v.split('.')
                            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
                })
        });
    if core {
        return Some(CORE);
    }
    // The suite's contexts as EGM publishes them (the same terms, the same
    // IRIs), which some of the suite's data names.
    const EGM: &str = "https://easy-global-market.github.io/ngsild-api-data-models/";
    if let Some(egm) = url.strip_prefix(EGM) {
        return match egm {
            "ngsildTestSuite/ngsildTestSuiteV1.8-compound.jsonld" => Some(SUITE_COMPOUND),
            "ngsildTestSuite/ngsildTestSuite.jsonld" => Some(SUITE),
            "shared-jsonld-contexts/ngsi-ld-core-context-v1.8.jsonld" => Some(CORE),
            _ => None,
        };
    }
    let suite = url.strip_prefix("https://raw.githubusercontent.com/")?;
    // The suite's contexts, from any fork of the suite's repository.
    if suite.ends_with("/resources/jsonld-contexts/ngsi-ld-test-suite.jsonld") {
        Some(SUITE)
    } else if suite.ends_with("/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld") {
        Some(SUITE_COMPOUND)
    } else {
        None
    }
}

/// An active JSON-LD context, reduced to what NGSI-LD names need: each term's
/// IRI, and the reverse for compaction. The core context always applies, last
/// (it is protected: no request redefines its terms).
#[derive(Debug, Clone, Default)]
pub struct Context {
    terms: HashMap<String, String>,
    reverse: HashMap<String, String>,
    vocab: Option<String>,
    /// The context as the request gave it (`None`: the core context alone).
    pub source: Option<Value>,
    /// How many contexts were applied to make it (bounded by `MAX_CONTEXTS`).
    applied: usize,
    /// Inside a built-in context document (not the request's own context).
    in_document: usize,
}

impl Context {
    /// The core context alone.
    pub fn core() -> &'static Context {
        static CORE: OnceLock<Context> = OnceLock::new();
        CORE.get_or_init(|| {
            let mut c = Context::default();
            let doc: Value = serde_json::from_str(preloaded(CORE_CONTEXT).unwrap_or("{}"))
                .unwrap_or(Value::Null);
            // The built-in copy is known good; a failure here would leave only the default vocabulary.
            c.in_document = 1;
            let _ = c.apply_document(&doc, 0);
            c.in_document = 0;
            c.finish();
            c
        })
    }

    /// The core context alone, shared: one copy for every request that
    /// gives no context (a copy is a table of hundreds of terms).
    pub fn shared_core() -> std::sync::Arc<Context> {
        static CORE: OnceLock<std::sync::Arc<Context>> = OnceLock::new();
        CORE.get_or_init(|| std::sync::Arc::new(Context::core().clone()))
            .clone()
    }

    /// The context as a GeoJSON answer names it: a list (the core context's
    /// URL when the request gave none).
    pub fn as_array(&self) -> Value {
        match &self.source {
            Some(Value::Array(a)) => Value::Array(a.clone()),
            Some(v) => Value::Array(vec![v.clone()]),
            None => Value::Array(vec![CORE_CONTEXT.into()]),
        }
    }

    /// The context a request gives — a URL, an object, or an array of them
    /// (`None`: the core context alone) — with the core context after it.
    pub fn resolve(spec: Option<&Value>) -> R<Context> {
        let Some(spec) = spec else {
            return Ok(Context::core().clone());
        };
        let mut c = Context::default();
        c.apply(spec, 0)?;
        let core = Context::core();
        for (term, iri) in &core.terms {
            c.terms.insert(term.clone(), iri.clone());
        }
        c.finish();
        c.source = Some(spec.clone());
        Ok(c)
    }

    fn apply(&mut self, spec: &Value, depth: usize) -> R<()> {
        if depth > 8 {
            return Err(NgsiError::bad(
                "the @context nests other contexts too deeply",
            ));
        }
        self.applied += 1;
        if self.applied > 4 * MAX_CONTEXTS {
            return Err(NgsiError::bad(format!(
                "an @context lists at most {MAX_CONTEXTS} contexts"
            )));
        }
        match spec {
            Value::Null => Ok(()),
            Value::String(url) => {
                let text = preloaded(url).ok_or_else(|| {
                    NgsiError::new(
                        ErrorType::LdContextNotAvailable,
                        format!(
                            "the @context '{}' is not one this broker holds, and it fetches \
                             none at run time: give the context inline, or use the NGSI-LD core \
                             context",
                            url.chars().take(200).collect::<String>()
                        ),
                    )
                })?;
                let doc: Value = serde_json::from_str(text)
                    .map_err(|e| NgsiError::new(ErrorType::InternalError, e.to_string()))?;
                self.in_document += 1;
                let done = self.apply_document(&doc, depth + 1);
                self.in_document -= 1;
                done
            }
            Value::Array(items) => {
                // A context lists a few contexts; a long list is only work
                // asked of the broker before anything is decided.
                if items.len() > MAX_CONTEXTS {
                    return Err(NgsiError::bad(format!(
                        "an @context lists at most {MAX_CONTEXTS} contexts"
                    )));
                }
                for item in items {
                    self.apply(item, depth + 1)?;
                }
                Ok(())
            }
            Value::Object(map) => {
                // A request's own context may not scope terms: a term that
                // means one thing here and another inside a type would let
                // names mean what a reader does not see.
                if self.in_document == 0
                    && let Some((term, _)) = map.iter().find(|(_, d)| d.get("@context").is_some())
                {
                    return Err(NgsiError::bad(format!(
                        "the term '{term}' carries a scoped @context, which this broker does not take"
                    )));
                }
                self.apply_definitions(map, depth)
            }
            _ => Err(NgsiError::bad(
                "@context must be a URL, an object or an array of them",
            )),
        }
    }

    fn apply_document(&mut self, doc: &Value, depth: usize) -> R<()> {
        match doc.get("@context") {
            Some(inner) => self.apply(inner, depth),
            None => Err(NgsiError::bad("a context document holds no @context")),
        }
    }

    fn apply_definitions(&mut self, map: &Map<String, Value>, depth: usize) -> R<()> {
        if let Some(v) = map.get("@vocab").and_then(Value::as_str) {
            self.vocab = Some(v.to_string());
        }
        // Prefixes first, so a term may use a prefix defined after it.
        let mut raw: Vec<(&String, String)> = Vec::new();
        for (term, def) in map {
            if term.starts_with('@') {
                continue;
            }
            let iri = match def {
                Value::String(s) => s.clone(),
                Value::Object(o) => match o.get("@id") {
                    Some(Value::String(s)) => s.clone(),
                    Some(_) => {
                        return Err(NgsiError::bad(format!("the term '{term}' has a bad @id")));
                    }
                    None => continue,
                },
                Value::Null => continue,
                _ => {
                    return Err(NgsiError::bad(format!(
                        "the @context's term '{term}' is neither an IRI nor a definition"
                    )));
                }
            };
            raw.push((term, iri));
        }
        let _ = depth;
        let prefixes: HashMap<String, String> = raw
            .iter()
            .filter(|(_, iri)| iri.ends_with('/') || iri.ends_with('#'))
            .map(|(t, iri)| ((*t).clone(), iri.clone()))
            .collect();
        for (term, iri) in raw {
            let iri = match iri.split_once(':') {
                Some((p, rest)) if !rest.starts_with("//") => {
                    match prefixes.get(p).or_else(|| self.terms.get(p)) {
                        Some(base) => format!("{base}{rest}"),
                        None => iri,
                    }
                }
                _ => iri,
            };
            self.terms.insert(term.clone(), iri);
        }
        Ok(())
    }

    fn finish(&mut self) {
        // Compaction prefers the shortest term for an IRI (a stable choice).
        let mut reverse: HashMap<String, String> = HashMap::new();
        for (term, iri) in &self.terms {
            match reverse.get(iri) {
                Some(t) if (t.len(), t.as_str()) <= (term.len(), term.as_str()) => {}
                _ => {
                    reverse.insert(iri.clone(), term.clone());
                }
            }
        }
        self.reverse = reverse;
    }

    /// A term (or compact IRI, or IRI) as its full IRI.
    pub fn expand(&self, term: &str) -> String {
        if let Some(iri) = self.terms.get(term) {
            return iri.clone();
        }
        if let Some((prefix, rest)) = term.split_once(':') {
            if rest.starts_with("//") {
                return term.to_string();
            }
            if let Some(base) = self.terms.get(prefix) {
                return format!("{base}{rest}");
            }
            // urn:…, and other absolute IRIs.
            return term.to_string();
        }
        format!("{}{term}", self.vocab.as_deref().unwrap_or(DEFAULT_VOCAB))
    }

    /// An IRI as the shortest term that names it here.
    pub fn compact(&self, iri: &str) -> String {
        if let Some(term) = self.reverse.get(iri) {
            return term.clone();
        }
        for base in [self.vocab.as_deref(), Some(DEFAULT_VOCAB)]
            .into_iter()
            .flatten()
        {
            if let Some(rest) = iri.strip_prefix(base)
                && !rest.is_empty()
                && !rest.contains(['/', '#', ':'])
                // A term the context defines as another IRI cannot stand for this one.
                && self.terms.get(rest).is_none_or(|t| t == iri)
            {
                return rest.to_string();
            }
        }
        // A compact IRI with the longest prefix the context defines (`ngsi-ld:…`).
        let prefix = self
            .terms
            .iter()
            .filter(|(t, v)| {
                !t.contains(':')
                    && v.ends_with(['/', '#'])
                    && iri.len() > v.len()
                    && iri.starts_with(v.as_str())
            })
            .max_by(|a, b| a.1.len().cmp(&b.1.len()).then_with(|| b.0.cmp(a.0)));
        match prefix {
            Some((t, v)) => format!("{t}:{}", &iri[v.len()..]),
            None => iri.to_string(),
        }
    }
}

// ---- entities --------------------------------------------------------------------------

/// The attribute types NGSI-LD defines.
const ATTRIBUTE_TYPES: &[(&str, &str)] = &[
    ("Property", "value"),
    ("Relationship", "object"),
    ("GeoProperty", "value"),
    ("LanguageProperty", "languageMap"),
    ("VocabProperty", "vocab"),
    ("JsonProperty", "json"),
    ("ListProperty", "valueList"),
    ("ListRelationship", "objectList"),
];

/// Members of an attribute that are not sub-attributes.
const INSTANCE_KEYWORDS: &[&str] = &[
    "type",
    "value",
    "object",
    "languageMap",
    "vocab",
    "json",
    "valueList",
    "objectList",
    "objectType",
    "observedAt",
    "unitCode",
    "datasetId",
    "createdAt",
    "modifiedAt",
    "instanceId",
    "lang",
];

/// Core members that may not name an attribute.
const CORE_MEMBERS: &[&str] = &[
    "datasetId",
    "instanceId",
    "observedAt",
    "unitCode",
    "value",
    "object",
    "languageMap",
    "vocab",
    "json",
    "valueList",
    "objectList",
    "deletedAt",
    "lang",
    "objectType",
];

/// `urn:ngsi-ld:null`, which only ever deletes.
pub const NGSI_NULL: &str = "urn:ngsi-ld:null";

fn holds_null(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s == NGSI_NULL,
        Value::Array(a) => a.iter().any(holds_null),
        Value::Object(m) => m.values().any(holds_null),
        _ => false,
    }
}

/// Attributes the core context defines as geo-properties.
const GEO_ATTRIBUTES: &[&str] = &["location", "observationSpace", "operationSpace"];

/// One attribute instance, every member name expanded (sub-attributes are
/// the members whose names hold a `:`).
pub type Instance = Map<String, Value>;

/// An entity as kept: every name expanded to its IRI.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Entity {
    pub id: String,
    pub types: Vec<String>,
    /// Attribute IRI → its instances (one per `datasetId`; the default first).
    pub attrs: BTreeMap<String, Vec<Instance>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<Vec<String>>,
    pub created_at: String,
    pub modified_at: String,
    /// The attributes (IRIs) the change being made wrote: their instances
    /// stamped now are this write's readings. Not kept.
    #[serde(skip)]
    pub touched: std::collections::BTreeSet<String>,
    /// The attribute instances the change being made deleted, each as the
    /// NGSI-LD Null instance a notification shows for it. Not kept.
    #[serde(skip)]
    pub deleted: Vec<(String, Instance)>,
}

/// The NGSI-LD Null instance that stands for a deleted one (its type and
/// datasetId, `urn:ngsi-ld:null` for its value).
/// A temporal instance whose value is NGSI-LD Null (5.6.11): the attribute
/// was deleted at its `observedAt`. Kept in history as given.
fn deletion_reading(v: &Value) -> Option<Instance> {
    let m = v.as_object()?;
    let ty = m.get("type").and_then(Value::as_str).unwrap_or("Property");
    let (_, member) = ATTRIBUTE_TYPES.iter().find(|(t, _)| *t == ty)?;
    if m.get(*member).and_then(Value::as_str) != Some(NGSI_NULL) {
        return None;
    }
    let mut out = Instance::new();
    out.insert("type".into(), ty.into());
    out.insert((*member).into(), NGSI_NULL.into());
    for k in ["observedAt", "datasetId"] {
        if let Some(x) = m.get(k).filter(|x| x.is_string()) {
            out.insert(k.into(), x.clone());
        }
    }
    Some(out)
}

/// Whether an instance is a deletion (its value NGSI-LD Null).
fn is_deletion(i: &Instance) -> bool {
    ATTRIBUTE_TYPES
        .iter()
        .any(|(_, m)| i.get(*m).and_then(Value::as_str) == Some(NGSI_NULL))
}

pub fn null_instance(i: &Instance) -> Instance {
    let ty = i.get("type").and_then(Value::as_str).unwrap_or("Property");
    let member = ATTRIBUTE_TYPES
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, m)| *m)
        .unwrap_or("value");
    let mut out = Instance::new();
    out.insert("type".into(), ty.into());
    if ty == "LanguageProperty" {
        out.insert(
            "languageMap".into(),
            serde_json::json!({"@none": NGSI_NULL}),
        );
    } else {
        out.insert(member.into(), NGSI_NULL.into());
    }
    if let Some(d) = i.get("datasetId") {
        out.insert("datasetId".into(), d.clone());
    }
    if let Some(c) = i.get("createdAt") {
        out.insert("createdAt".into(), c.clone());
    }
    out
}

/// Where a fragment's attribute failed, for the 207 answers' `notUpdated`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotUpdated {
    pub attribute: String,
    pub reason: String,
}

/// What a change to an entity's attributes did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Attribute names, expanded (as the UpdateResult of 5.2.18 carries them).
    pub updated: Vec<String>,
    pub not_updated: Vec<NotUpdated>,
}

/// How attributes of a fragment are merged into an entity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merge {
    /// Append: add or replace (`noOverwrite`: add only).
    Append { overwrite: bool },
    /// Update: change only attributes that exist (an instance with a new
    /// `datasetId` is added to its attribute).
    Update,
}

/// A request's entity (or fragment), parsed and checked: names expanded,
/// each attribute as its instances. `compact` keeps each attribute's name as given.
#[derive(Debug, Clone, PartialEq)]
pub struct Fragment {
    pub id: Option<String>,
    pub types: Vec<String>,
    pub scope: Option<Vec<String>>,
    pub attrs: Vec<(String, String, Vec<Instance>)>,
}

/// An entity id (or relationship object) must be an absolute URI.
pub fn check_uri(what: &str, s: &str) -> R<()> {
    let ok = s.len() <= MAX_NAME
        && s.split_once(':').is_some_and(|(scheme, rest)| {
            !rest.is_empty()
                && scheme
                    .chars()
                    .next()
                    .is_some_and(|c| c.is_ascii_alphabetic())
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
        })
        && !s
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || invisible(c) || "<>\"".contains(c));
    if ok {
        Ok(())
    } else {
        Err(NgsiError::bad(format!(
            "{what} '{}' is not a URI (an entity id is an absolute URI, such as \
             urn:ngsi-ld:AirQualityObserved:station-4)",
            s.chars().take(200).collect::<String>()
        )))
    }
}

fn is_datetime(s: &str) -> bool {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
}

/// Check a GeoJSON geometry: a known type and coordinates of the right depth.
pub fn check_geometry(where_: &str, v: &Value) -> R<()> {
    let bad = |why: &str| NgsiError::bad(format!("{where_}: {why}"));
    let obj = v
        .as_object()
        .ok_or_else(|| bad("a GeoProperty's value is a GeoJSON geometry object"))?;
    let ty = obj
        .get("type")
        .and_then(Value::as_str)
        .ok_or_else(|| bad("the geometry has no type"))?;
    let depth = match ty {
        "Point" => 0,
        "MultiPoint" | "LineString" => 1,
        "MultiLineString" | "Polygon" => 2,
        "MultiPolygon" => 3,
        "GeometryCollection" => {
            let parts = obj
                .get("geometries")
                .and_then(Value::as_array)
                .ok_or_else(|| bad("a GeometryCollection has geometries"))?;
            for g in parts {
                check_geometry(where_, g)?;
            }
            return Ok(());
        }
        other => return Err(bad(&format!("'{other}' is not a GeoJSON geometry type"))),
    };
    let coords = obj
        .get("coordinates")
        .ok_or_else(|| bad("the geometry has no coordinates"))?;
    fn position(v: &Value) -> bool {
        v.as_array().is_some_and(|a| {
            (2..=3).contains(&a.len()) && a.iter().all(|n| n.as_f64().is_some_and(f64::is_finite))
        })
    }
    fn nested(v: &Value, depth: usize) -> bool {
        if depth == 0 {
            return position(v);
        }
        v.as_array()
            .is_some_and(|a| !a.is_empty() && a.iter().all(|x| nested(x, depth - 1)))
    }
    if !nested(coords, depth) {
        return Err(bad(&format!("the coordinates are not those of a {ty}")));
    }
    if ty == "Polygon" || ty == "MultiPolygon" {
        let rings: Vec<&Value> = if ty == "Polygon" {
            coords.as_array().into_iter().flatten().collect()
        } else {
            coords
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_array)
                .flatten()
                .collect()
        };
        for ring in rings {
            let r = ring.as_array().map(Vec::as_slice).unwrap_or(&[]);
            if r.len() < 4 || r.first() != r.last() {
                return Err(bad(
                    "a polygon's ring has at least four positions, the last the first",
                ));
            }
        }
    }
    Ok(())
}

/// The attribute type a concise attribute stands for, from its members.
fn concise_type(map: &Map<String, Value>) -> Option<&'static str> {
    for (ty, member) in ATTRIBUTE_TYPES {
        if map.contains_key(*member) {
            return Some(ty);
        }
    }
    None
}

/// Parse one attribute instance (normalised or concise) under `ctx`.
fn parse_instance(ctx: &Context, name: &str, v: &Value, depth: usize) -> R<Instance> {
    let at = |why: String| NgsiError::bad(format!("attribute '{name}': {why}"));
    if depth > 4 {
        return Err(at("sub-attributes nest too deeply".into()));
    }
    let geo_name = GEO_ATTRIBUTES.contains(&name);
    let map = match v {
        Value::Object(m) => m.clone(),
        Value::Null => {
            return Err(at(
                "null is not a value (delete the attribute instead)".into()
            ));
        }
        // Concise: a bare value is a Property's.
        other => {
            let mut m = Map::new();
            m.insert("value".into(), other.clone());
            m
        }
    };
    let mut map = map;
    // A geometry given as a string of GeoJSON (4.7) is that geometry.
    if (geo_name || map.get("type").and_then(Value::as_str) == Some("GeoProperty"))
        && let Some(Value::String(text)) = map.get("value")
        && let Ok(g @ Value::Object(_)) = serde_json::from_str::<Value>(text)
        && g.get("coordinates").is_some()
    {
        map.insert("value".into(), g);
    }
    let geometry = map.get("type").and_then(Value::as_str).is_some_and(|t| {
        matches!(
            t,
            "Point" | "MultiPoint" | "LineString" | "MultiLineString" | "Polygon" | "MultiPolygon"
        )
    }) && map.contains_key("coordinates");
    if geometry {
        // Concise: a bare GeoJSON geometry is a GeoProperty's value.
        let g = Value::Object(std::mem::take(&mut map));
        map.insert("type".into(), "GeoProperty".into());
        map.insert("value".into(), g);
    }
    let typed = map.contains_key("type");
    let ty = match map.get("type") {
        Some(Value::String(t)) => {
            let t = t.as_str();
            ATTRIBUTE_TYPES
                .iter()
                .find(|(known, _)| *known == t || ctx.expand(known) == ctx.expand(t))
                .map(|(known, _)| *known)
                .ok_or_else(|| at(format!("'{t}' is not an NGSI-LD attribute type")))?
        }
        Some(_) => return Err(at("its type is not a string".into())),
        None => match concise_type(&map) {
            Some(ty) => ty,
            None => {
                // Concise: an object without the members of an attribute is a Property's value.
                let mut m = Map::new();
                m.insert("value".into(), Value::Object(map));
                map = m;
                "Property"
            }
        },
    };
    // Concise: a Property named as a geo-property, or whose type is not
    // given, with a GeoJSON geometry for its value is a GeoProperty.
    let ty = if ty == "Property"
        && (geo_name || !typed)
        && map
            .get("value")
            .is_some_and(|g| check_geometry(name, g).is_ok())
    {
        "GeoProperty"
    } else {
        ty
    };
    if geo_name && ty != "GeoProperty" {
        return Err(at(
            "is a GeoProperty in the core context: its value is a GeoJSON geometry".into(),
        ));
    }
    let member = ATTRIBUTE_TYPES
        .iter()
        .find(|(t, _)| *t == ty)
        .map(|(_, m)| *m)
        .unwrap_or("value");
    let mut out = Instance::new();
    out.insert("type".into(), ty.into());
    let value = map
        .get(member)
        .filter(|v| !v.is_null())
        .ok_or_else(|| at(format!("a {ty} has a non-null '{member}'")))?;
    if ty != "JsonProperty" && holds_null(value) {
        return Err(at(format!(
            "its '{member}' holds a null ({NGSI_NULL} deletes, and only in a merge)"
        )));
    }
    match ty {
        "Relationship" => {
            let objects: Vec<&Value> = match value {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            for o in objects {
                let s = o
                    .as_str()
                    .ok_or_else(|| at("a Relationship's object is a URI".into()))?;
                check_uri("the relationship's object", s).map_err(|e| at(e.detail))?;
            }
        }
        "GeoProperty" => {
            check_geometry(&format!("attribute '{name}'"), value)?;
            if value.get("type").and_then(Value::as_str) == Some("GeometryCollection") {
                return Err(at(
                    "a GeoProperty's value is a single geometry, not a GeometryCollection".into(),
                ));
            }
        }
        "JsonProperty" if !(value.is_object() || value.is_array()) => {
            return Err(at("a JsonProperty's json is an object or an array".into()));
        }
        "LanguageProperty" => {
            let m = value
                .as_object()
                .ok_or_else(|| at("a LanguageProperty's languageMap is an object".into()))?;
            if m.keys().any(|k| k.trim().is_empty()) {
                return Err(at("a languageMap's language tags are not empty".into()));
            }
            if m.values().any(|s| {
                !(s.is_string() || s.as_array().is_some_and(|a| a.iter().all(Value::is_string)))
            }) {
                return Err(at("a languageMap's values are strings".into()));
            }
        }
        "VocabProperty" => {
            let ok = match value {
                Value::String(_) => true,
                Value::Array(a) => a.iter().all(Value::is_string),
                _ => false,
            };
            if !ok {
                return Err(at(
                    "a VocabProperty's vocab is a term or a list of terms".into()
                ));
            }
        }
        "ListProperty" | "ListRelationship" if !value.is_array() => {
            return Err(at(format!("a {ty}'s '{member}' is an array")));
        }
        "ListRelationship" => {
            for o in value.as_array().into_iter().flatten() {
                let uri = o
                    .as_str()
                    .or_else(|| o.get("object").and_then(Value::as_str));
                let Some(uri) = uri else {
                    return Err(at("a ListRelationship's objectList holds URIs".into()));
                };
                check_uri("an objectList entry", uri).map_err(|e| at(e.detail))?;
            }
        }
        _ => {}
    }
    if name == "ngsildproof" && !value.is_object() {
        return Err(at("ngsildproof's value is a proof object".into()));
    }
    let value = match ty {
        "VocabProperty" => map_strings(value, |s| ctx.expand(s)),
        // Each objectList entry as its normalised `{"object": uri}`.
        "ListRelationship" => Value::Array(
            value
                .as_array()
                .into_iter()
                .flatten()
                .map(|o| match o {
                    Value::String(_) => serde_json::json!({ "object": o }),
                    other => other.clone(),
                })
                .collect(),
        ),
        _ => value.clone(),
    };
    out.insert(member.into(), value);
    for (key, v) in &map {
        match key.as_str() {
            "type" => {}
            k if k == member => {}
            k if k.starts_with('@') => {
                return Err(at(format!(
                    "'{k}' is a JSON-LD keyword: an attribute carries no context of its own"
                )));
            }
            "previousValue"
            | "previousObject"
            | "previousLanguageMap"
            | "previousJson"
            | "previousVocab"
            | "previousValueList"
            | "previousObjectList" => {
                return Err(at(format!(
                    "'{key}' is output only (a notification's showChanges)"
                )));
            }
            "entityIdSealed" | "entityTypeSealed" if name == "ngsildproof" => {
                if !v.is_string() {
                    return Err(at(format!("'{key}' is a string (the sealed id or type)")));
                }
                out.insert(key.clone(), v.clone());
            }
            "entityIdSealed" | "entityTypeSealed" => {
                return Err(at(format!("'{key}' belongs in ngsildproof only")));
            }
            "valueType"
                if ty == "LanguageProperty"
                    && !matches!(
                        v.as_str(),
                        Some(
                            "rdf:langString"
                                | "langString"
                                | "http://www.w3.org/1999/02/22-rdf-syntax-ns#langString"
                        )
                    ) =>
            {
                return Err(at("a LanguageProperty's valueType is rdf:langString".into()));
            }
            "valueType" => {
                if !v.is_string() {
                    return Err(at("valueType is a string".into()));
                }
                out.insert(key.clone(), v.clone());
            }
            "createdAt" | "modifiedAt" | "instanceId" => {} // the broker's own
            "observedAt" => {
                if !v
                    .as_str()
                    .is_some_and(|t| is_datetime(t) && t.ends_with('Z'))
                {
                    return Err(at(
                        "observedAt is a date-time in UTC (RFC 3339 ending in Z, such as 2017-11-01T10:00:00Z)".into(),
                    ));
                }
                out.insert(key.clone(), v.clone());
            }
            // `@none` names the default instance.
            "datasetId" if v == "@none" => {}
            "datasetId" => {
                let s = v.as_str().ok_or_else(|| at("datasetId is a URI".into()))?;
                check_uri("datasetId", s).map_err(|e| at(e.detail))?;
                out.insert(key.clone(), v.clone());
            }
            "unitCode"
                if matches!(
                    ty,
                    "Relationship"
                        | "ListRelationship"
                        | "JsonProperty"
                        | "GeoProperty"
                        | "VocabProperty"
                ) =>
            {
                return Err(at(format!("a {ty} has no unitCode")));
            }
            "unitCode" | "lang" => {
                if !v.is_string() {
                    return Err(at(format!("{key} is a string")));
                }
                out.insert(key.clone(), v.clone());
            }
            "objectType" => {
                out.insert(key.clone(), v.clone());
            }
            k if INSTANCE_KEYWORDS.contains(&k) => {
                return Err(at(format!("'{k}' does not belong in a {ty}")));
            }
            sub => {
                check_name(sub).map_err(|why| at(format!("sub-attribute '{sub}' {why}")))?;
                let inner = parse_instance(ctx, sub, v, depth + 1)?;
                out.insert(ctx.expand(sub), Value::Object(inner));
            }
        }
    }
    Ok(out)
}

/// A VocabProperty's vocab (one IRI or a list) compacted under `ctx`.
pub fn compact_vocab(ctx: &Context, v: &Value) -> Value {
    map_strings(v, |s| ctx.compact(s))
}

fn map_strings(v: &Value, f: impl Fn(&str) -> String) -> Value {
    match v {
        Value::String(s) => Value::String(f(s)),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| x.as_str().map(|s| Value::String(f(s))).unwrap_or(x.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Parse an attribute's instances: one, or an array of instances that
/// differ by `datasetId` (an array of plain values is one Property's value).
fn parse_attribute(ctx: &Context, name: &str, v: &Value) -> R<Vec<Instance>> {
    let instances = match v {
        Value::Array(items)
            if !items.is_empty()
                && items.iter().all(|i| {
                    i.as_object().is_some_and(|m| {
                        m.contains_key("type") && !m.contains_key("coordinates")
                            || concise_type(m).is_some()
                    })
                }) =>
        {
            items
                .iter()
                .map(|i| parse_instance(ctx, name, i, 0))
                .collect::<R<Vec<_>>>()?
        }
        one => vec![parse_instance(ctx, name, one, 0)?],
    };
    let mut seen: Vec<Option<&str>> = Vec::new();
    for i in &instances {
        let d = i.get("datasetId").and_then(Value::as_str);
        if seen.contains(&d) {
            return Err(NgsiError::bad(format!(
                "attribute '{name}' has two instances with the same datasetId"
            )));
        }
        seen.push(d);
    }
    Ok(instances)
}

/// A temporal representation to write (`POST /temporal/entities`): each
/// attribute's instances over time, names expanded.
#[derive(Debug, Clone, PartialEq)]
pub struct TemporalFragment {
    pub id: Option<String>,
    pub types: Vec<String>,
    /// (name as given, IRI, its instances in the order given).
    pub attrs: Vec<(String, String, Vec<Instance>)>,
    /// The scope it gives (plain, or the latest of temporal instances).
    pub scope: Option<Vec<String>>,
}

impl TemporalFragment {
    /// Parse under `ctx`; every instance is checked as an attribute is.
    pub fn parse(ctx: &Context, body: &Value, whole: bool) -> R<TemporalFragment> {
        let map = body
            .as_object()
            .ok_or_else(|| NgsiError::bad("a temporal representation is a JSON object"))?;
        // The id, types and names are checked as an entity's are.
        let mut head = Map::new();
        for k in ["id", "@id", "type", "@type"] {
            if let Some(v) = map.get(k) {
                head.insert(k.to_string(), v.clone());
            }
        }
        let f = Fragment::parse(ctx, &Value::Object(head), whole)?;
        let mut attrs = Vec::new();
        for (name, v) in map {
            if matches!(
                name.as_str(),
                "id" | "@id" | "type" | "@type" | "@context" | "scope" | "createdAt" | "modifiedAt"
            ) {
                continue;
            }
            check_name(name)
                .map_err(|why| NgsiError::bad(format!("attribute name '{name}' {why}")))?;
            let items: Vec<&Value> = match v {
                Value::Array(a) => a.iter().collect(),
                one => vec![one],
            };
            let instances = items
                .into_iter()
                .map(|i| match deletion_reading(i) {
                    Some(null) => Ok(null),
                    None => parse_instance(ctx, name, i, 0),
                })
                .collect::<R<Vec<_>>>()?;
            attrs.push((name.clone(), ctx.expand(name), instances));
        }
        let scope = match map.get("scope") {
            None => None,
            Some(v) => {
                let items: Vec<&Value> = match v {
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                if items.iter().all(|i| i.is_string()) {
                    Some(parse_scope(v)?)
                } else {
                    // Temporal instances of the scope: the latest is the entity's.
                    let latest = items
                        .iter()
                        .filter_map(|i| {
                            let value = i.get("value")?;
                            let at = i.get("observedAt").and_then(Value::as_str).unwrap_or("");
                            Some((temporal::instant(at).unwrap_or_default(), value))
                        })
                        .max_by(|a, b| a.0.cmp(&b.0))
                        .ok_or_else(|| {
                            NgsiError::bad(
                                "scope is a scope, a list of them, or instances with a value",
                            )
                        })?;
                    Some(parse_scope(latest.1)?)
                }
            }
        };
        Ok(TemporalFragment {
            id: f.id,
            types: f.types,
            attrs,
            scope,
        })
    }
}

/// When an instance was observed (else when it was written), for ordering.
fn instance_time(i: &Instance) -> Option<String> {
    i.get("observedAt")
        .and_then(Value::as_str)
        .and_then(temporal::instant)
}

impl Entity {
    /// Take a temporal fragment's instances: each becomes the attribute's
    /// latest value (for its `datasetId`) unless a later one is held.
    /// Returns every instance, stamped, as the readings to keep.
    pub fn absorb(&mut self, f: TemporalFragment, now: &str) -> Vec<(String, Instance)> {
        let mut readings = Vec::new();
        for t in f.types {
            if !self.types.contains(&t) {
                self.types.push(t);
            }
        }
        if let Some(scope) = f.scope {
            self.scope = Some(scope);
        }
        for (_, iri, instances) in f.attrs {
            for mut i in instances {
                stamp(&mut i, now, None);
                readings.push((iri.clone(), i.clone()));
                if is_deletion(&i) {
                    // The attribute's latest value is gone, unless a newer one is held.
                    if let Some(have) = self.attrs.get_mut(&iri) {
                        have.retain(|h| {
                            dataset_of(h) != dataset_of(&i) || instance_time(h) > instance_time(&i)
                        });
                        if have.is_empty() {
                            self.attrs.remove(&iri);
                        }
                    }
                    continue;
                }
                let have = self.attrs.entry(iri.clone()).or_default();
                match have.iter().position(|h| dataset_of(h) == dataset_of(&i)) {
                    Some(p) if instance_time(&have[p]) > instance_time(&i) => {}
                    Some(p) => {
                        let created = have[p].get("createdAt").cloned();
                        stamp(&mut i, now, created.as_ref());
                        have[p] = i;
                    }
                    None => have.push(i),
                }
            }
        }
        self.modified_at = now.to_string();
        readings
    }
}

/// Scopes (4.18): `[/]Level(/Level)*`, each level a letter then letters,
/// digits or `_`; `urn:ngsi-ld:null` only ever marks a deleted scope.
pub fn parse_scope(v: &Value) -> R<Vec<String>> {
    let list: Vec<&Value> = match v {
        Value::Array(a) => a.iter().collect(),
        one => vec![one],
    };
    let mut out = Vec::new();
    for s in list {
        let s = s
            .as_str()
            .ok_or_else(|| NgsiError::bad("scope is a string or a list of them"))?;
        let levels = s.strip_prefix('/').unwrap_or(s);
        let ok = !levels.is_empty()
            && levels.split('/').all(|l| {
                let mut cs = l.chars();
                cs.next().is_some_and(char::is_alphabetic)
                    && cs.all(|c| c.is_alphanumeric() || c == '_')
            });
        if !ok {
            return Err(NgsiError::bad(format!(
                "scope '{s}' is not a scope: /Level/Level…, each level a letter followed by \
                 letters, digits or _"
            )));
        }
        out.push(s.to_string());
    }
    if out.is_empty() {
        return Err(NgsiError::bad("scope names at least one scope"));
    }
    Ok(out)
}

impl Fragment {
    /// Parse an entity, or an attribute fragment (`whole == false`: id and
    /// type optional), under `ctx`. Anything wrong fails the whole of it.
    pub fn parse(ctx: &Context, body: &Value, whole: bool) -> R<Fragment> {
        let map = body
            .as_object()
            .ok_or_else(|| NgsiError::invalid("an entity is a JSON object"))?;
        let id = match map.get("id").or_else(|| map.get("@id")) {
            Some(Value::String(s)) if s == NGSI_NULL => {
                return Err(NgsiError::bad(format!(
                    "{NGSI_NULL} is NGSI-LD Null, not an entity id"
                )));
            }
            Some(Value::String(s)) => {
                check_uri("the entity id", s)?;
                Some(s.clone())
            }
            Some(_) => return Err(NgsiError::bad("the entity id is a string")),
            None if whole => return Err(NgsiError::bad("an entity has an id")),
            None => None,
        };
        let types = match map.get("type").or_else(|| map.get("@type")) {
            Some(Value::String(s)) => vec![s.clone()],
            Some(Value::Array(a)) if !a.is_empty() => a
                .iter()
                .map(|t| {
                    t.as_str()
                        .map(str::to_string)
                        .ok_or_else(|| NgsiError::bad("an entity's types are strings"))
                })
                .collect::<R<Vec<_>>>()?,
            Some(_) => {
                return Err(NgsiError::bad(
                    "an entity's type is a string or a list of them",
                ));
            }
            None if whole => return Err(NgsiError::bad("an entity has a type")),
            None => Vec::new(),
        };
        for t in &types {
            check_name(t).map_err(|why| NgsiError::bad(format!("the entity type '{t}' {why}")))?;
        }
        if let Some(t) = types.iter().find(|t| !starts_well(t)) {
            return Err(NgsiError::bad(format!(
                "the entity type '{t}' does not start with a letter"
            )));
        }

        let types: Vec<String> = types.iter().map(|t| ctx.expand(t)).collect();
        if let Some(t) = types.iter().find(|t| t.starts_with('@')) {
            return Err(NgsiError::bad(format!(
                "the entity type names the JSON-LD keyword {t}, not a type"
            )));
        }
        let scope = match map.get("scope") {
            None => None,
            Some(v) => Some(parse_scope(v)?),
        };
        let mut attrs = Vec::new();
        for (name, v) in map {
            if matches!(
                name.as_str(),
                "id" | "@id" | "type" | "@type" | "@context" | "scope" | "createdAt" | "modifiedAt"
            ) {
                continue;
            }
            check_name(name)
                .map_err(|why| NgsiError::bad(format!("attribute name '{name}' {why}")))?;
            if CORE_MEMBERS.contains(&name.as_str()) {
                return Err(NgsiError::bad(format!(
                    "'{name}' is a member of the NGSI-LD core, not an attribute name"
                )));
            }
            let iri = ctx.expand(name);
            if iri.starts_with('@') {
                return Err(NgsiError::bad(format!(
                    "attribute '{name}' names the JSON-LD keyword {iri}"
                )));
            }
            let instances = parse_attribute(ctx, name, v)?;
            attrs.push((name.clone(), iri, instances));
        }
        Ok(Fragment {
            id,
            types,
            scope,
            attrs,
        })
    }
}

fn stamp(instance: &mut Instance, now: &str, created: Option<&Value>) {
    instance.insert(
        "createdAt".into(),
        created
            .cloned()
            .unwrap_or_else(|| Value::String(now.to_string())),
    );
    instance.insert("modifiedAt".into(), Value::String(now.to_string()));
    for (k, v) in instance.iter_mut() {
        if k.contains(':')
            && let Value::Object(sub) = v
        {
            sub.insert("createdAt".into(), Value::String(now.to_string()));
            sub.insert("modifiedAt".into(), Value::String(now.to_string()));
        }
    }
}

fn dataset_of(i: &Instance) -> Option<&str> {
    i.get("datasetId").and_then(Value::as_str)
}

/// `have` (an instance held) in request form with `map`'s members laid
/// over it: a value member given replaces the held one; with `deep` (a
/// merge, 5.6.17), a compound value given is merged into the held one key by
/// key, a key given as NGSI-LD Null removed.
fn overlay(
    ctx: &Context,
    have: &Instance,
    map: &Map<String, Value>,
    deep: bool,
) -> Map<String, Value> {
    let mut merged = Map::new();
    for (k, v) in have {
        if !k.contains(':') {
            merged.insert(k.clone(), v.clone());
        } else {
            merged.insert(
                ctx.compact(k),
                compact_instance(ctx, v.as_object().cloned().unwrap_or_default(), false),
            );
        }
    }
    let member_keys: Vec<&str> = ATTRIBUTE_TYPES.iter().map(|(_, m)| *m).collect();
    if map.keys().any(|k| member_keys.contains(&k.as_str())) {
        for m in &member_keys {
            if !(deep && *m == "value" && map.get("value").is_some_and(Value::is_object)) {
                merged.remove(*m);
            }
        }
    }
    for (k, v) in map.iter().filter(|(k, _)| *k != "@context") {
        match (k.as_str(), merged.get_mut(k)) {
            ("value", Some(held @ Value::Object(_))) if deep && v.is_object() => {
                merge_patch(held, v)
            }
            _ => {
                merged.insert(k.clone(), v.clone());
            }
        }
    }
    merged
}

/// RFC 7396 merge patch, with NGSI-LD Null (and JSON null) removing a key.
fn merge_patch(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() || v.as_str() == Some(NGSI_NULL) {
                    t.remove(k);
                } else if let Some(held) = t.get_mut(k).filter(|h| h.is_object() && v.is_object()) {
                    merge_patch(held, v);
                } else {
                    t.insert(k.clone(), v.clone());
                }
            }
        }
        (t, p) => *t = p.clone(),
    }
}

impl Entity {
    /// A merge's body (`PATCH /entities/{id}`, `/entityOperations/merge`)
    /// against this entity: each attribute given for an instance held is
    /// laid over it (the members it does not give are kept, compound values
    /// merged key by key); the rest as given.
    pub fn merge_body(&self, ctx: &Context, body: &Map<String, Value>) -> Map<String, Value> {
        let mut out = Map::new();
        for (k, v) in body {
            let held = match (k.as_str(), v) {
                ("id" | "type" | "scope" | "@context", _) => None,
                (_, Value::Object(m)) => {
                    let dataset = m.get("datasetId").and_then(Value::as_str);
                    self.attrs.get(&ctx.expand(k)).and_then(|have| {
                        have.iter().find(|h| {
                            dataset_of(h) == dataset
                                && m.get("type").is_none_or(|t| h.get("type") == Some(t))
                        })
                    })
                }
                _ => None,
            };
            match (held, v) {
                (Some(h), Value::Object(m)) => {
                    out.insert(k.clone(), Value::Object(overlay(ctx, h, m, true)));
                }
                _ => {
                    out.insert(k.clone(), v.clone());
                }
            }
        }
        out
    }

    /// A new entity from a parsed (whole) fragment.
    pub fn create(fragment: Fragment, now: &str) -> R<Entity> {
        let id = fragment
            .id
            .ok_or_else(|| NgsiError::bad("an entity has an id"))?;
        let mut attrs = BTreeMap::new();
        for (_, iri, mut instances) in fragment.attrs {
            for i in &mut instances {
                stamp(i, now, None);
            }
            attrs.insert(iri, instances);
        }
        Ok(Entity {
            id,
            types: fragment.types,
            touched: attrs.keys().cloned().collect(),
            deleted: Vec::new(),
            attrs,
            scope: fragment.scope,
            created_at: now.to_string(),
            modified_at: now.to_string(),
        })
    }

    /// Merge a fragment's attributes; what was not merged is said in the outcome.
    pub fn merge(&mut self, fragment: Fragment, how: Merge, now: &str) -> Outcome {
        let mut outcome = Outcome::default();
        for t in fragment.types {
            if !self.types.contains(&t) {
                self.types.push(t);
            }
        }
        match (fragment.scope, how, &mut self.scope) {
            (None, _, _) => {}
            // noOverwrite adds to the scopes held.
            (Some(add), Merge::Append { overwrite: false }, Some(have)) => {
                for s in add {
                    if !have.contains(&s) {
                        have.push(s);
                    }
                }
            }
            (Some(scope), _, held) => *held = Some(scope),
        }
        for (_name, iri, instances) in fragment.attrs {
            let existing = self.attrs.get_mut(&iri);
            match (how, existing) {
                (Merge::Update, None) => outcome.not_updated.push(NotUpdated {
                    attribute: iri.clone(),
                    reason: "the entity has no such attribute (append it instead)".into(),
                }),
                (Merge::Append { overwrite: true } | Merge::Update, Some(have))
                | (Merge::Append { overwrite: false }, Some(have)) => {
                    let mut changed = false;
                    let mut refused = None;
                    for mut new in instances {
                        let pos = have.iter().position(|h| dataset_of(h) == dataset_of(&new));
                        match (pos, how) {
                            (Some(p), Merge::Append { overwrite: false }) => {
                                let _ = p;
                                refused = Some("the attribute exists and noOverwrite was asked");
                            }
                            (Some(p), _) => {
                                let created = have[p].get("createdAt").cloned();
                                stamp(&mut new, now, created.as_ref());
                                have[p] = new;
                                changed = true;
                            }
                            (None, _) => {
                                stamp(&mut new, now, None);
                                have.push(new);
                                changed = true;
                            }
                        }
                    }
                    if changed {
                        outcome.updated.push(iri.clone());
                        self.touched.insert(iri);
                    } else if let Some(reason) = refused {
                        outcome.not_updated.push(NotUpdated {
                            attribute: iri.clone(),
                            reason: reason.into(),
                        });
                    }
                }
                (Merge::Append { .. }, None) => {
                    let mut instances = instances;
                    for i in &mut instances {
                        stamp(i, now, None);
                    }
                    self.touched.insert(iri.clone());
                    outcome.updated.push(iri.clone());
                    self.attrs.insert(iri, instances);
                }
            }
        }
        if !outcome.updated.is_empty() {
            self.modified_at = now.to_string();
        }
        outcome
    }

    /// Replace every attribute (PUT, and upsert's `replace`); types are kept
    /// with the fragment's added.
    pub fn replace(&mut self, fragment: Fragment, now: &str) {
        let mut fresh = Entity::create(
            Fragment {
                id: Some(self.id.clone()),
                ..fragment
            },
            now,
        )
        .unwrap_or_else(|_| self.clone());
        for t in &self.types {
            if !fresh.types.contains(t) {
                fresh.types.insert(0, t.clone());
            }
        }
        fresh.created_at = self.created_at.clone();
        *self = fresh;
    }

    /// Partially update one attribute (PATCH …/attrs/{attr}): the fragment's
    /// members replace the instance's (the one with its `datasetId`).
    pub fn patch_attribute(
        &mut self,
        iri: &str,
        name: &str,
        fragment: &Value,
        ctx: &Context,
        now: &str,
    ) -> R<()> {
        let map = fragment
            .as_object()
            .ok_or_else(|| NgsiError::bad("an attribute fragment is a JSON object"))?;
        let dataset = map.get("datasetId").and_then(Value::as_str);
        if dataset == Some(NGSI_NULL) {
            return Err(NgsiError::bad(
                "a datasetId is not deleted by NGSI-LD Null: delete the instance instead",
            ));
        }
        let have = self.attrs.get_mut(iri).ok_or_else(|| {
            NgsiError::not_found(format!("entity '{}' has no attribute '{name}'", self.id))
        })?;
        let pos = have
            .iter()
            .position(|h| dataset_of(h) == dataset)
            .ok_or_else(|| {
                NgsiError::not_found(format!(
                    "attribute '{name}' has no instance with that datasetId"
                ))
            })?;
        if let Some(t) = map.get("type").and_then(Value::as_str)
            && have[pos].get("type").and_then(Value::as_str) != Some(t)
        {
            return Err(NgsiError::bad(format!(
                "attribute '{name}' is a {}: a partial update keeps its type (replace it to change it)",
                have[pos]
                    .get("type")
                    .and_then(Value::as_str)
                    .unwrap_or("Property")
            )));
        }
        let merged = overlay(ctx, &have[pos], map, false);
        let created = have[pos].get("createdAt").cloned();
        self.touched.insert(iri.to_string());
        let mut instance = parse_instance(ctx, name, &Value::Object(merged), 0)?;
        stamp(&mut instance, now, created.as_ref());
        have[pos] = instance;
        self.modified_at = now.to_string();
        Ok(())
    }

    /// Delete an attribute: its default instance, the one with `dataset`, or every one.
    pub fn delete_attribute(
        &mut self,
        iri: &str,
        name: &str,
        dataset: Option<&str>,
        all: bool,
        now: &str,
    ) -> R<()> {
        let missing =
            || NgsiError::not_found(format!("entity '{}' has no attribute '{name}'", self.id));
        let have = self.attrs.get_mut(iri).ok_or_else(missing)?;
        let stamped = |mut i: Instance| {
            i.insert("modifiedAt".into(), now.into());
            i.insert("deletedAt".into(), now.into());
            i
        };
        if all {
            // The whole attribute: one deletion, of no instance in particular.
            if let Some(first) = have.first() {
                let mut null = null_instance(first);
                null.remove("datasetId");
                self.deleted.push((iri.to_string(), stamped(null)));
            }
            self.attrs.remove(iri);
        } else {
            let pos = have
                .iter()
                .position(|h| dataset_of(h) == dataset)
                .ok_or_else(missing)?;
            let gone = have.remove(pos);
            self.deleted
                .push((iri.to_string(), stamped(null_instance(&gone))));
            if have.is_empty() {
                self.attrs.remove(iri);
            }
        }
        self.modified_at = now.to_string();
        Ok(())
    }

    /// Keep only attribute instances with one of these datasetIds (`@none`:
    /// the default instance); attributes left with none are dropped.
    pub fn retain_datasets(&mut self, ids: &[String]) {
        let keep = |i: &Instance| match dataset_of(i) {
            Some(d) => ids.iter().any(|x| x == d),
            None => ids.iter().any(|x| x == "@none"),
        };
        self.attrs.retain(|_, instances| {
            instances.retain(|i| keep(i));
            !instances.is_empty()
        });
    }

    /// The value an attribute's default instance (else its first) holds:
    /// a Property's value, a Relationship's object, and so on.
    pub fn value_of(&self, iri: &str) -> Option<&Value> {
        let instances = self.attrs.get(iri)?;
        let i = instances
            .iter()
            .find(|i| dataset_of(i).is_none())
            .or_else(|| instances.first())?;
        instance_value(i)
    }

    /// The point of its `location`, if it has one (longitude, latitude).
    pub fn point(&self) -> Option<(f64, f64)> {
        let g = self.value_of(&Context::core().expand("location"))?;
        let c = g.get("coordinates")?;
        match g.get("type")?.as_str()? {
            "Point" => Some((c.get(0)?.as_f64()?, c.get(1)?.as_f64()?)),
            _ => None,
        }
    }
}

/// An instance's principal member.
pub fn instance_value(i: &Instance) -> Option<&Value> {
    ATTRIBUTE_TYPES
        .iter()
        .find_map(|(_, member)| i.get(*member))
}

/// How an answer renders entities.
#[derive(Debug, Clone, Default)]
pub struct Rendering {
    pub key_values: bool,
    pub sys_attrs: bool,
    /// Only these attributes (expanded); `None`: all.
    pub attrs: Option<Vec<String>>,
    /// Only these members (`pick`: core members as named, attributes expanded).
    pub pick: Option<Vec<String>>,
    /// All members but these (`omit`).
    pub omit: Option<Vec<String>>,
    /// Put the `@context` in the body (`application/ld+json`).
    pub with_context: bool,
    /// As a GeoJSON Feature (`application/geo+json`): the geometry from
    /// `geometry_property` (`location` by default), the rest as properties.
    pub geo_json: bool,
    pub geometry_property: Option<String>,
    /// `lang`: language ranges (RFC 4647, with `q` weights) that turn each
    /// LanguageProperty into a Property holding the best-matching string.
    pub lang: Option<String>,
    /// `pick` / `omit` as given, with what they say of linked entities.
    pub pick_tree: Option<Projection>,
    pub omit_tree: Option<Projection>,
    /// Linked entity retrieval (`join`, `joinLevel`).
    pub join: Option<Join>,
    /// `datasetId`: only attribute instances with one of these (`@none`:
    /// the default instance).
    pub datasets: Option<Vec<String>>,
    /// `type` on a retrieval: the entity has one of these (expanded), or
    /// it is not found.
    pub type_selector: Option<Vec<String>>,
}

/// `join=inline|flat` with `joinLevel` (4.5.23): the entities an entity's
/// relationships name, inside each relationship or listed after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Join {
    pub flat: bool,
    pub level: u32,
}

/// The deepest `joinLevel` taken.
pub const MAX_JOIN_LEVEL: u32 = 8;

/// A `pick` or `omit` (4.21): member names (core members as named,
/// attributes expanded), a relationship's with `{…}` saying the same of the
/// entity it links to (`locatedAt{id,name}`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Projection {
    pub members: Vec<(String, Option<Projection>)>,
}

impl Projection {
    pub fn parse(text: &str, ctx: &Context) -> R<Projection> {
        let chars: Vec<char> = text.chars().collect();
        let mut pos = 0;
        let p = Self::list(&chars, &mut pos, ctx, 0, text)?;
        if pos != chars.len() {
            return Err(NgsiError::bad(format!(
                "'{text}': unexpected '{}' at character {}",
                chars[pos],
                pos + 1
            )));
        }
        Ok(p)
    }

    fn list(c: &[char], pos: &mut usize, ctx: &Context, depth: usize, text: &str) -> R<Projection> {
        if depth > MAX_JOIN_LEVEL as usize {
            return Err(NgsiError::bad(format!("'{text}' nests too deeply")));
        }
        let mut members = Vec::new();
        loop {
            let start = *pos;
            while *pos < c.len() && (c[*pos].is_alphanumeric() || "_:/#.@-".contains(c[*pos])) {
                *pos += 1;
            }
            let name: String = c[start..*pos].iter().collect();
            if name.is_empty() {
                return Err(NgsiError::bad(format!(
                    "'{text}' names an empty member at character {}",
                    start + 1
                )));
            }
            let child = if *pos < c.len() && c[*pos] == '{' {
                *pos += 1;
                let inner = Self::list(c, pos, ctx, depth + 1, text)?;
                if *pos >= c.len() || c[*pos] != '}' {
                    return Err(NgsiError::bad(format!("'{text}': a '{{' is not closed")));
                }
                *pos += 1;
                Some(inner)
            } else {
                None
            };
            let iri = if matches!(
                name.as_str(),
                "id" | "type" | "scope" | "createdAt" | "modifiedAt"
            ) {
                name
            } else {
                ctx.expand(&name)
            };
            members.push((iri, child));
            if *pos < c.len() && matches!(c[*pos], ',' | '|') {
                *pos += 1;
            } else {
                break;
            }
        }
        Ok(Projection { members })
    }

    /// How many levels of linked entities it speaks of.
    pub fn depth(&self) -> u32 {
        self.members
            .iter()
            .filter_map(|(_, c)| c.as_ref())
            .map(|c| 1 + c.depth())
            .max()
            .unwrap_or(0)
    }

    /// The members named at this level.
    pub fn names(&self) -> Vec<String> {
        self.members.iter().map(|(n, _)| n.clone()).collect()
    }

    /// What it says of the entity `member` links to.
    pub fn child(&self, member: &str) -> Option<&Projection> {
        self.members
            .iter()
            .find(|(n, _)| n == member)
            .and_then(|(_, c)| c.as_ref())
    }

    fn names_whole(&self, member: &str) -> bool {
        self.members.iter().any(|(n, c)| n == member && c.is_none())
    }
}

impl Rendering {
    /// Whether a linked entity retrieval follows this relationship: one
    /// `pick` leaves (or no pick), that `omit` does not drop whole.
    pub fn follows(&self, iri: &str) -> bool {
        self.pick_tree
            .as_ref()
            .is_none_or(|p| p.members.iter().any(|(n, _)| n == iri))
            && self.omit_tree.as_ref().is_none_or(|o| !o.names_whole(iri))
    }

    /// How the entity a relationship links to is rendered: as this one,
    /// with what `pick` and `omit` say of it.
    pub fn linked(&self, iri: &str) -> Rendering {
        let pick_tree = self.pick_tree.as_ref().and_then(|p| p.child(iri)).cloned();
        let omit_tree = self.omit_tree.as_ref().and_then(|o| o.child(iri)).cloned();
        Rendering {
            key_values: self.key_values,
            sys_attrs: self.sys_attrs,
            attrs: None,
            pick: pick_tree.as_ref().map(Projection::names),
            omit: omit_tree.as_ref().map(|o| {
                o.members
                    .iter()
                    .filter(|(_, c)| c.is_none())
                    .map(|(n, _)| n.clone())
                    .collect()
            }),
            with_context: false,
            geo_json: false,
            geometry_property: None,
            lang: self.lang.clone(),
            pick_tree,
            omit_tree,
            join: self.join,
            datasets: None,
            type_selector: None,
        }
    }
}

/// The tag of `map` that best matches the ranges of an Accept-Language-like
/// `lang` (`fr-CH,fr;q=0.9,*;q=0.5`): ranges by weight, each tried exactly
/// (case-insensitively), as a prefix of a longer tag, then truncated; `*`,
/// or nothing matching, gives the first tag.
pub fn best_language<'a>(map: &'a Map<String, Value>, lang: &str) -> Option<&'a str> {
    let mut ranges: Vec<(f64, usize, String)> = lang
        .split(',')
        .enumerate()
        .filter_map(|(i, r)| {
            let mut parts = r.split(';');
            let range = parts.next()?.trim().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| {
                    p.trim()
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f64>().ok())
                })
                .next()
                .unwrap_or(1.0);
            (!range.is_empty() && q > 0.0).then_some((q, i, range))
        })
        .collect();
    ranges.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
    let tags: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|t| *t != "@none")
        .collect();
    for (_, _, range) in &ranges {
        if range == "*" {
            break;
        }
        let mut r = range.as_str();
        loop {
            if let Some(t) = tags.iter().find(|t| t.eq_ignore_ascii_case(r)) {
                return Some(t);
            }
            if let Some(t) = tags
                .iter()
                .find(|t| t.to_ascii_lowercase().starts_with(&format!("{r}-")))
            {
                return Some(t);
            }
            match r.rfind('-') {
                Some(i) => r = &r[..i],
                None => break,
            }
        }
    }
    tags.first()
        .copied()
        .or_else(|| map.contains_key("@none").then_some("@none"))
}

/// A LanguageProperty instance as the Property `lang` asks for.
fn language_instance(i: &Instance, lang: &str) -> Instance {
    let mut out = Instance::new();
    let map = i.get("languageMap").and_then(Value::as_object);
    let tag = map.and_then(|m| best_language(m, lang));
    for (k, v) in i {
        match k.as_str() {
            "type" => {
                out.insert("type".into(), "Property".into());
            }
            "languageMap" => {
                let value = match (map, tag) {
                    (Some(m), Some(t)) => m.get(t).cloned().unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                out.insert("value".into(), value);
                if let Some(t) = tag.filter(|t| *t != "@none") {
                    out.insert("lang".into(), t.into());
                }
            }
            _ => {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out
}

/// One instance in the simplified (keyValues) form: a Property's value, a
/// Relationship's object; the members that say what a value is kept for
/// JSON, vocabulary and language properties.
fn simplified_instance(ctx: &Context, i: &Instance, lang: Option<&str>) -> Value {
    let ty = i.get("type").and_then(Value::as_str).unwrap_or("Property");
    let v = instance_value(i).cloned().unwrap_or(Value::Null);
    let wrap = |k: &str, v: Value| {
        let mut m = Map::new();
        m.insert(k.into(), v);
        Value::Object(m)
    };
    match ty {
        "VocabProperty" => wrap("vocab", map_strings(&v, |s| ctx.compact(s))),
        "JsonProperty" => wrap("json", v),
        "ListRelationship" => object_list_uris(&v),
        "LanguageProperty" => match lang {
            Some(l) => language_instance(i, l)
                .remove("value")
                .unwrap_or(Value::Null),
            None => wrap("languageMap", v),
        },
        _ => v,
    }
}

/// An objectList as its entries' URIs (the simplified forms).
pub(crate) fn object_list_uris(v: &Value) -> Value {
    Value::Array(
        v.as_array()
            .into_iter()
            .flatten()
            .map(|o| o.get("object").cloned().unwrap_or_else(|| o.clone()))
            .collect(),
    )
}

/// Features as a GeoJSON FeatureCollection, the context given once.
pub fn feature_collection(features: Vec<Value>, ctx: &Context) -> Value {
    let features: Vec<Value> = features
        .into_iter()
        .map(|mut f| {
            if let Some(m) = f.as_object_mut() {
                m.remove("@context");
            }
            f
        })
        .collect();
    let mut m = Map::new();
    m.insert("type".into(), "FeatureCollection".into());
    m.insert("features".into(), Value::Array(features));
    m.insert("@context".into(), ctx.as_array());
    Value::Object(m)
}

fn compact_instance(ctx: &Context, instance: Instance, sys_attrs: bool) -> Value {
    let mut out = Map::new();
    let vocab = instance.get("type").and_then(Value::as_str) == Some("VocabProperty");
    for (k, v) in instance {
        if k.contains(':') {
            let sub = v.as_object().cloned().unwrap_or_default();
            out.insert(ctx.compact(&k), compact_instance(ctx, sub, sys_attrs));
        } else if !sys_attrs && (k == "createdAt" || k == "modifiedAt" || k == "deletedAt") {
        } else if vocab && k == "vocab" {
            out.insert(k, map_strings(&v, |s| ctx.compact(s)));
        } else {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

impl Entity {
    /// The entity as an answer gives it, under `ctx`.
    pub fn render(&self, ctx: &Context, r: &Rendering) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), self.id.clone().into());
        let types: Vec<Value> = self.types.iter().map(|t| ctx.compact(t).into()).collect();
        out.insert(
            "type".into(),
            if types.len() == 1 {
                types[0].clone()
            } else {
                Value::Array(types)
            },
        );
        if let Some(scope) = &self.scope {
            out.insert(
                "scope".into(),
                match scope.as_slice() {
                    [one] => one.clone().into(),
                    many => many.to_vec().into(),
                },
            );
        }
        if r.sys_attrs {
            out.insert("createdAt".into(), self.created_at.clone().into());
            out.insert("modifiedAt".into(), self.modified_at.clone().into());
        }
        for (iri, instances) in &self.attrs {
            if r.attrs.as_ref().is_some_and(|a| !a.contains(iri)) {
                continue;
            }
            let name = ctx.compact(iri);
            let lang = r.lang.as_deref();
            let instances: Vec<&Instance> = instances
                .iter()
                .filter(|i| {
                    r.datasets.as_ref().is_none_or(|ds| {
                        let d = dataset_of(i).unwrap_or("@none");
                        ds.iter().any(|x| x == d)
                    })
                })
                .collect();
            if instances.is_empty() {
                continue;
            }
            let rendered: Vec<Value> = instances
                .iter()
                .copied()
                .map(|i| {
                    if r.key_values {
                        simplified_instance(ctx, i, lang)
                    } else if let Some(l) = lang
                        && i.get("type").and_then(Value::as_str) == Some("LanguageProperty")
                    {
                        compact_instance(ctx, language_instance(i, l), r.sys_attrs)
                    } else {
                        compact_instance(ctx, i.clone(), r.sys_attrs)
                    }
                })
                .collect();
            let v = if rendered.len() == 1 {
                rendered.into_iter().next().unwrap_or(Value::Null)
            } else if r.key_values {
                // Several instances, simplified: keyed by datasetId.
                let mut by = Map::new();
                for (i, v) in instances.iter().zip(rendered) {
                    by.insert(dataset_of(i).unwrap_or("@none").to_string(), v);
                }
                let mut m = Map::new();
                m.insert("dataset".into(), Value::Object(by));
                Value::Object(m)
            } else {
                Value::Array(rendered)
            };
            out.insert(name, v);
        }
        let member = |k: &str| {
            if matches!(k, "id" | "type" | "scope" | "createdAt" | "modifiedAt") {
                k.to_string()
            } else {
                ctx.expand(k)
            }
        };
        if let Some(pick) = &r.pick {
            out.retain(|k, _| pick.contains(&member(k)));
        }
        if let Some(omit) = &r.omit {
            out.retain(|k, _| !omit.contains(&member(k)));
        }
        if r.with_context {
            out.insert(
                "@context".into(),
                ctx.source.clone().unwrap_or_else(|| CORE_CONTEXT.into()),
            );
        }
        if r.geo_json {
            let geo = r
                .geometry_property
                .clone()
                .unwrap_or_else(|| "location".into());
            let geometry = self
                .value_of(&ctx.expand(&geo))
                .filter(|g| g.get("coordinates").is_some() || g.get("geometries").is_some())
                .cloned()
                .unwrap_or(Value::Null);
            let id = out.remove("id").unwrap_or(Value::Null);
            let mut feature = Map::new();
            feature.insert("id".into(), id);
            feature.insert("type".into(), "Feature".into());
            feature.insert("geometry".into(), geometry);
            feature.insert("properties".into(), Value::Object(out));
            feature.insert("@context".into(), ctx.as_array());
            return Value::Object(feature);
        }
        Value::Object(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: &str = "2026-12-06T10:00:00Z";

    #[test]
    fn lang_picks_the_best_language_and_keyvalues_keep_what_a_value_is() {
        let ctx = Context::core();
        let e = Entity::create(
            Fragment::parse(
                ctx,
                &json!({"id": "urn:a", "type": "T",
                    "street": {"type": "LanguageProperty", "languageMap": {"fr": "Grand Place", "nl": "Grote Markt"}},
                    "regional": {"type": "LanguageProperty", "languageMap": {"en-US": "Main Square", "de": "Hauptplatz"}},
                    "doc": {"type": "JsonProperty", "json": {"a": 1}},
                    "speed": [{"type": "Property", "value": 55}, {"type": "Property", "value": 11, "datasetId": "urn:ngsi-ld:Dataset:gps"}]}),
                true,
            )
            .unwrap(),
            NOW,
        )
        .unwrap();
        let with = |lang: &str, kv: bool| {
            e.render(
                ctx,
                &Rendering {
                    key_values: kv,
                    lang: Some(lang.into()),
                    ..Default::default()
                },
            )
        };
        for (lang, tag) in [
            ("fr", "fr"),
            ("fr-CH,fr", "fr"),
            ("fr;q=0.2,nl;q=0.9", "nl"),
            ("FR", "fr"),
            ("nl-BE", "nl"),
            ("pt", "fr"),
            ("*", "fr"),
        ] {
            let v = with(lang, false);
            assert_eq!(v["street"]["type"], "Property", "{lang}");
            assert_eq!(v["street"]["lang"], tag, "{lang}");
            assert!(v["street"].get("languageMap").is_none());
        }
        assert_eq!(with("en", false)["regional"]["lang"], "en-US");
        assert_eq!(with("nl", true)["street"], "Grote Markt");
        let kv = e.render(
            ctx,
            &Rendering {
                key_values: true,
                ..Default::default()
            },
        );
        assert_eq!(kv["street"]["languageMap"]["nl"], "Grote Markt");
        assert_eq!(kv["doc"], json!({"json": {"a": 1}}));
        assert_eq!(
            kv["speed"],
            json!({"dataset": {"@none": 55, "urn:ngsi-ld:Dataset:gps": 11}})
        );
    }

    #[test]
    fn pick_and_omit_say_what_they_keep_of_linked_entities() {
        let ctx = Context::core();
        let p = Projection::parse("id,locatedAt{id,name,isInCountry{description}}", ctx).unwrap();
        assert_eq!(p.names(), vec!["id".to_string(), ctx.expand("locatedAt")]);
        let r = Rendering {
            pick: Some(p.names()),
            pick_tree: Some(p),
            ..Default::default()
        };
        assert!(r.follows(&ctx.expand("locatedAt")));
        assert!(!r.follows(&ctx.expand("owner")));
        let city = r.linked(&ctx.expand("locatedAt"));
        assert_eq!(city.pick.as_ref().unwrap().len(), 3);
        let country = city.linked(&ctx.expand("isInCountry"));
        assert_eq!(country.pick, Some(vec![ctx.expand("description")]));
        let o = Projection::parse("type,locatedAt{name}", ctx).unwrap();
        let r = Rendering {
            omit_tree: Some(o),
            ..Default::default()
        };
        // `locatedAt{name}` omits the city's name, not the relationship.
        assert!(r.follows(&ctx.expand("locatedAt")));
        assert_eq!(
            r.linked(&ctx.expand("locatedAt")).omit,
            Some(vec![ctx.expand("name")])
        );
        for bad in ["", "a,,b", "a{b", "a}b", "a{}"] {
            assert!(Projection::parse(bad, ctx).is_err(), "{bad}");
        }
    }

    #[test]
    fn terms_expand_through_the_context_and_back() {
        let ctx = Context::resolve(Some(&json!([
            "https://raw.githubusercontent.com/x/ngsi-ld-test-suite/main/resources/jsonld-contexts/ngsi-ld-test-suite-compound.jsonld"
        ])))
        .unwrap();
        assert_eq!(
            ctx.expand("Building"),
            "https://ngsi-ld-test-suite/context#Building"
        );
        assert_eq!(
            ctx.compact("https://ngsi-ld-test-suite/context#Building"),
            "Building"
        );
        assert_eq!(
            ctx.expand("location"),
            "https://uri.etsi.org/ngsi-ld/location"
        );
        assert_eq!(ctx.expand("NO2"), format!("{DEFAULT_VOCAB}NO2"));
        assert_eq!(
            Context::core().compact(&format!("{DEFAULT_VOCAB}NO2")),
            "NO2"
        );
        let inline = Context::resolve(Some(
            &json!({"sdm": "https://smartdatamodels.org/", "NO2": "sdm:NO2"}),
        ))
        .unwrap();
        assert_eq!(inline.expand("NO2"), "https://smartdatamodels.org/NO2");
        assert_eq!(inline.compact("https://smartdatamodels.org/NO2"), "NO2");
    }

    #[test]
    fn an_unknown_remote_context_is_not_fetched() {
        let e = Context::resolve(Some(&json!("https://example.org/ctx.jsonld"))).unwrap_err();
        assert_eq!(e.kind, ErrorType::LdContextNotAvailable);
        assert_eq!(e.kind.status(), 503);
        let e = Context::resolve(Some(&json!(42))).unwrap_err();
        assert_eq!(e.kind, ErrorType::BadRequestData);
        let many: Vec<&str> = vec![CORE_CONTEXT; 1000];
        let e = Context::resolve(Some(&json!(many))).unwrap_err();
        assert!(e.detail.contains("at most"), "{}", e.detail);
    }

    #[test]
    fn entities_parse_in_normalised_and_concise_form_and_render_back() {
        let ctx = Context::core();
        let body = json!({
            "id": "urn:ngsi-ld:AirQualityObserved:4",
            "type": "AirQualityObserved",
            "NO2": {"type": "Property", "value": 42, "unitCode": "GQ", "observedAt": "2017-11-01T10:00:00Z"},
            "O3": 17,
            "location": {"type": "Point", "coordinates": [2.15, 41.39]},
            "refDevice": {"object": "urn:ngsi-ld:Device:1"}
        });
        let e = Entity::create(Fragment::parse(ctx, &body, true).unwrap(), NOW).unwrap();
        assert_eq!(e.point(), Some((2.15, 41.39)));
        let out = e.render(ctx, &Rendering::default());
        assert_eq!(
            out["NO2"],
            json!({"type": "Property", "value": 42, "unitCode": "GQ", "observedAt": "2017-11-01T10:00:00Z"})
        );
        assert_eq!(out["O3"], json!({"type": "Property", "value": 17}));
        assert_eq!(out["location"]["type"], "GeoProperty");
        assert_eq!(
            out["refDevice"],
            json!({"type": "Relationship", "object": "urn:ngsi-ld:Device:1"})
        );
        let kv = e.render(
            ctx,
            &Rendering {
                key_values: true,
                ..Default::default()
            },
        );
        assert_eq!(kv["NO2"], 42);
        assert_eq!(kv["refDevice"], "urn:ngsi-ld:Device:1");
        let sys = e.render(
            ctx,
            &Rendering {
                sys_attrs: true,
                ..Default::default()
            },
        );
        assert_eq!(sys["NO2"]["createdAt"], NOW);
    }

    #[test]
    fn attributes_of_the_wrong_shape_are_refused_naming_them() {
        let ctx = Context::core();
        for (body, says) in [
            (json!({"id": "not a uri", "type": "T"}), "is not a URI"),
            (
                json!({"id": "urn:a", "type": "T", "p": {"type": "Property"}}),
                "attribute 'p'",
            ),
            (
                json!({"id": "urn:a", "type": "T", "r": {"type": "Relationship", "object": 3}}),
                "attribute 'r'",
            ),
            (
                json!({"id": "urn:a", "type": "T", "location": {"type": "Property", "value": 3}}),
                "attribute 'location'",
            ),
            (
                json!({"id": "urn:a", "type": "T", "g": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1]}}}),
                "attribute 'g'",
            ),
            (
                json!({"id": "urn:a", "type": "T", "p": {"type": "Property", "value": 1, "observedAt": "yesterday"}}),
                "observedAt",
            ),
            (
                json!({"id": "urn:a", "type": "T", "p": {"type": "Thing", "value": 1}}),
                "not an NGSI-LD attribute type",
            ),
            (
                json!({"id": "urn:a", "type": "T", "p;q": 1}),
                "attribute name",
            ),
            (
                json!({"id": "urn:a", "type": "T", "p": null}),
                "attribute 'p'",
            ),
            (json!({"id": "urn:a"}), "has a type"),
        ] {
            let e = Fragment::parse(ctx, &body, true).unwrap_err();
            assert_eq!(e.kind, ErrorType::BadRequestData, "{body}");
            assert!(e.detail.contains(says), "{body}: {}", e.detail);
        }
    }

    #[test]
    fn merges_follow_append_update_and_no_overwrite() {
        let ctx = Context::core();
        let mut e = Entity::create(
            Fragment::parse(ctx, &json!({"id": "urn:a", "type": "T", "p": 1}), true).unwrap(),
            NOW,
        )
        .unwrap();
        let frag = |v: Value| Fragment::parse(ctx, &v, false).unwrap();
        let later = "2026-12-06T11:00:00Z";
        let o = e.merge(frag(json!({"p": 2, "q": 3})), Merge::Update, later);
        assert_eq!(o.updated, vec![ctx.expand("p")]);
        assert_eq!(o.not_updated[0].attribute, ctx.expand("q"));
        assert_eq!(e.value_of(&ctx.expand("p")), Some(&json!(2)));
        let o = e.merge(
            frag(json!({"p": 5, "q": 3})),
            Merge::Append { overwrite: false },
            later,
        );
        assert_eq!(o.updated, vec![ctx.expand("q")]);
        assert_eq!(e.value_of(&ctx.expand("p")), Some(&json!(2)));
        let o = e.merge(
            frag(json!({"p": 5})),
            Merge::Append { overwrite: true },
            later,
        );
        assert_eq!(o.updated, vec![ctx.expand("p")]);
        assert_eq!(e.attrs[&ctx.expand("p")][0]["createdAt"], NOW);
        assert_eq!(e.modified_at, later);
        e.patch_attribute(
            &ctx.expand("p"),
            "p",
            &json!({"value": 9, "unitCode": "C"}),
            ctx,
            later,
        )
        .unwrap();
        assert_eq!(e.value_of(&ctx.expand("p")), Some(&json!(9)));
        e.delete_attribute(&ctx.expand("q"), "q", None, false, later)
            .unwrap();
        assert!(
            e.delete_attribute(&ctx.expand("q"), "q", None, false, later)
                .is_err()
        );
    }

    #[test]
    fn stream_terms_hold_their_declared_types() {
        let t = StreamTerms {
            entity_types: vec!["AirQualityObserved".into()],
            retention_days: 30,
            compaction: Compaction::Day,
        };
        assert!(t.holds(&[format!("{DEFAULT_VOCAB}AirQualityObserved")]));
        assert!(!t.holds(&[format!("{DEFAULT_VOCAB}Vehicle")]));
        let any = StreamTerms {
            entity_types: vec![],
            retention_days: 30,
            compaction: Compaction::Day,
        };
        assert!(any.holds(&[format!("{DEFAULT_VOCAB}Vehicle")]));
        let mut e = ValidationErrors::default();
        StreamTerms {
            entity_types: vec!["a b".into()],
            retention_days: 0,
            compaction: Compaction::Hour,
        }
        .check(&mut e);
        assert!(!e.is_empty());
    }

    #[test]
    fn a_compaction_period_starts_on_the_hour_or_the_day_in_utc() {
        let t = time::macros::datetime!(2026-03-01 09:42:17.5 +02:00);
        assert_eq!(
            Compaction::Hour.period_start(t),
            time::macros::datetime!(2026-03-01 07:00 UTC)
        );
        assert_eq!(
            Compaction::Day.period_start(t),
            time::macros::datetime!(2026-03-01 00:00 UTC)
        );
    }
}
