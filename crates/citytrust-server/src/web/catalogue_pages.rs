//! The catalogue's pages: the home page, search with facets, a dataset's
//! page (its record and, through `content_pages`, its content), and the
//! dataset form (register and edit).

use super::*;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(home))
        .route("/datasets", get(search_page).post(create_dataset))
        .route("/datasets/new", get(new_dataset_form))
        .route("/datasets/{id}", get(dataset_page).post(update_dataset))
        .route("/datasets/{id}/edit", get(edit_dataset_form))
        .route("/federated/{id}", get(federated_page))
        .route("/federated/{id}/ask", post(ask_remote))
        .route("/remote-requests/{pid}/data", get(remote_data))
}

// ---- home -----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "home.html")]
struct HomePage {
    nav: Nav,
    total: usize,
    spectrum: Vec<FacetLink>,
    themes: Vec<FacetLink>,
    recent: Vec<Card>,
}

async fn home(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let all = state.service.search(&SearchQuery {
        sort: citytrust_service::SortOrder::Updated,
        page: 1,
        per_page: 6,
        ..SearchQuery::default()
    })?;
    let orgs = organization_names(&state).await?;
    let base = SearchParams::default();
    render(&HomePage {
        nav: viewer.nav("home"),
        total: all.total,
        spectrum: facet_links(&base, "spectrum", &all.facets.spectrum),
        themes: facet_links(&base, "theme", &all.facets.theme),
        recent: all.items.iter().map(|d| card(d, &orgs)).collect(),
    })
}

// ---- catalogue search ----------------------------------------------------------

struct FacetLink {
    label: String,
    value: String,
    count: usize,
    href: String,
    active: bool,
}

struct FacetGroup {
    title: &'static str,
    links: Vec<FacetLink>,
}

struct PageLink {
    label: String,
    href: String,
    current: bool,
}

#[derive(Template)]
#[template(path = "datasets.html")]
struct SearchPage {
    nav: Nav,
    q: String,
    sort: String,
    total: usize,
    results: Vec<Card>,
    facets: Vec<FacetGroup>,
    active_filters: Vec<FacetLink>,
    pages: Vec<PageLink>,
    error: String,
    /// Entries from other catalogues: the page's results when a remote
    /// source is chosen, else the first few matches.
    federated: Vec<FederatedCard>,
    /// How many entries of other catalogues match (shown when no source is chosen).
    federated_total: usize,
    /// A remote source is chosen: the results are its entries.
    remote: bool,
}

struct FederatedCard {
    id: String,
    title: String,
    summary: String,
    source: String,
    publisher: String,
    access: String,
    formats: String,
    modified: String,
}

fn federated_card(e: &FederatedEntry) -> FederatedCard {
    let mut summary: String = e.description.chars().take(220).collect();
    if e.description.chars().count() > 220 {
        summary.push('…');
    }
    FederatedCard {
        id: e.id.clone(),
        title: e.title.clone(),
        summary,
        source: e.source.catalogue_name.clone(),
        publisher: e.publisher.clone().unwrap_or_default(),
        access: e
            .access_right
            .map(|a| a.label().to_string())
            .unwrap_or_default(),
        formats: e.formats.join(", "),
        modified: e
            .modified
            .as_deref()
            .and_then(|m| m.get(..10))
            .unwrap_or("")
            .to_string(),
    }
}

fn params_get<'a>(p: &'a SearchParams, name: &str) -> &'a Option<String> {
    match name {
        "q" => &p.q,
        "theme" => &p.theme,
        "spectrum" => &p.spectrum,
        "organization" => &p.organization,
        "format" => &p.format,
        "personal_data" => &p.personal_data,
        "sort" => &p.sort,
        "page" => &p.page,
        "source" => &p.source,
        _ => &p.per_page,
    }
}

fn params_set(p: &mut SearchParams, name: &str, value: Option<String>) {
    match name {
        "q" => p.q = value,
        "theme" => p.theme = value,
        "spectrum" => p.spectrum = value,
        "organization" => p.organization = value,
        "format" => p.format = value,
        "personal_data" => p.personal_data = value,
        "sort" => p.sort = value,
        "page" => p.page = value,
        "source" => p.source = value,
        _ => p.per_page = value,
    }
}

fn search_href(p: &SearchParams) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for name in [
        "q",
        "theme",
        "spectrum",
        "organization",
        "format",
        "personal_data",
        "sort",
        "page",
        "per_page",
        "source",
    ] {
        if let Some(v) = params_get(p, name).as_deref().filter(|v| !v.is_empty()) {
            s.append_pair(name, v);
        }
    }
    let qs = s.finish();
    if qs.is_empty() {
        "/datasets".to_string()
    } else {
        format!("/datasets?{qs}")
    }
}

fn with_param(p: &SearchParams, name: &str, value: Option<String>) -> String {
    let mut next = SearchParams {
        q: p.q.clone(),
        theme: p.theme.clone(),
        spectrum: p.spectrum.clone(),
        organization: p.organization.clone(),
        format: p.format.clone(),
        personal_data: p.personal_data.clone(),
        sort: p.sort.clone(),
        page: None,
        per_page: p.per_page.clone(),
        source: p.source.clone(),
    };
    params_set(&mut next, name, value);
    search_href(&next)
}

fn facet_links(p: &SearchParams, name: &str, counts: &[FacetCount]) -> Vec<FacetLink> {
    let current = params_get(p, name).clone().unwrap_or_default();
    counts
        .iter()
        .map(|c| {
            let active = current == c.value;
            let href = with_param(p, name, if active { None } else { Some(c.value.clone()) });
            FacetLink {
                label: c.label.clone(),
                value: c.value.clone(),
                count: c.count,
                href,
                active,
            }
        })
        .collect()
}

async fn search_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let raw = raw.unwrap_or_default();
    let mut params: SearchParams = serde_urlencoded::from_str(&raw).unwrap_or_default();
    let nav = viewer.nav("datasets");
    // A remote source's entries are searched apart; the local search sees `source` only as "local".
    let remote_source = params
        .source
        .clone()
        .filter(|s| !s.is_empty() && s != "local");
    let chosen_source = params.source.take();
    let (query, error) = match params.to_query() {
        Ok(q) => (q, String::new()),
        Err(e) => (
            SearchQuery {
                page: 1,
                per_page: 20,
                ..SearchQuery::default()
            },
            e.detail,
        ),
    };
    params.source = chosen_source;
    let results = state.service.search(&query)?;
    let orgs = organization_names(&state).await?;
    let remote = remote_source.is_some();
    let fed = state.service.search_federated(&FederatedQuery {
        q: Some(query.text.clone()),
        source: remote_source,
        page: Some(if remote { query.page } else { 1 }),
        per_page: Some(if remote { query.per_page } else { 5 }),
    })?;
    let mut sources = vec![FacetCount {
        value: "local".into(),
        label: "This city".into(),
        count: results.total,
    }];
    sources.extend(fed.sources.iter().cloned());
    let f = &results.facets;
    let source_group = FacetGroup {
        title: "Source",
        links: if fed.sources.is_empty() {
            Vec::new()
        } else {
            facet_links(&params, "source", &sources)
        },
    };
    let facets = if remote {
        vec![source_group]
    } else {
        vec![
            source_group,
            FacetGroup {
                title: "Classification",
                links: facet_links(&params, "spectrum", &f.spectrum),
            },
            FacetGroup {
                title: "Theme",
                links: facet_links(&params, "theme", &f.theme),
            },
            FacetGroup {
                title: "Organisation",
                links: facet_links(&params, "organization", &f.organization),
            },
            FacetGroup {
                title: "Format",
                links: facet_links(&params, "format", &f.format),
            },
            FacetGroup {
                title: "Personal data",
                links: facet_links(&params, "personal_data", &f.personal_data),
            },
        ]
    };
    let total = if remote { fed.total } else { results.total };
    let show_preview = remote || params.source.as_deref().is_none_or(str::is_empty);
    let active_filters = facets
        .iter()
        .flat_map(|g| g.links.iter())
        .filter(|l| l.active)
        .map(|l| FacetLink {
            label: l.label.clone(),
            value: l.value.clone(),
            count: l.count,
            href: l.href.clone(),
            active: true,
        });
    let active_filters: Vec<FacetLink> = active_filters.collect();
    let page_count = total.div_ceil(query.per_page.max(1)).max(1);
    let pages = (1..=page_count)
        .filter(|n| *n == 1 || *n == page_count || n.abs_diff(query.page) <= 2)
        .map(|n| {
            let mut href = with_param(&params, "page", Some(n.to_string()));
            if n == 1 {
                href = with_param(&params, "page", None);
            }
            PageLink {
                label: n.to_string(),
                href,
                current: n == query.page,
            }
        })
        .collect();
    render(&SearchPage {
        nav,
        q: query.text.clone(),
        sort: params.sort.clone().unwrap_or_default(),
        total,
        results: if remote {
            Vec::new()
        } else {
            results.items.iter().map(|d| card(d, &orgs)).collect()
        },
        facets,
        active_filters,
        pages,
        error,
        federated: if show_preview {
            fed.items.iter().map(federated_card).collect()
        } else {
            Vec::new()
        },
        federated_total: if show_preview { fed.total } else { 0 },
        remote,
    })
}

// ---- a federated entry ------------------------------------------------------------

#[derive(Template)]
#[template(path = "federated.html")]
struct FederatedPageView {
    nav: Nav,
    e: FederatedEntry,
    access: String,
    /// The form asking the entry's node for access, when it can be asked
    /// and the viewer has an organisation to ask for.
    ask: Option<AskView>,
    errors: Vec<ErrorLink>,
    form: BTreeMap<String, String>,
}

struct AskView {
    organizations: Vec<(String, String)>,
    levels: Vec<&'static str>,
    questions: &'static [citytrust_model::access::Question],
}

impl FederatedPageView {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
    fn error_for(&self, field: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == field)
            .map(|e| e.message.as_str())
    }
}

async fn federated_view(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    errors: Vec<FieldError>,
    form: BTreeMap<String, String>,
) -> PageResult {
    let e = state.service.federated_entry(id).await?;
    let ask = match viewer.session() {
        Some(session)
            if !session.actor.organization_ids().is_empty()
                && state.service.remote_askable(&e).await? =>
        {
            let names = organization_names(state).await?;
            Some(AskView {
                organizations: session
                    .actor
                    .organization_ids()
                    .iter()
                    .map(|o| {
                        (
                            o.clone(),
                            names.get(o).cloned().unwrap_or_else(|| o.clone()),
                        )
                    })
                    .collect(),
                levels: citytrust_model::AccessLevel::ALL
                    .iter()
                    .filter(|l| **l != citytrust_model::AccessLevel::Metadata)
                    .map(|l| l.as_str())
                    .collect(),
                questions: citytrust_model::Sharing::Systematic.checklist(),
            })
        }
        _ => None,
    };
    render(&FederatedPageView {
        nav: viewer.nav("datasets"),
        access: e
            .access_right
            .map(|a| a.label().to_string())
            .unwrap_or_default(),
        e,
        ask,
        errors: error_links(errors, |f| format!("ask-{}", f.replace('.', "-"))),
        form,
    })
}

/// An entry harvested from another catalogue: what its source says, and where to find it there.
async fn federated_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    federated_view(&state, &viewer, &id, Vec::new(), BTreeMap::new()).await
}

/// "Ask city B for access": the request goes to the entry's node through
/// the Dataspace Protocol, whose trustees decide; it is then followed on
/// "my requests".
async fn ask_remote(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let form = &signed.form;
    let mut kept = BTreeMap::new();
    for k in [
        "organization_id",
        "level",
        "purpose",
        "starts_on",
        "ends_on",
        "benefit",
    ] {
        kept.insert(k.to_string(), form.one(k));
    }
    let mut checklist = BTreeMap::new();
    for q in citytrust_model::Sharing::Systematic.checklist() {
        let answer = form.one(&format!("checklist.{}", q.id));
        kept.insert(format!("checklist.{}", q.id), answer.clone());
        if !answer.is_empty() {
            checklist.insert(q.id.to_string(), answer);
        }
    }
    let ask = citytrust_model::federation::AskRemote {
        organization_id: form.one("organization_id"),
        level: form.one("level"),
        purpose: form.one("purpose"),
        starts_on: form.opt("starts_on"),
        ends_on: form.opt("ends_on"),
        benefit: form.one("benefit"),
        checklist,
    };
    match state
        .service
        .ask_remote(&signed.session().actor, &id, ask, &crate::base_url(&state))
        .await
    {
        Ok(_) => Ok(Redirect::to("/requests?done=remote").into_response()),
        Err(citytrust_service::ServiceError::Unprocessable { message, .. }) => {
            let errors = vec![FieldError {
                field: "request".into(),
                message,
            }];
            federated_view(&state, signed.viewer(), &id, errors, kept).await
        }
        Err(e) => {
            let errors = form_errors(e)?;
            federated_view(&state, signed.viewer(), &id, errors, kept).await
        }
    }
}

/// The data another node agreed to share, read through this trust as CSV
/// (the other node decides and logs the read; nothing is kept here).
async fn remote_data(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(pid): Path<String>,
) -> PageResult {
    let Some(session) = viewer.session() else {
        return Err(PageError::SignIn);
    };
    let res = state
        .service
        .remote_read(
            &session.actor,
            &pid,
            None,
            &[("format".to_string(), "csv".to_string())],
        )
        .await?;
    if !res.status().is_success() {
        let status = StatusCode::from_u16(res.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let detail = res
            .json::<serde_json::Value>()
            .await
            .ok()
            .and_then(|v| v["detail"].as_str().map(str::to_string))
            .unwrap_or_else(|| "the other node refused the read".into());
        return Err(PageError::page(
            status,
            format!("The other node refused the read: {detail}"),
        ));
    }
    let mut headers = axum::http::HeaderMap::new();
    headers.insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    if let Some(v) = res.headers().get("citytrust-log-entry") {
        headers.insert("citytrust-provider-log-entry", v.clone());
    }
    Ok((headers, axum::body::Body::from_stream(res.bytes_stream())).into_response())
}

// ---- dataset page ---------------------------------------------------------------

struct Row {
    label: &'static str,
    value: String,
    href: String,
}

struct Section {
    title: &'static str,
    rows: Vec<Row>,
}

fn row(label: &'static str, value: impl Into<String>) -> Row {
    Row {
        label,
        value: value.into(),
        href: String::new(),
    }
}

fn opt_row(label: &'static str, value: &Option<String>) -> Row {
    row(label, value.clone().unwrap_or_default())
}

fn link_row(label: &'static str, value: &Option<String>) -> Row {
    let v = value.clone().unwrap_or_default();
    let href = if v.starts_with("https://") || v.starts_with("http://") {
        v.clone()
    } else {
        String::new()
    };
    Row {
        label,
        value: v,
        href,
    }
}

#[derive(Template)]
#[template(path = "dataset.html")]
struct DatasetPage {
    nav: Nav,
    /// A stream: its live page exists.
    live: bool,
    id: String,
    title: String,
    description: String,
    spectrum: String,
    spectrum_label: String,
    spectrum_explanation: String,
    closed: bool,
    personal_data: bool,
    framework_class: String,
    structure: String,
    status: String,
    owner: String,
    owner_id: String,
    themes: Vec<FacetLink>,
    keywords: Vec<String>,
    licence: Vec<Row>,
    licence_verified: bool,
    has_licence: bool,
    roles: Vec<Row>,
    details: Vec<Row>,
    states: Vec<Section>,
    may_edit: bool,
    revision: i64,
    updated: String,
    content: content_pages::ContentView,
}

async fn dataset_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
) -> PageResult {
    // `/datasets/{id}.ttl` and `.jsonld`: the entry as DCAT-AP (ids never hold a dot).
    for (suffix, syntax) in [
        (".ttl", crate::rdf::Syntax::Turtle),
        (".jsonld", crate::rdf::Syntax::JsonLd),
    ] {
        if let Some(dataset_id) = id.strip_suffix(suffix) {
            return Ok(
                match crate::dcat::dataset_document(&state, &headers, dataset_id, syntax).await {
                    Ok(r) => r,
                    Err(e) => e.into_response(),
                },
            );
        }
    }
    let d = state.service.get_dataset(&id).await?;
    let may_edit = state.service.may_edit(&viewer.actor(), &d);
    let query: Vec<(String, String)> = form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .into_owned()
        .collect();
    let param = |name: &str| {
        query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let published = param("published").parse::<i64>().ok();
    let content = content_pages::content_view(
        &state,
        &viewer.actor(),
        &d,
        may_edit,
        viewer
            .session()
            .map(|s| s.csrf_token.clone())
            .unwrap_or_default(),
        published,
        param("notice"),
    )
    .await?;
    let orgs = organization_names(&state).await?;
    let name = |id: &str| orgs.get(id).cloned().unwrap_or_else(|| id.to_string());
    let m = &d.metadata;
    let s = &m.data_states;
    let licence = m.licence.clone().unwrap_or_default();
    let period = m
        .temporal_coverage
        .as_ref()
        .map(|p| {
            format!(
                "{} to {}",
                p.start,
                p.end.clone().unwrap_or_else(|| "ongoing".into())
            )
        })
        .unwrap_or_default();
    let cc = &m.column_classes;
    let page = DatasetPage {
        nav: viewer.nav("datasets"),
        live: m.stream.is_some(),
        id: d.id.clone(),
        title: m.title.clone(),
        description: m.description.clone(),
        spectrum: m.spectrum.as_str().into(),
        spectrum_label: m.spectrum.label().into(),
        spectrum_explanation: m.spectrum.explanation().into(),
        closed: m.spectrum == Spectrum::Closed,
        personal_data: m.personal_data,
        framework_class: humanise(&enum_text(&m.framework_class)),
        structure: humanise(&enum_text(&m.structure)),
        status: humanise(&enum_text(&m.publication_status)),
        owner: name(&m.owner_organization_id),
        owner_id: m.owner_organization_id.clone(),
        themes: m
            .themes
            .iter()
            .map(|t| FacetLink {
                label: theme_label(*t),
                value: t.as_str().into(),
                count: 0,
                href: format!("/datasets?theme={}", t.as_str()),
                active: false,
            })
            .collect(),
        keywords: m.keywords.clone(),
        has_licence: m.licence.is_some(),
        licence_verified: licence.verified,
        licence: vec![
            row("Licence", licence.title.clone()),
            row("Identifier", licence.id.clone()),
            link_row("Terms", &licence.url),
            opt_row("Note", &licence.note),
        ],
        roles: m
            .roles
            .iter()
            .map(|r| row(r.role.label(), name(&r.organization_id)))
            .collect(),
        details: vec![
            row("Identifier", d.id.clone()),
            opt_row("Format", &m.format),
            row(
                "Update frequency",
                humanise(&enum_text(&m.update_frequency)),
            ),
            row("Temporal coverage", period),
            row(
                "Area covered",
                m.spatial_coverage
                    .as_ref()
                    .map(|c| match c.bounds() {
                        Some([w, s, e, n]) => {
                            format!("{} (longitude {w} to {e}, latitude {s} to {n})", c.name)
                        }
                        None => c.name.clone(),
                    })
                    .unwrap_or_default(),
            ),
            link_row(
                "Area in a gazetteer",
                &m.spatial_coverage.as_ref().and_then(|c| c.uri.clone()),
            ),
            row(
                "Location",
                m.location
                    .as_ref()
                    .map(|l| l.system.clone())
                    .unwrap_or_default(),
            ),
            link_row(
                "Location URL",
                &m.location.as_ref().and_then(|l| l.url.clone()),
            ),
            row(
                "Contact",
                m.contact
                    .as_ref()
                    .map(|c| c.name.clone())
                    .unwrap_or_default(),
            ),
            opt_row(
                "Contact e-mail",
                &m.contact.as_ref().and_then(|c| c.email.clone()),
            ),
            row("Shared identifiers", m.shared_identifiers.join(", ")),
            row("Personal columns", cc.personal.join(", ")),
            row("Quasi-identifying columns", cc.quasi_identifying.join(", ")),
            row("Spatial columns", cc.spatial.join(", ")),
            row("Temporal columns", cc.temporal.join(", ")),
            opt_row("Analogue conversion", &m.analogue_conversion),
            row("Created", d.created_at.clone()),
            row("Last changed", d.updated_at.clone()),
        ],
        states: vec![
            Section {
                title: "Completeness",
                rows: vec![
                    opt_row("Coverage", &s.completeness.coverage),
                    opt_row("Continuity", &s.completeness.continuity),
                ],
            },
            Section {
                title: "Accuracy",
                rows: vec![
                    opt_row("Precision", &s.accuracy.precision),
                    opt_row("Valid ranges", &s.accuracy.valid_ranges),
                    opt_row("Tolerances", &s.accuracy.tolerances),
                    opt_row("Sampling rate", &s.accuracy.sampling_rate),
                    opt_row("Conversion process", &s.accuracy.conversion_process),
                ],
            },
            Section {
                title: "Availability",
                rows: vec![
                    opt_row("Refresh timetable", &s.availability.refresh_timetable),
                    opt_row("Planned gaps", &s.availability.planned_gaps),
                ],
            },
            Section {
                title: "Timeliness",
                rows: vec![opt_row("Lag", &s.timeliness.lag)],
            },
            Section {
                title: "Provenance",
                rows: vec![
                    opt_row("Origin", &s.provenance.origin),
                    opt_row("Processing history", &s.provenance.processing_history),
                    opt_row("Lineage", &s.provenance.lineage),
                    opt_row("Sensor location", &s.provenance.sensor_location),
                    opt_row("Sensor calibration", &s.provenance.sensor_calibration),
                ],
            },
        ],
        may_edit,
        revision: d.revision,
        updated: d.updated_at.get(..10).unwrap_or("").to_string(),
        content,
    };
    render(&page)
}

// ---- dataset form ---------------------------------------------------------------

/// The dataset form's fields, as text, so a refused submission is shown back as typed.
#[derive(Default)]
struct FormValues {
    id: String,
    title: String,
    description: String,
    owner: String,
    spectrum: String,
    themes: Vec<String>,
    keywords: String,
    format: String,
    personal_data: bool,
    licence_id: String,
    licence_title: String,
    licence_url: String,
    update_frequency: String,
    publication_status: String,
    framework_class: String,
    structure: String,
    contact_name: String,
    contact_email: String,
    period_start: String,
    period_end: String,
    location_system: String,
    location_url: String,
    shared_identifiers: String,
    personal_columns: String,
    quasi_columns: String,
    coverage: String,
    continuity: String,
    precision: String,
    refresh_timetable: String,
    lag: String,
    origin: String,
    lineage: String,
}

impl FormValues {
    fn from_input(i: &DatasetInput) -> FormValues {
        let s = &i.data_states;
        let licence = i.licence.clone().unwrap_or_default();
        let contact = i.contact.clone().unwrap_or_default();
        FormValues {
            id: i.id.clone().unwrap_or_default(),
            title: i.title.clone(),
            description: i.description.clone(),
            owner: i.owner_organization_id.clone(),
            spectrum: i.spectrum.as_str().into(),
            themes: i.themes.iter().map(|t| t.as_str().to_string()).collect(),
            keywords: i.keywords.join(", "),
            format: i.format.clone().unwrap_or_default(),
            personal_data: i.personal_data,
            licence_id: licence.id,
            licence_title: licence.title,
            licence_url: licence.url.unwrap_or_default(),
            update_frequency: enum_text(&i.update_frequency),
            publication_status: enum_text(&i.publication_status),
            framework_class: enum_text(&i.framework_class),
            structure: enum_text(&i.structure),
            contact_name: contact.name,
            contact_email: contact.email.unwrap_or_default(),
            period_start: i
                .temporal_coverage
                .as_ref()
                .map(|p| p.start.clone())
                .unwrap_or_default(),
            period_end: i
                .temporal_coverage
                .as_ref()
                .and_then(|p| p.end.clone())
                .unwrap_or_default(),
            location_system: i
                .location
                .as_ref()
                .map(|l| l.system.clone())
                .unwrap_or_default(),
            location_url: i
                .location
                .as_ref()
                .and_then(|l| l.url.clone())
                .unwrap_or_default(),
            shared_identifiers: i.shared_identifiers.join(", "),
            personal_columns: i.column_classes.personal.join(", "),
            quasi_columns: i.column_classes.quasi_identifying.join(", "),
            coverage: s.completeness.coverage.clone().unwrap_or_default(),
            continuity: s.completeness.continuity.clone().unwrap_or_default(),
            precision: s.accuracy.precision.clone().unwrap_or_default(),
            refresh_timetable: s.availability.refresh_timetable.clone().unwrap_or_default(),
            lag: s.timeliness.lag.clone().unwrap_or_default(),
            origin: s.provenance.origin.clone().unwrap_or_default(),
            lineage: s.provenance.lineage.clone().unwrap_or_default(),
        }
    }

    fn from_form(f: &Form) -> FormValues {
        FormValues {
            id: f.one("id"),
            title: f.one("title"),
            description: f.one("description"),
            owner: f.one("owner_organization_id"),
            spectrum: f.one("spectrum"),
            themes: f.all("themes"),
            keywords: f.one("keywords"),
            format: f.one("format"),
            personal_data: f.checked("personal_data"),
            licence_id: f.one("licence_id"),
            licence_title: f.one("licence_title"),
            licence_url: f.one("licence_url"),
            update_frequency: f.one("update_frequency"),
            publication_status: f.one("publication_status"),
            framework_class: f.one("framework_class"),
            structure: f.one("structure"),
            contact_name: f.one("contact_name"),
            contact_email: f.one("contact_email"),
            period_start: f.one("period_start"),
            period_end: f.one("period_end"),
            location_system: f.one("location_system"),
            location_url: f.one("location_url"),
            shared_identifiers: f.one("shared_identifiers"),
            personal_columns: f.one("personal_columns"),
            quasi_columns: f.one("quasi_columns"),
            coverage: f.one("coverage"),
            continuity: f.one("continuity"),
            precision: f.one("precision"),
            refresh_timetable: f.one("refresh_timetable"),
            lag: f.one("lag"),
            origin: f.one("origin"),
            lineage: f.one("lineage"),
        }
    }

    /// Apply the form's fields over `base` (fields the form does not show are kept).
    fn apply(&self, f: &Form, mut base: DatasetInput) -> Result<DatasetInput, Vec<FieldError>> {
        let mut errors = Vec::new();
        fn opt(s: &str) -> Option<String> {
            Some(s.to_string()).filter(|s| !s.is_empty())
        }
        fn pick<T: DeserializeOwned>(
            errors: &mut Vec<FieldError>,
            field: &str,
            value: &str,
            current: T,
        ) -> T {
            if value.is_empty() {
                return current;
            }
            enum_value(value).unwrap_or_else(|| {
                errors.push(FieldError {
                    field: field.into(),
                    message: format!("'{value}' is not one of the choices"),
                });
                current
            })
        }
        base.id = opt(&self.id);
        base.title = self.title.clone();
        base.description = self.description.clone();
        base.owner_organization_id = self.owner.clone();
        match Spectrum::parse(&self.spectrum) {
            Some(s) => base.spectrum = s,
            None => errors.push(FieldError {
                field: "spectrum".into(),
                message: "choose a classification".into(),
            }),
        }
        base.themes = Vec::new();
        for t in &self.themes {
            match Theme::parse(t) {
                Some(t) => base.themes.push(t),
                None => errors.push(FieldError {
                    field: "themes".into(),
                    message: format!("'{t}' is not a theme"),
                }),
            }
        }
        base.keywords = f.list("keywords");
        base.format = opt(&self.format);
        base.personal_data = self.personal_data;
        base.licence = if self.licence_id.is_empty() && self.licence_title.is_empty() {
            None
        } else {
            let previous = base.licence.clone().unwrap_or_default();
            let same = previous.id == self.licence_id && previous.title == self.licence_title;
            Some(Licence {
                id: self.licence_id.clone(),
                title: self.licence_title.clone(),
                url: opt(&self.licence_url),
                // A changed licence has to be checked again.
                verified: same && previous.verified,
                note: if same { previous.note } else { None },
            })
        };
        base.update_frequency = pick(
            &mut errors,
            "update_frequency",
            &self.update_frequency,
            base.update_frequency,
        );
        base.publication_status = pick(
            &mut errors,
            "publication_status",
            &self.publication_status,
            base.publication_status,
        );
        base.framework_class = pick(
            &mut errors,
            "framework_class",
            &self.framework_class,
            base.framework_class,
        );
        base.structure = pick(&mut errors, "structure", &self.structure, base.structure);
        base.contact = if self.contact_name.is_empty() && self.contact_email.is_empty() {
            None
        } else {
            let url = base.contact.as_ref().and_then(|c| c.url.clone());
            Some(Contact {
                name: self.contact_name.clone(),
                email: opt(&self.contact_email),
                url,
            })
        };
        base.temporal_coverage = if self.period_start.is_empty() && self.period_end.is_empty() {
            None
        } else {
            Some(Period {
                start: self.period_start.clone(),
                end: opt(&self.period_end),
            })
        };
        base.location = if self.location_system.is_empty() && self.location_url.is_empty() {
            None
        } else {
            Some(Location {
                system: self.location_system.clone(),
                url: opt(&self.location_url),
            })
        };
        base.shared_identifiers = f.list("shared_identifiers");
        base.column_classes.personal = f.list("personal_columns");
        base.column_classes.quasi_identifying = f.list("quasi_columns");
        let s = &mut base.data_states;
        s.completeness = Completeness {
            coverage: opt(&self.coverage),
            continuity: opt(&self.continuity),
        };
        s.accuracy = Accuracy {
            precision: opt(&self.precision),
            ..s.accuracy.clone()
        };
        s.availability.refresh_timetable = opt(&self.refresh_timetable);
        s.timeliness.lag = opt(&self.lag);
        s.provenance.origin = opt(&self.origin);
        s.provenance.lineage = opt(&self.lineage);
        if errors.is_empty() {
            Ok(base)
        } else {
            Err(errors)
        }
    }
}

#[derive(Template)]
#[template(path = "dataset_form.html")]
struct DatasetFormPage {
    nav: Nav,
    editing: bool,
    action: String,
    dataset_id: String,
    revision: i64,
    v: FormValues,
    owners: Vec<Choice>,
    spectra: Vec<SpectrumChoice>,
    themes: Vec<Choice>,
    frequencies: Vec<Choice>,
    statuses: Vec<Choice>,
    classes: Vec<Choice>,
    structures: Vec<Choice>,
    errors: Vec<ErrorLink>,
}

struct SpectrumChoice {
    value: String,
    label: String,
    explanation: String,
    selected: bool,
}

const STATUSES: [PublicationStatus; 4] = [
    PublicationStatus::Planned,
    PublicationStatus::Published,
    PublicationStatus::Archived,
    PublicationStatus::Withdrawn,
];
const CLASSES: [FrameworkClass; 3] = [
    FrameworkClass::Metadata,
    FrameworkClass::Reference,
    FrameworkClass::Thematic,
];
const STRUCTURES: [Structure; 5] = [
    Structure::Structured,
    Structure::SemiStructured,
    Structure::Unstructured,
    Structure::Analogue,
    Structure::RealTime,
];

async fn form_page(
    state: &AppState,
    session: &Session,
    editing: Option<(&str, i64)>,
    v: FormValues,
    errors: Vec<FieldError>,
) -> PageResult {
    let orgs = state.service.list_organizations().await?;
    let mine: Vec<&Organization> = orgs
        .iter()
        .filter(|o| authz::may_create_dataset(&session.actor, &o.id).is_ok())
        .collect();
    let owners = mine
        .iter()
        .map(|o| Choice {
            value: o.id.clone(),
            label: o.name.clone(),
            selected: o.id == v.owner,
        })
        .chain(
            // When editing, keep the current owner selectable even if the editor is only a custodian.
            orgs.iter()
                .filter(|o| o.id == v.owner && !mine.iter().any(|m| m.id == o.id))
                .map(|o| Choice {
                    value: o.id.clone(),
                    label: o.name.clone(),
                    selected: true,
                }),
        )
        .collect();
    let page = DatasetFormPage {
        nav: Viewer(Some(session.clone())).nav("datasets"),
        editing: editing.is_some(),
        action: editing
            .map(|(id, _)| format!("/datasets/{id}"))
            .unwrap_or_else(|| "/datasets".into()),
        dataset_id: editing.map(|(id, _)| id.to_string()).unwrap_or_default(),
        revision: editing.map(|(_, r)| r).unwrap_or(0),
        owners,
        spectra: Spectrum::ALL
            .iter()
            .map(|s| SpectrumChoice {
                value: s.as_str().into(),
                label: s.label().into(),
                explanation: s.explanation().into(),
                selected: s.as_str() == v.spectrum,
            })
            .collect(),
        themes: Theme::ALL
            .iter()
            .map(|t| Choice {
                value: t.as_str().into(),
                label: theme_label(*t),
                selected: v.themes.iter().any(|x| x == t.as_str()),
            })
            .collect(),
        frequencies: choices(
            &UpdateFrequency::ALL,
            std::slice::from_ref(&v.update_frequency),
        ),
        statuses: choices(&STATUSES, std::slice::from_ref(&v.publication_status)),
        classes: choices(&CLASSES, std::slice::from_ref(&v.framework_class)),
        structures: choices(&STRUCTURES, std::slice::from_ref(&v.structure)),
        errors: errors
            .into_iter()
            .map(|e| ErrorLink {
                anchor: anchor_for(&e.field),
                field: humanise(&e.field),
                message: e.message,
            })
            .collect(),
        v,
    };
    let status = if page.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Html(page.render()?)).into_response())
}

async fn new_dataset_form(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let Some(session) = &viewer.0 else {
        return Err(PageError::SignIn);
    };
    let owner = session
        .user
        .organization_ids
        .first()
        .cloned()
        .unwrap_or_default();
    let v = FormValues {
        owner,
        spectrum: "open".into(),
        update_frequency: "unknown".into(),
        publication_status: "published".into(),
        framework_class: "thematic".into(),
        structure: "structured".into(),
        ..FormValues::default()
    };
    form_page(&state, session, None, v, Vec::new()).await
}

fn blank_input() -> DatasetInput {
    DatasetInput {
        id: None,
        title: String::new(),
        description: String::new(),
        owner_organization_id: String::new(),
        roles: Vec::new(),
        contact: None,
        keywords: Vec::new(),
        themes: Vec::new(),
        licence: None,
        personal_data: false,
        column_classes: Default::default(),
        location: None,
        format: None,
        temporal_coverage: None,
        spatial_coverage: None,
        personal_terms: None,
        update_frequency: Default::default(),
        publication_status: Default::default(),
        shared_identifiers: Vec::new(),
        framework_class: Default::default(),
        structure: Default::default(),
        analogue_conversion: None,
        stream: None,
        spectrum: Spectrum::Open,
        data_states: Default::default(),
    }
}

async fn create_dataset(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, session) = (&signed.form, signed.session());
    let v = FormValues::from_form(form);
    let input = match v.apply(form, blank_input()) {
        Ok(i) => i,
        Err(errors) => return form_page(&state, session, None, v, errors).await,
    };
    match state.service.create_dataset(&session.actor, input).await {
        Ok(d) => Ok(Redirect::to(&format!("/datasets/{}", d.id)).into_response()),
        Err(e) => {
            let errors = form_errors(e)?;
            form_page(&state, session, None, v, errors).await
        }
    }
}

async fn edit_dataset_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    let Some(session) = &viewer.0 else {
        return Err(PageError::SignIn);
    };
    let d = state.service.get_dataset(&id).await?;
    if !state.service.may_edit(&session.actor, &d) {
        return Err(PageError::page(
            StatusCode::FORBIDDEN,
            "Only the owning organisation, its custodians or an administrator may edit this dataset.",
        ));
    }
    let v = FormValues::from_input(&d.metadata.to_input());
    form_page(&state, session, Some((&d.id, d.revision)), v, Vec::new()).await
}

async fn update_dataset(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let (form, session) = (&signed.form, signed.session());
    let current = state.service.get_dataset(&id).await?;
    let revision = form.one("revision").parse::<i64>().ok();
    let mut v = FormValues::from_form(form);
    v.id = String::new();
    let input = match v.apply(form, current.metadata.to_input()) {
        Ok(i) => i,
        Err(errors) => {
            return form_page(&state, session, Some((&id, current.revision)), v, errors).await;
        }
    };
    match state
        .service
        .update_dataset(&session.actor, &id, input, revision)
        .await
    {
        Ok(d) => Ok(Redirect::to(&format!("/datasets/{}", d.id)).into_response()),
        Err(e) => {
            let errors = form_errors(e)?;
            form_page(&state, session, Some((&id, current.revision)), v, errors).await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn search_links_keep_other_filters_and_drop_the_page() {
        let p = SearchParams {
            q: Some("air".into()),
            theme: Some("energy".into()),
            page: Some("3".into()),
            ..SearchParams::default()
        };
        assert_eq!(
            with_param(&p, "spectrum", Some("open".into())),
            "/datasets?q=air&theme=energy&spectrum=open"
        );
        assert_eq!(with_param(&p, "theme", None), "/datasets?q=air");
    }

    #[test]
    fn a_form_keeps_fields_it_does_not_show() {
        let mut base = blank_input();
        base.analogue_conversion = Some("scanned".into());
        base.licence = Some(Licence {
            id: "CC-BY-4.0".into(),
            title: "CC BY 4.0".into(),
            url: None,
            verified: true,
            note: None,
        });
        let body = Bytes::from_static(
            b"title=T&description=D&owner_organization_id=o&spectrum=open&themes=energy&themes=health\
              &keywords=a,+b&licence_id=CC-BY-4.0&licence_title=CC+BY+4.0",
        );
        let form = Form(
            form_urlencoded::parse(&body).into_owned().collect(),
            Vec::new(),
        );
        let v = FormValues::from_form(&form);
        let input = v.apply(&form, base).unwrap();
        assert_eq!(input.analogue_conversion.as_deref(), Some("scanned"));
        assert_eq!(input.themes, vec![Theme::Energy, Theme::Health]);
        assert_eq!(input.keywords, vec!["a", "b"]);
        assert!(
            input.licence.unwrap().verified,
            "an unchanged licence stays verified"
        );
    }

    #[test]
    fn an_unknown_choice_is_named() {
        let form = Form(
            vec![
                ("spectrum".into(), "secret".into()),
                ("structure".into(), "xml".into()),
            ],
            Vec::new(),
        );
        let errors = FormValues::from_form(&form)
            .apply(&form, blank_input())
            .unwrap_err();
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, vec!["spectrum", "structure"]);
    }
}
