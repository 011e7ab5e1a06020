//! Sharing projects in the portal: the list (`/projects`) and a project's
//! page — its stage, what the stage still lacks, every section, its
//! documents and sign-offs — with the actions each viewer may take there:
//! the trustees' sign-off and retirement, the lead's "make the access
//! request", renewal at review, and downloading documents (the project's
//! organisations and the trustees). Sections are filled in through the API
//! and on this page (Discover and Prepare forms; documents as a multipart
//! form, parsed by `SignedForm`).

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
        .route("/projects/{id}/edit", post(edit))
        .route("/projects/{id}/documents", post(upload))
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
    /// The viewer is of the project's organisations and it is not retired.
    may_edit: bool,
    /// The current values of the forms, by field name.
    form: BTreeMap<String, String>,
    roles: Vec<String>,
    levels: Vec<&'static str>,
    patterns: Vec<(String, String)>,
    criteria: Vec<(&'static str, &'static str)>,
    errors: Vec<ErrorLink>,
}

impl ProjectPage {
    fn value(&self, name: &str) -> &str {
        self.form.get(name).map(String::as_str).unwrap_or("")
    }
}

/// The project's current values, as the forms' fields.
fn form_values(p: &Project) -> BTreeMap<String, String> {
    let mut f = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        f.insert(k.to_string(), v);
    };
    put("user_needs", p.reasons.user_needs.clone());
    put("organisational_aims", p.reasons.organisational_aims.clone());
    put("exchange_pattern", enum_text(&p.reasons.exchange_pattern));
    put(
        "team",
        p.team
            .iter()
            .map(|t| {
                format!(
                    "{} | {} | {}",
                    t.name,
                    enum_text(&t.role),
                    t.organization_id
                )
            })
            .collect::<Vec<_>>()
            .join("\n"),
    );
    put(
        "ecosystem",
        p.ecosystem
            .iter()
            .map(|m| format!("{} | {}", m.organization, m.role))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    put("dataset_ids", p.dataset_ids.join(", "));
    put("data_request_ids", p.data_request_ids.join(", "));
    put(
        "canvas",
        p.canvas
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect::<Vec<_>>()
            .join("\n"),
    );
    if let Some(m) = &p.maturity {
        for (k, v) in [
            ("technology", m.technology),
            ("mindset", m.mindset),
            ("resources", m.resources),
            ("skills", m.skills),
            ("operations", m.operations),
            ("legal", m.legal),
        ] {
            put(&format!("maturity_{k}"), enum_text(&v));
        }
    }
    let b = &p.business_case;
    for (name, c) in [
        ("strategic", &b.strategic),
        ("economic", &b.economic),
        ("commercial", &b.commercial),
        ("financial", &b.financial),
        ("management", &b.management),
    ] {
        put(&format!("case_{name}_providing"), c.providing.clone());
        put(&format!("case_{name}_receiving"), c.receiving.clone());
    }
    put("legal_basis", p.legal_basis.clone());
    for (c, v) in &p.dpia_screening {
        put(&format!("dpia_{c}"), if *v { "yes" } else { "no" }.into());
    }
    if let Some(e) = &p.ethics_review {
        put("ethics_outcome", e.outcome.clone());
        put("ethics_notes", e.notes.clone());
    }
    if let Some(t) = &p.technical_pattern {
        put("technical_pattern", enum_text(t));
    }
    put("cleaning", p.preparation.cleaning.clone());
    put("explanation", p.preparation.explanation.clone());
    if let Some(r) = &p.share_request {
        put("request_purpose", r.purpose.clone());
        put("request_level", r.level.clone());
        put("request_starts_on", r.starts_on.clone());
        put("request_ends_on", r.ends_on.clone());
        put("request_benefit", r.benefit.clone());
        for (q, a) in &r.checklist {
            put(&format!("checklist_{q}"), a.clone());
        }
    }
    put("review_on", p.review_on.clone().unwrap_or_default());
    f
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
        may_edit: member && p.stage != Stage::Retired,
        form: form_values(&p),
        roles: [
            "senior_sponsor",
            "elected_leader",
            "head_of_service",
            "frontline_officer",
            "head_of_analysis",
            "analyst",
            "gis_specialist",
            "data_scientist",
            "chief_data_officer",
            "head_of_it",
            "data_provision_lead",
            "systems_analyst",
            "technical_security",
            "data_protection_officer",
            "senior_information_risk_owner",
            "legal",
            "information_governance_lead",
            "communications",
            "finance",
        ]
        .iter()
        .map(|r| r.to_string())
        .collect(),
        levels: citytrust_model::AccessLevel::ALL
            .iter()
            .map(|l| l.as_str())
            .collect(),
        patterns: [
            ("in_person", "1. In person"),
            (
                "unconnected_systems",
                "2. Access to two unconnected systems",
            ),
            ("one_off_over_internet", "3. One-off over the internet"),
            ("third_party", "4. Through a third party"),
            (
                "digital_in_analogue_way",
                "5. Digital data in an analogue way",
            ),
            ("physical_media", "6. One-off on physical media"),
            ("open_publication", "7. Open publication"),
            ("api", "8. Through an API"),
        ]
        .iter()
        .map(|(v, l)| (v.to_string(), l.to_string()))
        .collect(),
        criteria: DPIA_CRITERIA.to_vec(),
        missing,
        errors: error_links(errors, |_| "actions".into()),
        p,
    };
    render_form_page(&page, failed)
}

async fn project_page(
    State(state): State<AppState>,
    viewer: Viewer,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let message = match query_param(raw.as_deref(), "done").as_deref() {
        Some("signed") => "The stage is signed off.",
        Some("saved") => "Saved.",
        Some("kept") => "The document is kept; its digest is in the log.",
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

// ---- filling in a project -----------------------------------------------------------

/// Lines of `a | b | c`, each split and trimmed; blank lines skipped.
fn rows(text: &str, parts: usize) -> Vec<Vec<String>> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let mut cells: Vec<String> =
                l.splitn(parts, '|').map(|c| c.trim().to_string()).collect();
            cells.resize(parts, String::new());
            cells
        })
        .collect()
}

/// Ids separated by commas, spaces or lines.
fn ids(text: &str) -> Vec<String> {
    text.split(|c: char| c == ',' || c.is_whitespace())
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// The Discover or Prepare form as a `ProjectUpdate`; a field that does not
/// parse is an error naming it.
fn update_from_form(
    form: &Form,
    section: &str,
) -> Result<citytrust_model::projects::ProjectUpdate, Vec<FieldError>> {
    use citytrust_model::projects::{
        BusinessCase, CaseParts, EcosystemMember, EthicsReview, MaturityAssessment, Preparation,
        ProjectUpdate, Reasons, TeamMember,
    };
    let mut errors = Vec::new();
    let mut err = |field: String, message: &str| {
        errors.push(FieldError {
            field,
            message: message.to_string(),
        })
    };
    let mut u = ProjectUpdate {
        revision: form.one("revision").parse().unwrap_or(-1),
        ..ProjectUpdate::default()
    };
    match section {
        "discover" => {
            u.reasons = Some(Reasons {
                user_needs: form.one("user_needs"),
                organisational_aims: form.one("organisational_aims"),
                exchange_pattern: enum_value(&form.one("exchange_pattern")).unwrap_or_default(),
            });
            let mut team = Vec::new();
            for (i, r) in rows(&form.one("team"), 3).into_iter().enumerate() {
                match enum_value(&r[1].replace([' ', '-'], "_").to_lowercase()) {
                    Some(role) => team.push(TeamMember {
                        name: r[0].clone(),
                        role,
                        organization_id: r[2].clone(),
                    }),
                    None => err(format!("team[{i}].role"), "not one of the toolkit's roles"),
                }
            }
            u.team = Some(team);
            u.ecosystem = Some(
                rows(&form.one("ecosystem"), 2)
                    .into_iter()
                    .map(|r| EcosystemMember {
                        organization: r[0].clone(),
                        role: r[1].clone(),
                    })
                    .collect(),
            );
            u.dataset_ids = Some(ids(&form.one("dataset_ids")));
            u.data_request_ids = Some(ids(&form.one("data_request_ids")));
            u.canvas = Some(
                form.one("canvas")
                    .lines()
                    .filter_map(|l| l.split_once(':'))
                    .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_string()))
                    .filter(|(k, v)| !k.is_empty() && !v.is_empty())
                    .collect(),
            );
            let level = |name: &str| enum_value(&form.one(name));
            if let (
                Some(technology),
                Some(mindset),
                Some(resources),
                Some(skills),
                Some(operations),
                Some(legal),
            ) = (
                level("maturity_technology"),
                level("maturity_mindset"),
                level("maturity_resources"),
                level("maturity_skills"),
                level("maturity_operations"),
                level("maturity_legal"),
            ) {
                u.maturity = Some(MaturityAssessment {
                    technology,
                    mindset,
                    resources,
                    skills,
                    operations,
                    legal,
                });
            }
        }
        "prepare" => {
            let case = |name: &str| CaseParts {
                providing: form.one(&format!("case_{name}_providing")),
                receiving: form.one(&format!("case_{name}_receiving")),
            };
            u.business_case = Some(BusinessCase {
                strategic: case("strategic"),
                economic: case("economic"),
                commercial: case("commercial"),
                financial: case("financial"),
                management: case("management"),
            });
            u.legal_basis = Some(form.one("legal_basis"));
            u.dpia_screening = Some(
                citytrust_model::projects::DPIA_CRITERIA
                    .iter()
                    .filter_map(|(c, _)| match form.one(&format!("dpia_{c}")).as_str() {
                        "yes" => Some((c.to_string(), true)),
                        "no" => Some((c.to_string(), false)),
                        _ => None,
                    })
                    .collect(),
            );
            if !form.one("ethics_outcome").is_empty() {
                u.ethics_review = Some(EthicsReview {
                    outcome: form.one("ethics_outcome"),
                    notes: form.one("ethics_notes"),
                });
            }
            u.technical_pattern = enum_value(&form.one("technical_pattern"));
            u.preparation = Some(Preparation {
                cleaning: form.one("cleaning"),
                explanation: form.one("explanation"),
            });
            if !form.one("request_purpose").is_empty() {
                let checklist = [
                    "justified",
                    "benefits_and_risks",
                    "proportionate",
                    "without_personal_data",
                    "power_to_share",
                ]
                .iter()
                .map(|q| (q.to_string(), form.one(&format!("checklist_{q}"))))
                .filter(|(_, a)| !a.trim().is_empty())
                .collect();
                u.share_request = Some(citytrust_model::NewAccessRequest {
                    dataset_ids: vec![],
                    purpose: form.one("request_purpose"),
                    level: form.one("request_level"),
                    starts_on: form.one("request_starts_on"),
                    ends_on: form.one("request_ends_on"),
                    benefit: form.one("request_benefit"),
                    sharing: Default::default(),
                    checklist,
                    organization_id: None,
                    group_id: None,
                    columns: vec![],
                    terms: Default::default(),
                    amends: None,
                    draft: false,
                });
            }
            u.review_on = form.opt("review_on");
        }
        _ => err("section".into(), "discover or prepare"),
    }
    if errors.is_empty() {
        Ok(u)
    } else {
        Err(errors)
    }
}

async fn edit(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let section = signed.form.one("section");
    let update = match update_from_form(&signed.form, &section) {
        Ok(u) => u,
        Err(errors) => return project_view(&state, signed.viewer(), &id, "", errors).await,
    };
    let result = state
        .service
        .update_project(&signed.session().actor, &id, update)
        .await;
    act(&state, &signed, &id, "saved", result).await
}

/// A document sent with the page's form (multipart, no JavaScript needed).
async fn upload(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let Some(file) = signed.form.file("document") else {
        let errors = vec![FieldError {
            field: "document".into(),
            message: "choose a file".into(),
        }];
        return project_view(&state, signed.viewer(), &id, "", errors).await;
    };
    let name = signed
        .form
        .opt("name")
        .unwrap_or_else(|| file.filename.clone());
    let result = state
        .service
        .add_project_document(
            &signed.session().actor,
            &id,
            &signed.form.one("kind"),
            &name,
            &file.content_type,
            &file.bytes,
        )
        .await;
    match result {
        Ok(_) => Ok(Redirect::to(&format!("/projects/{id}?done=kept")).into_response()),
        Err(ServiceError::Invalid(v)) => project_view(&state, signed.viewer(), &id, "", v.0).await,
        Err(e) => Err(e.into()),
    }
}
