//! Participation pages: demand-led data requests (`/data-requests`: search,
//! ask, support, withdraw; the owner's answer and the administrators'
//! assignment on a request's page) and the public roadmap (`/roadmap`).

use citytrust_model::participation::{
    DataRequest, DataRequestAnswer, DataRequestAssignment, DataRequestStatus, NewDataRequest,
};
use citytrust_service::participation::{DataRequestQuery, DataRequestSort};

use super::*;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/data-requests", get(list_page).post(ask))
        .route("/data-requests/new", get(new_page))
        .route("/data-requests/{id}", get(request_page))
        .route("/data-requests/{id}/support", post(support))
        .route("/data-requests/{id}/withdraw", post(withdraw))
        .route("/data-requests/{id}/answer", post(answer))
        .route("/data-requests/{id}/assign", post(assign))
        .route("/roadmap", get(roadmap_page))
}

fn status_label(s: DataRequestStatus) -> &'static str {
    match s {
        DataRequestStatus::Open => "Open",
        DataRequestStatus::Planned => "Planned",
        DataRequestStatus::Published => "Published",
        DataRequestStatus::Exists => "Exists already",
        DataRequestStatus::Declined => "Declined",
    }
}

fn status_class(s: DataRequestStatus) -> &'static str {
    match s {
        DataRequestStatus::Open | DataRequestStatus::Planned => "badge-wait",
        DataRequestStatus::Published | DataRequestStatus::Exists => "badge-ok",
        DataRequestStatus::Declined => "badge-no",
    }
}

/// A request as a row of a list.
struct Row {
    id: String,
    title: String,
    status: &'static str,
    status_class: &'static str,
    supporters: i64,
    asked: String,
    owner: String,
    target: String,
    overdue: bool,
    answer_dataset: String,
}

fn row(r: &DataRequest, orgs: &BTreeMap<String, String>) -> Row {
    Row {
        id: r.id.clone(),
        title: r.title.clone(),
        status: status_label(r.status),
        status_class: status_class(r.status),
        supporters: r.supporters,
        asked: r.created_at.chars().take(10).collect(),
        owner: org_name(r.organization_id.as_deref(), orgs),
        target: r.target_date.clone().unwrap_or_default(),
        overdue: r.overdue,
        answer_dataset: r.answer_dataset_id.clone().unwrap_or_default(),
    }
}

fn org_name(id: Option<&str>, orgs: &BTreeMap<String, String>) -> String {
    match id {
        Some(o) => orgs.get(o).cloned().unwrap_or_else(|| o.to_string()),
        None => "Not assigned yet".into(),
    }
}

// ---- the list -----------------------------------------------------------------

#[derive(Template)]
#[template(path = "data_requests.html")]
struct ListPage {
    nav: Nav,
    q: String,
    statuses: Vec<Choice>,
    newest: bool,
    total: usize,
    rows: Vec<Row>,
    to_answer: Vec<Row>,
}

async fn list_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let raw = raw.as_deref();
    let q = query_param(raw, "q").unwrap_or_default();
    let status = query_param(raw, "status")
        .as_deref()
        .and_then(DataRequestStatus::parse);
    let newest = query_param(raw, "sort").as_deref() == Some("newest");
    let actor = viewer.actor();
    let page = state
        .service
        .list_data_requests(
            &actor,
            &DataRequestQuery {
                q: Some(q.clone()).filter(|q| !q.is_empty()),
                status,
                sort: Some(if newest {
                    DataRequestSort::Newest
                } else {
                    DataRequestSort::Support
                }),
                limit: Some(200),
                offset: None,
            },
        )
        .await?;
    let orgs = organization_names(&state).await?;
    let to_answer = match viewer.session() {
        Some(_) => state
            .service
            .data_requests_to_answer(&actor)
            .await?
            .iter()
            .map(|r| row(r, &orgs))
            .collect(),
        None => Vec::new(),
    };
    let selected = status.map(|s| s.as_str().to_string());
    render(&ListPage {
        nav: viewer.nav("data-requests"),
        q,
        statuses: DataRequestStatus::ALL
            .iter()
            .map(|s| Choice {
                value: s.as_str().into(),
                label: status_label(*s).into(),
                selected: selected.as_deref() == Some(s.as_str()),
            })
            .collect(),
        newest,
        total: page.total,
        rows: page.items.iter().map(|r| row(r, &orgs)).collect(),
        to_answer,
    })
}

// ---- asking -----------------------------------------------------------------------

#[derive(Template)]
#[template(path = "data_request_form.html")]
struct FormPage {
    nav: Nav,
    errors: Vec<ErrorLink>,
    form: BTreeMap<String, String>,
    datasets: Vec<(String, String)>,
    organizations: Vec<(String, String)>,
}

impl FormPage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
    fn error_for(&self, name: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == name)
            .map(|e| e.message.as_str())
    }
}

const ASK_FIELDS: [&str; 7] = [
    "title",
    "description",
    "reason",
    "use_case",
    "benefit",
    "dataset_id",
    "organization_id",
];

async fn form_view(
    state: &AppState,
    viewer: &Viewer,
    errors: Vec<FieldError>,
    form: BTreeMap<String, String>,
) -> PageResult {
    if viewer.session().is_none() {
        return Err(PageError::SignIn);
    }
    let datasets = state
        .service
        .all_datasets()
        .await?
        .into_iter()
        .filter(|d| d.metadata.spectrum != Spectrum::Open)
        .map(|d| (d.id, d.metadata.title))
        .collect();
    let organizations = organization_names(state).await?.into_iter().collect();
    let failed = !errors.is_empty();
    let page = FormPage {
        nav: viewer.nav("data-requests"),
        errors: errors
            .into_iter()
            .map(|e| ErrorLink {
                anchor: format!("dr-{}", e.field.replace('_', "-")),
                field: e.field,
                message: e.message,
            })
            .collect(),
        form,
        datasets,
        organizations,
    };
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Html(page.render()?)).into_response())
}

async fn new_page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    form_view(&state, &viewer, Vec::new(), BTreeMap::new()).await
}

async fn ask(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let form = &signed.form;
    let kept: BTreeMap<String, String> = ASK_FIELDS
        .into_iter()
        .map(|k| (k.to_string(), form.one(k)))
        .collect();
    let new = NewDataRequest {
        title: form.one("title"),
        description: form.one("description"),
        reason: form.one("reason"),
        use_case: form.one("use_case"),
        benefit: form.one("benefit"),
        dataset_id: form.opt("dataset_id"),
        organization_id: form.opt("organization_id"),
    };
    match state
        .service
        .ask_for_data(&signed.session().actor, new)
        .await
    {
        Ok(r) => Ok(Redirect::to(&format!("/data-requests/{}?done=asked", r.id)).into_response()),
        Err(e) => {
            let errors = form_errors(e)?;
            form_view(&state, signed.viewer(), errors, kept).await
        }
    }
}

// ---- one request ------------------------------------------------------------------

struct Event {
    at: String,
    what: String,
    by: String,
    note: String,
}

#[derive(Template)]
#[template(path = "data_request.html")]
struct RequestPage {
    nav: Nav,
    message: String,
    r: DataRequest,
    status: &'static str,
    status_class: &'static str,
    owner: String,
    history: Vec<Event>,
    signed_in: bool,
    may_support: bool,
    may_answer: bool,
    may_assign: bool,
    answer_choices: Vec<Choice>,
    datasets: Vec<(String, String)>,
    organizations: Vec<(String, String)>,
    errors: Vec<ErrorLink>,
    form: BTreeMap<String, String>,
}

impl RequestPage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
    fn error_for(&self, name: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == name)
            .map(|e| e.message.as_str())
    }
}

async fn request_view(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    message: &str,
    errors: Vec<FieldError>,
    form: BTreeMap<String, String>,
) -> PageResult {
    let actor = viewer.actor();
    let r = state.service.get_data_request(&actor, id).await?;
    let orgs = organization_names(state).await?;
    let signed_in = viewer.session().is_some();
    let pending = r.status.is_pending();
    let may_answer = signed_in
        && pending
        && authz::may_answer_data_request(&actor, r.organization_id.as_deref()).is_ok();
    let may_assign = signed_in
        && pending
        && r.dataset_id.is_none()
        && authz::may_assign_data_request(&actor).is_ok();
    let datasets = if may_answer {
        state
            .service
            .all_datasets()
            .await?
            .into_iter()
            .map(|d| (d.id, d.metadata.title))
            .collect()
    } else {
        Vec::new()
    };
    let chosen = form.get("status").cloned().unwrap_or_default();
    let failed = !errors.is_empty();
    let page = RequestPage {
        nav: viewer.nav("data-requests"),
        message: message.to_string(),
        status: status_label(r.status),
        status_class: status_class(r.status),
        owner: org_name(r.organization_id.as_deref(), &orgs),
        history: r
            .history
            .iter()
            .map(|e| Event {
                at: e.at.replace('T', " ").trim_end_matches('Z').to_string(),
                what: humanise(&e.what),
                by: match e.by.as_deref() {
                    None => "the requester".into(),
                    Some("administrators") => "the administrators".into(),
                    Some(b) => {
                        let id = b.strip_prefix("organization:").unwrap_or(b);
                        orgs.get(id).cloned().unwrap_or_else(|| id.to_string())
                    }
                },
                note: e.note.clone().unwrap_or_default(),
            })
            .collect(),
        signed_in,
        may_support: signed_in && pending && !r.yours,
        may_answer,
        may_assign,
        answer_choices: [
            DataRequestStatus::Planned,
            DataRequestStatus::Published,
            DataRequestStatus::Exists,
            DataRequestStatus::Declined,
        ]
        .iter()
        .map(|s| Choice {
            value: s.as_str().into(),
            label: status_label(*s).into(),
            selected: chosen == s.as_str(),
        })
        .collect(),
        datasets,
        organizations: orgs.into_iter().collect(),
        errors: errors
            .into_iter()
            .map(|e| ErrorLink {
                anchor: format!("answer-{}", e.field.replace('_', "-")),
                field: e.field,
                message: e.message,
            })
            .collect(),
        form,
        r,
    };
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Html(page.render()?)).into_response())
}

async fn request_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match query_param(raw.as_deref(), "done").as_deref() {
        Some("asked") => {
            "Your request is public now (your name is not). Others can support it; the owner will answer it here."
        }
        Some("supported") => "You support this request.",
        Some("withdrawn") => "Your support is withdrawn.",
        Some("answered") => "Your answer is recorded and in the log.",
        Some("assigned") => "The request is assigned.",
        _ => "",
    };
    request_view(&state, &viewer, &id, message, Vec::new(), BTreeMap::new()).await
}

async fn support(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    state
        .service
        .support_data_request(&signed.session().actor, &id)
        .await?;
    Ok(Redirect::to(&format!("/data-requests/{id}?done=supported")).into_response())
}

async fn withdraw(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    state
        .service
        .withdraw_data_request_support(&signed.session().actor, &id)
        .await?;
    Ok(Redirect::to(&format!("/data-requests/{id}?done=withdrawn")).into_response())
}

async fn answer(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let form = &signed.form;
    let kept: BTreeMap<String, String> = ["status", "target_date", "dataset_id", "note"]
        .into_iter()
        .map(|k| (k.to_string(), form.one(k)))
        .collect();
    let Some(status) = DataRequestStatus::parse(&form.one("status")) else {
        let errors = vec![FieldError {
            field: "status".into(),
            message: "choose an answer".into(),
        }];
        return request_view(&state, signed.viewer(), &id, "", errors, kept).await;
    };
    let body = DataRequestAnswer {
        status,
        target_date: form
            .opt("target_date")
            .filter(|_| status == DataRequestStatus::Planned),
        dataset_id: form.opt("dataset_id").filter(|_| {
            matches!(
                status,
                DataRequestStatus::Published | DataRequestStatus::Exists
            )
        }),
        note: form.opt("note"),
    };
    match state
        .service
        .answer_data_request(&signed.session().actor, &id, body)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/data-requests/{id}?done=answered")).into_response()),
        Err(e) => {
            let errors = form_errors(e)?;
            request_view(&state, signed.viewer(), &id, "", errors, kept).await
        }
    }
}

async fn assign(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let body = DataRequestAssignment {
        organization_id: signed.form.one("organization_id"),
    };
    match state
        .service
        .assign_data_request(&signed.session().actor, &id, body)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/data-requests/{id}?done=assigned")).into_response()),
        Err(e) => {
            let errors = form_errors(e)?;
            request_view(&state, signed.viewer(), &id, "", errors, BTreeMap::new()).await
        }
    }
}

// ---- the roadmap ----------------------------------------------------------------

#[derive(Template)]
#[template(path = "roadmap.html")]
struct RoadmapPage {
    nav: Nav,
    today: String,
    planned: Vec<Row>,
    published: Vec<Row>,
}

async fn roadmap_page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let roadmap = state.service.roadmap(&viewer.actor()).await?;
    let orgs = organization_names(&state).await?;
    render(&RoadmapPage {
        nav: viewer.nav("data-requests"),
        today: state.service.today_text(),
        planned: roadmap.planned.iter().map(|r| row(r, &orgs)).collect(),
        published: roadmap.published.iter().map(|r| row(r, &orgs)).collect(),
    })
}
