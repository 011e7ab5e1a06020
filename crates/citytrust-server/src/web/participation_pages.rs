//! Participation pages: demand-led data requests (`/data-requests`: search,
//! ask, support, withdraw; the owner's answer and the administrators'
//! assignment on a request's page) and the public roadmap (`/roadmap`);
//! consultations (`/consultations`: the list and the trustees' form, a
//! consultation's page with the resident's answer form or the results); the
//! charter in public (`/charter`: the ethics code, the rules, the board with
//! terms and declarations — recorded there by administrators — and every
//! version's changes with its reason and consultation); the recipient's
//! outcome report form (`/agreements/{id}/outcome`).

use citytrust_model::participation::{
    AnswerInput, Audience, Consultation, ConsultationResponse, ConsultationState,
    ConsultationSubject, DataRequest, DataRequestAnswer, DataRequestAssignment, DataRequestStatus,
    NewConsultation, NewDataRequest, NewOutcomeReport, NewQuestion, QuestionKind,
};
use citytrust_service::participation::{DataRequestQuery, DataRequestSort, TermInput};

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
        .route(
            "/consultations",
            get(consultations_page).post(open_consultation),
        )
        .route(
            "/consultations/{id}",
            get(consultation_page).post(answer_consultation),
        )
        .route("/consultations/{id}/close", post(close_consultation))
        .route("/charter", get(charter_page))
        .route("/charter/terms", post(record_term))
        .route(
            "/agreements/{id}/outcome",
            get(outcome_form).post(report_outcome),
        )
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
        errors: error_links(errors, |f| format!("dr-{}", f.replace('_', "-"))),
        form,
        datasets,
        organizations,
    };
    render_form_page(&page, failed)
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
    let answerer = match &r.dataset_id {
        Some(d) => state
            .service
            .get_dataset(d)
            .await
            .ok()
            .map(|ds| ds.metadata.owner_organization_id)
            .or_else(|| r.organization_id.clone()),
        None => r.organization_id.clone(),
    };
    let may_answer =
        signed_in && pending && authz::may_answer_data_request(&actor, answerer.as_deref()).is_ok();
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
        errors: error_links(errors, |f| format!("answer-{}", f.replace('_', "-"))),
        form,
        r,
    };
    render_form_page(&page, failed)
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

// ---- consultations --------------------------------------------------------------

fn state_label(s: ConsultationState) -> (&'static str, &'static str) {
    match s {
        ConsultationState::Scheduled => ("Not open yet", "badge-wait"),
        ConsultationState::Open => ("Open for answers", "badge-ok"),
        ConsultationState::Closed => ("Closed", "badge-format"),
    }
}

fn subject_label(s: ConsultationSubject) -> &'static str {
    match s {
        ConsultationSubject::CharterChange => "A change to the charter",
        ConsultationSubject::KindOfUse => "A kind of use of the city's data",
        ConsultationSubject::Classification => "How a dataset is classified",
    }
}

struct ConsultationRow {
    id: String,
    title: String,
    state: &'static str,
    state_class: &'static str,
    opens_on: String,
    closes_on: String,
    answered: bool,
}

#[derive(Template)]
#[template(path = "consultations.html")]
struct ConsultationsPage {
    nav: Nav,
    message: String,
    rows: Vec<ConsultationRow>,
    may_open: bool,
    errors: Vec<ErrorLink>,
    form: BTreeMap<String, String>,
    today: String,
    question_slots: Vec<usize>,
    kinds: Vec<(&'static str, &'static str)>,
}

impl ConsultationsPage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
    fn error_for(&self, name: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.field == name || e.field.starts_with(&format!("{name}.")))
            .map(|e| e.message.as_str())
    }
}

/// How many questions the no-JavaScript form offers.
const QUESTION_SLOTS: usize = 6;

async fn consultations_view(
    state: &AppState,
    viewer: &Viewer,
    message: &str,
    errors: Vec<FieldError>,
    form: BTreeMap<String, String>,
) -> PageResult {
    let actor = viewer.actor();
    let rows = state
        .service
        .list_consultations(&actor)
        .await?
        .into_iter()
        .map(|c| {
            let (state, state_class) = state_label(c.state);
            ConsultationRow {
                id: c.id,
                title: c.title,
                state,
                state_class,
                opens_on: c.opens_on,
                closes_on: c.closes_on,
                answered: c.answered,
            }
        })
        .collect();
    let failed = !errors.is_empty();
    let page = ConsultationsPage {
        nav: viewer.nav("consultations"),
        message: message.to_string(),
        rows,
        may_open: viewer.session().is_some() && authz::may_open_consultation(&actor).is_ok(),
        errors: error_links(errors, consultation_anchor),
        form,
        today: state.service.today_text(),
        question_slots: (1..=QUESTION_SLOTS).collect(),
        kinds: vec![
            ("single_choice", "One of the choices"),
            ("multiple_choice", "Any of the choices"),
            ("scale", "A scale from 1 to 5"),
            ("free_text", "Their own words"),
        ],
    };
    render_form_page(&page, failed)
}

/// Where a field of the consultation form is: `questions[2].choices` → `cn-q3-choices`.
fn consultation_anchor(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("questions[")
        && let Some((n, tail)) = rest.split_once(']')
        && let Ok(i) = n.parse::<usize>()
    {
        let part = tail.trim_start_matches('.');
        let part = if part.is_empty() { "text" } else { part };
        return format!("cn-q{}-{}", i + 1, part.replace('_', "-"));
    }
    format!("cn-{}", field.replace('_', "-"))
}

async fn consultations_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match query_param(raw.as_deref(), "done").as_deref() {
        Some("opened") => "The consultation is open (or will open on its first day).",
        _ => "",
    };
    consultations_view(&state, &viewer, message, Vec::new(), BTreeMap::new()).await
}

async fn open_consultation(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let form = &signed.form;
    let mut kept: BTreeMap<String, String> = [
        "title",
        "description",
        "subject",
        "audience",
        "dataset_id",
        "opens_on",
        "closes_on",
    ]
    .into_iter()
    .map(|k| (k.to_string(), form.one(k)))
    .collect();
    let mut questions = Vec::new();
    for n in 1..=QUESTION_SLOTS {
        let text = form.one(&format!("q{n}_text"));
        let kind = form.one(&format!("q{n}_kind"));
        let choices = form.one(&format!("q{n}_choices"));
        kept.insert(format!("q{n}_text"), text.clone());
        kept.insert(format!("q{n}_kind"), kind.clone());
        kept.insert(format!("q{n}_choices"), choices.clone());
        if text.trim().is_empty() {
            continue;
        }
        questions.push(NewQuestion {
            text,
            kind: enum_value(&kind).unwrap_or_default(),
            choices: choices
                .lines()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect(),
        });
    }
    let new = NewConsultation {
        title: form.one("title"),
        description: form.one("description"),
        subject: enum_value(&form.one("subject")).unwrap_or_default(),
        dataset_id: form.opt("dataset_id"),
        audience: enum_value(&form.one("audience")).unwrap_or_default(),
        questions,
        opens_on: form.one("opens_on"),
        closes_on: form.one("closes_on"),
    };
    match state
        .service
        .open_consultation(&signed.session().actor, new)
        .await
    {
        Ok(c) => Ok(Redirect::to(&format!("/consultations/{}?done=opened", c.id)).into_response()),
        Err(e) => {
            let errors = form_errors(e)?;
            consultations_view(&state, signed.viewer(), "", errors, kept).await
        }
    }
}

struct QuestionView {
    id: String,
    text: String,
    kind: QuestionKind,
    /// (value, label, chosen by the viewer)
    options: Vec<(String, String, bool)>,
    text_answer: String,
}

struct ResultRow {
    question: String,
    answered: String,
    counts: Vec<(String, String)>,
    texts: Vec<String>,
}

#[derive(Template)]
#[template(path = "consultation.html")]
struct ConsultationPage {
    nav: Nav,
    message: String,
    c: Consultation,
    state: &'static str,
    state_class: &'static str,
    subject: &'static str,
    questions: Vec<QuestionView>,
    may_answer: bool,
    may_close: bool,
    why_not: String,
    publish_text: bool,
    results: Option<(String, u64, Vec<ResultRow>)>,
    errors: Vec<ErrorLink>,
}

impl ConsultationPage {
    fn error_for(&self, question: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|e| e.anchor == format!("answer-{question}"))
            .map(|e| e.message.as_str())
    }
}

async fn consultation_view(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    message: &str,
    errors: Vec<FieldError>,
    sent: Option<ConsultationResponse>,
) -> PageResult {
    let actor = viewer.actor();
    let c = state.service.get_consultation(&actor, id).await?;
    let (state_text, state_class) = state_label(c.state);
    let mine = match sent {
        Some(r) => Some(r),
        None if c.answered => state
            .service
            .my_consultation_response(&actor, id)
            .await
            .ok(),
        None => None,
    };
    let (may_answer, why_not) = if c.state != ConsultationState::Open {
        (false, String::new())
    } else if viewer.session().is_none() {
        (
            false,
            "Sign in with a resident's account to answer.".to_string(),
        )
    } else {
        let linked = match (&c.audience, &c.dataset_id) {
            (Audience::LinkedResidents, Some(d)) => state
                .service
                .my_links(&actor)
                .await?
                .iter()
                .any(|l| &l.dataset_id == d),
            _ => false,
        };
        match authz::may_answer_consultation(&actor, c.audience, linked) {
            Ok(()) => (true, String::new()),
            Err(why) => (false, format!("You cannot answer: {why}.")),
        }
    };
    let answer_of = |q: &str| {
        mine.as_ref()
            .and_then(|r| r.answers.iter().find(|a| a.question == q))
    };
    let questions = c
        .questions
        .iter()
        .map(|q| {
            let a = answer_of(&q.id);
            let options = q
                .values()
                .into_iter()
                .map(|v| {
                    let chosen = a.is_some_and(|a| match q.kind {
                        QuestionKind::SingleChoice => a.choice.as_deref() == Some(v.as_str()),
                        QuestionKind::MultipleChoice => {
                            a.choices.as_ref().is_some_and(|cs| cs.contains(&v))
                        }
                        QuestionKind::Scale => a.scale.map(|s| s.to_string()) == Some(v.clone()),
                        QuestionKind::FreeText => false,
                    });
                    let label = match (q.kind, v.as_str()) {
                        (QuestionKind::Scale, "1") => "1 — not at all".to_string(),
                        (QuestionKind::Scale, "5") => "5 — entirely".to_string(),
                        _ => v.clone(),
                    };
                    (v, label, chosen)
                })
                .collect();
            QuestionView {
                id: q.id.clone(),
                text: q.text.clone(),
                kind: q.kind,
                options,
                text_answer: a.and_then(|a| a.text.clone()).unwrap_or_default(),
            }
        })
        .collect();
    let results = c.results.as_ref().map(|r| {
        let shown = |n: Option<u64>| match n {
            Some(n) => n.to_string(),
            None => "not shown".to_string(),
        };
        (
            shown(r.respondents),
            r.threshold,
            r.questions
                .iter()
                .map(|qr| ResultRow {
                    question: c
                        .questions
                        .iter()
                        .find(|q| q.id == qr.question)
                        .map(|q| q.text.clone())
                        .unwrap_or_default(),
                    answered: shown(qr.answered),
                    counts: qr
                        .counts
                        .iter()
                        .map(|cc| (cc.choice.clone(), shown(cc.count)))
                        .collect(),
                    texts: qr.texts.clone(),
                })
                .collect(),
        )
    });
    let failed = !errors.is_empty();
    let page = ConsultationPage {
        nav: viewer.nav("consultations"),
        message: message.to_string(),
        state: state_text,
        state_class,
        subject: subject_label(c.subject),
        questions,
        may_answer,
        may_close: viewer.session().is_some()
            && c.state != ConsultationState::Closed
            && authz::may_open_consultation(&actor).is_ok(),
        why_not,
        publish_text: mine.as_ref().is_some_and(|r| r.publish_text),
        results,
        errors: errors
            .into_iter()
            .map(|e| {
                // answers[i].… → the question's anchor.
                let anchor = e
                    .field
                    .strip_prefix("answers[")
                    .and_then(|r| r.split_once(']'))
                    .and_then(|(n, _)| n.parse::<usize>().ok())
                    .and_then(|i| {
                        mine.as_ref()
                            .and_then(|m| m.answers.get(i))
                            .map(|a| format!("answer-{}", a.question))
                    })
                    .unwrap_or_else(|| "answer-form".to_string());
                ErrorLink {
                    anchor,
                    field: e.field,
                    message: e.message,
                }
            })
            .collect(),
        c,
    };
    render_form_page(&page, failed)
}

async fn consultation_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match query_param(raw.as_deref(), "done").as_deref() {
        Some("opened") => "The consultation is published.",
        Some("closed") => "The consultation is closed and its results are published.",
        Some("answered") => {
            "Your answer is recorded. You can change it until the consultation closes; nobody else reads it."
        }
        _ => "",
    };
    consultation_view(&state, &viewer, &id, message, Vec::new(), None).await
}

async fn answer_consultation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let c = state
        .service
        .get_consultation(&signed.session().actor, &id)
        .await?;
    let form = &signed.form;
    let mut answers = Vec::new();
    for q in &c.questions {
        let name = format!("answer_{}", q.id);
        let mut a = AnswerInput {
            question: q.id.clone(),
            ..AnswerInput::default()
        };
        match q.kind {
            QuestionKind::SingleChoice => a.choice = form.opt(&name),
            QuestionKind::MultipleChoice => {
                let picked = form.all(&name);
                a.choices = (!picked.is_empty()).then_some(picked);
            }
            QuestionKind::Scale => {
                a.scale = form.opt(&name).map(|v| v.parse().unwrap_or(0));
            }
            QuestionKind::FreeText => a.text = form.opt(&name),
        }
        if a.choice.is_some() || a.choices.is_some() || a.scale.is_some() || a.text.is_some() {
            answers.push(a);
        }
    }
    let response = ConsultationResponse {
        answers,
        publish_text: form.checked("publish_text"),
        receipt: None,
    };
    match state
        .service
        .respond_to_consultation(&signed.session().actor, &id, response.clone())
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/consultations/{id}?done=answered")).into_response()),
        Err(ServiceError::Invalid(v)) => {
            consultation_view(&state, signed.viewer(), &id, "", v.0, Some(response)).await
        }
        Err(e) => Err(e.into()),
    }
}

async fn close_consultation(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    state
        .service
        .close_consultation(&signed.session().actor, &id)
        .await?;
    Ok(Redirect::to(&format!("/consultations/{id}?done=closed")).into_response())
}

// ---- the charter and the board ------------------------------------------------------

struct VersionView {
    version: i64,
    note: String,
    at: String,
    consultation: String,
    rules: Vec<(&'static str, String)>,
    ethics: Vec<(&'static str, String)>,
    changed_rules: usize,
    changed_ethics: usize,
}

struct TrusteeRow {
    username: String,
    name: String,
    term: String,
    appointed_by: String,
    declarations: String,
    in_term: bool,
}

#[derive(Template)]
#[template(path = "charter.html")]
struct CharterPage {
    nav: Nav,
    message: String,
    version: i64,
    /// The ethics code's lines, each as (emphasised?, text) runs (`**…**` is emphasis).
    ethics_code: Vec<Vec<(bool, String)>>,
    rules: Vec<(String, String, String)>,
    text: String,
    consultation: String,
    trustees: Vec<TrusteeRow>,
    history: Vec<VersionView>,
    is_admin: bool,
    errors: Vec<ErrorLink>,
}

async fn charter_view(
    state: &AppState,
    viewer: &Viewer,
    message: &str,
    errors: Vec<FieldError>,
) -> PageResult {
    let charter = state.service.charter().await?;
    let mut history = Vec::new();
    for v in state.service.charter_history_changes().await? {
        let changes = v.clone();
        let keep =
            |lines: Vec<citytrust_service::governance::DiffLine>| -> Vec<(&'static str, String)> {
                lines
                    .into_iter()
                    .filter(|l| l.op != "same")
                    .map(|l| (l.op, l.text))
                    .collect()
            };
        let rules = keep(changes.rules);
        let ethics = keep(changes.ethics_code);
        history.push(VersionView {
            version: v.version,
            note: v.note,
            at: v
                .created_at
                .replace('T', " ")
                .trim_end_matches('Z')
                .to_string(),
            consultation: v.consultation_id.unwrap_or_default(),
            changed_rules: rules.len(),
            changed_ethics: ethics.len(),
            rules,
            ethics,
        });
    }
    let trustees = state
        .service
        .trustees(&viewer.actor())
        .await?
        .into_iter()
        .map(|t| TrusteeRow {
            term: match (&t.starts_on, &t.ends_on) {
                (Some(s), Some(e)) => format!("{s} to {e}"),
                _ => "not recorded".into(),
            },
            appointed_by: t.appointed_by.unwrap_or_default(),
            declarations: t.declarations.unwrap_or_default(),
            in_term: t.in_term,
            username: t.username.unwrap_or_default(),
            name: t.display_name,
        })
        .collect();
    let failed = !errors.is_empty();
    let page = CharterPage {
        nav: viewer.nav("charter"),
        message: message.to_string(),
        version: charter.version,
        ethics_code: charter
            .ethics_code
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(emphasis)
            .collect(),
        rules: charter
            .rules
            .into_iter()
            .map(|r| (r.id, r.effect, r.reason.unwrap_or_default()))
            .collect(),
        text: charter.text,
        consultation: charter.consultation_id.unwrap_or_default(),
        trustees,
        history,
        is_admin: viewer
            .session()
            .is_some_and(|s| authz::may_administer(&s.actor).is_ok()),
        errors: error_links(errors, |f| format!("term-{}", f.replace('_', "-"))),
    };
    render_form_page(&page, failed)
}

/// A line of the ethics code as runs of plain and `**emphasised**` text
/// (the markdown heading marker dropped).
fn emphasis(line: &str) -> Vec<(bool, String)> {
    line.trim_start_matches("# ")
        .split("**")
        .enumerate()
        .filter(|(_, t)| !t.is_empty())
        .map(|(i, t)| (i % 2 == 1, t.to_string()))
        .collect()
}

async fn charter_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match query_param(raw.as_deref(), "done").as_deref() {
        Some("term") => "The term is recorded.",
        _ => "",
    };
    charter_view(&state, &viewer, message, Vec::new()).await
}

async fn record_term(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let form = &signed.form;
    let input = TermInput {
        starts_on: form.one("starts_on"),
        ends_on: form.one("ends_on"),
        appointed_by: form.one("appointed_by"),
        declarations: form.one("declarations"),
    };
    match state
        .service
        .set_trustee_term(&signed.session().actor, &form.one("username"), input)
        .await
    {
        Ok(_) => Ok(Redirect::to("/charter?done=term#board").into_response()),
        Err(ServiceError::Invalid(v)) => charter_view(&state, signed.viewer(), "", v.0).await,
        Err(e) => Err(e.into()),
    }
}

// ---- outcome reports ------------------------------------------------------------

#[derive(Template)]
#[template(path = "outcome_form.html")]
struct OutcomeFormPage {
    nav: Nav,
    agreement_id: String,
    purpose: String,
    periods: Vec<(String, String)>,
    scales: Vec<(&'static str, &'static str, &'static str)>,
    errors: Vec<ErrorLink>,
    form: BTreeMap<String, String>,
}

impl OutcomeFormPage {
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

const OUTCOME_FIELDS: [&str; 9] = [
    "period",
    "effectiveness",
    "impact",
    "effort",
    "risk",
    "what_was_done",
    "beneficiaries",
    "evidence_url",
    "evidence_dataset_id",
];

async fn outcome_form_view(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    errors: Vec<FieldError>,
    form: BTreeMap<String, String>,
) -> PageResult {
    let Some(session) = viewer.session() else {
        return Err(PageError::SignIn);
    };
    let a = state.service.agreement(id).await?;
    if !state.service.receives(&session.actor, &a).await? {
        return Err(PageError::page(
            StatusCode::FORBIDDEN,
            "Only the agreement's recipient reports its outcome.",
        ));
    }
    let outcomes = state.service.agreement_outcomes(id).await?;
    if outcomes.dues.iter().all(|d| d.reported) {
        return Err(PageError::page(
            StatusCode::CONFLICT,
            format!(
                "Agreement {id} owes no outcome report now: the first is due after a year, or after it ends ({}).",
                a.ends_on
            ),
        ));
    }
    let periods = outcomes
        .dues
        .iter()
        .filter(|d| !d.reported)
        .map(|d| {
            (
                d.period.clone(),
                format!("{} (to {}, due {})", d.period, d.period_ends_on, d.due_on),
            )
        })
        .collect();
    let failed = !errors.is_empty();
    let page = OutcomeFormPage {
        nav: viewer.nav("register"),
        agreement_id: a.id,
        purpose: a.purpose,
        periods,
        scales: vec![
            (
                "effectiveness",
                "How well did the data serve the purpose?",
                "1 not at all … 5 fully",
            ),
            (
                "impact",
                "What difference did it make to residents?",
                "1 none … 5 a large one",
            ),
            (
                "effort",
                "How much effort did it take?",
                "1 little … 5 a great deal",
            ),
            (
                "risk",
                "How much risk did it carry?",
                "1 negligible … 5 serious",
            ),
        ],
        errors: error_links(errors, |f| format!("outcome-{}", f.replace('_', "-"))),
        form,
    };
    render_form_page(&page, failed)
}

async fn outcome_form(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
) -> PageResult {
    outcome_form_view(&state, &viewer, &id, Vec::new(), BTreeMap::new()).await
}

async fn report_outcome(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let form = &signed.form;
    let kept: BTreeMap<String, String> = OUTCOME_FIELDS
        .into_iter()
        .map(|k| (k.to_string(), form.one(k)))
        .collect();
    let rating = |name: &str| form.one(name).parse::<u8>().unwrap_or(0);
    let new = NewOutcomeReport {
        period: form.opt("period"),
        effectiveness: rating("effectiveness"),
        impact: rating("impact"),
        effort: rating("effort"),
        risk: rating("risk"),
        what_was_done: form.one("what_was_done"),
        beneficiaries: form.one("beneficiaries"),
        evidence_url: form.opt("evidence_url"),
        evidence_dataset_id: form.opt("evidence_dataset_id"),
    };
    match state
        .service
        .report_outcome(&signed.session().actor, &id, new)
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/agreements/{id}#outcomes")).into_response()),
        Err(ServiceError::Invalid(v)) => {
            outcome_form_view(&state, signed.viewer(), &id, v.0, kept).await
        }
        Err(e) => Err(e.into()),
    }
}
