//! The temporal representation of entities (ETSI GS CIM 009 4.5.8–4.5.9):
//! what `/temporal/entities` asks (`timerel` before / after / between with
//! `timeAt` and `endTimeAt`, `lastN`, `attrs`, `timeproperty`) and how the
//! kept readings answer it — every instance, `temporalValues` (`[value,
//! time]` pairs), or `aggregatedValues` (`aggrMethods` totalCount,
//! distinctCount, sum, avg, min, max, stddev, sumsq, over periods of
//! `aggrPeriodDuration`, each `[value, startAt, endAt]`). Instants are
//! compared normalised to UTC (`instant`), so text order is time order.

use std::collections::BTreeMap;

use serde_json::{Map, Value};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::{Context, Instance, NgsiError, instance_value};

type R<T> = Result<T, NgsiError>;

/// The most values one attribute answers (`lastN`'s ceiling, and the default).
pub const MAX_VALUES: usize = 10_000;

/// An instant as kept: UTC, microseconds, `Z` — text order is time order.
pub fn instant(s: &str) -> Option<String> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some(format_instant(t))
}

pub fn format_instant(t: OffsetDateTime) -> String {
    format_utc(t, false)
}

/// An instant to the millisecond, UTC, `Z`: what an entity's change is
/// stamped with (sensors write more often than once a second).
pub fn format_millis(t: OffsetDateTime) -> String {
    format_utc(t, true)
}

fn format_utc(t: OffsetDateTime, millis: bool) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let fraction = if millis {
        format!("{:03}", t.millisecond())
    } else {
        format!("{:06}", t.microsecond())
    };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{fraction}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
    )
}

/// An ISO 8601 duration (`P1D`, `PT1H`, `PT15M`, `P1W`, `P1M` as 30 days,
/// `P1Y` as 365 days).
pub fn duration(s: &str) -> R<time::Duration> {
    let bad = || {
        NgsiError::bad(format!(
            "'{s}' is not an ISO 8601 duration such as PT1H or P1D"
        ))
    };
    let rest = s.strip_prefix('P').ok_or_else(bad)?;
    let (date, clock) = rest.split_once('T').unwrap_or((rest, ""));
    let mut total = 0f64;
    let mut take = |part: &str, units: &[(char, f64)]| -> R<()> {
        let mut num = String::new();
        for c in part.chars() {
            if c.is_ascii_digit() || c == '.' {
                num.push(c);
            } else {
                let (_, secs) = units.iter().find(|(u, _)| *u == c).ok_or_else(bad)?;
                let n: f64 = num.parse().map_err(|_| bad())?;
                total += n * secs;
                num.clear();
            }
        }
        if num.is_empty() { Ok(()) } else { Err(bad()) }
    };
    take(
        date,
        &[
            ('Y', 365.0 * 86400.0),
            ('M', 30.0 * 86400.0),
            ('W', 7.0 * 86400.0),
            ('D', 86400.0),
        ],
    )?;
    take(clock, &[('H', 3600.0), ('M', 60.0), ('S', 1.0)])?;
    if total < 1.0 || (date.is_empty() && clock.is_empty()) {
        return Err(bad());
    }
    Ok(time::Duration::seconds_f64(total))
}

/// An aggregation method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggr {
    TotalCount,
    DistinctCount,
    Sum,
    Avg,
    Min,
    Max,
    Stddev,
    Sumsq,
}

impl Aggr {
    fn parse(s: &str) -> R<Aggr> {
        Ok(match s {
            "totalCount" => Aggr::TotalCount,
            "distinctCount" => Aggr::DistinctCount,
            "sum" => Aggr::Sum,
            "avg" => Aggr::Avg,
            "min" => Aggr::Min,
            "max" => Aggr::Max,
            "stddev" => Aggr::Stddev,
            "sumsq" => Aggr::Sumsq,
            other => {
                return Err(NgsiError::bad(format!(
                    "'{other}' is not an aggregation method (totalCount, distinctCount, sum, avg, min, max, stddev, sumsq)"
                )));
            }
        })
    }
    fn name(self) -> &'static str {
        match self {
            Aggr::TotalCount => "totalCount",
            Aggr::DistinctCount => "distinctCount",
            Aggr::Sum => "sum",
            Aggr::Avg => "avg",
            Aggr::Min => "min",
            Aggr::Max => "max",
            Aggr::Stddev => "stddev",
            Aggr::Sumsq => "sumsq",
        }
    }
}

/// What a temporal request asks.
#[derive(Debug, Clone, Default)]
pub struct TemporalQuery {
    /// Readings at or after this instant (normalised).
    pub from: Option<String>,
    /// Readings before this instant (normalised).
    pub to: Option<String>,
    pub last_n: Option<usize>,
    pub attrs: Option<Vec<String>>,
    pub temporal_values: bool,
    /// `aggregatedValues`: the methods and the period (`None`: the whole range).
    pub aggregate: Option<(Vec<Aggr>, Option<time::Duration>)>,
    /// `timeproperty=deletedAt`: the deletions kept, not the readings.
    pub deleted: bool,
    /// `datasetId`: only instances with one of these (`@none`: the default).
    pub datasets: Option<Vec<String>>,
    /// `pick` / `omit`: core members as named, attributes expanded.
    pub pick: Option<Vec<String>>,
    pub omit: Option<Vec<String>>,
}

impl TemporalQuery {
    pub fn from_params(params: &[(String, String)], ctx: &Context) -> R<TemporalQuery> {
        let get = |name: &str| {
            params
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let at = |name: &str| -> R<Option<String>> {
            match get(name) {
                None => Ok(None),
                Some(v) => instant(v).map(Some).ok_or_else(|| {
                    NgsiError::bad(format!("{name} '{v}' is not a date-time (RFC 3339)"))
                }),
            }
        };
        let mut q = TemporalQuery::default();
        let (time_at, end) = (at("timeAt")?, at("endTimeAt")?);
        match get("timerel") {
            None => {}
            Some("before") => {
                q.to = Some(time_at.ok_or_else(|| NgsiError::bad("timerel=before needs timeAt"))?)
            }
            Some("after") => {
                q.from = Some(time_at.ok_or_else(|| NgsiError::bad("timerel=after needs timeAt"))?)
            }
            Some("between") => {
                let (a, b) = time_at
                    .zip(end)
                    .ok_or_else(|| NgsiError::bad("timerel=between needs timeAt and endTimeAt"))?;
                if b <= a {
                    return Err(NgsiError::bad("endTimeAt is after timeAt"));
                }
                q.from = Some(a);
                q.to = Some(b);
            }
            Some(other) => {
                return Err(NgsiError::bad(format!(
                    "timerel '{other}' is not before, after or between"
                )));
            }
        }
        q.datasets = get("datasetId").map(|d| {
            d.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        });
        match get("timeproperty") {
            None | Some("observedAt" | "createdAt" | "modifiedAt") => {}
            Some("deletedAt") => q.deleted = true,
            Some(other) => {
                return Err(NgsiError::bad(format!(
                    "timeproperty '{other}' is not observedAt, createdAt, modifiedAt or deletedAt"
                )));
            }
        }
        if let Some(n) = get("lastN") {
            let n: usize =
                n.parse().ok().filter(|n| *n > 0).ok_or_else(|| {
                    NgsiError::bad(format!("lastN '{n}' is not a positive number"))
                })?;
            q.last_n = Some(n.min(MAX_VALUES));
        }
        q.attrs = get("attrs").map(|a| {
            a.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| ctx.expand(s))
                .collect()
        });
        // `format` names the representation, and wins over `options`.
        let options: Vec<&str> = match get("format") {
            Some(f) => vec![f],
            None => params
                .iter()
                .filter(|(k, _)| k == "options")
                .flat_map(|(_, v)| v.split(','))
                .collect(),
        };
        q.temporal_values = options.contains(&"temporalValues");
        if options.contains(&"aggregatedValues") {
            let methods = get("aggrMethods")
                .ok_or_else(|| NgsiError::bad("aggregatedValues needs aggrMethods"))?
                .split(',')
                .map(|m| Aggr::parse(m.trim()))
                .collect::<R<Vec<_>>>()
                .map_err(|e| NgsiError::bad(format!("aggrMethods: {}", e.detail)))?;
            // PT0S: the whole range, as no period does.
            let period = get("aggrPeriodDuration")
                .filter(|d| *d != "PT0S")
                .map(duration)
                .transpose()
                .map_err(|e| NgsiError::bad(format!("aggrPeriodDuration: {}", e.detail)))?;
            q.aggregate = Some((methods, period));
        } else if let Some(d) = get("aggrPeriodDuration").filter(|d| *d != "PT0S") {
            duration(d).map_err(|e| NgsiError::bad(format!("aggrPeriodDuration: {}", e.detail)))?;
        }
        if let Some(m) = get("aggrMethods")
            && !options.contains(&"aggregatedValues")
        {
            for x in m.split(',') {
                Aggr::parse(x.trim())?;
            }
        }
        Ok(q)
    }

    /// Whether a reading's (normalised) instant is in range.
    pub fn in_range(&self, at: &str) -> bool {
        self.from.as_deref().is_none_or(|f| at >= f) && self.to.as_deref().is_none_or(|t| at < t)
    }

    /// When the store can sum the aggregation itself (counts, sums and
    /// extremes per period, no `lastN`, no `datasetId`, not deletions, a
    /// period of whole seconds): the period in seconds (`i64::MAX` for the
    /// whole range). `distinctCount` and `stddev` read every value.
    pub fn summable(&self) -> Option<i64> {
        let (methods, period) = self.aggregate.as_ref()?;
        if self.last_n.is_some()
            || self.datasets.is_some()
            || self.deleted
            || methods
                .iter()
                .any(|m| matches!(m, Aggr::DistinctCount | Aggr::Stddev))
        {
            return None;
        }
        match period {
            None => Some(i64::MAX),
            Some(p) if p.subsec_nanoseconds() == 0 && p.whole_seconds() > 0 => {
                Some(p.whole_seconds())
            }
            Some(_) => None,
        }
    }

    /// Where an attribute's buckets start: `timeAt`'s instant, else its
    /// first reading's.
    pub fn bucket_start(&self, first: &str) -> R<OffsetDateTime> {
        self.from
            .as_deref()
            .and_then(|f| OffsetDateTime::parse(f, &Rfc3339).ok())
            .or_else(|| OffsetDateTime::parse(first, &Rfc3339).ok())
            .ok_or_else(|| {
                NgsiError::new(
                    super::ErrorType::InternalError,
                    "a kept instant is unreadable",
                )
            })
    }
}

/// One attribute's readings in range as the store summed them per bucket
/// (see [`TemporalQuery::summable`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Summary {
    /// The first reading's type (`Property`, …).
    pub ty: Value,
    /// The first and last readings' instants (as kept).
    pub first: String,
    pub last: String,
    pub buckets: Vec<BucketSums>,
}

/// One bucket: its index from the start, how many readings, and of the
/// numbers among them how many, their sum, sum of squares and extremes.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSums {
    pub index: i64,
    pub readings: u64,
    pub numbers: u64,
    pub sum: f64,
    pub sumsq: f64,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

impl BucketSums {
    /// What `method` answers for this bucket (`null` where no reading was a
    /// number), as [`aggregate`] answers it from the values.
    fn answer(&self, method: Aggr) -> Value {
        let some = |x: f64| {
            if self.numbers > 0 {
                Value::from(x)
            } else {
                Value::Null
            }
        };
        let pick = |x: Option<f64>| x.map(Value::from).unwrap_or(Value::Null);
        match method {
            Aggr::TotalCount => Value::from(self.readings),
            Aggr::Sum => some(self.sum),
            Aggr::Avg => some(self.sum / self.numbers as f64),
            Aggr::Min => pick(self.min),
            Aggr::Max => pick(self.max),
            Aggr::Sumsq => some(self.sumsq),
            // Not summable: `summable` sends these through the readings.
            Aggr::DistinctCount | Aggr::Stddev => Value::Null,
        }
    }
}

/// An aggregation's series from the store's sums.
fn summarised(
    s: &Summary,
    methods: &[Aggr],
    period: Option<time::Duration>,
    start: OffsetDateTime,
) -> Value {
    let last = OffsetDateTime::parse(&s.last, &Rfc3339).unwrap_or(start);
    let mut m = Map::new();
    m.insert("type".into(), s.ty.clone());
    for method in methods {
        let series: Vec<Value> = s
            .buckets
            .iter()
            .filter(|b| b.readings > 0)
            .map(|b| {
                let (a, z) = match period {
                    Some(p) => (
                        start + p * (b.index as f64),
                        start + p * ((b.index + 1) as f64),
                    ),
                    None => (start, last),
                };
                Value::Array(vec![
                    b.answer(*method),
                    range_instant(&format_instant(a)).into(),
                    range_instant(&format_instant(z)).into(),
                ])
            })
            .collect();
        m.insert(method.name().into(), Value::Array(series));
    }
    Value::Object(m)
}

/// One datasetId's readings of an attribute (`None`: the default instance's).
type Series<'a> = (Option<String>, Vec<&'a (String, Instance)>);

/// Readings by attribute (each oldest first), of the entities of one answer.
pub type AnswerReadings = Vec<BTreeMap<String, Readings>>;

/// Temporal pagination (6.3.6, as brokers implement it): at most `page`
/// instances of any attribute are answered. When `lastN` is given and
/// smaller, it is the limit and the answer is whole. Otherwise, if some
/// attribute reached the limit, the answer is cut to the time range every
/// such attribute covers completely, across all the answer's entities,
/// and that range is returned for `Content-Range: date-time
/// <start>-<end>/<lastN or *>` (a 206). Emptied attributes stay, empty.
pub fn paginate(all: &mut AnswerReadings, q: &TemporalQuery, page: usize) -> Option<String> {
    let page = page.max(1);
    let limit = match q.last_n {
        Some(n) if n < page => n,
        _ => page,
    };
    let mut reached: Vec<(String, String)> = Vec::new();
    let mut oldest_all: Option<String> = None;
    let mut newest_all: Option<String> = None;
    for readings in all.iter_mut() {
        for r in readings.values_mut() {
            r.retain(|(at, _)| q.in_range(at));
            if r.len() > limit {
                if q.last_n.is_some() {
                    r.drain(..r.len() - limit);
                } else {
                    r.truncate(limit);
                }
            }
            let (Some(first), Some(last)) = (r.first(), r.last()) else {
                continue;
            };
            let (o, n) = (first.0.clone(), last.0.clone());
            if oldest_all.as_ref().is_none_or(|x| o < *x) {
                oldest_all = Some(o.clone());
            }
            if newest_all.as_ref().is_none_or(|x| n > *x) {
                newest_all = Some(n.clone());
            }
            if r.len() >= limit {
                reached.push((o, n));
            }
        }
    }
    if matches!(q.last_n, Some(n) if n < page) || reached.is_empty() {
        return None;
    }
    let (start, end) = if q.last_n.is_some() {
        // Newest first: the range runs back to the latest of the oldest reached.
        let end = reached.iter().map(|(o, _)| o.clone()).max()?;
        let start = match (&q.from, &q.to) {
            (None, Some(to)) => to.clone(),
            (Some(_), Some(to)) => to.clone(),
            _ => newest_all.clone()?,
        };
        (start, end)
    } else {
        let end = reached.iter().map(|(_, n)| n.clone()).min()?;
        let start = match &q.from {
            Some(from) => from.clone(),
            None => oldest_all.clone()?,
        };
        (start, end)
    };
    let (lo, hi) = if start <= end {
        (start.clone(), end.clone())
    } else {
        (end.clone(), start.clone())
    };
    for readings in all.iter_mut() {
        for r in readings.values_mut() {
            r.retain(|(at, _)| *at >= lo && *at <= hi);
        }
    }
    let size = q.last_n.map_or_else(|| "*".to_string(), |n| n.to_string());
    Some(format!(
        "date-time {}-{}/{size}",
        range_instant(&start),
        range_instant(&end)
    ))
}

/// An instant for a `Content-Range`: to the second when that is exact.
fn range_instant(at: &str) -> String {
    match at.strip_suffix(".000000Z") {
        Some(whole) => format!("{whole}Z"),
        None => at.to_string(),
    }
}

fn number(v: &Value) -> Option<f64> {
    v.as_f64().filter(|f| f.is_finite())
}

fn aggregate(method: Aggr, values: &[&Value]) -> Value {
    let nums: Vec<f64> = values.iter().filter_map(|v| number(v)).collect();
    let n = nums.len() as f64;
    let sum: f64 = nums.iter().sum();
    let pick = |x: Option<f64>| x.map(Value::from).unwrap_or(Value::Null);
    match method {
        Aggr::TotalCount => Value::from(values.len()),
        Aggr::DistinctCount => {
            let mut seen: Vec<String> = values.iter().map(|v| v.to_string()).collect();
            seen.sort();
            seen.dedup();
            Value::from(seen.len())
        }
        Aggr::Sum => pick((!nums.is_empty()).then_some(sum)),
        Aggr::Avg => pick((!nums.is_empty()).then(|| sum / n)),
        Aggr::Min => pick(nums.iter().copied().reduce(f64::min)),
        Aggr::Max => pick(nums.iter().copied().reduce(f64::max)),
        Aggr::Sumsq => pick((!nums.is_empty()).then(|| nums.iter().map(|x| x * x).sum())),
        Aggr::Stddev => pick((!nums.is_empty()).then(|| {
            let mean = sum / n;
            (nums.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n).sqrt()
        })),
    }
}

/// One attribute's readings: (normalised instant, instance), oldest first.
pub type Readings = Vec<(String, Instance)>;

/// An entity's temporal representation from its readings per attribute.
///
/// An attribute in `sums` is answered from the store's sums (its readings
/// there are not read).
pub fn render(
    id: &str,
    types: &[String],
    readings: &BTreeMap<String, Readings>,
    sums: &BTreeMap<String, Summary>,
    q: &TemporalQuery,
    ctx: &Context,
    with_context: bool,
) -> R<Value> {
    let mut out = Map::new();
    out.insert("id".into(), id.into());
    let t: Vec<Value> = types.iter().map(|t| ctx.compact(t).into()).collect();
    out.insert(
        "type".into(),
        if t.len() == 1 {
            t[0].clone()
        } else {
            Value::Array(t)
        },
    );
    for (attr, all) in readings {
        if q.attrs.as_ref().is_some_and(|a| !a.contains(attr)) {
            continue;
        }
        if let (Some((methods, period)), Some(s)) = (&q.aggregate, sums.get(attr)) {
            let start = q.bucket_start(&s.first)?;
            out.insert(ctx.compact(attr), summarised(s, methods, *period, start));
            continue;
        }
        let mut kept: Vec<&(String, Instance)> =
            all.iter().filter(|(at, _)| q.in_range(at)).collect();
        if let Some(n) = q.last_n {
            let skip = kept.len().saturating_sub(n);
            kept.drain(..skip);
        }
        // Aggregates read every reading in range (the store bounds how many).
        if q.aggregate.is_none() {
            kept.truncate(MAX_VALUES);
        }
        if kept.is_empty() {
            // An attribute a page cut emptied is still named.
            if all.is_empty() && q.aggregate.is_none() {
                let name = ctx.compact(attr);
                out.insert(
                    name,
                    if q.temporal_values {
                        serde_json::json!({"type": "Property", "values": []})
                    } else {
                        Value::Array(Vec::new())
                    },
                );
            }
            continue;
        }
        let ty = kept[0]
            .1
            .get("type")
            .cloned()
            .unwrap_or_else(|| "Property".into());
        let name = ctx.compact(attr);
        let time_of = |(at, i): &(String, Instance)| -> Value {
            i.get("observedAt")
                .cloned()
                .unwrap_or_else(|| Value::String(at.clone()))
        };
        if let Some((methods, period)) = &q.aggregate {
            let mut m = Map::new();
            m.insert("type".into(), ty);
            let start = q
                .from
                .as_deref()
                .and_then(|f| OffsetDateTime::parse(f, &Rfc3339).ok())
                .or_else(|| OffsetDateTime::parse(&kept[0].0, &Rfc3339).ok())
                .ok_or_else(|| {
                    NgsiError::new(
                        super::ErrorType::InternalError,
                        "a kept instant is unreadable",
                    )
                })?;
            let mut buckets: BTreeMap<i64, Vec<&Value>> = BTreeMap::new();
            for (at, i) in &kept {
                let t = OffsetDateTime::parse(at, &Rfc3339).map_err(|_| {
                    NgsiError::new(
                        super::ErrorType::InternalError,
                        "a kept instant is unreadable",
                    )
                })?;
                let k = match period {
                    Some(p) => {
                        ((t - start).whole_seconds() as f64 / p.as_seconds_f64()).floor() as i64
                    }
                    None => 0,
                };
                if let Some(v) = instance_value(i) {
                    buckets.entry(k).or_default().push(v);
                }
            }
            let last = OffsetDateTime::parse(&kept[kept.len() - 1].0, &Rfc3339).unwrap_or(start);
            for method in methods {
                let series: Vec<Value> = buckets
                    .iter()
                    .map(|(k, values)| {
                        let (a, b) = match period {
                            Some(p) => (start + *p * (*k as f64), start + *p * ((*k + 1) as f64)),
                            None => (start, last),
                        };
                        Value::Array(vec![
                            aggregate(*method, values),
                            range_instant(&format_instant(a)).into(),
                            range_instant(&format_instant(b)).into(),
                        ])
                    })
                    .collect();
                m.insert(method.name().into(), Value::Array(series));
            }
            out.insert(name, Value::Object(m));
        } else if q.temporal_values {
            // One series per datasetId (the default instance's first).
            let mut series: Vec<Series> = Vec::new();
            for r in &kept {
                let d =
                    r.1.get("datasetId")
                        .and_then(Value::as_str)
                        .map(str::to_string);
                match series.iter_mut().find(|(x, _)| *x == d) {
                    Some((_, rs)) => rs.push(r),
                    None => series.push((d, vec![r])),
                }
            }
            series.sort_by_key(|(d, _)| d.is_some());
            let mut rendered: Vec<Value> = Vec::new();
            for (dataset, rs) in &series {
                let values: Vec<Value> = rs
                .iter()
                .map(|r| {
                    let v = instance_value(&r.1).cloned().unwrap_or(Value::Null);
                    // What a value is stays said for JSON, vocabulary and
                    // language properties (as in the simplified form).
                    let v = match ty.as_str().unwrap_or("Property") {
                        "VocabProperty" => serde_json::json!({"vocab": super::map_strings(&v, |s| ctx.compact(s))}),
                        "JsonProperty" => serde_json::json!({"json": v}),
                        "LanguageProperty" => serde_json::json!({"languageMap": v}),
                        "ListRelationship" => super::object_list_uris(&v),
                        _ => v,
                    };
                    Value::Array(vec![v, time_of(r)])
                })
                .collect();
                // The simplified temporal form names the pairs by what they hold.
                let member = match ty.as_str().unwrap_or("Property") {
                    "Relationship" => "objects",
                    "LanguageProperty" => "languageMaps",
                    "VocabProperty" => "vocabs",
                    "JsonProperty" => "jsons",
                    "ListProperty" => "valueLists",
                    "ListRelationship" => "objectLists",
                    _ => "values",
                };
                let mut m = Map::new();
                m.insert("type".into(), ty.clone());
                if let Some(d) = dataset {
                    m.insert("datasetId".into(), d.clone().into());
                }
                m.insert(member.into(), Value::Array(values));
                rendered.push(Value::Object(m));
            }
            out.insert(
                name,
                if rendered.len() == 1 {
                    rendered.remove(0)
                } else {
                    Value::Array(rendered)
                },
            );
        } else {
            let instances: Vec<Value> = kept
                .iter()
                .map(|(_, i)| {
                    let mut i = i.clone();
                    i.remove("createdAt");
                    i.remove("modifiedAt");
                    if i.get("type").and_then(Value::as_str) == Some("VocabProperty")
                        && let Some(v) = i.get("vocab").cloned()
                    {
                        i.insert("vocab".into(), super::map_strings(&v, |s| ctx.compact(s)));
                    }
                    let mut o = Map::new();
                    for (k, v) in i {
                        if k.contains(':') {
                            o.insert(ctx.compact(&k), v);
                        } else {
                            o.insert(k, v);
                        }
                    }
                    Value::Object(o)
                })
                .collect();
            out.insert(name, Value::Array(instances));
        }
    }
    let member = |k: &str| {
        if matches!(k, "id" | "type" | "scope" | "createdAt" | "modifiedAt") {
            k.to_string()
        } else {
            ctx.expand(k)
        }
    };
    if let Some(pick) = &q.pick {
        out.retain(|k, _| pick.contains(&member(k)));
    }
    if let Some(omit) = &q.omit {
        out.retain(|k, _| !omit.contains(&member(k)));
    }
    if with_context {
        out.insert(
            "@context".into(),
            ctx.source
                .clone()
                .unwrap_or_else(|| super::CORE_CONTEXT.into()),
        );
    }
    Ok(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn readings(n: usize) -> BTreeMap<String, Readings> {
        let attr = Context::core().expand("NO2");
        let rows = (0..n)
            .map(|i| {
                let at = format!("2017-11-01T{:02}:{:02}:00Z", i / 60, i % 60);
                let mut inst = Instance::new();
                inst.insert("type".into(), "Property".into());
                inst.insert("value".into(), json!(i as f64));
                inst.insert("observedAt".into(), at.clone().into());
                (instant(&at).unwrap(), inst)
            })
            .collect();
        BTreeMap::from([(attr, rows)])
    }

    fn params(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_long_answer_is_cut_to_a_page_and_says_where() {
        let ctx = Context::core();
        let attr = ctx.expand("NO2");
        // 20 readings, a page of 10: the oldest 10, and the range they cover.
        let mut all = vec![readings(20)];
        let q = TemporalQuery::from_params(&params(&[]), ctx).unwrap();
        let range = paginate(&mut all, &q, 10).unwrap();
        assert_eq!(
            range,
            "date-time 2017-11-01T00:00:00Z-2017-11-01T00:09:00Z/*"
        );
        assert_eq!(all[0][&attr].len(), 10);
        // lastN below the page: whole, and the newest.
        let mut all = vec![readings(20)];
        let q = TemporalQuery::from_params(&params(&[("lastN", "5")]), ctx).unwrap();
        assert!(paginate(&mut all, &q, 10).is_none());
        assert_eq!(all[0][&attr][0].1["value"], json!(15.0));
        // lastN above the page: the newest page, counted back.
        let mut all = vec![readings(20)];
        let q = TemporalQuery::from_params(&params(&[("lastN", "20")]), ctx).unwrap();
        let range = paginate(&mut all, &q, 10).unwrap();
        assert_eq!(
            range,
            "date-time 2017-11-01T00:19:00Z-2017-11-01T00:10:00Z/20"
        );
        assert_eq!(all[0][&attr].len(), 10);
        // Under the page: whole.
        let mut all = vec![readings(5)];
        let q = TemporalQuery::from_params(&params(&[]), ctx).unwrap();
        assert!(paginate(&mut all, &q, 10).is_none());
        assert_eq!(all[0][&attr].len(), 5);
    }

    #[test]
    fn instants_and_durations_read_as_the_standard_says() {
        assert_eq!(
            instant("2017-11-01T11:00:00+01:00").unwrap(),
            "2017-11-01T10:00:00.000000Z"
        );
        assert!(instant("2017-11-01").is_none());
        assert_eq!(duration("PT1H").unwrap(), time::Duration::hours(1));
        assert_eq!(duration("P1DT12H").unwrap(), time::Duration::hours(36));
        assert_eq!(duration("PT15M").unwrap(), time::Duration::minutes(15));
        for bad in ["1H", "P", "PT", "PX", "PT0S", "P1H"] {
            assert!(duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn sums_from_the_store_answer_as_the_readings_do() {
        let ctx = Context::core();
        let r = readings(180);
        for (params_, period) in [
            (
                vec![
                    ("timerel", "after"),
                    ("timeAt", "2017-11-01T00:30:00Z"),
                    ("aggrPeriodDuration", "PT1H"),
                ],
                3600,
            ),
            (
                vec![
                    ("timerel", "before"),
                    ("timeAt", "2017-11-01T02:10:00Z"),
                    ("aggrPeriodDuration", "PT45M"),
                ],
                2700,
            ),
            (
                vec![("timerel", "before"), ("timeAt", "2017-11-01T02:10:00Z")],
                i64::MAX,
            ),
        ] {
            let mut p = params_.clone();
            p.extend([
                ("options", "aggregatedValues"),
                ("aggrMethods", "totalCount,sum,avg,min,max,sumsq"),
            ]);
            let q = TemporalQuery::from_params(&params(&p), ctx).unwrap();
            assert_eq!(q.summable(), Some(period));
            // What the store sums: the readings in range, per bucket.
            let all = &r[&ctx.expand("NO2")];
            let kept: Vec<&(String, Instance)> =
                all.iter().filter(|(at, _)| q.in_range(at)).collect();
            let first = kept[0].0.clone();
            let start = q.bucket_start(&first).unwrap();
            let mut buckets: BTreeMap<i64, BucketSums> = BTreeMap::new();
            for (at, i) in &kept {
                let t = OffsetDateTime::parse(at, &Rfc3339).unwrap();
                let index = (t - start).whole_seconds() / period;
                let x = instance_value(i).and_then(Value::as_f64).unwrap();
                let b = buckets.entry(index).or_insert(BucketSums {
                    index,
                    readings: 0,
                    numbers: 0,
                    sum: 0.0,
                    sumsq: 0.0,
                    min: None,
                    max: None,
                });
                b.readings += 1;
                b.numbers += 1;
                b.sum += x;
                b.sumsq += x * x;
                b.min = Some(b.min.map_or(x, |m| m.min(x)));
                b.max = Some(b.max.map_or(x, |m| m.max(x)));
            }
            let summary = Summary {
                ty: json!("Property"),
                first,
                last: kept[kept.len() - 1].0.clone(),
                buckets: buckets.into_values().collect(),
            };
            let sums = BTreeMap::from([(ctx.expand("NO2"), summary)]);
            let read = render(
                "urn:a",
                &[ctx.expand("T")],
                &r,
                &BTreeMap::new(),
                &q,
                ctx,
                false,
            )
            .unwrap();
            let summed = render("urn:a", &[ctx.expand("T")], &r, &sums, &q, ctx, false).unwrap();
            assert_eq!(summed, read, "{p:?}");
        }
        // What reads every value is not summed.
        for more in ["distinctCount", "stddev"] {
            let q = TemporalQuery::from_params(
                &params(&[
                    ("options", "aggregatedValues"),
                    ("aggrMethods", more),
                    ("aggrPeriodDuration", "PT1H"),
                ]),
                ctx,
            )
            .unwrap();
            assert_eq!(q.summable(), None);
        }
    }

    #[test]
    fn temporal_values_last_n_ranges_and_hourly_aggregates() {
        let ctx = Context::core();
        let r = readings(180); // three hours, one value a minute
        let q = TemporalQuery::from_params(
            &params(&[
                ("timerel", "between"),
                ("timeAt", "2017-11-01T01:00:00Z"),
                ("endTimeAt", "2017-11-01T02:00:00Z"),
                ("options", "temporalValues"),
            ]),
            ctx,
        )
        .unwrap();
        let v = render(
            "urn:a",
            &[ctx.expand("T")],
            &r,
            &BTreeMap::new(),
            &q,
            ctx,
            false,
        )
        .unwrap();
        let values = v["NO2"]["values"].as_array().unwrap();
        assert_eq!(values.len(), 60);
        assert_eq!(values[0], json!([60.0, "2017-11-01T01:00:00Z"]));
        let q = TemporalQuery::from_params(&params(&[("lastN", "2")]), ctx).unwrap();
        let v = render(
            "urn:a",
            &[ctx.expand("T")],
            &r,
            &BTreeMap::new(),
            &q,
            ctx,
            false,
        )
        .unwrap();
        assert_eq!(v["NO2"].as_array().unwrap().len(), 2);
        assert_eq!(v["NO2"][1]["value"], 179.0);
        let q = TemporalQuery::from_params(
            &params(&[
                ("timerel", "after"),
                ("timeAt", "2017-11-01T00:00:00Z"),
                ("options", "aggregatedValues"),
                ("aggrMethods", "avg,max,totalCount"),
                ("aggrPeriodDuration", "PT1H"),
            ]),
            ctx,
        )
        .unwrap();
        let v = render(
            "urn:a",
            &[ctx.expand("T")],
            &r,
            &BTreeMap::new(),
            &q,
            ctx,
            false,
        )
        .unwrap();
        assert_eq!(
            v["NO2"]["avg"][1],
            json!([89.5, "2017-11-01T01:00:00Z", "2017-11-01T02:00:00Z"])
        );
        assert_eq!(v["NO2"]["max"][2][0], 179.0);
        assert_eq!(v["NO2"]["totalCount"][0][0], 60);
        assert!(
            TemporalQuery::from_params(
                &params(&[("timerel", "between"), ("timeAt", "2017-11-01T00:00:00Z")]),
                ctx
            )
            .is_err()
        );
        assert!(
            TemporalQuery::from_params(
                &params(&[("options", "aggregatedValues"), ("aggrMethods", "median")]),
                ctx
            )
            .is_err()
        );
    }
}
