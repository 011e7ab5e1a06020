//! The portal's governance pages: asking for access, the trustees' queue and
//! vote form, the public register of decisions and agreements.

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;

use axum::extract::{Path, RawQuery, State};

use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use citytrust_model::Actor;
use citytrust_model::access::{
    AccessLevel, AccessRequest, Agreement, NewAccessRequest, NewVote, Question, RequestStatus,
    Sharing, Terms, VoteChoice,
};
use citytrust_model::authz;
use citytrust_service::ServiceError;

use super::{
    Choice, Nav, PageError, PageResult, Viewer, humanise, query_number, query_param, render,
};
use crate::AppState;
use crate::web::SignedForm;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/requests", get(requests_page).post(create_request))
        .route("/requests/new", get(new_request_form))
        .route("/requests/{id}", get(request_page))
        .route("/requests/{id}/vote", post(vote))
        .route("/requests/{id}/comment", post(comment))
        .route("/register", get(register_page))
        .route("/agreements/{id}", get(agreement_page))
}

/// One row of a list of requests.
struct RequestRow {
    id: String,
    datasets: String,
    purpose: String,
    level: String,
    period: String,
    status: String,
    status_class: &'static str,
    flags: String,
    votes: usize,
}

fn status_label(s: RequestStatus) -> String {
    humanise(s.as_str())
}

fn status_class(s: RequestStatus) -> &'static str {
    match s {
        RequestStatus::Approved => "badge-ok",
        RequestStatus::Denied | RequestStatus::Refused => "badge-no",
        _ => "badge-wait",
    }
}

fn row(r: &AccessRequest) -> RequestRow {
    RequestRow {
        id: r.id.clone(),
        datasets: r.dataset_ids.join(", "),
        purpose: r.purpose.clone(),
        level: r.level.label().to_string(),
        period: format!("{} to {}", r.starts_on, r.ends_on),
        status: status_label(r.status),
        status_class: status_class(r.status),
        flags: r
            .risk_flags
            .iter()
            .map(|f| humanise(f))
            .collect::<Vec<_>>()
            .join(", "),
        votes: r.votes.len(),
    }
}

#[derive(Template)]
#[template(path = "requests.html")]
struct RequestsPage {
    nav: Nav,
    mine: Vec<RequestRow>,
    /// Requests to other trusts, through the Dataspace Protocol.
    remote: Vec<RemoteRow>,
    queue: Vec<RequestRow>,
    overdue: Vec<AgreementRow>,
    /// Outcome reports past their date (trustees).
    overdue_outcomes: Vec<citytrust_model::participation::OutcomeDue>,
    is_trustee: bool,
    message: String,
}

/// A request to another trust, as "my requests" lists it.
struct RemoteRow {
    pid: String,
    title: String,
    federated_id: String,
    participant: String,
    organization: String,
    level: String,
    purpose: String,
    state: &'static str,
    transfer: &'static str,
    readable: bool,
    note: String,
}

fn remote_row(n: citytrust_model::federation::ConsumerNegotiation) -> RemoteRow {
    use citytrust_model::federation::{NegotiationState as S, TransferState as T};
    let state = match n.state {
        S::Requested | S::Offered | S::Accepted => "waiting for its trustees",
        S::Agreed | S::Verified => "agreed, being confirmed",
        S::Finalized => "agreed",
        S::Terminated => "ended",
    };
    let (transfer, readable) = match n.transfer.as_ref().map(|t| t.state) {
        None => ("", false),
        Some(T::Requested) => ("being set up", false),
        Some(T::Started) => ("open", true),
        Some(T::Suspended) => ("suspended", false),
        Some(T::Completed) => ("completed", false),
        Some(T::Terminated) => ("ended", false),
    };
    RemoteRow {
        pid: n.consumer_pid,
        title: n.title,
        federated_id: n.federated_id,
        participant: n.participant_id,
        organization: n.organization_id,
        level: n.level,
        purpose: n.purpose,
        state,
        transfer,
        readable,
        note: n.termination.or(n.last_error).unwrap_or_default(),
    }
}

async fn requests_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let Some(session) = viewer.session() else {
        return Err(PageError::SignIn);
    };
    let actor = &session.actor;
    let mine = state
        .service
        .list_access_requests(actor, true, &[])
        .await?
        .iter()
        .map(row)
        .collect();
    let remote = state
        .service
        .my_remote_requests(actor)
        .await?
        .into_iter()
        .map(remote_row)
        .collect();
    let is_trustee = authz::may_vote(actor).is_ok();
    let queue = if is_trustee {
        state
            .service
            .list_access_requests(
                actor,
                false,
                &[RequestStatus::UnderReview, RequestStatus::PublicComment],
            )
            .await?
            .iter()
            .map(row)
            .collect()
    } else {
        Vec::new()
    };
    let overdue = if is_trustee {
        state
            .service
            .overdue_attestations(actor)
            .await?
            .iter()
            .map(agreement_row)
            .collect()
    } else {
        Vec::new()
    };
    let overdue_outcomes = if is_trustee {
        state.service.overdue_outcomes(actor).await?
    } else {
        Vec::new()
    };
    let message = match raw.as_deref().unwrap_or("") {
        "done=draft" => "Draft saved. Only you can see it until you submit it.",
        "done=remote" => {
            "Your request was sent to the other trust. Its trustees decide; its state shows below."
        }
        _ => "",
    };
    render(&RequestsPage {
        nav: viewer.nav("requests"),
        mine,
        remote,
        queue,
        overdue,
        overdue_outcomes,
        is_trustee,
        message: message.into(),
    })
}

struct QuestionView {
    id: &'static str,
    text: &'static str,
    answer: String,
}

#[derive(Template)]
#[template(path = "request_form.html")]
struct RequestForm {
    nav: Nav,
    datasets: Vec<Choice>,
    purposes: Vec<Choice>,
    levels: Vec<Choice>,
    organizations: Vec<Choice>,
    systematic: Vec<QuestionView>,
    one_off: Vec<QuestionView>,
    sharing_one_off: bool,
    starts_on: String,
    ends_on: String,
    benefit: String,
    errors: Vec<(String, String)>,
    /// The agreement this request renews or amends (empty: a new one).
    amends: String,
}

fn questions(list: &[Question], answers: &BTreeMap<String, String>) -> Vec<QuestionView> {
    list.iter()
        .map(|q| QuestionView {
            id: q.id,
            text: q.text,
            answer: answers.get(q.id).cloned().unwrap_or_default(),
        })
        .collect()
}

async fn request_form(
    state: &AppState,
    viewer: &Viewer,
    values: &NewAccessRequest,
    errors: Vec<(String, String)>,
) -> PageResult {
    let Some(session) = viewer.session() else {
        return Err(PageError::SignIn);
    };
    let catalogue = state.service.all_datasets().await?;
    let datasets = catalogue
        .iter()
        .filter(|d| d.metadata.spectrum != citytrust_model::Spectrum::Open)
        .map(|d| Choice {
            value: d.id.clone(),
            label: format!("{} ({})", d.metadata.title, d.metadata.spectrum.label()),
            selected: values.dataset_ids.contains(&d.id),
        })
        .collect();
    let purposes = state
        .service
        .purposes()
        .await?
        .into_iter()
        .map(|p| Choice {
            selected: p.id == values.purpose,
            label: format!("{} — {}", p.name, p.description),
            value: p.id,
        })
        .collect();
    let levels = AccessLevel::ALL
        .iter()
        .map(|l| Choice {
            value: l.as_str().into(),
            label: l.label().into(),
            selected: l.as_str() == values.level,
        })
        .collect();
    let organizations = session
        .actor
        .organization_ids()
        .iter()
        .map(|o| Choice {
            value: o.clone(),
            label: o.clone(),
            selected: values.organization_id.as_deref() == Some(o),
        })
        .collect();
    let status = if errors.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = RequestForm {
        nav: viewer.nav("requests"),
        datasets,
        purposes,
        levels,
        organizations,
        systematic: questions(Sharing::Systematic.checklist(), &values.checklist),
        one_off: questions(Sharing::OneOff.checklist(), &values.checklist),
        sharing_one_off: values.sharing == Sharing::OneOff,
        starts_on: values.starts_on.clone(),
        ends_on: values.ends_on.clone(),
        benefit: values.benefit.clone(),
        amends: values.amends.clone().unwrap_or_default(),
        errors,
    };
    Ok((status, axum::response::Html(page.render()?)).into_response())
}

async fn new_request_form(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let param = |name: &str| query_param(raw.as_deref(), name);
    let mut values = NewAccessRequest {
        dataset_ids: param("dataset").into_iter().collect(),
        purpose: "research".into(),
        level: "aggregate".into(),
        starts_on: String::new(),
        ends_on: String::new(),
        benefit: String::new(),
        sharing: Sharing::Systematic,
        checklist: BTreeMap::new(),
        organization_id: None,
        group_id: None,
        columns: vec![],
        terms: Terms::default(),
        amends: None,
        draft: false,
    };
    // Renewing or amending: start from the agreement in force and the request that made it.
    if let Some(id) = param("amends") {
        let a = state.service.agreement(&id).await?;
        values.dataset_ids = a.dataset_ids.clone();
        values.purpose = a.purpose.clone();
        values.level = a.level.as_str().into();
        values.starts_on = a.starts_on.clone();
        values.ends_on = a.ends_on.clone();
        values.sharing = a.sharing;
        values.organization_id = a
            .recipient
            .strip_prefix("organization:")
            .map(str::to_string);
        if let Ok(r) = state
            .service
            .get_access_request(&viewer.actor(), &a.request_id)
            .await
        {
            values.benefit = r.benefit;
            values.checklist = r.checklist;
        }
        values.amends = Some(a.id);
    }
    request_form(&state, &viewer, &values, Vec::new()).await
}

async fn create_request(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, session) = (&signed.form, signed.session());
    let sharing = if form.one("sharing") == "one_off" {
        Sharing::OneOff
    } else {
        Sharing::Systematic
    };
    // Only the answers of the chosen checklist count.
    let checklist = sharing
        .checklist()
        .iter()
        .filter_map(|q| {
            form.opt(&format!("{}.{}", sharing.as_str(), q.id))
                .map(|a| (q.id.to_string(), a))
        })
        .collect();
    let draft = form.one("action") == "draft";
    let values = NewAccessRequest {
        dataset_ids: form.all("dataset_ids"),
        purpose: form.one("purpose"),
        level: form.one("level"),
        starts_on: form.one("starts_on"),
        ends_on: form.one("ends_on"),
        benefit: form.one("benefit"),
        sharing,
        checklist,
        organization_id: form.opt("organization_id"),
        group_id: None,
        columns: vec![],
        terms: Terms::default(),
        amends: form.opt("amends"),
        draft,
    };
    // The portal does not edit columns and terms: an amendment keeps the agreement's.
    let mut values = values;
    if let Some(id) = &values.amends
        && let Ok(a) = state.service.agreement(id).await
    {
        values.columns = a.columns;
        values.terms = a.terms;
    }
    match state
        .service
        .create_access_request(&session.actor, values.clone())
        .await
    {
        Ok(r) if draft => {
            let _ = r;
            Ok(Redirect::to("/requests?done=draft").into_response())
        }
        Ok(r) => Ok(Redirect::to(&format!("/requests/{}", r.id)).into_response()),
        Err(ServiceError::Invalid(v)) => {
            let errors = v.0.into_iter().map(|e| (e.field, e.message)).collect();
            request_form(&state, signed.viewer(), &values, errors).await
        }
        Err(other) => Err(other.into()),
    }
}

struct VoteView {
    trustee: String,
    vote: &'static str,
    reason: String,
    conflict: String,
    at: String,
}

#[derive(Template)]
#[template(path = "request.html")]
struct RequestPage {
    nav: Nav,
    r: RequestRow,
    requester: String,
    /// "Ana Agent (power of attorney, authority auth-…)" when an agent made it.
    agent: String,
    organization: String,
    benefit: String,
    sharing: String,
    checklist: Vec<QuestionView>,
    votes: Vec<VoteView>,
    comments: Vec<(String, String, String)>,
    decision: String,
    decision_by: String,
    agreement_id: String,
    comment_until: String,
    may_vote: bool,
    may_comment: bool,
    quorum: String,
    message: String,
    errors: Vec<(String, String)>,
}

async fn request_view(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    message: &str,
    errors: Vec<(String, String)>,
) -> PageResult {
    let actor = viewer.actor();
    let r = state.service.get_access_request(&actor, id).await?;
    let me = actor.username().map(str::to_string);
    let may_vote = authz::may_vote(&actor).is_ok()
        && matches!(
            r.status,
            RequestStatus::UnderReview | RequestStatus::PublicComment
        )
        && me.as_deref() != Some(r.requester.as_str())
        && !r.votes.iter().any(|v| Some(&v.trustee) == me.as_ref());
    let may_comment =
        matches!(actor, Actor::User { .. }) && r.status == RequestStatus::PublicComment;
    let quorum = if matches!(
        r.status,
        RequestStatus::UnderReview | RequestStatus::PublicComment
    ) {
        state.service.quorum_state(&r).await?
    } else {
        String::new()
    };
    let status = if errors.is_empty() {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::UNPROCESSABLE_ENTITY
    };
    let page = RequestPage {
        nav: viewer.nav("requests"),
        requester: r.requester.clone(),
        agent: r.agent.as_ref().map(|a| a.describe()).unwrap_or_default(),
        organization: r
            .organization_id
            .clone()
            .unwrap_or_else(|| "(as an individual)".into()),
        benefit: r.benefit.clone(),
        sharing: humanise(r.sharing.as_str()),
        checklist: questions(r.sharing.checklist(), &r.checklist),
        votes: r
            .votes
            .iter()
            .map(|v| VoteView {
                trustee: v.trustee.clone(),
                vote: match v.vote {
                    VoteChoice::Approve => "Approve",
                    VoteChoice::Deny => "Deny",
                },
                reason: v.reason.clone(),
                conflict: v.conflict_of_interest.clone().unwrap_or_default(),
                at: v.at.clone(),
            })
            .collect(),
        comments: r
            .comments
            .iter()
            .map(|c| (c.by.clone(), c.text.clone(), c.at.clone()))
            .collect(),
        decision: r
            .decision
            .as_ref()
            .map(|d| d.reason.clone())
            .unwrap_or_default(),
        decision_by: r
            .decision
            .as_ref()
            .map(|d| match &d.rule {
                Some(rule) => format!(
                    "the charter's rule “{rule}” (charter version {})",
                    d.charter_version
                ),
                None => format!("the trustees' vote (charter version {})", d.charter_version),
            })
            .unwrap_or_default(),
        agreement_id: r.agreement_id.clone().unwrap_or_default(),
        comment_until: r.comment_until.clone().unwrap_or_default(),
        r: row(&r),
        may_vote,
        may_comment,
        quorum,
        message: message.into(),
        errors,
    };
    Ok((status, axum::response::Html(page.render()?)).into_response())
}

async fn request_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match raw.as_deref().unwrap_or("") {
        "done=vote" => "Your vote is recorded.",
        "done=comment" => "Your comment is published.",
        _ => "",
    };
    request_view(&state, &viewer, &id, message, Vec::new()).await
}

async fn vote(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let (form, session) = (&signed.form, signed.session());
    let choice = match form.one("vote").as_str() {
        "approve" => Some(VoteChoice::Approve),
        "deny" => Some(VoteChoice::Deny),
        _ => None,
    };
    let Some(choice) = choice else {
        return request_view(
            &state,
            signed.viewer(),
            &id,
            "",
            vec![("vote".into(), "choose approve or deny".into())],
        )
        .await;
    };
    let vote = NewVote {
        vote: choice,
        reason: form.one("reason"),
        conflict_of_interest: form.opt("conflict_of_interest"),
        consultation_id: form.opt("consultation_id"),
    };
    match state.service.vote(&session.actor, &id, vote).await {
        Ok(_) => Ok(Redirect::to(&format!("/requests/{id}?done=vote")).into_response()),
        Err(ServiceError::Invalid(v)) => {
            let errors = v.0.into_iter().map(|e| (e.field, e.message)).collect();
            request_view(&state, signed.viewer(), &id, "", errors).await
        }
        Err(other) => Err(other.into()),
    }
}

async fn comment(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let (form, session) = (&signed.form, signed.session());
    match state
        .service
        .comment_on_request(&session.actor, &id, &form.one("text"))
        .await
    {
        Ok(_) => Ok(Redirect::to(&format!("/requests/{id}?done=comment")).into_response()),
        Err(ServiceError::Invalid(v)) => {
            let errors = v.0.into_iter().map(|e| (e.field, e.message)).collect();
            request_view(&state, signed.viewer(), &id, "", errors).await
        }
        Err(other) => Err(other.into()),
    }
}

struct AgreementRow {
    id: String,
    recipient: String,
    datasets: String,
    purpose: String,
    level: String,
    period: String,
    status: String,
    request_id: String,
}

fn agreement_row(a: &Agreement) -> AgreementRow {
    AgreementRow {
        id: a.id.clone(),
        recipient: a.recipient.clone(),
        datasets: a.dataset_ids.join(", "),
        purpose: a.purpose.clone(),
        level: a.level.label().into(),
        period: format!("{} to {}", a.starts_on, a.ends_on),
        status: humanise(a.status.as_str()),
        request_id: a.request_id.clone(),
    }
}

#[derive(Template)]
#[template(path = "register.html")]
struct RegisterPage {
    nav: Nav,
    agreements: Vec<AgreementRow>,
    decisions: Vec<(RequestRow, String)>,
    /// Outcomes by purpose and by year (R-PAR-4).
    outcomes: citytrust_service::participation::OutcomeSummary,
    /// The latest outcome reports.
    reports: Vec<citytrust_model::participation::OutcomeReport>,
}

async fn register_page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let agreements = state
        .service
        .agreements()
        .await?
        .iter()
        .map(agreement_row)
        .collect();
    let decisions = state
        .service
        .list_access_requests(&viewer.actor(), false, &[])
        .await?
        .iter()
        .map(|r| {
            (
                row(r),
                r.decision
                    .as_ref()
                    .map(|d| d.reason.clone())
                    .unwrap_or_else(|| "Not decided yet.".into()),
            )
        })
        .collect();
    let mut reports = state.service.outcome_reports().await?;
    reports.truncate(50);
    render(&RegisterPage {
        nav: viewer.nav("register"),
        agreements,
        decisions,
        outcomes: state.service.outcome_summary().await?,
        reports,
    })
}

#[derive(Template)]
#[template(path = "agreement.html")]
struct AgreementPage {
    nav: Nav,
    a: AgreementRow,
    version: i64,
    providers: String,
    columns: String,
    sharing: String,
    terms: Terms,
    exchange: String,
    decided: String,
    attestation: String,
    created_at: String,
    /// The viewer receives this agreement and may ask to renew or amend it.
    may_amend: bool,
    /// Its signed log entries (a page of them, oldest first).
    log: citytrust_service::analytics::AgreementEntries,
    /// Its outcome reports and what it owes (R-PAR-4).
    outcomes: citytrust_service::participation::AgreementOutcomes,
    /// The viewer receives it and owes a report now.
    may_report: bool,
}

async fn agreement_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let a = state.service.agreement(&id).await?;
    // `?from=N`: the agreement's log entries from index N on.
    let from =
        query_number(raw.as_deref(), "from", "from must be a log entry number.")?.unwrap_or(0);
    let log = state.service.agreement_entries(&a.id, from, 100).await?;
    let receives = state.service.receives(&viewer.actor(), &a).await?;
    let may_amend = a.status == citytrust_model::AgreementStatus::Active && receives;
    let outcomes = state.service.agreement_outcomes(&a.id).await?;
    let may_report = receives && outcomes.dues.iter().any(|d| !d.reported);
    render(&AgreementPage {
        log,
        may_amend,
        outcomes,
        may_report,
        nav: viewer.nav("register"),
        version: a.version,
        providers: a.providers.join(", "),
        columns: if a.columns.is_empty() {
            "All columns".into()
        } else {
            a.columns.join(", ")
        },
        sharing: humanise(a.sharing.as_str()),
        exchange: humanise(match a.terms.exchange_pattern {
            citytrust_model::access::ExchangePattern::MutualExchange => "mutual_exchange",
            citytrust_model::access::ExchangePattern::OtherBenefit => "other_benefit",
            citytrust_model::access::ExchangePattern::LongerTermBenefit => "longer_term_benefit",
        }),
        decided: format!(
            "By {} on {}: {}",
            a.decision.by,
            a.decision.at.get(..10).unwrap_or(&a.decision.at),
            a.decision.reason
        ),
        attestation: match (&a.deletion_attested_at, &a.deletion_statement) {
            (Some(at), statement) => format!(
                "Attested on {}: {}",
                at.get(..10).unwrap_or(at),
                statement.as_deref().unwrap_or("")
            ),
            (None, _) => format!(
                "Not attested yet; due by {} (the end plus {} days of retention).",
                citytrust_model::access::format_day(a.attestation_due()),
                a.terms.retention_days
            ),
        },
        created_at: a.created_at.clone(),
        terms: a.terms.clone(),
        a: agreement_row(&a),
    })
}
