//! Sharing projects (R-PAR-5): the city data sharing toolkit's process —
//! Discover → Prepare → Share → Review — as a workspace. A project carries
//! its reasons, team (with the toolkit's roles), ecosystem, data, canvas
//! and the organisation's data-maturity self-assessment (Discover); the
//! business case in five parts from each side, the legal basis and
//! documents, a DPIA screening, the ethics review, the technical pattern and
//! the data's preparation (Prepare); the access request it needs, made
//! through the ordinary request path (Share); and a review date, at which
//! it is renewed or retired (Review). A stage ends only when its checklist
//! is complete ([`Project::missing`]) and it is signed off.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::access::{ExchangePattern, NewAccessRequest};
use crate::validation::ValidationErrors;

/// Where a project stands.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Discover,
    Prepare,
    Share,
    Review,
    Retired,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Discover => "discover",
            Stage::Prepare => "prepare",
            Stage::Share => "share",
            Stage::Review => "review",
            Stage::Retired => "retired",
        }
    }
    /// The stage a sign-off moves to.
    pub fn next(self) -> Option<Stage> {
        match self {
            Stage::Discover => Some(Stage::Prepare),
            Stage::Prepare => Some(Stage::Share),
            Stage::Share => Some(Stage::Review),
            Stage::Review | Stage::Retired => None,
        }
    }
}

/// The toolkit's roles in a sharing project.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ToolkitRole {
    SeniorSponsor,
    ElectedLeader,
    HeadOfService,
    FrontlineOfficer,
    HeadOfAnalysis,
    Analyst,
    GisSpecialist,
    DataScientist,
    ChiefDataOfficer,
    HeadOfIt,
    DataProvisionLead,
    SystemsAnalyst,
    TechnicalSecurity,
    DataProtectionOfficer,
    SeniorInformationRiskOwner,
    Legal,
    InformationGovernanceLead,
    Communications,
    Finance,
}

/// Low, medium or high, for each area of the maturity self-assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Maturity {
    Low,
    Medium,
    High,
}

/// The six areas of the quick-start framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MaturityAssessment {
    pub technology: Maturity,
    pub mindset: Maturity,
    pub resources: Maturity,
    pub skills: Maturity,
    pub operations: Maturity,
    pub legal: Maturity,
}

/// The toolkit's eight technical patterns of sharing, from in person to an API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TechnicalPattern {
    InPerson,
    UnconnectedSystems,
    OneOffOverInternet,
    ThirdParty,
    DigitalInAnalogueWay,
    PhysicalMedia,
    OpenPublication,
    Api,
}

/// One of the five cases, from each side of the share.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseParts {
    /// From the side providing the data.
    pub providing: String,
    /// From the side receiving it.
    pub receiving: String,
}

/// The business case in five parts (HM Treasury's five-case model).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BusinessCase {
    pub strategic: CaseParts,
    pub economic: CaseParts,
    pub commercial: CaseParts,
    pub financial: CaseParts,
    pub management: CaseParts,
}

/// The recognised criteria of likely high risk (the EDPB's nine, which the
/// ICO's screening checklist follows): any "yes" requires a full DPIA.
pub const DPIA_CRITERIA: [(&str, &str); 9] = [
    (
        "evaluation_or_scoring",
        "Evaluating or scoring people, profiling or predicting",
    ),
    (
        "automated_decisions",
        "Automated decisions with legal or similarly significant effects",
    ),
    (
        "systematic_monitoring",
        "Systematic monitoring of people, including in public places",
    ),
    (
        "sensitive_data",
        "Special-category, criminal-offence or other highly personal data",
    ),
    ("large_scale", "Processing on a large scale"),
    (
        "matching_datasets",
        "Matching or combining datasets from different sources",
    ),
    (
        "vulnerable_people",
        "Data about vulnerable people (children, patients, tenants in need …)",
    ),
    ("innovative_technology", "Innovative use of technology"),
    (
        "prevents_rights",
        "Processing that prevents people exercising a right or using a service",
    ),
];

/// The ethics review's outcome.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EthicsReview {
    /// `approved`, `approved_with_conditions` or `not_approved`.
    pub outcome: String,
    /// Who reviewed it and what they found (conditions, concerns).
    pub notes: String,
}

/// How the data was prepared.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Preparation {
    /// What was cleaned or changed.
    pub cleaning: String,
    /// How the data is explained to its users (documentation, metadata).
    pub explanation: String,
}

/// The kinds of legal document a project keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    Mou,
    DataSharingAgreement,
    ServiceLevelAgreement,
    Licence,
    Dpia,
    Other,
}

impl DocumentKind {
    pub fn parse(s: &str) -> Option<DocumentKind> {
        serde_json::from_value(serde_json::Value::String(s.into())).ok()
    }
}

/// A document kept with a project: its bytes are stored, their digest logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ProjectDocument {
    pub id: String,
    pub kind: DocumentKind,
    pub name: String,
    /// 1 for the first document of this name, then 2, 3 …
    pub version: i64,
    pub sha256: String,
    pub size: i64,
    pub media_type: String,
    #[schema(format = DateTime)]
    pub uploaded_at: String,
    pub log_entry: i64,
}

/// A member of the project's team.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TeamMember {
    /// Their name as the project shows it (staff, not residents).
    pub name: String,
    pub role: ToolkitRole,
    pub organization_id: String,
}

/// An organisation of the ecosystem, and its part.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EcosystemMember {
    pub organization: String,
    /// Its part: data provider, user, funder, regulator, supplier …
    pub role: String,
}

/// The project's reasons.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Reasons {
    pub user_needs: String,
    pub organisational_aims: String,
    #[serde(default)]
    pub exchange_pattern: ExchangePattern,
}

/// Body of `POST /api/v1/projects`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewProject {
    #[schema(min_length = 1, max_length = 200)]
    pub title: String,
    #[schema(min_length = 1, max_length = 5000)]
    pub summary: String,
    /// The organisation that leads it (one of yours); it receives the data.
    pub lead_organization_id: String,
    /// The other organisations taking part (the data's providers among them).
    #[serde(default)]
    pub partner_organization_ids: Vec<String>,
}

/// Body of `PATCH /api/v1/projects/{id}`: each section given replaces the
/// project's; absent sections are kept. `revision` must be the project's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectUpdate {
    pub revision: i64,
    #[serde(default)]
    pub summary: Option<String>,
    #[serde(default)]
    pub reasons: Option<Reasons>,
    #[serde(default)]
    pub team: Option<Vec<TeamMember>>,
    #[serde(default)]
    pub ecosystem: Option<Vec<EcosystemMember>>,
    #[serde(default)]
    pub dataset_ids: Option<Vec<String>>,
    #[serde(default)]
    pub data_request_ids: Option<Vec<String>>,
    /// The data sharing canvas, by box ("problem", "data", "users", …).
    #[serde(default)]
    pub canvas: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub maturity: Option<MaturityAssessment>,
    #[serde(default)]
    pub business_case: Option<BusinessCase>,
    /// The legal power or basis for the share.
    #[serde(default)]
    pub legal_basis: Option<String>,
    /// The DPIA screening: each criterion of [`DPIA_CRITERIA`] answered.
    #[serde(default)]
    pub dpia_screening: Option<BTreeMap<String, bool>>,
    #[serde(default)]
    pub ethics_review: Option<EthicsReview>,
    #[serde(default)]
    pub technical_pattern: Option<TechnicalPattern>,
    #[serde(default)]
    pub preparation: Option<Preparation>,
    /// The access request Share will make (its datasets are the project's,
    /// its organisation the lead).
    #[serde(default)]
    pub share_request: Option<NewAccessRequest>,
    /// When the project is reviewed (YYYY-MM-DD).
    #[serde(default)]
    pub review_on: Option<String>,
}

/// A stage's sign-off.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SignOff {
    pub stage: Stage,
    /// `trustees` or `organization:<id>` (the owner, for open data).
    pub by: String,
    pub note: String,
    #[schema(format = DateTime)]
    pub at: String,
    pub log_entry: i64,
}

/// A sharing project.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Project {
    pub id: String,
    pub title: String,
    pub summary: String,
    pub lead_organization_id: String,
    pub partner_organization_ids: Vec<String>,
    pub stage: Stage,
    /// Changes after the Share stage make a new version.
    pub version: i64,
    pub revision: i64,
    pub reasons: Reasons,
    pub team: Vec<TeamMember>,
    pub ecosystem: Vec<EcosystemMember>,
    pub dataset_ids: Vec<String>,
    pub data_request_ids: Vec<String>,
    pub canvas: BTreeMap<String, String>,
    pub maturity: Option<MaturityAssessment>,
    pub business_case: BusinessCase,
    pub legal_basis: String,
    pub documents: Vec<ProjectDocument>,
    pub dpia_screening: BTreeMap<String, bool>,
    pub ethics_review: Option<EthicsReview>,
    pub technical_pattern: Option<TechnicalPattern>,
    pub preparation: Preparation,
    pub share_request: Option<NewAccessRequest>,
    /// The access requests Share made.
    pub access_request_ids: Vec<String>,
    /// The agreements they became.
    pub agreement_ids: Vec<String>,
    pub review_on: Option<String>,
    pub sign_offs: Vec<SignOff>,
    /// Set when the trustees retire it.
    #[serde(default)]
    pub retirement: Option<Retirement>,
    #[schema(format = DateTime)]
    pub created_at: String,
    pub log_entries: Vec<i64>,
}

/// A project's retirement: why, and the deletion attestations it started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Retirement {
    #[schema(format = DateTime)]
    pub at: String,
    pub reason: String,
    /// Each retired agreement, and the day its recipient must attest the data's deletion by.
    pub attestations: Vec<AttestationDue>,
}

/// A deletion attestation a retirement asks for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct AttestationDue {
    pub agreement_id: String,
    pub due_on: String,
}

/// A missing item of a stage's checklist: the field, and what is wanted.
pub type Missing = (String, String);

impl Project {
    /// Whether the DPIA screening found a likely high risk.
    pub fn dpia_required(&self) -> bool {
        self.dpia_screening.values().any(|v| *v)
    }

    /// What the current stage's checklist still lacks (empty: complete).
    /// `agreements_active`: how many of the project's access requests have
    /// become agreements (the Share stage needs them all).
    pub fn missing(&self, agreements_active: usize) -> Vec<Missing> {
        let mut m: Vec<Missing> = Vec::new();
        let mut need = |ok: bool, field: &str, what: &str| {
            if !ok {
                m.push((field.to_string(), what.to_string()));
            }
        };
        let filled = |s: &str| !s.trim().is_empty();
        match self.stage {
            Stage::Discover => {
                need(
                    filled(&self.reasons.user_needs),
                    "reasons.user_needs",
                    "the user needs",
                );
                need(
                    filled(&self.reasons.organisational_aims),
                    "reasons.organisational_aims",
                    "the organisational aims",
                );
                need(
                    self.team
                        .iter()
                        .any(|t| t.role == ToolkitRole::SeniorSponsor),
                    "team",
                    "a senior sponsor in the team",
                );
                need(
                    !self.ecosystem.is_empty(),
                    "ecosystem",
                    "the ecosystem's organisations",
                );
                need(
                    !self.dataset_ids.is_empty() || !self.data_request_ids.is_empty(),
                    "dataset_ids",
                    "the data: catalogue entries, or requests for data not yet there",
                );
                need(
                    self.maturity.is_some(),
                    "maturity",
                    "the data-maturity self-assessment",
                );
            }
            Stage::Prepare => {
                let b = &self.business_case;
                for (name, parts) in [
                    ("strategic", &b.strategic),
                    ("economic", &b.economic),
                    ("commercial", &b.commercial),
                    ("financial", &b.financial),
                    ("management", &b.management),
                ] {
                    need(
                        filled(&parts.providing) && filled(&parts.receiving),
                        &format!("business_case.{name}"),
                        &format!("the {name} case, from each side"),
                    );
                }
                need(filled(&self.legal_basis), "legal_basis", "the legal basis");
                need(
                    self.documents.iter().any(|d| {
                        matches!(
                            d.kind,
                            DocumentKind::Mou | DocumentKind::DataSharingAgreement
                        )
                    }),
                    "documents",
                    "a memorandum of understanding or a data sharing agreement",
                );
                need(
                    DPIA_CRITERIA
                        .iter()
                        .all(|(c, _)| self.dpia_screening.contains_key(*c)),
                    "dpia_screening",
                    "every question of the DPIA screening answered",
                );
                need(
                    !self.dpia_required()
                        || self.documents.iter().any(|d| d.kind == DocumentKind::Dpia),
                    "documents",
                    "a full DPIA (the screening found a likely high risk): attach it",
                );
                need(
                    self.ethics_review
                        .as_ref()
                        .is_some_and(|e| e.outcome != "not_approved"),
                    "ethics_review",
                    "an ethics review that approves it",
                );
                need(
                    self.technical_pattern.is_some(),
                    "technical_pattern",
                    "the technical pattern of sharing",
                );
                need(
                    filled(&self.preparation.cleaning) && filled(&self.preparation.explanation),
                    "preparation",
                    "how the data was prepared and how it is explained",
                );
                need(
                    self.share_request.is_some(),
                    "share_request",
                    "the access request Share will make",
                );
                need(self.review_on.is_some(), "review_on", "a review date");
            }
            Stage::Share => {
                need(
                    !self.access_request_ids.is_empty(),
                    "access_request_ids",
                    "the access request, made (POST /api/v1/projects/{id}/share)",
                );
                need(
                    !self.access_request_ids.is_empty()
                        && agreements_active >= self.access_request_ids.len(),
                    "agreement_ids",
                    "the trustees' approval of every access request",
                );
            }
            Stage::Review | Stage::Retired => {}
        }
        m
    }
}

impl ProjectUpdate {
    /// Check each section given.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        let mut e = ValidationErrors::default();
        if let Some(s) = &self.summary {
            e.required_text("summary", s, 5000);
        }
        if let Some(r) = &self.reasons {
            e.max_len("reasons.user_needs", &r.user_needs, 5000);
            e.max_len("reasons.organisational_aims", &r.organisational_aims, 5000);
        }
        if let Some(team) = &self.team {
            if team.len() > 50 {
                e.push("team", "at most 50 people");
            }
            for (i, t) in team.iter().enumerate() {
                e.required_text(&format!("team[{i}].name"), &t.name, 200);
                e.slug(&format!("team[{i}].organization_id"), &t.organization_id);
            }
        }
        if let Some(eco) = &self.ecosystem {
            if eco.len() > 50 {
                e.push("ecosystem", "at most 50 organisations");
            }
            for (i, m) in eco.iter().enumerate() {
                e.required_text(
                    &format!("ecosystem[{i}].organization"),
                    &m.organization,
                    200,
                );
                e.required_text(&format!("ecosystem[{i}].role"), &m.role, 200);
            }
        }
        for (field, ids) in [
            ("dataset_ids", &self.dataset_ids),
            ("data_request_ids", &self.data_request_ids),
        ] {
            if let Some(ids) = ids {
                e.list(field, ids, 50, 100);
            }
        }
        if let Some(c) = &self.canvas {
            if c.len() > 20 {
                e.push("canvas", "at most 20 boxes");
            }
            for (k, v) in c {
                e.max_len(&format!("canvas.{k}"), k, 100);
                e.max_len(&format!("canvas.{k}"), v, 5000);
            }
        }
        if let Some(b) = &self.business_case {
            for (name, p) in [
                ("strategic", &b.strategic),
                ("economic", &b.economic),
                ("commercial", &b.commercial),
                ("financial", &b.financial),
                ("management", &b.management),
            ] {
                e.max_len(
                    &format!("business_case.{name}.providing"),
                    &p.providing,
                    10_000,
                );
                e.max_len(
                    &format!("business_case.{name}.receiving"),
                    &p.receiving,
                    10_000,
                );
            }
        }
        if let Some(l) = &self.legal_basis {
            e.max_len("legal_basis", l, 5000);
        }
        if let Some(d) = &self.dpia_screening {
            for k in d.keys() {
                if !DPIA_CRITERIA.iter().any(|(c, _)| c == k) {
                    e.push(format!("dpia_screening.{k}"), "not a screening question");
                }
            }
        }
        if let Some(r) = &self.ethics_review {
            if !matches!(
                r.outcome.as_str(),
                "approved" | "approved_with_conditions" | "not_approved"
            ) {
                e.push(
                    "ethics_review.outcome",
                    "approved, approved_with_conditions or not_approved",
                );
            }
            e.required_text("ethics_review.notes", &r.notes, 5000);
        }
        if let Some(p) = &self.preparation {
            e.max_len("preparation.cleaning", &p.cleaning, 5000);
            e.max_len("preparation.explanation", &p.explanation, 5000);
        }
        if let Some(d) = &self.review_on {
            e.date("review_on", d);
        }
        e.into_result()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn project() -> Project {
        Project {
            id: "p".into(),
            title: "t".into(),
            summary: "s".into(),
            lead_organization_id: "uni".into(),
            partner_organization_ids: vec![],
            stage: Stage::Prepare,
            version: 1,
            revision: 1,
            reasons: Reasons::default(),
            team: vec![],
            ecosystem: vec![],
            dataset_ids: vec![],
            data_request_ids: vec![],
            canvas: BTreeMap::new(),
            maturity: None,
            business_case: BusinessCase::default(),
            legal_basis: String::new(),
            documents: vec![],
            dpia_screening: BTreeMap::new(),
            ethics_review: None,
            technical_pattern: None,
            preparation: Preparation::default(),
            share_request: None,
            access_request_ids: vec![],
            agreement_ids: vec![],
            review_on: None,
            sign_offs: vec![],
            retirement: None,
            created_at: String::new(),
            log_entries: vec![],
        }
    }

    #[test]
    fn a_yes_in_the_dpia_screening_needs_a_full_dpia_attached() {
        let mut p = project();
        p.dpia_screening = DPIA_CRITERIA
            .iter()
            .map(|(c, _)| (c.to_string(), false))
            .collect();
        let dpia_missing = |p: &Project| {
            p.missing(0)
                .iter()
                .any(|(f, what)| f == "documents" && what.contains("full DPIA"))
        };
        assert!(!dpia_missing(&p));
        p.dpia_screening.insert("large_scale".into(), true);
        assert!(dpia_missing(&p));
        p.documents.push(ProjectDocument {
            id: "d".into(),
            kind: DocumentKind::Dpia,
            name: "dpia.pdf".into(),
            version: 1,
            sha256: String::new(),
            size: 1,
            media_type: "application/pdf".into(),
            uploaded_at: String::new(),
            log_entry: 0,
        });
        assert!(!dpia_missing(&p));
    }
}
