//! Sharing projects in the portal: the list (`/projects`) and a project's
//! page — its stage, what the stage still lacks, every section, its
//! documents and sign-offs — with the actions each viewer may take there:
//! the trustees' sign-off and retirement, the lead's "make the access
//! request", renewal at review, and downloading documents (the project's
//! organisations and the trustees). Sections are filled in through the API
//! (`PATCH /api/v1/projects/{id}`).

use citytrust_model::projects::{DPIA_CRITERIA, Project, Stage};
use citytrust_service::projects::{RenewBody, RetireProjectBody, SignOffBody};

use super::*;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/projects", get(projects_page))
        .route("/projects/{id}", get(project_page))
        .route("/projects/{id}/sign-off", post(sign_off))
        .route("/projects/{id}/share", post(share))
        .route("/projects/{id}/renew", post(renew))
        .route("/projects/{id}/retire", post(retire))
        .route("/projects/{id}/documents/{doc}", get(document))
}

fn stage_label(s: Stage) -> &'static str {
    match s {
        Stage::Discover => "Discover",
        Stage::Prepare => "Prepare",
        Stage::Share => "Share",
        Stage::Review => "Review",
        Stage::Retired => "Retired",
    }
}

struct ProjectRow {
    id: String,
    title: String,
    stage: &'static str,
    lead: String,
    review_on: String,
}

#[derive(Template)]
#[template(path = "projects.html")]
struct ProjectsPage {
    nav: Nav,
    rows: Vec<ProjectRow>,
}

async fn projects_page(State(state): State<AppState>, viewer: Viewer) -> PageResult {
    let orgs = organization_names(&state).await?;
    let rows = state
        .service
        .projects()
        .await?
        .into_iter()
        .map(|p| ProjectRow {
            stage: stage_label(p.stage),
            lead: orgs
                .get(&p.lead_organization_id)
                .cloned()
                .unwrap_or(p.lead_organization_id),
            review_on: p.review_on.unwrap_or_default(),
            id: p.id,
            title: p.title,
        })
        .collect();
    render(&ProjectsPage {
        nav: viewer.nav("register"),
        rows,
    })
}

#[derive(Template)]
#[template(path = "project.html")]
struct ProjectPage {
    nav: Nav,
    message: String,
    p: Project,
    stage: &'static str,
    organizations: String,
    missing: Vec<(String, String)>,
    /// (section, what it says) of every filled-in text section.
    sections: Vec<(&'static str, String)>,
    screening: Vec<(&'static str, String)>,
    may_sign_off: bool,
    may_share: bool,
    may_renew: bool,
    may_retire: bool,
    may_read_documents: bool,
    errors: Vec<ErrorLink>,
}

fn text_sections(p: &Project) -> Vec<(&'static str, String)> {
    let mut out = vec![
        ("User needs", p.reasons.user_needs.clone()),
        ("Organisational aims", p.reasons.organisational_aims.clone()),
        (
            "Pattern of exchange",
            enum_text(&p.reasons.exchange_pattern),
        ),
        (
            "Team",
            p.team
                .iter()
                .map(|t| format!("{} ({}, {})", t.name, enum_text(&t.role), t.organization_id))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        (
            "Ecosystem",
            p.ecosystem
                .iter()
                .map(|m| format!("{} ({})", m.organization, m.role))
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ("Data", p.dataset_ids.join(", ")),
        (
            "Requests for data not yet there",
            p.data_request_ids.join(", "),
        ),
    ];
    for (k, v) in &p.canvas {
        out.push(("Canvas", format!("{k}: {v}")));
    }
    if let Some(m) = &p.maturity {
        out.push((
            "Data maturity",
            format!(
                "technology {}, mindset {}, resources {}, skills {}, operations {}, legal {}",
                enum_text(&m.technology),
                enum_text(&m.mindset),
                enum_text(&m.resources),
                enum_text(&m.skills),
                enum_text(&m.operations),
                enum_text(&m.legal)
            ),
        ));
    }
    let b = &p.business_case;
    for (name, c) in [
        ("Strategic case", &b.strategic),
        ("Economic case", &b.economic),
        ("Commercial case", &b.commercial),
        ("Financial case", &b.financial),
        ("Management case", &b.management),
    ] {
        if !c.providing.is_empty() || !c.receiving.is_empty() {
            out.push((
                name,
                format!("Providing: {} — Receiving: {}", c.providing, c.receiving),
            ));
        }
    }
    out.push(("Legal basis", p.legal_basis.clone()));
    if let Some(e) = &p.ethics_review {
        out.push((
            "Ethics review",
            format!("{}: {}", humanise(&e.outcome), e.notes),
        ));
    }
    if let Some(t) = &p.technical_pattern {
        out.push(("Technical pattern", humanise(&enum_text(t))));
    }
    out.push(("Data cleaning", p.preparation.cleaning.clone()));
    out.push((
        "How the data is explained",
        p.preparation.explanation.clone(),
    ));
    if let Some(r) = &p.share_request {
        out.push((
            "The access request Share makes",
            format!(
                "{} at the {} level, {} to {}",
                r.purpose, r.level, r.starts_on, r.ends_on
            ),
        ));
    }
    out.push(("Access requests made", p.access_request_ids.join(", ")));
    out.push(("Agreements", p.agreement_ids.join(", ")));
    out.retain(|(_, v)| !v.trim().is_empty());
    out
}

async fn project_view(
    state: &AppState,
    viewer: &Viewer,
    id: &str,
    message: &str,
    errors: Vec<FieldError>,
) -> PageResult {
    let p = state.service.project(id).await?;
    let actor = viewer.actor();
    let missing = state.service.project_missing(&p).await?;
    let mut orgs_of_project = vec![p.lead_organization_id.clone()];
    orgs_of_project.extend(p.partner_organization_ids.iter().cloned());
    let member =
        viewer.session().is_some() && authz::may_work_on_project(&actor, &orgs_of_project).is_ok();
    let trustee = viewer.session().is_some() && authz::may_vote(&actor).is_ok();
    let names = organization_names(state).await?;
    let failed = !errors.is_empty();
    let page = ProjectPage {
        nav: viewer.nav("register"),
        message: message.to_string(),
        stage: stage_label(p.stage),
        organizations: orgs_of_project
            .iter()
            .map(|o| names.get(o).cloned().unwrap_or_else(|| o.clone()))
            .collect::<Vec<_>>()
            .join(", "),
        sections: text_sections(&p),
        screening: DPIA_CRITERIA
            .iter()
            .map(|(c, text)| {
                let answer = match p.dpia_screening.get(*c) {
                    Some(true) => "yes",
                    Some(false) => "no",
                    None => "not answered",
                };
                (*text, answer.to_string())
            })
            .collect(),
        may_sign_off: trustee && p.stage.next().is_some(),
        may_share: viewer.session().is_some()
            && p.stage == Stage::Share
            && p.access_request_ids.is_empty()
            && authz::may_work_on_project(&actor, std::slice::from_ref(&p.lead_organization_id))
                .is_ok(),
        may_renew: (member || trustee) && p.stage == Stage::Review,
        may_retire: trustee && p.stage != Stage::Retired,
        may_read_documents: member || trustee || authz::is_administrator(&actor),
        missing,
        errors: errors
            .into_iter()
            .map(|e| ErrorLink {
                anchor: "actions".into(),
                field: e.field,
                message: e.message,
            })
            .collect(),
        p,
    };
    let status = if failed {
        StatusCode::UNPROCESSABLE_ENTITY
    } else {
        StatusCode::OK
    };
    Ok((status, Html(page.render()?)).into_response())
}

async fn project_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match query_param(raw.as_deref(), "done").as_deref() {
        Some("signed") => "The stage is signed off.",
        Some("shared") => "The access request is made: the trustees decide it as any other.",
        Some("renewed") => "The project is renewed.",
        Some("retired") => {
            "The project is retired; its agreements are retired and their deletion is to be attested."
        }
        _ => "",
    };
    project_view(&state, &viewer, &id, message, Vec::new()).await
}

/// Run an action; a refusal with field errors shows the page with them.
async fn act(
    state: &AppState,
    signed: &SignedForm,
    id: &str,
    done: &str,
    result: Result<Project, ServiceError>,
) -> PageResult {
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/projects/{id}?done={done}")).into_response()),
        Err(ServiceError::Invalid(v)) => project_view(state, signed.viewer(), id, "", v.0).await,
        Err(e) => Err(e.into()),
    }
}

async fn sign_off(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let body = SignOffBody {
        stage: enum_value(&signed.form.one("stage")).unwrap_or_default(),
        note: signed.form.one("note"),
    };
    let result = state
        .service
        .sign_off_stage(&signed.session().actor, &id, body)
        .await;
    act(&state, &signed, &id, "signed", result).await
}

async fn share(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let result = state
        .service
        .share_project(&signed.session().actor, &id)
        .await;
    act(&state, &signed, &id, "shared", result).await
}

async fn renew(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let body = RenewBody {
        review_on: signed.form.one("review_on"),
    };
    let result = state
        .service
        .renew_project(&signed.session().actor, &id, body)
        .await;
    act(&state, &signed, &id, "renewed", result).await
}

async fn retire(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let body = RetireProjectBody {
        reason: signed.form.one("reason"),
    };
    let result = state
        .service
        .retire_project(&signed.session().actor, &id, body)
        .await;
    act(&state, &signed, &id, "retired", result).await
}

async fn document(
    State(state): State<AppState>,
    viewer: Viewer,
    Path((id, doc)): Path<(String, String)>,
) -> PageResult {
    if viewer.session().is_none() {
        return Err(PageError::SignIn);
    }
    let (meta, bytes) = state
        .service
        .project_document(&viewer.actor(), &id, &doc)
        .await?;
    let name = meta.name.replace(
        |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
        "_",
    );
    let mut res = bytes.into_response();
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        res.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(res)
}
