//! The trust's charter as Cedar policies (R-ACC-5): the schema every charter
//! is validated against, the charter a new trust starts with, and the
//! decisions it computes for reads and for access requests.
//!
//! No IO, no clock: the caller gathers the facts (who, which dataset, which
//! agreements are in force today) and passes them in. Every decision names the
//! rules that made it, by their `@id`, with their `@reason`.

use std::collections::{HashMap, HashSet};
use std::str::FromStr;
use std::sync::OnceLock;

use cedar_policy::{
    Authorizer, Context, Entities, Entity, EntityId, EntityTypeName, EntityUid, PolicySet, Request,
    RestrictedExpression, Schema, ValidationMode, Validator,
};

/// The schema every charter is checked against.
pub const SCHEMA: &str = include_str!("schema.cedarschema");
/// The charter a new trust starts with.
pub const DEFAULT_CHARTER: &str = include_str!("default-charter.cedar");
/// The plain-language digital ethics code a new trust publishes beside its
/// charter (R-PAR-1); trustees change it with the charter.
pub const DEFAULT_ETHICS_CODE: &str = include_str!("default-ethics-code.md");

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The charter text does not parse or does not fit the schema; one message per problem.
    #[error("the charter is not valid: {}", .0.join("; "))]
    Invalid(Vec<String>),
    /// A fact could not be expressed (an id Cedar refuses, say).
    #[error("policy evaluation: {0}")]
    Evaluation(String),
}

fn schema() -> &'static Schema {
    static SCHEMA_PARSED: OnceLock<Schema> = OnceLock::new();
    SCHEMA_PARSED.get_or_init(|| {
        #[allow(clippy::expect_used)]
        Schema::from_cedarschema_str(SCHEMA)
            .map(|(s, _warnings)| s)
            .expect("the built-in schema parses (tested)")
    })
}

/// A rule of the charter that took part in a decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule's `@id` (or Cedar's own id when it has none).
    pub id: String,
    /// The rule's `@reason`, when it has one.
    pub reason: Option<String>,
}

impl Rule {
    /// "`id`: reason" for messages.
    pub fn describe(&self) -> String {
        match &self.reason {
            Some(r) => format!("{} ({r})", self.id),
            None => self.id.clone(),
        }
    }
}

/// What the charter decided, and which rules decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// When allowed: the permitting rules. When refused: the forbidding rules
    /// (empty when no rule permits — deny by default).
    pub rules: Vec<Rule>,
}

impl Decision {
    /// The first forbidding rule, if a rule forbade it (rather than none permitting).
    pub fn forbidden_by(&self) -> Option<&Rule> {
        if self.allowed {
            None
        } else {
            self.rules.first()
        }
    }
}

/// A validated charter, ready to decide.
#[derive(Debug, Clone)]
pub struct Charter {
    policies: PolicySet,
    text: String,
}

impl Charter {
    /// Parse `text` and validate it strictly against [`SCHEMA`]; every rule
    /// must carry an `@id` (decisions quote it) and ids must be unique.
    pub fn parse(text: &str) -> Result<Charter, PolicyError> {
        let policies = PolicySet::from_str(text)
            .map_err(|e| PolicyError::Invalid(vec![render_diagnostic(&e)]))?;
        let mut problems = Vec::new();
        let mut seen = HashSet::new();
        for policy in policies.policies() {
            match policy.annotation("id") {
                None => problems.push(format!(
                    "a rule has no @id(\"…\") annotation: {}",
                    first_line(&policy.to_string())
                )),
                Some(id) if !seen.insert(id.to_string()) => {
                    problems.push(format!("two rules have the @id \"{id}\""))
                }
                Some(_) => {}
            }
        }
        if policies.templates().next().is_some() {
            problems.push("templates are not used in a charter".into());
        }
        let result = Validator::new(schema().clone()).validate(&policies, ValidationMode::Strict);
        for error in result.validation_errors() {
            problems.push(error.to_string());
        }
        if !problems.is_empty() {
            return Err(PolicyError::Invalid(problems));
        }
        Ok(Charter {
            policies,
            text: text.to_string(),
        })
    }

    /// The built-in charter.
    pub fn default_charter() -> Charter {
        #[allow(clippy::expect_used)]
        Charter::parse(DEFAULT_CHARTER).expect("the default charter validates (tested)")
    }

    pub fn text(&self) -> &str {
        &self.text
    }

    /// Every rule: id, effect and reason, for the trustees' page.
    pub fn rules(&self) -> Vec<(Rule, &'static str)> {
        self.policies
            .policies()
            .map(|p| {
                (
                    rule_of(p),
                    match p.effect() {
                        cedar_policy::Effect::Permit => "permit",
                        cedar_policy::Effect::Forbid => "forbid",
                    },
                )
            })
            .collect()
    }

    /// May `principal` read `dataset` as `read` says?
    pub fn decide_read(
        &self,
        principal: &Principal<'_>,
        dataset: &DatasetFacts<'_>,
        read: &ReadFacts<'_>,
    ) -> Result<Decision, PolicyError> {
        let context = vec![
            (
                "purpose",
                RestrictedExpression::new_string(read.purpose.into()),
            ),
            (
                "purpose_kind",
                RestrictedExpression::new_string(read.purpose_kind.into()),
            ),
            (
                "commercial",
                RestrictedExpression::new_bool(read.commercial),
            ),
            ("level", RestrictedExpression::new_long(read.level)),
            (
                "agreement_in_force",
                RestrictedExpression::new_bool(read.agreement_level.is_some()),
            ),
            (
                "agreement_level",
                RestrictedExpression::new_long(read.agreement_level.unwrap_or(-1)),
            ),
        ];
        self.decide("read", principal, dataset, context)
    }

    /// What the charter says of a request for `dataset`: refused, granted
    /// without a vote, published for comment, or sent to the trustees.
    pub fn decide_request(
        &self,
        principal: &Principal<'_>,
        dataset: &DatasetFacts<'_>,
        request: &RequestFacts<'_>,
    ) -> Result<RequestOutcome, PolicyError> {
        let context = || {
            vec![
                (
                    "purpose",
                    RestrictedExpression::new_string(request.purpose.into()),
                ),
                (
                    "purpose_kind",
                    RestrictedExpression::new_string(request.purpose_kind.into()),
                ),
                (
                    "commercial",
                    RestrictedExpression::new_bool(request.commercial),
                ),
                ("level", RestrictedExpression::new_long(request.level)),
                (
                    "row_level",
                    RestrictedExpression::new_bool(request.row_level),
                ),
                (
                    "sharing",
                    RestrictedExpression::new_string(request.sharing.into()),
                ),
                (
                    "standing_agreement",
                    RestrictedExpression::new_bool(request.standing_agreement),
                ),
                (
                    "outcome_report_overdue",
                    RestrictedExpression::new_bool(request.outcome_report_overdue),
                ),
            ]
        };
        let may_request = self.decide("request", principal, dataset, context())?;
        if !may_request.allowed {
            return Ok(RequestOutcome::Refused(may_request));
        }
        let automatic = self.decide("grant_automatically", principal, dataset, context())?;
        if automatic.allowed {
            return Ok(RequestOutcome::Granted(automatic));
        }
        let comment = self.decide("publish_for_comment", principal, dataset, context())?;
        Ok(RequestOutcome::Trustees {
            public_comment: comment.allowed.then_some(comment),
        })
    }

    fn decide(
        &self,
        action: &str,
        principal: &Principal<'_>,
        dataset: &DatasetFacts<'_>,
        context: Vec<(&str, RestrictedExpression)>,
    ) -> Result<Decision, PolicyError> {
        let (user, entities) = entities(principal, dataset)?;
        let action = uid("Action", action)?;
        let resource = uid("Dataset", dataset.id)?;
        let context = Context::from_pairs(context.into_iter().map(|(k, v)| (k.to_string(), v)))
            .map_err(|e| PolicyError::Evaluation(e.to_string()))?;
        let request = Request::new(user, action, resource, context, Some(schema()))
            .map_err(|e| PolicyError::Evaluation(e.to_string()))?;
        let response = Authorizer::new().is_authorized(&request, &self.policies, &entities);
        let errors: Vec<String> = response
            .diagnostics()
            .errors()
            .map(|e| e.to_string())
            .collect();
        if !errors.is_empty() {
            // A rule that fails to evaluate is skipped by Cedar; a charter
            // validated against the schema should never get here. Refuse.
            return Err(PolicyError::Evaluation(errors.join("; ")));
        }
        let allowed = response.decision() == cedar_policy::Decision::Allow;
        let rules = response
            .diagnostics()
            .reason()
            .filter_map(|id| self.policies.policy(id))
            .map(rule_of)
            .collect();
        Ok(Decision { allowed, rules })
    }
}

/// The charter's answer to a request for one dataset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestOutcome {
    /// Refused without a vote (the forbidding rule, or none permitting).
    Refused(Decision),
    /// Granted without a vote.
    Granted(Decision),
    /// The trustees decide; first published for comment when a rule says so.
    Trustees { public_comment: Option<Decision> },
}

fn rule_of(policy: &cedar_policy::Policy) -> Rule {
    Rule {
        id: policy
            .annotation("id")
            .map(str::to_string)
            .unwrap_or_else(|| policy.id().to_string()),
        reason: policy.annotation("reason").map(str::to_string),
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|l| !l.trim().is_empty() && !l.trim_start().starts_with('@'))
        .unwrap_or("")
        .trim()
        .chars()
        .take(120)
        .collect()
}

fn render_diagnostic(errors: &cedar_policy::ParseErrors) -> String {
    errors
        .iter()
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// Who asks: `user` is `None` for someone not signed in.
#[derive(Debug, Clone, Copy)]
pub struct Principal<'a> {
    pub user: Option<&'a str>,
    pub roles: &'a [&'a str],
    /// Each organisation the person belongs to, with the groups it is in.
    pub organizations: &'a [(&'a str, &'a [&'a str])],
}

/// The dataset as the charter sees it.
#[derive(Debug, Clone, Copy)]
pub struct DatasetFacts<'a> {
    pub id: &'a str,
    /// open, shared_public, shared_group, shared_specific, closed
    pub spectrum: &'a str,
    pub owner: &'a str,
    pub personal_data: bool,
    pub needs_reassessment: bool,
}

/// What a read asks for.
#[derive(Debug, Clone, Copy)]
pub struct ReadFacts<'a> {
    pub purpose: &'a str,
    pub purpose_kind: &'a str,
    pub commercial: bool,
    /// Rank of the access level read at (0 metadata … 6 identified).
    pub level: i64,
    /// The level of the agreement in force today that this read is made
    /// under — one whose level *covers* the level read at (the caller
    /// decides that with `AccessLevel::covers`; levels are not a total
    /// order) — `None` when no agreement covers it.
    pub agreement_level: Option<i64>,
}

/// What a request asks for, per dataset.
#[derive(Debug, Clone, Copy)]
pub struct RequestFacts<'a> {
    pub purpose: &'a str,
    pub purpose_kind: &'a str,
    pub commercial: bool,
    pub level: i64,
    pub row_level: bool,
    pub sharing: &'a str,
    pub standing_agreement: bool,
    /// The requester (or their organisation) is late reporting an
    /// agreement's outcome (R-PAR-4).
    pub outcome_report_overdue: bool,
}

fn uid(kind: &str, id: &str) -> Result<EntityUid, PolicyError> {
    let name = EntityTypeName::from_str(&format!("CityTrust::{kind}"))
        .map_err(|e| PolicyError::Evaluation(e.to_string()))?;
    Ok(EntityUid::from_type_name_and_id(name, EntityId::new(id)))
}

/// The slice of the world one decision needs: the person, their
/// organisations and groups, the dataset and its owner.
fn entities(
    principal: &Principal<'_>,
    dataset: &DatasetFacts<'_>,
) -> Result<(EntityUid, Entities), PolicyError> {
    let err = |e: &dyn std::fmt::Display| PolicyError::Evaluation(e.to_string());
    let user = match principal.user {
        Some(name) => uid("User", name)?,
        // Not a valid username, so it cannot collide with anyone's.
        None => uid("User", "(anonymous)")?,
    };
    let mut list = Vec::new();
    let mut groups = HashSet::new();
    let mut user_parents = HashSet::new();
    let mut has_owner = false;
    for (org, org_groups) in principal.organizations {
        let org_uid = uid("Organization", org)?;
        user_parents.insert(org_uid.clone());
        let mut parents = HashSet::new();
        for g in *org_groups {
            let g_uid = uid("Group", g)?;
            parents.insert(g_uid.clone());
            groups.insert(g_uid);
        }
        has_owner |= *org == dataset.owner;
        list.push(Entity::new_no_attrs(org_uid, parents));
    }
    for g in groups {
        list.push(Entity::new_no_attrs(g, HashSet::new()));
    }
    if !has_owner {
        list.push(Entity::new_no_attrs(
            uid("Organization", dataset.owner)?,
            HashSet::new(),
        ));
    }
    let user_attrs = HashMap::from([
        (
            "roles".to_string(),
            RestrictedExpression::new_set(
                principal
                    .roles
                    .iter()
                    .map(|r| RestrictedExpression::new_string((*r).into())),
            ),
        ),
        (
            "signed_in".to_string(),
            RestrictedExpression::new_bool(principal.user.is_some()),
        ),
    ]);
    list.push(Entity::new(user.clone(), user_attrs, user_parents).map_err(|e| err(&e))?);
    let dataset_attrs = HashMap::from([
        (
            "spectrum".to_string(),
            RestrictedExpression::new_string(dataset.spectrum.into()),
        ),
        (
            "owner".to_string(),
            RestrictedExpression::new_entity_uid(uid("Organization", dataset.owner)?),
        ),
        (
            "personal_data".to_string(),
            RestrictedExpression::new_bool(dataset.personal_data),
        ),
        (
            "needs_reassessment".to_string(),
            RestrictedExpression::new_bool(dataset.needs_reassessment),
        ),
    ]);
    list.push(
        Entity::new(uid("Dataset", dataset.id)?, dataset_attrs, HashSet::new())
            .map_err(|e| err(&e))?,
    );
    let entities = Entities::from_entities(list, Some(schema())).map_err(|e| err(&e))?;
    Ok((user, entities))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_ORGS: &[(&str, &[&str])] = &[];

    fn dataset(spectrum: &str) -> DatasetFacts<'_> {
        DatasetFacts {
            id: "seattle-building-energy",
            spectrum,
            owner: "seattle-osE",
            personal_data: false,
            needs_reassessment: false,
        }
    }

    fn read(agreement_level: Option<i64>) -> ReadFacts<'static> {
        ReadFacts {
            purpose: "research",
            purpose_kind: "secondary",
            commercial: false,
            level: 6,
            agreement_level,
        }
    }

    fn analyst() -> Principal<'static> {
        Principal {
            user: Some("analyst"),
            roles: &[],
            organizations: &[("uw", &["researchers"])],
        }
    }

    fn ids(d: &Decision) -> Vec<&str> {
        d.rules.iter().map(|r| r.id.as_str()).collect()
    }

    #[test]
    fn the_builtin_schema_and_charter_are_valid() {
        let charter = Charter::default_charter();
        assert!(charter.rules().len() >= 8);
        assert!(charter.rules().iter().all(|(r, _)| r.reason.is_some()));
    }

    #[test]
    fn reads_follow_the_spectrum_and_agreements() {
        let c = Charter::default_charter();
        let anonymous = Principal {
            user: None,
            roles: &[],
            organizations: NO_ORGS,
        };
        let d = c
            .decide_read(&anonymous, &dataset("open"), &read(None))
            .unwrap();
        assert!(d.allowed);
        assert_eq!(ids(&d), ["open-data"]);
        for spectrum in ["shared_public", "shared_group", "shared_specific", "closed"] {
            let d = c
                .decide_read(&analyst(), &dataset(spectrum), &read(None))
                .unwrap();
            assert!(!d.allowed, "{spectrum} without an agreement");
        }
        // An agreement in force at a level as high as the read.
        let d = c
            .decide_read(&analyst(), &dataset("shared_specific"), &read(Some(6)))
            .unwrap();
        assert_eq!(ids(&d), ["agreement-in-force"]);
        // No agreement covers the level read: refused, and no rule forbade
        // it (nothing permits).
        let d = c
            .decide_read(&analyst(), &dataset("shared_specific"), &read(None))
            .unwrap();
        assert!(!d.allowed && d.rules.is_empty());
        // Closed data: an agreement does not open it; the forbidding rule is named.
        let d = c
            .decide_read(&analyst(), &dataset("closed"), &read(Some(6)))
            .unwrap();
        assert!(!d.allowed);
        assert_eq!(ids(&d), ["closed-data-stays-closed"]);
        // The owner reads even closed data.
        let owner = Principal {
            user: Some("owner"),
            roles: &[],
            organizations: &[("seattle-osE", &[])],
        };
        assert!(
            c.decide_read(&owner, &dataset("closed"), &read(None))
                .unwrap()
                .allowed
        );
        // Derived data awaiting re-assessment: not even under an agreement.
        let mut derived = dataset("shared_public");
        derived.needs_reassessment = true;
        let d = c.decide_read(&analyst(), &derived, &read(Some(6))).unwrap();
        assert_eq!(ids(&d), ["reassessment-first"]);
        // Someone not signed in gets nothing from an agreement.
        let d = c
            .decide_read(&anonymous, &dataset("shared_public"), &read(Some(6)))
            .unwrap();
        assert!(!d.allowed);
    }

    fn request(
        standing: bool,
        purpose_kind: &'static str,
        commercial: bool,
    ) -> RequestFacts<'static> {
        RequestFacts {
            purpose: "research",
            purpose_kind,
            commercial,
            level: 6,
            row_level: true,
            sharing: "systematic",
            standing_agreement: standing,
            outcome_report_overdue: false,
        }
    }

    #[test]
    fn a_recipient_late_with_an_outcome_report_is_refused_whatever_it_asks() {
        let c = Charter::default_charter();
        for spectrum in ["shared_public", "shared_group", "shared_specific"] {
            for standing in [false, true] {
                let late = RequestFacts {
                    outcome_report_overdue: true,
                    ..request(standing, "primary", false)
                };
                match c
                    .decide_request(&analyst(), &dataset(spectrum), &late)
                    .unwrap()
                {
                    RequestOutcome::Refused(d) => {
                        assert_eq!(ids(&d), ["outcome-report-overdue"], "{spectrum}")
                    }
                    other => panic!("{spectrum}: {other:?}"),
                }
            }
        }
    }

    #[test]
    fn requests_are_refused_granted_or_sent_to_the_trustees() {
        let c = Charter::default_charter();
        match c
            .decide_request(
                &analyst(),
                &dataset("closed"),
                &request(false, "secondary", false),
            )
            .unwrap()
        {
            RequestOutcome::Refused(d) => assert_eq!(ids(&d), ["closed-data-stays-closed"]),
            other => panic!("{other:?}"),
        }
        // Open data needs no request: nothing permits one.
        assert!(matches!(
            c.decide_request(&analyst(), &dataset("open"), &request(false, "primary", false))
                .unwrap(),
            RequestOutcome::Refused(d) if d.rules.is_empty()
        ));
        match c
            .decide_request(
                &analyst(),
                &dataset("shared_group"),
                &request(true, "primary", false),
            )
            .unwrap()
        {
            RequestOutcome::Granted(d) => assert_eq!(ids(&d), ["standing-agreement"]),
            other => panic!("{other:?}"),
        }
        // A standing agreement does not cover secondary use of personal data.
        let mut personal = dataset("shared_group");
        personal.personal_data = true;
        match c
            .decide_request(&analyst(), &personal, &request(true, "secondary", false))
            .unwrap()
        {
            RequestOutcome::Trustees { public_comment } => {
                assert_eq!(
                    ids(&public_comment.unwrap()),
                    ["high-risk-uses-are-published"]
                )
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.decide_request(
                &analyst(),
                &dataset("shared_specific"),
                &request(false, "secondary", false)
            )
            .unwrap(),
            RequestOutcome::Trustees {
                public_comment: None
            }
        );
        assert!(matches!(
            c.decide_request(
                &analyst(),
                &dataset("shared_specific"),
                &request(false, "secondary", true)
            )
            .unwrap(),
            RequestOutcome::Trustees {
                public_comment: Some(_)
            }
        ));
    }

    #[test]
    fn a_charter_that_does_not_fit_the_schema_is_refused_with_every_reason() {
        let bad = r#"
            @id("typo")
            permit (principal, action == CityTrust::Action::"read", resource)
            when { resource.spectrun == "open" };
            permit (principal, action, resource);
            @id("typo")
            forbid (principal, action, resource) when { context.level > "3" };
        "#;
        match Charter::parse(bad) {
            Err(PolicyError::Invalid(problems)) => {
                let all = problems.join("\n");
                assert!(all.contains("no @id"), "{all}");
                assert!(all.contains("two rules have the @id \"typo\""), "{all}");
                assert!(all.contains("spectrun"), "{all}");
                assert!(problems.len() >= 4, "{all}");
            }
            other => panic!("{other:?}"),
        }
        match Charter::parse("permit (principal, action, resource") {
            Err(PolicyError::Invalid(problems)) => assert_eq!(problems.len(), 1),
            other => panic!("{other:?}"),
        }
    }
}
