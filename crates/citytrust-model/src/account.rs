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
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Actor {
    Anonymous,
    User {
        username: String,
        display_name: String,
        roles: Vec<Role>,
        organization_ids: Vec<String>,
    },
}

impl Actor {
    pub fn from_user(u: &User) -> Actor {
        Actor::User {
            username: u.username.clone(),
            display_name: u.display_name.clone(),
            roles: u.roles.clone(),
            organization_ids: u.organization_ids.clone(),
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
