//! People, organisations and groups, and the actor a request acts as.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::validation::ValidationErrors;

/// A role a person holds in the trust, beyond membership of organisations.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Runs the installation: organisations, accounts, groups.
    Administrator,
    /// Sits on the trust's board: reviews requests and votes.
    Trustee,
    /// A data subject using the portal for their own data.
    Resident,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Administrator, Role::Trustee, Role::Resident];
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Administrator => "administrator",
            Role::Trustee => "trustee",
            Role::Resident => "resident",
        }
    }
    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }
}

/// Kinds of organisation that take part in a city's data ecosystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema, Default)]
#[serde(rename_all = "snake_case")]
pub enum OrganizationKind {
    CityDepartment,
    PublicBody,
    Utility,
    TransportOperator,
    Hospital,
    University,
    Charity,
    Business,
    #[default]
    Other,
}

impl OrganizationKind {
    pub const ALL: [OrganizationKind; 9] = [
        OrganizationKind::CityDepartment,
        OrganizationKind::PublicBody,
        OrganizationKind::Utility,
        OrganizationKind::TransportOperator,
        OrganizationKind::Hospital,
        OrganizationKind::University,
        OrganizationKind::Charity,
        OrganizationKind::Business,
        OrganizationKind::Other,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            OrganizationKind::CityDepartment => "city_department",
            OrganizationKind::PublicBody => "public_body",
            OrganizationKind::Utility => "utility",
            OrganizationKind::TransportOperator => "transport_operator",
            OrganizationKind::Hospital => "hospital",
            OrganizationKind::University => "university",
            OrganizationKind::Charity => "charity",
            OrganizationKind::Business => "business",
            OrganizationKind::Other => "other",
        }
    }
    pub fn parse(s: &str) -> Option<OrganizationKind> {
        OrganizationKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

/// An organisation: a city department, a utility, a university …
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Organization {
    pub id: String,
    pub name: String,
    pub kind: OrganizationKind,
    pub description: String,
    pub url: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Body of `POST /api/v1/organizations`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewOrganization {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub kind: OrganizationKind,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub url: Option<String>,
}

impl NewOrganization {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.slug("id", &self.id);
        e.required_text("name", &self.name, 200);
        e.max_len("description", &self.description, 5000);
        e.url("url", &self.url);
        e.into_result()
    }
}

/// A named group of organisations chosen by predetermined criteria (R-CAT-3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Group {
    pub id: String,
    pub name: String,
    pub description: String,
    /// The criteria by which organisations belong.
    pub criteria: String,
    pub member_organization_ids: Vec<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Body of `POST /api/v1/groups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewGroup {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    pub criteria: String,
    #[serde(default)]
    pub member_organization_ids: Vec<String>,
}

impl NewGroup {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        e.slug("id", &self.id);
        e.required_text("name", &self.name, 200);
        e.max_len("description", &self.description, 5000);
        e.required_text("criteria", &self.criteria, 5000);
        for (i, o) in self.member_organization_ids.iter().enumerate() {
            e.slug(&format!("member_organization_ids[{i}]"), o);
        }
        e.into_result()
    }
}

/// A person with an account. The password hash never leaves the store crate's callers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct User {
    pub username: String,
    pub display_name: String,
    pub email: Option<String>,
    pub roles: Vec<Role>,
    pub organization_ids: Vec<String>,
    pub disabled: bool,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Body of `POST /api/v1/users`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewUser {
    pub username: String,
    pub display_name: String,
    #[serde(default)]
    pub email: Option<String>,
    /// At least 12 characters.
    #[schema(format = Password)]
    pub password: String,
    #[serde(default)]
    pub roles: Vec<Role>,
    #[serde(default)]
    pub organization_ids: Vec<String>,
}

impl std::fmt::Debug for NewUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewUser")
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("password", &"<hidden>")
            .field("roles", &self.roles)
            .field("organization_ids", &self.organization_ids)
            .finish()
    }
}

pub const MIN_PASSWORD_LEN: usize = 12;

impl NewUser {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        if !is_username(&self.username) {
            e.push(
                "username",
                "must be 2 to 64 characters: lower-case letters, digits, '.', '_' or '-'",
            );
        } else if self.username.starts_with("dsp.") {
            e.push(
                "username",
                "names beginning 'dsp.' are kept for the accounts standing for other trusts",
            );
        }
        e.required_text("display_name", &self.display_name, 200);
        e.email("email", &self.email);
        let n = self.password.chars().count();
        if n < MIN_PASSWORD_LEN {
            e.push(
                "password",
                format!("must be at least {MIN_PASSWORD_LEN} characters"),
            );
        } else if n > 1024 {
            e.push("password", "must be at most 1024 characters");
        }
        for (i, o) in self.organization_ids.iter().enumerate() {
            e.slug(&format!("organization_ids[{i}]"), o);
        }
        e.into_result()
    }
}

pub fn is_username(s: &str) -> bool {
    (2..=64).contains(&s.len())
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        })
        && s.bytes().next().is_some_and(|b| b.is_ascii_alphanumeric())
}

/// Who is acting: nobody in particular, or a signed-in person with their roles
/// and organisations as they stood when the request was authenticated.
///
/// When an agent acts for another person under a checked [`Authority`], the
/// actor is the principal (their roles without the personal offices of
/// administrator and trustee, their organisations) and `agent` says who really
/// acted and under which authority, so every record can show it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Anonymous,
    User {
        username: String,
        display_name: String,
        roles: Vec<Role>,
        organization_ids: Vec<String>,
        agent: Option<Delegation>,
    },
}

/// The kinds of authority to act for another person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthorityKind {
    /// A parent or legal guardian acting for a minor.
    Guardian,
    /// A lasting or ordinary power of attorney.
    PowerOfAttorney,
    /// An organisation's written mandate for an employee or contractor to act for a colleague.
    Mandate,
}

impl AuthorityKind {
    pub const ALL: [AuthorityKind; 3] = [
        AuthorityKind::Guardian,
        AuthorityKind::PowerOfAttorney,
        AuthorityKind::Mandate,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityKind::Guardian => "guardian",
            AuthorityKind::PowerOfAttorney => "power_of_attorney",
            AuthorityKind::Mandate => "mandate",
        }
    }
    pub fn label(self) -> &'static str {
        match self {
            AuthorityKind::Guardian => "guardian",
            AuthorityKind::PowerOfAttorney => "power of attorney",
            AuthorityKind::Mandate => "mandate",
        }
    }
}

/// What an authority lets an agent do for the principal. Deny by default:
/// an agent's request outside every area its authority covers is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AuthorityArea {
    /// The principal's own data as a resident: consents, objections,
    /// donations, links, subject requests, exports, erasure (`/api/v1/me/…`,
    /// the resident's dashboard).
    ResidentsChoices,
    /// Asking for access to data, renewing, amending and attesting deletion.
    AccessRequests,
    /// Reading data under the principal's agreements.
    Reads,
}

impl AuthorityArea {
    pub const ALL: [AuthorityArea; 3] = [
        AuthorityArea::ResidentsChoices,
        AuthorityArea::AccessRequests,
        AuthorityArea::Reads,
    ];
    pub fn as_str(self) -> &'static str {
        match self {
            AuthorityArea::ResidentsChoices => "residents_choices",
            AuthorityArea::AccessRequests => "access_requests",
            AuthorityArea::Reads => "reads",
        }
    }
}

/// Authority one person (the agent) holds to act for another (the
/// principal), as checked by an administrator against its evidence (R-ACC-9).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Authority {
    pub id: String,
    pub agent: String,
    pub principal: String,
    pub kind: AuthorityKind,
    /// What the authority covers, in words.
    pub scope: String,
    /// What the agent may do under it (enforced on every request they make
    /// for the principal). An authority recorded before areas existed covers none.
    #[serde(default)]
    pub covers: Vec<AuthorityArea>,
    /// What was checked: the document seen, its reference.
    pub evidence: String,
    /// The administrator who checked the evidence.
    pub checked_by: String,
    #[schema(format = Date)]
    pub starts_on: String,
    #[schema(format = Date)]
    pub ends_on: String,
    /// Set when the authority is withdrawn before its end.
    #[schema(format = DateTime)]
    pub revoked_at: Option<String>,
    #[schema(format = DateTime)]
    pub created_at: String,
}

/// Body of `POST /api/v1/authorities`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewAuthority {
    pub agent: String,
    pub principal: String,
    pub kind: AuthorityKind,
    pub scope: String,
    /// What the agent may do under it: at least one area.
    #[serde(default)]
    pub covers: Vec<AuthorityArea>,
    pub evidence: String,
    #[schema(format = Date)]
    pub starts_on: String,
    #[schema(format = Date)]
    pub ends_on: String,
}

impl NewAuthority {
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        for (field, value) in [("agent", &self.agent), ("principal", &self.principal)] {
            if !is_username(value) {
                e.push(field, "must be the username of an account");
            }
        }
        if self.agent == self.principal {
            e.push(
                "principal",
                "an agent does not need authority to act for themselves",
            );
        }
        e.required_text("scope", &self.scope, 2000);
        if self.covers.is_empty() {
            e.push(
                "covers",
                "name what the agent may do: residents_choices, access_requests and/or reads",
            );
        }
        e.required_text("evidence", &self.evidence, 2000);
        let start = e.date("starts_on", &self.starts_on);
        let end = e.date("ends_on", &self.ends_on);
        if let (Some(s), Some(t)) = (start, end)
            && t < s
        {
            e.push("ends_on", "must not be before starts_on");
        }
        e.into_result()
    }
}

/// An agent acting for the actor: who, under which checked authority.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Delegation {
    /// The agent's username.
    pub agent: String,
    pub agent_display_name: String,
    pub authority_id: String,
    pub kind: AuthorityKind,
    /// The area of the request this delegation was checked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub area: Option<AuthorityArea>,
}

impl Delegation {
    /// "Ana Agent (power of attorney A-…)" for pages and records.
    pub fn describe(&self) -> String {
        format!(
            "{} ({}, authority {})",
            self.agent_display_name,
            self.kind.label(),
            self.authority_id
        )
    }
}

impl Actor {
    pub fn from_user(u: &User) -> Actor {
        Actor::User {
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            roles: u.roles.clone(),
            organization_ids: u.organization_ids.clone(),
            agent: None,
        }
    }
    /// `agent` acting for `principal` under `authority` (checked by the caller):
    /// the principal's organisations and roles, less the personal offices.
    pub fn on_behalf(
        principal: &User,
        agent: &User,
        authority: &Authority,
        area: AuthorityArea,
    ) -> Actor {
        Actor::User {
            username: principal.username.clone(),
            display_name: principal.display_name.clone(),
            roles: principal
                .roles
                .iter()
                .copied()
                .filter(|r| *r == Role::Resident)
                .collect(),
            organization_ids: principal.organization_ids.clone(),
            agent: Some(Delegation {
                agent: agent.username.clone(),
                agent_display_name: agent.display_name.clone(),
                authority_id: authority.id.clone(),
                kind: authority.kind,
                area: Some(area),
            }),
        }
    }
    /// The agent acting for this actor, if any.
    pub fn agent(&self) -> Option<&Delegation> {
        match self {
            Actor::User { agent, .. } => agent.as_ref(),
            Actor::Anonymous => None,
        }
    }
    pub fn username(&self) -> Option<&str> {
        match self {
            Actor::Anonymous => None,
            Actor::User { username, .. } => Some(username),
        }
    }
    pub fn has_role(&self, role: Role) -> bool {
        matches!(self, Actor::User { roles, .. } if roles.contains(&role))
    }
    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Administrator)
    }
    pub fn is_member_of(&self, organization_id: &str) -> bool {
        matches!(self, Actor::User { organization_ids, .. } if organization_ids.iter().any(|o| o == organization_id))
    }
    pub fn organization_ids(&self) -> &[String] {
        match self {
            Actor::Anonymous => &[],
            Actor::User {
                organization_ids, ..
            } => organization_ids,
        }
    }
}
