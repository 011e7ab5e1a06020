//! The dataset page's content section: the latest version, its data quality
//! (drawn as SVG on the server), the row counts over versions, a map for
//! geometry, timeliness, downloads, and the owner's upload form.
//!
//! Charts are inline SVG with a title and a description, and every figure in
//! a chart is also in a table beside it, so nothing depends on seeing colour
//! or shape. The upload form needs script (`/static/upload.js`) for its
//! progress bar; without script the page says how else to publish.

use citytrust_model::ProblemCode;
use std::fmt::Write as _;

use axum::routing::{get, post};
use axum::{Json, Router};

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use citytrust_model::{Actor, Dataset};
use citytrust_query::VersionChoice;
use citytrust_query::export::{OutputFormat, Slice};
use citytrust_query::quality::ColumnQuality;
use citytrust_service::ServiceError;
use citytrust_service::content::{ReadRequest, VersionInfo, may_read_content};
use citytrust_service::feedback::{FeedbackAnswer, FeedbackInput};
use subtle::ConstantTimeEq;

use crate::AppState;
use crate::content::{UploadParams, receive_version};
use crate::error::ApiError;
use crate::extract::ApiQuery;
use crate::web::SignedForm;
use crate::web::charts::{self, Bar};
use crate::web::{PageError, Viewer};

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/datasets/{id}/versions",
            post(upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route("/static/upload.js", get(upload_script))
        .route("/datasets/{id}/reassessment", post(reassess))
        .route("/datasets/{id}/feedback", post(report))
        .route("/datasets/{id}/download", post(download))
        .route("/datasets/{id}/table", post(table))
        .route("/datasets/{id}/feedback/{feedback}/answer", post(answer))
}

/// What the dataset page shows of the content.
#[derive(Default)]
pub struct ContentView {
    pub has_content: bool,
    pub may_read: bool,
    /// Why the viewer may not read the rows.
    pub read_note: String,
    pub values_withheld: bool,
    pub version: i64,
    pub rows: String,
    pub rejected: i64,
    pub published: String,
    pub input_format: String,
    pub size: String,
    pub sha256: String,
    pub table: String,
    pub downloads: Vec<(String, String)>,
    pub columns: Vec<ColumnRow>,
    pub completeness_svg: String,
    pub findings: Vec<String>,
    pub versions: Vec<VersionRow>,
    pub rows_svg: String,
    pub map_svg: String,
    pub timeliness: String,
    pub overdue: bool,
    /// The version just published through the form, to confirm it.
    pub just_published: Option<i64>,
    pub may_upload: bool,
    pub csrf: String,
    /// Inputs of a derived dataset: (text, link).
    pub derived_from: Vec<(String, String)>,
    pub derived_sql: String,
    pub needs_reassessment: bool,
    pub inherited: String,
    pub reassessment_note: String,
    /// The trustees have assessed it: it no longer carries its inputs' terms.
    pub released_by_trustees: bool,
    /// The reader may re-assess it now (a maintainer while it awaits
    /// re-assessment; a trustee until the trustees have released it).
    pub may_reassess: bool,
    /// (value, label, selected) for the re-assessment form: for a
    /// maintainer only its inherited class and stricter ones.
    pub spectra: Vec<(String, String, bool)>,
    pub personal_data: bool,
    pub revision: i64,
    /// Signed in: may report an error.
    pub may_report: bool,
    pub reports: Vec<ReportRow>,
    pub report_columns: Vec<String>,
    pub report_versions: Vec<i64>,
    pub notice: String,
    /// Signed in, data not open: download for a purpose (checked against the agreements in force).
    pub may_ask_download: bool,
    /// Signed in, and the data may be asked for: a thresholded table form.
    pub may_ask_table: bool,
    /// (id, name) of the purposes, the viewer's agreements' purposes first.
    pub purposes: Vec<(String, String)>,
    /// The re-identification risk on the declared quasi-identifiers (R-PRV-6).
    pub risk: Option<RiskView>,
}

/// The risk report as the dataset page shows it (counts and shares only).
pub struct RiskView {
    pub quasi: String,
    pub missing: String,
    pub summary: String,
    pub records: String,
    pub classes: String,
    pub unique: String,
    pub prosecutor_highest: String,
    pub prosecutor_average: String,
    pub at_risk: String,
    pub journalist_highest: String,
    pub marketer: String,
    /// (columns, classes, unique records, uniqueness, records at risk) of every
    /// measured combination, most singling-out first.
    pub combinations: Vec<(String, String, String, String, String)>,
}

fn risk_view(r: &citytrust_query::risk::RiskStatement) -> RiskView {
    let o = &r.overall;
    let summary = if o.unique_records == 0 && o.prosecutor.records_at_risk == 0 {
        format!(
            "No record is unique on these columns, and none has a re-identification risk above {}.",
            percent(o.threshold)
        )
    } else {
        format!(
            "{} of {} records ({}) are unique on these columns: anyone who knows those facts about a person in the data finds their row. {} records ({}) have a re-identification risk above {}. This data is not fit to be published open as it is.",
            thousands(o.unique_records as i64),
            thousands(o.records as i64),
            percent(o.uniqueness),
            thousands(o.prosecutor.records_at_risk as i64),
            percent(o.prosecutor.share_at_risk),
            percent(o.threshold)
        )
    };
    RiskView {
        quasi: r.quasi_identifiers.join(", "),
        missing: r.missing.join(", "),
        summary,
        records: thousands(o.records as i64),
        classes: thousands(o.equivalence_classes as i64),
        unique: format!(
            "{} ({})",
            thousands(o.unique_records as i64),
            percent(o.uniqueness)
        ),
        prosecutor_highest: percent(o.prosecutor.highest),
        prosecutor_average: percent(o.prosecutor.average),
        at_risk: format!(
            "{} ({})",
            thousands(o.prosecutor.records_at_risk as i64),
            percent(o.prosecutor.share_at_risk)
        ),
        journalist_highest: percent(o.journalist.highest),
        marketer: percent(o.marketer),
        combinations: r
            .combinations
            .iter()
            .map(|c| {
                (
                    c.columns.join(" + "),
                    thousands(c.equivalence_classes as i64),
                    thousands(c.unique_records as i64),
                    percent(c.uniqueness),
                    thousands(c.records_at_risk as i64),
                )
            })
            .collect(),
    }
}

pub struct ReportRow {
    pub id: String,
    pub about: String,
    pub description: String,
    pub status: String,
    pub open: bool,
    pub response: String,
    pub resolved_version: Option<i64>,
    pub reported: String,
    pub reporter: String,
}

pub struct ColumnRow {
    pub name: String,
    pub kind: String,
    pub completeness: String,
    pub nulls: String,
    pub range: String,
}

pub struct VersionRow {
    pub version: i64,
    pub rows: String,
    pub rejected: i64,
    pub published: String,
    pub input_format: String,
    /// Empty, or when and why the version was removed.
    pub removed: String,
}

/// Build the content section for `viewer`.
pub async fn content_view(
    state: &AppState,
    actor: &Actor,
    dataset: &Dataset,
    may_upload: bool,
    csrf: String,
    published: Option<i64>,
    notice: &str,
) -> Result<ContentView, PageError> {
    let versions = state.service.list_versions(actor, &dataset.id).await?;
    let timeliness = state.service.timeliness(&dataset.id).await?;
    let mut view = ContentView {
        may_upload,
        csrf,
        overdue: timeliness.overdue,
        timeliness: match timeliness.state {
            "overdue" => format!(
                "Overdue: a new version was due by {} ({} updates are promised).",
                date_of(timeliness.next_due_at.as_deref().unwrap_or("")),
                enum_label(&timeliness.update_frequency)
            ),
            "on_time" => format!(
                "On time: the next version is due by {} ({} updates).",
                date_of(timeliness.next_due_at.as_deref().unwrap_or("")),
                enum_label(&timeliness.update_frequency)
            ),
            "awaiting_first_version" => format!(
                "No version yet; the first is due by {}.",
                date_of(timeliness.next_due_at.as_deref().unwrap_or(""))
            ),
            _ => "No refresh timetable is declared (the update frequency is irregular, never or unknown).".into(),
        },
        may_report: !matches!(actor, Actor::Anonymous),
        notice: match notice {
            "reported" => "Thank you: your report is recorded, and the dataset's maintainers will answer it here.".into(),
            "answered" => "The answer is recorded, and the reporter can see it.".into(),
            "reassessed" => "The re-assessment is recorded; the dataset is now shared as its class says.".into(),
            _ => String::new(),
        },
        ..ContentView::default()
    };
    if view.may_report {
        view.reports = state
            .service
            .list_feedback(actor, &dataset.id)
            .await?
            .into_iter()
            .map(|f| {
                let mut about = Vec::new();
                if let Some(v) = f.version {
                    about.push(format!("version {v}"));
                }
                if let Some(c) = &f.column {
                    about.push(format!("column {c}"));
                }
                if let Some(r) = f.row {
                    about.push(format!("row {r}"));
                }
                ReportRow {
                    open: f.status == "open",
                    about: if about.is_empty() {
                        "the dataset".into()
                    } else {
                        about.join(", ")
                    },
                    status: match f.status.as_str() {
                        "accepted" => "Accepted".into(),
                        "rejected" => "Rejected".into(),
                        _ => "Awaiting an answer".into(),
                    },
                    response: f.response.unwrap_or_default(),
                    resolved_version: f.resolved_version,
                    reported: date_of(&f.reported_at),
                    reporter: if actor.username() == Some(f.reported_by.as_str()) {
                        "you".into()
                    } else {
                        f.reported_by
                    },
                    id: f.id,
                    description: f.description,
                }
            })
            .collect();
        view.report_versions = versions.iter().map(|v| v.version).collect();
        view.report_columns = versions
            .first()
            .map(|v| v.columns.iter().map(|c| c.name.clone()).collect())
            .unwrap_or_default();
    }
    if let Some(d) = &dataset.metadata.derivation {
        view.derived_from = d
            .inputs
            .iter()
            .map(|i| {
                (
                    format!("{} (version {})", i.dataset_id, i.version),
                    format!("/datasets/{}", i.dataset_id),
                )
            })
            .collect();
        view.derived_sql = d.sql.clone();
        view.needs_reassessment = d.needs_reassessment;
        view.inherited = d.inherited_spectrum.label().to_string();
        view.reassessment_note = d.reassessment_note.clone().unwrap_or_default();
        view.released_by_trustees = d.released_by_trustees;
        let trustee = citytrust_model::authz::may_reclassify(actor).is_ok();
        view.may_reassess =
            (trustee && !d.released_by_trustees) || (view.may_upload && d.needs_reassessment);
        view.spectra = citytrust_model::Spectrum::ALL
            .iter()
            .filter(|s| trustee || **s >= d.inherited_spectrum)
            .map(|s| {
                (
                    s.as_str().to_string(),
                    s.label().to_string(),
                    *s == dataset.metadata.spectrum,
                )
            })
            .collect();
        view.personal_data = dataset.metadata.personal_data;
        view.revision = dataset.revision;
    }
    view.versions = versions
        .iter()
        .map(|v| VersionRow {
            version: v.version,
            rows: thousands(v.rows),
            rejected: v.rejected,
            published: date_of(&v.created_at),
            input_format: v.input_format.clone(),
            removed: v
                .removed
                .as_ref()
                .map(|r| match r.reason.as_str() {
                    "retention" => format!(
                        "removed {}: it held readings past retention",
                        date_of(&r.at)
                    ),
                    _ => format!("removed {}", date_of(&r.at)),
                })
                .unwrap_or_default(),
        })
        .collect();
    // The latest version that can still be read.
    let Some(latest) = versions.iter().find(|v| v.removed.is_none()) else {
        return Ok(view);
    };
    view.has_content = true;
    match may_read_content(actor, dataset) {
        Ok(()) => view.may_read = true,
        Err(why) => view.read_note = why,
    }
    view.values_withheld = latest.values_withheld;
    view.version = latest.version;
    view.rows = thousands(latest.rows);
    view.rejected = latest.rejected;
    view.published = date_of(&latest.created_at);
    view.input_format = latest.input_format.clone();
    view.size = human_bytes(latest.bytes);
    view.sha256 = latest.sha256.clone();
    view.table = citytrust_query::sql::table_name(&dataset.id);
    view.just_published = published.filter(|p| versions.iter().any(|v| v.version == *p));
    if view.may_read {
        let base = format!("/api/v1/datasets/{}/data", dataset.id);
        view.downloads = vec![
            ("CSV".into(), format!("{base}?format=csv")),
            (
                "JSON (first 1,000 rows, paged)".into(),
                format!("{base}?format=json"),
            ),
            ("NDJSON".into(), format!("{base}?format=ndjson")),
            ("Parquet".into(), format!("{base}?format=parquet")),
        ];
        view.map_svg = state
            .service
            .map_preview(actor, &dataset.id, Some(latest.version))
            .await?
            .unwrap_or_default();
        if !view.map_svg.is_empty() {
            view.downloads
                .insert(3, ("GeoJSON".into(), format!("{base}?format=geojson")));
        }
    }
    // Data that is not open is downloaded for a purpose, through the form
    // (the owner's members read without an agreement, but still for a purpose).
    let spectrum = dataset.metadata.spectrum;
    if actor.username().is_some()
        && spectrum != citytrust_model::Spectrum::Open
        && (view.may_read || spectrum != citytrust_model::Spectrum::Closed)
    {
        view.downloads.clear();
        view.may_ask_download = true;
    }
    // A table of counts (the aggregate level) is asked for the same way.
    if actor.username().is_some()
        && (view.may_read || spectrum != citytrust_model::Spectrum::Closed)
    {
        view.may_ask_table = true;
        view.purposes = state
            .service
            .purposes()
            .await?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
    }
    view.columns = latest.quality.columns.iter().map(column_row).collect();
    view.completeness_svg = completeness_chart(&latest.quality.columns);
    view.findings = findings(latest);
    view.risk = latest.quality.risk.as_ref().map(risk_view);
    view.rows_svg = rows_chart(&versions);
    Ok(view)
}

fn enum_label<T: serde::Serialize>(v: &T) -> String {
    match serde_json::to_value(v) {
        Ok(serde_json::Value::String(s)) => s.replace('_', " "),
        _ => String::new(),
    }
}

fn date_of(rfc3339: &str) -> String {
    match rfc3339.get(..16) {
        Some(s) => s.replace('T', " "),
        None => rfc3339.to_string(),
    }
}

fn thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

fn human_bytes(n: i64) -> String {
    let n = n.max(0) as f64;
    if n < 1024.0 {
        format!("{n} bytes")
    } else if n < 1024.0 * 1024.0 {
        format!("{:.1} KiB", n / 1024.0)
    } else if n < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.1} MiB", n / 1024.0 / 1024.0)
    } else {
        format!("{:.2} GiB", n / 1024.0 / 1024.0 / 1024.0)
    }
}

fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p > 99.95 && share < 1.0 {
        "99.9%".into()
    } else if p < 0.05 && share > 0.0 {
        "0.1%".into()
    } else if (p - p.round()).abs() < 0.05 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

fn column_row(c: &ColumnQuality) -> ColumnRow {
    let range = match (&c.min, &c.max) {
        (Some(min), Some(max)) if min == max => min.clone(),
        (Some(min), Some(max)) => format!("{min} – {max}"),
        _ => String::new(),
    };
    ColumnRow {
        name: c.name.clone(),
        kind: enum_label(&c.column_type),
        completeness: percent(c.completeness),
        nulls: thousands(c.nulls as i64),
        range,
    }
}

/// What a reader should know about this version's quality, in sentences.
fn findings(v: &VersionInfo) -> Vec<String> {
    let mut out = Vec::new();
    let q = &v.quality;
    for c in &q.columns {
        if let Some(o) = c.outliers.as_ref().filter(|o| o.count > 0) {
            let mut s = format!(
                "{}: {} outlier{} (beyond three interquartile ranges",
                c.name,
                thousands(o.count as i64),
                if o.count == 1 { "" } else { "s" }
            );
            if let (Some(lo), Some(hi)) = (o.low_fence, o.high_fence) {
                let _ = write!(s, ": below {lo} or above {hi}");
            }
            s.push(')');
            if !o.examples.is_empty() {
                let examples: Vec<String> =
                    o.examples.iter().take(5).map(|e| e.to_string()).collect();
                let _ = write!(s, ", for example {}", examples.join(", "));
            }
            s.push('.');
            out.push(s);
        }
        if let Some(val) = c.validity.as_ref().filter(|v| v.violations > 0) {
            let bound = match (val.range.min, val.range.max) {
                (Some(a), Some(b)) => format!("{a} to {b}"),
                (Some(a), None) => format!("at least {a}"),
                (None, Some(b)) => format!("at most {b}"),
                (None, None) => "the declared range".into(),
            };
            out.push(format!(
                "{}: {} value{} outside the valid range ({bound}).",
                c.name,
                thousands(val.violations as i64),
                if val.violations == 1 { "" } else { "s" }
            ));
        }
        if let Some(t) = &c.time {
            if let Some(gap) = t.largest_gap_seconds.filter(|g| *g > 0) {
                out.push(format!(
                    "{}: the largest gap between consecutive times is {}.",
                    c.name,
                    duration_text(gap)
                ));
            }
            if let Some(cov) = t.period_coverage.filter(|c| *c < 0.999) {
                out.push(format!(
                    "{}: the data covers {} of the declared period.",
                    c.name,
                    percent(cov)
                ));
            }
        }
    }
    if let Some(k) = &q.keys {
        out.push(if k.unique {
            format!("The key ({}) is unique.", k.columns.join(", "))
        } else {
            format!(
                "The key ({}) is not unique: {} rows share a key value with another row.",
                k.columns.join(", "),
                thousands(k.duplicate_rows as i64)
            )
        });
    }
    if v.rejected > 0 {
        out.push(format!(
            "{} bad row{} set aside in quarantine at upload.",
            thousands(v.rejected),
            if v.rejected == 1 { " was" } else { "s were" }
        ));
    }
    out
}

fn duration_text(seconds: i64) -> String {
    let (d, h, m) = (
        seconds / 86_400,
        seconds % 86_400 / 3600,
        seconds % 3600 / 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{seconds} seconds"),
        (0, 0, m) => format!("{m} minutes"),
        (0, h, m) => format!("{h} h {m} min"),
        (d, h, _) => format!("{d} days {h} h"),
    }
}

/// Completeness per column as horizontal bars.
fn completeness_chart(columns: &[ColumnQuality]) -> String {
    let bars: Vec<Bar> = columns
        .iter()
        .map(|c| Bar {
            label: c.name.clone(),
            share: c.completeness,
            text: percent(c.completeness),
            low: c.completeness < 0.9,
        })
        .collect();
    charts::horizontal("quality-chart", "Completeness per column", &bars)
}

/// Rows per version as vertical bars, oldest on the left (at most the latest 24).
fn rows_chart(versions: &[VersionInfo]) -> String {
    let shown: Vec<(String, i64)> = versions
        .iter()
        .take(24)
        .rev()
        .map(|v| (format!("v{}", v.version), v.rows))
        .collect();
    charts::vertical("rows-chart", "Rows per version", "rows", &shown)
}

/// `POST /datasets/{id}/versions`: the upload form's script sends the file
/// as the body, with the session's CSRF token in `X-CSRF-Token`. Answers in
/// JSON like the API (201 with the version, or a problem document).
pub async fn upload(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    ApiQuery(params): ApiQuery<UploadParams>,
    request: Request,
) -> Result<Response, ApiError> {
    let Some(session) = viewer.session() else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            ProblemCode::Unauthenticated,
            "sign in to publish a version",
        ));
    };
    let sent = request
        .headers()
        .get("x-csrf-token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if sent.is_empty() || !bool::from(sent.as_bytes().ct_eq(session.csrf_token.as_bytes())) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            ProblemCode::Csrf,
            "the form had expired or did not come from this site: reload the page and try again",
        ));
    }
    let actor = session.actor.clone();
    let info = receive_version(&state, &actor, &id, params, request).await?;
    Ok((StatusCode::CREATED, Json(info)).into_response())
}

/// `POST /datasets/{id}/download`: a signed-in download of data that is not
/// open, for the purpose chosen in the form. The read path checks it against
/// the decision in force (and logs it) exactly as an API read; a refusal is a
/// page that says which rule refused it.
pub async fn download(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> Result<Response, PageError> {
    let (form, session) = (&signed.form, signed.session());
    let purpose = form.one("purpose");
    if purpose.is_empty() {
        return Err(PageError::page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose what the data will be used for.",
        ));
    }
    let format = match form.one("format").as_str() {
        "csv" | "" => OutputFormat::Csv,
        "ndjson" => OutputFormat::Ndjson,
        "parquet" => OutputFormat::Parquet,
        other => {
            return Err(PageError::page(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "'{}' is not a download format here: choose CSV, NDJSON or Parquet.",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    let level = match form.one("level").as_str() {
        "" | "identified" => citytrust_model::AccessLevel::Identified,
        "pseudonymised" => citytrust_model::AccessLevel::Pseudonymised,
        "anonymised" => citytrust_model::AccessLevel::Anonymised,
        other => {
            return Err(PageError::page(
                StatusCode::UNPROCESSABLE_ENTITY,
                format!(
                    "'{}' is not a level rows are downloaded at: choose identified, \
                     pseudonymised or anonymised rows.",
                    other.chars().take(40).collect::<String>()
                ),
            ));
        }
    };
    let served = state
        .service
        .read_content(
            &session.actor,
            &id,
            ReadRequest {
                version: VersionChoice::Latest,
                format,
                slice: Slice {
                    offset: 0,
                    limit: None,
                },
                purpose: Some(purpose),
                level: Some(level),
            },
        )
        .await
        .map_err(refusal_page)?;
    Ok(crate::content::served_response(served, HeaderMap::new()))
}

/// A refusal as a page that names the rule; other errors as usual.
fn refusal_page(e: ServiceError) -> PageError {
    match e {
        ServiceError::Refused { rule, message } => PageError::page(
            StatusCode::FORBIDDEN,
            match rule {
                Some(rule) => format!("Refused by the charter's rule “{rule}”: {message}"),
                None => format!("Refused: {message}"),
            },
        ),
        ServiceError::Unprocessable { message, .. } => {
            PageError::page(StatusCode::UNPROCESSABLE_ENTITY, message)
        }
        other => other.into(),
    }
}

/// `POST /datasets/{id}/table`: a thresholded table of counts by one or
/// two columns, as CSV — the aggregate level, checked, suppressed and
/// logged exactly as `POST /api/v1/datasets/{id}/aggregate`.
pub async fn table(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> Result<Response, PageError> {
    let (form, session) = (&signed.form, signed.session());
    let purpose = form.opt("purpose");
    let mut by = Vec::new();
    for field in ["by", "by2"] {
        if let Some(c) = form.opt(field) {
            by.push(citytrust_query::levels::GroupKey::Column(c));
        }
    }
    if by.is_empty() {
        return Err(PageError::page(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Choose the column to count by.",
        ));
    }
    let served = state
        .service
        .aggregate(
            &session.actor,
            &id,
            citytrust_service::levels::AggregateRequest {
                version: VersionChoice::Latest,
                purpose,
                by,
                sum: None,
                threshold: None,
                format: OutputFormat::Csv,
            },
        )
        .await
        .map_err(refusal_page)?;
    Ok(crate::content::served_response(served, HeaderMap::new()))
}

/// `POST /datasets/{id}/feedback`: the report form.
pub async fn report(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> Result<Response, PageError> {
    let (form, session) = (&signed.form, signed.session());
    let number = |name: &str| -> Result<Option<i64>, PageError> {
        form.opt(name)
            .map(|v| {
                v.parse::<i64>().map_err(|_| {
                    PageError::page(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        format!("The {name} must be a number."),
                    )
                })
            })
            .transpose()
    };
    let input = FeedbackInput {
        version: number("version")?,
        column: form.opt("column"),
        row: number("row")?,
        description: form.one("description"),
    };
    state
        .service
        .report_feedback(&session.actor, &id, input)
        .await?;
    Ok(Redirect::to(&format!("/datasets/{id}?notice=reported#feedback")).into_response())
}

/// `POST /datasets/{id}/feedback/{feedback}/answer`: a maintainer's answer form.
pub async fn answer(
    State(state): State<AppState>,
    Path((id, feedback)): Path<(String, String)>,
    signed: SignedForm,
) -> Result<Response, PageError> {
    let (form, session) = (&signed.form, signed.session());
    let resolved_version = match form.opt("resolved_version") {
        None => None,
        Some(v) => Some(v.parse::<i64>().map_err(|_| {
            PageError::page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "The correcting version must be a number.",
            )
        })?),
    };
    let answer = FeedbackAnswer {
        decision: form.one("decision"),
        response: form.one("response"),
        resolved_version,
    };
    state
        .service
        .answer_feedback(&session.actor, &id, &feedback, answer)
        .await?;
    Ok(Redirect::to(&format!("/datasets/{id}?notice=answered#feedback")).into_response())
}

/// `POST /datasets/{id}/reassessment`: a maintainer chooses a derived dataset's class.
pub async fn reassess(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> Result<Response, PageError> {
    let (form, session) = (&signed.form, signed.session());
    let spectrum = citytrust_model::Spectrum::ALL
        .into_iter()
        .find(|s| s.as_str() == form.one("spectrum"))
        .ok_or_else(|| PageError::page(StatusCode::UNPROCESSABLE_ENTITY, "Choose a class."))?;
    let revision = form.one("revision").parse::<i64>().ok();
    state
        .service
        .reassess_dataset(
            &session.actor,
            &id,
            citytrust_service::lineage::Reassessment {
                spectrum,
                personal_data: Some(form.opt("personal_data").is_some()),
                note: form.one("note"),
                expected_revision: revision,
            },
        )
        .await?;
    Ok(Redirect::to(&format!("/datasets/{id}?notice=reassessed#content")).into_response())
}

const UPLOAD_SCRIPT: &str = include_str!("../../static/upload.js");

pub async fn upload_script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=3600"),
            ),
        ],
        UPLOAD_SCRIPT,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(26880), "26,880");
        assert_eq!(thousands(-1234567), "-1,234,567");
        assert_eq!(thousands(999), "999");
        assert_eq!(percent(1.0), "100%");
        assert_eq!(percent(0.9996), "99.9%");
        assert_eq!(percent(0.0001), "0.1%");
        assert_eq!(percent(0.5), "50%");
        assert_eq!(percent(0.123), "12.3%");
        assert_eq!(charts::compact(5_000_000), "5.0M");
        assert_eq!(duration_text(90_061), "1 days 1 h");
        assert_eq!(human_bytes(2048), "2.0 KiB");
    }

    #[test]
    fn column_names_in_charts_are_escaped() {
        let c = ColumnQuality {
            name: "<script>".into(),
            column_type: citytrust_query::ColumnType::Text,
            nulls: 1,
            completeness: 0.5,
            min: None,
            max: None,
            mean: None,
            stddev: None,
            outliers: None,
            validity: None,
            time: None,
        };
        let svg = completeness_chart(&[c]);
        assert!(!svg.contains("<script>"));
        assert!(svg.contains("&lt;script&gt;"));
        assert!(svg.contains("bar-low"));
    }
}
