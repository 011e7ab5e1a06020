//! The resident's dashboard (`/me`): the records linked to their account,
//! each use of them with its plain-language notice and the choice they made,
//! who used their data, what they shared and were offered, their requests,
//! their messages, a copy of their data, and the log entries about them. It
//! is written for a person, not a lawyer; every action goes through the same
//! service functions as `/api/v1/me/…`, and every form carries the session's
//! CSRF token.
//!
//! Also the trustees' breach register (`/breaches`).

use std::collections::BTreeMap;

use askama::Template;
use axum::Router;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect};
use axum::routing::{get, post};
use citytrust_model::Actor;
use citytrust_model::authz;
use citytrust_model::residents::{
    BreachScope, ChoiceKind, LawfulBasis, NewBreach, NewConsent, NewLink, NewSubjectRequest,
    RegulatorNotice, SubjectRequestKind, SubjectRule,
};
use citytrust_service::ServiceError;

use super::{
    Form, Nav, PageError, PageResult, Viewer, humanise, organization_names, render_form_page,
};
use crate::AppState;
use crate::web::SignedForm;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/me", get(dashboard))
        .route("/me/links", post(link))
        .route("/me/consents", post(give_consent))
        .route("/me/consents/{id}/withdraw", post(withdraw_consent))
        .route("/me/requests", post(make_request))
        .route("/me/export", post(export))
        .route("/breaches", get(breaches_page).post(register_breach))
        .route(
            "/breaches/{id}/regulator-notified",
            post(regulator_notified),
        )
}

/// How one use of a linked dataset stands for the resident.
struct UseRow {
    purpose: String,
    purpose_name: String,
    basis: String,
    notice: String,
    /// Consent-based: the resident may consent or donate.
    consentable: bool,
    /// Public task / legitimate interests: the resident may object.
    objectable: bool,
    /// Donation is offered only for public-interest (non-commercial) purposes.
    donatable: bool,
    /// The choices in force for this use.
    choices: Vec<ChoiceRow>,
}

struct ChoiceRow {
    id: String,
    what: String,
    since: String,
    by: String,
}

struct LinkedDataset {
    id: String,
    title: String,
    subject_key: String,
    linked: String,
    notice: String,
    retention: String,
    uses: Vec<UseRow>,
}

struct AccessRow {
    log_index: i64,
    at: String,
    dataset: String,
    by: String,
    purpose: String,
    level: String,
    because: String,
}

struct HistoryRow {
    what: String,
    dataset: String,
    purpose: String,
    recipient: String,
    given: String,
    withdrawn: String,
    by: String,
}

struct SharedRow {
    what: String,
    dataset: String,
    purpose: String,
    recipient: String,
    reward: String,
    state: String,
    uses: usize,
    last_used: String,
}

struct RequestRow {
    id: String,
    kind: String,
    dataset: String,
    made: String,
    due: String,
    status: String,
    status_class: &'static str,
    answer: String,
}

struct MessageRow {
    at: String,
    title: String,
    body: String,
    datasets: String,
    /// The data request it answers (a `data_request` message), else empty.
    data_request: String,
}

struct EntryRow {
    log_index: i64,
    kind: String,
    day: String,
    salt: String,
    commitment: String,
}

struct Org {
    id: String,
    name: String,
}

#[derive(Template)]
#[template(path = "me.html")]
struct DashboardPage {
    nav: Nav,
    display_name: String,
    /// The person acted for (`for` on every form), empty when acting for oneself.
    acting_for: String,
    /// "as their guardian", … when acting for someone.
    acting_as: String,
    /// The people the viewer may act for today, as (username, label).
    principals: Vec<(String, String)>,
    message: String,
    error: String,
    linked: Vec<LinkedDataset>,
    organizations: Vec<Org>,
    accesses: Vec<AccessRow>,
    history: Vec<HistoryRow>,
    shared: Vec<SharedRow>,
    requests: Vec<RequestRow>,
    messages: Vec<MessageRow>,
    entries: Vec<EntryRow>,
    request_kinds: Vec<(String, String)>,
}

fn day_of(rfc3339: &str) -> String {
    rfc3339.chars().take(10).collect()
}

fn when(rfc3339: &str) -> String {
    rfc3339.replace('T', " ").trim_end_matches('Z').to_string()
}

fn who_did(by: &str) -> String {
    match by {
        "data_subject" => "you".into(),
        other => match other.strip_prefix("agent:") {
            Some(kind) => format!("your {} on your behalf", humanise(kind).to_lowercase()),
            None => humanise(other),
        },
    }
}

fn party(by: &str, orgs: &BTreeMap<String, String>) -> String {
    match by.strip_prefix("organization:") {
        Some(id) => orgs.get(id).cloned().unwrap_or_else(|| id.to_string()),
        None if by == "individual" => "a named individual".into(),
        None => humanise(by),
    }
}

fn linked_how(via: &str) -> String {
    match via {
        "link_code" => "with a code from the data owner".into(),
        v if v.starts_with("identity_provider") => "vouched for by your sign-in service".into(),
        other => format!("by {}", humanise(other).to_lowercase()),
    }
}

fn choice_word(kind: ChoiceKind) -> &'static str {
    match kind {
        ChoiceKind::Consent => "You consented",
        ChoiceKind::Objection => "You objected",
        ChoiceKind::Donation => "You donated your data",
    }
}

fn because_text(because: &str) -> &'static str {
    match because {
        "consent" => "you consented",
        "no_objection" => "a public task you had not objected to",
        "basis" => "the law or a contract allows it",
        _ => "the data owner's own use",
    }
}

/// Who the dashboard's reader acts as: themself, or — with `for` — the person
/// an authority in force lets them act for (refused otherwise).
async fn acting(
    state: &AppState,
    viewer: &Viewer,
    for_whom: &str,
) -> Result<citytrust_model::Actor, PageError> {
    let Some(session) = viewer.session() else {
        return Err(PageError::SignIn);
    };
    if for_whom.is_empty() {
        return Ok(session.actor.clone());
    }
    Ok(state
        .service
        .act_for(
            &session.actor,
            for_whom,
            citytrust_model::AuthorityArea::ResidentsChoices,
        )
        .await?)
}

/// A dashboard form: parsed, its CSRF token checked, and who it acts as.
async fn acting_form<'a>(
    state: &AppState,
    signed: &'a SignedForm,
) -> Result<(&'a Form, String, citytrust_model::Actor), PageError> {
    let form = &signed.form;
    let for_whom = form.one("for");
    let actor = acting(state, signed.viewer(), &for_whom).await?;
    Ok((form, for_whom, actor))
}

fn done_url(done: &str, for_whom: &str) -> String {
    if for_whom.is_empty() {
        format!("/me?done={done}")
    } else {
        let who: String = form_urlencoded::byte_serialize(for_whom.as_bytes()).collect();
        format!("/me?done={done}&for={who}")
    }
}

async fn dashboard_view(
    state: &AppState,
    viewer: &Viewer,
    for_whom: &str,
    message: &str,
    error: &str,
) -> PageResult {
    let Some(session) = viewer.session() else {
        return Err(PageError::SignIn);
    };
    let acting_actor = acting(state, viewer, for_whom).await?;
    let actor = &acting_actor;
    let service = &state.service;
    let today =
        citytrust_model::access::format_day(service.now().unix_timestamp().div_euclid(86_400));
    let me = session.user.username.clone();
    let mut principals = Vec::new();
    for a in service.list_authorities(&session.actor).await? {
        if a.agent == me && a.revoked_at.is_none() && a.starts_on <= today && today <= a.ends_on {
            let label = format!(
                "{} (as their {})",
                a.principal,
                humanise(a.kind.as_str()).to_lowercase()
            );
            principals.push((a.principal, label));
        }
    }
    let acting_as = match actor.agent() {
        Some(agent) => format!("as their {}", humanise(agent.kind.as_str()).to_lowercase()),
        None => String::new(),
    };
    let display_name = match actor.username() {
        Some(u) if actor.agent().is_some() => service
            .get_user(u)
            .await
            .map(|u| u.display_name)
            .unwrap_or_else(|_| u.to_string()),
        _ => session.user.display_name.clone(),
    };
    let orgs = organization_names(state).await?;
    let org_name = |id: &Option<String>| match id {
        Some(id) => orgs.get(id).cloned().unwrap_or_else(|| id.clone()),
        None => "any organisation with an agreement for this use".to_string(),
    };
    let purposes: BTreeMap<String, citytrust_model::access::Purpose> = service
        .purposes()
        .await?
        .into_iter()
        .map(|p| (p.id.clone(), p))
        .collect();
    let consents = service.my_consents(actor).await?;
    let mut linked = Vec::new();
    for link in service.my_links(actor).await? {
        let Ok(dataset) = service.get_dataset(&link.dataset_id).await else {
            continue;
        };
        let Some(terms) = dataset.metadata.personal_terms.clone() else {
            continue;
        };
        let uses = terms
            .purposes
            .iter()
            .map(|p| {
                let purpose = purposes.get(&p.purpose);
                let rule = p.basis.filter();
                UseRow {
                    purpose: p.purpose.clone(),
                    purpose_name: purpose
                        .map(|x| x.name.clone())
                        .unwrap_or_else(|| humanise(&p.purpose)),
                    basis: p.basis.label().to_string(),
                    notice: p.notice.clone(),
                    consentable: rule == SubjectRule::OnlyConsenting,
                    objectable: rule == SubjectRule::AllButObjecting,
                    donatable: p.basis == LawfulBasis::Consent
                        && purpose.is_some_and(|x| !x.commercial),
                    choices: consents
                        .iter()
                        .filter(|c| {
                            c.in_force() && c.dataset_id == dataset.id && c.purpose == p.purpose
                        })
                        .map(|c| ChoiceRow {
                            id: c.id.clone(),
                            what: format!(
                                "{}{}",
                                choice_word(c.kind),
                                if c.kind == ChoiceKind::Objection {
                                    String::new()
                                } else {
                                    format!(" (for {})", org_name(&c.recipient_organization_id))
                                }
                            ),
                            since: day_of(&c.given_at),
                            by: who_did(&c.given_by),
                        })
                        .collect(),
                }
            })
            .collect();
        linked.push(LinkedDataset {
            id: dataset.id.clone(),
            title: dataset.metadata.title.clone(),
            subject_key: link.subject_key.clone(),
            linked: format!("{}, {}", day_of(&link.linked_at), linked_how(&link.via)),
            notice: terms.notice.clone(),
            retention: terms
                .retention_note
                .clone()
                .or(terms.retention.clone())
                .unwrap_or_else(|| "not stated".into()),
            uses,
        });
    }
    let accesses = service
        .my_accesses(actor, None, 100)
        .await?
        .into_iter()
        .map(|a| AccessRow {
            log_index: a.log_index,
            at: when(&a.at),
            dataset: a.dataset_id,
            by: party(&a.by, &orgs),
            purpose: a
                .purpose
                .as_ref()
                .map(|p| purposes.get(p).map(|x| x.name.clone()).unwrap_or(p.clone()))
                .unwrap_or_else(|| "—".into()),
            level: humanise(&a.level),
            because: because_text(&a.because).to_string(),
        })
        .collect();
    let history = consents
        .iter()
        .map(|c| HistoryRow {
            what: humanise(c.kind.as_str()),
            dataset: c.dataset_id.clone(),
            purpose: c.purpose.clone(),
            recipient: if c.kind == ChoiceKind::Objection {
                "—".into()
            } else {
                org_name(&c.recipient_organization_id)
            },
            given: when(&c.given_at),
            withdrawn: c.withdrawn_at.as_deref().map(when).unwrap_or_default(),
            by: who_did(&c.given_by),
        })
        .collect();
    let shared = service
        .my_sharing(actor)
        .await?
        .into_iter()
        .map(|s| SharedRow {
            what: humanise(&s.kind),
            dataset: s.dataset_id,
            purpose: s.purpose,
            recipient: org_name(&s.recipient_organization_id),
            reward: s.reward.unwrap_or_else(|| "nothing".into()),
            state: match &s.withdrawn_at {
                Some(w) => format!("withdrawn {}", day_of(w)),
                None => "in force".into(),
            },
            uses: s.uses,
            last_used: s.last_used_at.as_deref().map(when).unwrap_or_default(),
        })
        .collect();
    let requests = service
        .my_subject_requests(actor)
        .await?
        .into_iter()
        .map(|r| RequestRow {
            id: r.id,
            kind: humanise(r.kind.label()),
            dataset: r.dataset_id.unwrap_or_else(|| "all your records".into()),
            made: day_of(&r.created_at),
            due: r.due_on,
            status: humanise(r.status.as_str()),
            status_class: match r.status.as_str() {
                "answered" => "badge-ok",
                "refused" => "badge-no",
                _ => "badge-wait",
            },
            answer: r.answer.unwrap_or_default(),
        })
        .collect();
    let messages = service
        .my_inbox(actor)
        .await?
        .into_iter()
        .map(|m| MessageRow {
            at: when(&m.at),
            title: m.title,
            body: m.body,
            datasets: m.dataset_ids.join(", "),
            data_request: m.data_request_id.unwrap_or_default(),
        })
        .collect();
    let entries = service
        .entries_about_me(actor)
        .await?
        .into_iter()
        .map(|e| EntryRow {
            log_index: e.log_index,
            kind: humanise(&e.kind.replace('.', "_")),
            day: e.day,
            salt: e.salt,
            commitment: e.commitment,
        })
        .collect();
    let request_kinds = [
        SubjectRequestKind::Access,
        SubjectRequestKind::Rectification,
        SubjectRequestKind::Erasure,
    ]
    .into_iter()
    .map(|k| (k.as_str().to_string(), humanise(k.label())))
    .collect();
    let page = DashboardPage {
        nav: viewer.nav("me"),
        display_name,
        acting_for: if actor.agent().is_some() {
            for_whom.to_string()
        } else {
            String::new()
        },
        acting_as,
        principals,
        message: message.to_string(),
        error: error.to_string(),
        linked,
        organizations: orgs
            .iter()
            .map(|(id, name)| Org {
                id: id.clone(),
                name: name.clone(),
            })
            .collect(),
        accesses,
        history,
        shared,
        requests,
        messages,
        entries,
        request_kinds,
    };
    render_form_page(&page, !error.is_empty())
}

async fn dashboard(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let done = super::query_param(raw.as_deref(), "done").unwrap_or_default();
    let message = match done.as_str() {
        "link" => "Your records are linked to your account.",
        "consent" => {
            "Your choice is recorded. A signed receipt is in your records (API: /api/v1/me/consents)."
        }
        "withdraw" => "Withdrawn. From the very next read, your records are left out of this use.",
        "request" => "Your request is sent. The data owner must answer by the date shown.",
        _ => "",
    };
    let for_whom = super::query_param(raw.as_deref(), "for").unwrap_or_default();
    dashboard_view(&state, &viewer, &for_whom, message, "").await
}

/// A refusal the resident can act on is shown on the dashboard; anything else is an error page.
async fn outcome<T>(
    state: &AppState,
    viewer: &Viewer,
    for_whom: &str,
    result: Result<T, ServiceError>,
    done: &str,
) -> PageResult {
    match result {
        Ok(_) => Ok(Redirect::to(&done_url(done, for_whom)).into_response()),
        Err(ServiceError::Invalid(v)) => {
            let text =
                v.0.iter()
                    .map(|e| format!("{}: {}", humanise(&e.field), e.message))
                    .collect::<Vec<_>>()
                    .join("; ");
            dashboard_view(state, viewer, for_whom, "", &text).await
        }
        Err(
            e @ (ServiceError::Refused { .. }
            | ServiceError::Conflict(_)
            | ServiceError::Forbidden(_)),
        ) => dashboard_view(state, viewer, for_whom, "", &e.to_string()).await,
        Err(other) => Err(other.into()),
    }
}

async fn link(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, for_whom, actor) = acting_form(&state, &signed).await?;
    let result = state
        .service
        .link_with_code(
            &actor,
            NewLink {
                code: form.one("code"),
            },
        )
        .await;
    outcome(&state, signed.viewer(), &for_whom, result, "link").await
}

async fn give_consent(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, for_whom, actor) = acting_form(&state, &signed).await?;
    let kind = match form.one("kind").as_str() {
        "objection" => ChoiceKind::Objection,
        "donation" => ChoiceKind::Donation,
        _ => ChoiceKind::Consent,
    };
    let new = NewConsent {
        dataset_id: form.one("dataset_id"),
        purpose: form.one("purpose"),
        recipient_organization_id: form.opt("recipient"),
        kind,
        reward: None,
    };
    let result = state.service.give_consent(&actor, new).await;
    outcome(&state, signed.viewer(), &for_whom, result, "consent").await
}

async fn withdraw_consent(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let (_, for_whom, actor) = acting_form(&state, &signed).await?;
    let result = state.service.withdraw_consent(&actor, &id).await;
    outcome(&state, signed.viewer(), &for_whom, result, "withdraw").await
}

async fn make_request(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, for_whom, actor) = acting_form(&state, &signed).await?;
    let Some(kind) = SubjectRequestKind::parse(&form.one("kind")) else {
        return dashboard_view(
            &state,
            signed.viewer(),
            &for_whom,
            "",
            "Choose what you are asking for.",
        )
        .await;
    };
    let new = NewSubjectRequest {
        kind,
        dataset_id: form.opt("dataset_id"),
        details: form.one("details"),
    };
    let result = state.service.make_subject_request(&actor, new).await;
    outcome(&state, signed.viewer(), &for_whom, result, "request").await
}

/// The export bundle, as a download (a POST: making it writes a log entry).
async fn export(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (_, _, actor) = acting_form(&state, &signed).await?;
    let bundle = state.service.my_export(&actor).await?;
    Ok(crate::residents::bundle_response(bundle))
}

// ---- the trustees' breach register --------------------------------------------

struct BreachRow {
    id: String,
    title: String,
    datasets: String,
    scope: String,
    registered: String,
    affected: usize,
    notified: usize,
    due: String,
    regulator: String,
    overdue: bool,
    open: bool,
}

#[derive(Template)]
#[template(path = "breaches.html")]
struct BreachesPage {
    nav: Nav,
    message: String,
    errors: Vec<(String, String)>,
    breaches: Vec<BreachRow>,
    datasets: Vec<(String, String)>,
    form: BTreeMap<String, String>,
}

impl BreachesPage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
    fn error_for(&self, name: &str) -> Option<&str> {
        self.errors
            .iter()
            .find(|(f, _)| f == name || f.starts_with(&format!("{name}[")))
            .map(|(_, m)| m.as_str())
    }
}

fn require_trustee(viewer: &Viewer) -> Result<&Actor, PageError> {
    let Some(session) = viewer.session() else {
        return Err(PageError::SignIn);
    };
    if authz::may_keep_breach_register(&session.actor).is_err() {
        return Err(PageError::page(
            StatusCode::FORBIDDEN,
            "Only trustees keep the breach register.",
        ));
    }
    Ok(&session.actor)
}

async fn breaches_view(
    state: &AppState,
    viewer: &Viewer,
    message: &str,
    errors: Vec<(String, String)>,
    form: BTreeMap<String, String>,
) -> PageResult {
    let actor = require_trustee(viewer)?;
    let now = citytrust_service::rfc3339(state.service.now());
    let breaches = state
        .service
        .breaches(actor)
        .await?
        .into_iter()
        .map(|b| BreachRow {
            overdue: b.regulator_overdue(&now),
            open: b.regulator_notified_at.is_none(),
            id: b.id,
            title: b.title,
            datasets: b.dataset_ids.join(", "),
            scope: match b.scope {
                BreachScope::Reads => "what reads served".into(),
                BreachScope::Stored => "everything stored".into(),
            },
            registered: when(&b.registered_at),
            affected: b.affected,
            notified: b.notified,
            due: when(&b.regulator_due_at),
            regulator: match (&b.regulator_notified_at, &b.regulator_reference) {
                (Some(at), Some(r)) => format!("told {} (ref. {r})", when(at)),
                (Some(at), None) => format!("told {}", when(at)),
                _ => "not yet told".into(),
            },
        })
        .collect();
    let datasets = state
        .service
        .personal_datasets()
        .await?
        .into_iter()
        .map(|d| (d.id, d.metadata.title))
        .collect();
    let failed = !errors.is_empty();
    let page = BreachesPage {
        nav: viewer.nav("breaches"),
        message: message.to_string(),
        errors,
        breaches,
        datasets,
        form,
    };
    render_form_page(&page, failed)
}

async fn breaches_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match raw.as_deref().unwrap_or("") {
        "done=breach" => {
            "The breach is registered and everyone it reached who has an account has the notice in their inbox."
        }
        "done=regulator" => "Recorded that the regulator was told.",
        _ => "",
    };
    breaches_view(&state, &viewer, message, Vec::new(), BTreeMap::new()).await
}

async fn register_breach(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, session) = (&signed.form, signed.session());
    let kept: BTreeMap<String, String> = [
        "title",
        "description",
        "dataset_id",
        "scope",
        "agreement_id",
        "reads_from",
        "reads_to",
        "notice",
    ]
    .into_iter()
    .map(|k| (k.to_string(), form.one(k)))
    .collect();
    let new = NewBreach {
        title: form.one("title"),
        description: form.one("description"),
        dataset_ids: form.opt("dataset_id").into_iter().collect(),
        scope: BreachScope::parse(&form.one("scope")).unwrap_or_default(),
        agreement_id: form.opt("agreement_id"),
        reads_from: form.opt("reads_from"),
        reads_to: form.opt("reads_to"),
        notice: form.one("notice"),
    };
    match state.service.register_breach(&session.actor, new).await {
        Ok(_) => Ok(Redirect::to("/breaches?done=breach").into_response()),
        Err(ServiceError::Invalid(v)) => {
            let errors =
                v.0.into_iter()
                    .map(|e| {
                        let field = if e.field.starts_with("dataset_ids") {
                            "dataset_id".to_string()
                        } else {
                            e.field
                        };
                        (field, e.message)
                    })
                    .collect();
            breaches_view(&state, signed.viewer(), "", errors, kept).await
        }
        Err(other) => Err(other.into()),
    }
}

async fn regulator_notified(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let (form, session) = (&signed.form, signed.session());
    state
        .service
        .regulator_notified(
            &session.actor,
            &id,
            RegulatorNotice {
                reference: form.opt("reference"),
            },
        )
        .await?;
    Ok(Redirect::to("/breaches?done=regulator").into_response())
}
