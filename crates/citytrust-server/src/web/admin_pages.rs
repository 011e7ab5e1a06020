//! The administration page: organisations, accounts, memberships, groups
//! and the remote catalogues this trust harvests (register, harvest now,
//! remove, with each one's last report), for administrators
//! (`authz::may_administer`).

use citytrust_model::federation::{
    HarvestOutcome, NewRemoteCatalogue, RejectedRecord, RemoteCatalogue, RemoteKind,
};

use super::*;

pub(super) fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin", get(admin_page))
        .route("/admin/organizations", post(admin_create_organization))
        .route("/admin/users", post(admin_create_user))
        .route("/admin/memberships", post(admin_add_membership))
        .route("/admin/groups", post(admin_create_group))
        .route("/admin/remote-catalogues", post(admin_register_catalogue))
        .route(
            "/admin/remote-catalogues/{id}/harvest",
            post(admin_harvest_catalogue),
        )
        .route(
            "/admin/remote-catalogues/{id}/remove",
            post(admin_remove_catalogue),
        )
}

// ---- administration -------------------------------------------------------------

struct UserRow {
    username: String,
    display_name: String,
    roles: String,
    organizations: String,
}

struct GroupRow {
    id: String,
    name: String,
    criteria: String,
    members: String,
}

struct CatalogueRow {
    id: String,
    name: String,
    kind: &'static str,
    url: String,
    entries: u64,
    /// "Succeeded 2026-… : 3 added, …" or "Failed …: why".
    last: String,
    failed: bool,
    next: String,
    rejected: Vec<RejectedRecord>,
    /// "URL (key)" of the pinned Dataspace participant.
    participant: Option<String>,
}

fn catalogue_row(c: RemoteCatalogue) -> CatalogueRow {
    let (last, failed, rejected) = match c.last_harvest {
        None => ("Not harvested yet".to_string(), false, Vec::new()),
        Some(r) => {
            let when = r.finished_at.replace('T', " ").replace('Z', " UTC");
            match r.outcome {
                HarvestOutcome::Succeeded => (
                    format!(
                        "Succeeded {when}: {} records — {} added, {} updated, {} unchanged, {} removed, {} rejected",
                        r.records, r.added, r.updated, r.unchanged, r.removed, r.rejected
                    ),
                    false,
                    r.rejected_records,
                ),
                HarvestOutcome::Failed => (
                    format!(
                        "Failed {when}: {} — nothing changed",
                        r.error.unwrap_or_default()
                    ),
                    true,
                    r.rejected_records,
                ),
            }
        }
    };
    CatalogueRow {
        participant: c.participant.map(|p| format!("{} ({})", p.id, p.key)),
        kind: match c.kind {
            RemoteKind::Dcat => "DCAT-AP",
            RemoteKind::Ckan => "CKAN",
        },
        next: c.next_harvest_at.replace('T', " ").replace('Z', " UTC"),
        id: c.id,
        name: c.name,
        url: c.url,
        entries: c.entries,
        last,
        failed,
        rejected,
    }
}

#[derive(Template)]
#[template(path = "admin.html")]
struct AdminPage {
    nav: Nav,
    organizations: Vec<Organization>,
    org_choices: Vec<Choice>,
    kinds: Vec<Choice>,
    roles: Vec<Choice>,
    users: Vec<UserRow>,
    groups: Vec<GroupRow>,
    catalogues: Vec<CatalogueRow>,
    message: String,
    errors: Vec<ErrorLink>,
}

/// An administrator's submitted form: parsed, from an administrator, with the session's CSRF token.
fn admin_form(signed: &SignedForm) -> Result<(&Form, &Session), PageError> {
    let session = require_admin(signed.viewer())?;
    Ok((&signed.form, session))
}

fn require_admin(viewer: &Viewer) -> Result<&Session, PageError> {
    match &viewer.0 {
        None => Err(PageError::SignIn),
        Some(s) if authz::may_administer(&s.actor).is_ok() => Ok(s),
        Some(_) => Err(PageError::page(
            StatusCode::FORBIDDEN,
            "Only administrators may see the administration page.",
        )),
    }
}

async fn admin_page(
    State(state): State<AppState>,
    viewer: Viewer,
    RawQuery(raw): RawQuery,
) -> PageResult {
    let session = require_admin(&viewer)?;
    let message = match raw.as_deref().unwrap_or("") {
        "done=organization" => "Organisation created.",
        "done=user" => "Account created.",
        "done=membership" => "Membership added.",
        "done=group" => "Group created.",
        "done=catalogue" => "Catalogue registered and harvested once: its report is below.",
        "done=harvest" => "Harvest finished: its report is below.",
        "done=removed" => "Catalogue removed, with its entries.",
        _ => "",
    };
    admin_view(&state, session, message.into(), Vec::new()).await
}

async fn admin_view(
    state: &AppState,
    session: &Session,
    message: String,
    errors: Vec<FieldError>,
) -> PageResult {
    let organizations = state.service.list_organizations().await?;
    let names: BTreeMap<String, String> = organizations
        .iter()
        .map(|o| (o.id.clone(), o.name.clone()))
        .collect();
    let users = state.service.list_users(&session.actor).await?;
    let groups = state.service.list_groups().await?;
    let catalogues = state
        .service
        .remote_catalogues(&session.actor)
        .await?
        .into_iter()
        .map(catalogue_row)
        .collect();
    let page = AdminPage {
        catalogues,
        nav: Viewer(Some(session.clone())).nav("admin"),
        org_choices: organizations
            .iter()
            .map(|o| Choice {
                value: o.id.clone(),
                label: o.name.clone(),
                selected: false,
            })
            .collect(),
        kinds: OrganizationKind::ALL
            .iter()
            .map(|k| Choice {
                value: k.as_str().into(),
                label: humanise(k.as_str()),
                selected: false,
            })
            .collect(),
        roles: Role::ALL
            .iter()
            .map(|r| Choice {
                value: r.as_str().into(),
                label: humanise(r.as_str()),
                selected: false,
            })
            .collect(),
        users: users
            .into_iter()
            .map(|u| UserRow {
                roles: u
                    .roles
                    .iter()
                    .map(|r| humanise(r.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
                organizations: u
                    .organization_ids
                    .iter()
                    .map(|o| names.get(o).cloned().unwrap_or_else(|| o.clone()))
                    .collect::<Vec<_>>()
                    .join(", "),
                username: u.username,
                display_name: u.display_name,
            })
            .collect(),
        groups: groups
            .into_iter()
            .map(|g| GroupRow {
                members: g
                    .member_organization_ids
                    .iter()
                    .map(|o| names.get(o).cloned().unwrap_or_else(|| o.clone()))
                    .collect::<Vec<_>>()
                    .join(", "),
                id: g.id,
                name: g.name,
                criteria: g.criteria,
            })
            .collect(),
        organizations,
        message,
        errors: errors
            .into_iter()
            .map(|e| ErrorLink {
                anchor: String::new(),
                field: humanise(&e.field),
                message: e.message,
            })
            .collect(),
    };
    let status = if page.errors.is_empty() {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    Ok((status, Html(page.render()?)).into_response())
}

/// Run an administrative change; on a refusal the page is shown again with the reasons.
async fn admin_outcome(
    state: &AppState,
    session: &Session,
    result: Result<(), ServiceError>,
    done: &str,
) -> PageResult {
    match result {
        Ok(()) => Ok(Redirect::to(&format!("/admin?done={done}")).into_response()),
        Err(e) => {
            let errors = form_errors(e)?;
            admin_view(state, session, String::new(), errors).await
        }
    }
}

async fn admin_create_organization(
    State(state): State<AppState>,
    signed: SignedForm,
) -> PageResult {
    let (form, session) = admin_form(&signed)?;
    let kind = OrganizationKind::parse(&form.one("kind")).unwrap_or_default();
    let new = NewOrganization {
        id: form.one("id"),
        name: form.one("name"),
        kind,
        description: form.one("description"),
        url: form.opt("url"),
    };
    let result = state
        .service
        .create_organization(&session.actor, new)
        .await
        .map(|_| ());
    admin_outcome(&state, session, result, "organization").await
}

async fn admin_create_user(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, session) = admin_form(&signed)?;
    let new = NewUser {
        username: form.one("username"),
        display_name: form.one("display_name"),
        email: form.opt("email"),
        password: form.secret("password"),
        roles: form
            .all("roles")
            .iter()
            .filter_map(|r| Role::parse(r))
            .collect(),
        organization_ids: form.all("organization_ids"),
    };
    let result = state
        .service
        .create_user(&session.actor, new)
        .await
        .map(|_| ());
    admin_outcome(&state, session, result, "user").await
}

async fn admin_add_membership(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, session) = admin_form(&signed)?;
    let result = state
        .service
        .add_membership(
            &session.actor,
            &form.one("username"),
            &form.one("organization_id"),
        )
        .await;
    admin_outcome(&state, session, result, "membership").await
}

async fn admin_create_group(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, session) = admin_form(&signed)?;
    let new = NewGroup {
        id: form.one("id"),
        name: form.one("name"),
        description: form.one("description"),
        criteria: form.one("criteria"),
        member_organization_ids: form.all("member_organization_ids"),
    };
    let result = state
        .service
        .create_group(&session.actor, new)
        .await
        .map(|_| ());
    admin_outcome(&state, session, result, "group").await
}

async fn admin_register_catalogue(State(state): State<AppState>, signed: SignedForm) -> PageResult {
    let (form, session) = admin_form(&signed)?;
    let interval_hours = match form.opt("interval_hours") {
        None => None,
        Some(h) => match h.trim().parse::<u32>() {
            Ok(h) => Some(h),
            Err(_) => {
                let errors = vec![FieldError {
                    field: "interval_hours".into(),
                    message: format!("'{h}' is not a whole number of hours"),
                }];
                return admin_view(&state, session, String::new(), errors).await;
            }
        },
    };
    let kind = match form.one("kind").as_str() {
        "ckan" => RemoteKind::Ckan,
        _ => RemoteKind::Dcat,
    };
    // A participant is pinned when either of its fields is filled in (and
    // then both must be: validation names the one missing).
    let participant = match (form.opt("participant_id"), form.opt("participant_key")) {
        (None, None) => None,
        (id, key) => Some(citytrust_model::federation::Participant {
            id: id.unwrap_or_default().trim().to_string(),
            key: key.unwrap_or_default().trim().to_string(),
        }),
    };
    let new = NewRemoteCatalogue {
        id: form.one("id"),
        name: form.one("name"),
        url: form.one("url"),
        kind,
        interval_hours,
        participant,
    };
    let result = state
        .service
        .register_remote_catalogue(&session.actor, new)
        .await
        .map(|_| ());
    admin_outcome(&state, session, result, "catalogue").await
}

async fn admin_harvest_catalogue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let (_, session) = admin_form(&signed)?;
    let result = state
        .service
        .harvest(&session.actor, &id, &|_| {})
        .await
        .map(|_| ());
    admin_outcome(&state, session, result, "harvest").await
}

async fn admin_remove_catalogue(
    State(state): State<AppState>,
    Path(id): Path<String>,
    signed: SignedForm,
) -> PageResult {
    let (_, session) = admin_form(&signed)?;
    let result = state
        .service
        .remove_remote_catalogue(&session.actor, &id)
        .await;
    admin_outcome(&state, session, result, "removed").await
}
