//! Every role check in CityTrust: who may change the catalogue, the accounts,
//! the charter and the purposes, vote, retire agreements, keep the breach
//! register, record evidence, issue link codes, re-assess or reclassify a
//! dataset, answer or assign a data request, open or answer a consultation,
//! work on a sharing project or sign off its stages, write a stream.
//! Deny by default: each function names the only actors it lets
//! through, and says why not otherwise. No other file asks an actor for its
//! roles (the tidy test in `crates/citytrust/tests/it/tidy.rs` holds it).
//!
//! Reading catalogue metadata needs no rule: the existence and description of
//! every dataset, closed ones included, is public (R-CAT-8, ISO/IEC 17917 9.4).
//! Reading dataset *content* is the access-governance issue's and is not here.

use crate::account::Actor;
use crate::catalogue::DatasetMetadata;

/// Why an action was refused; shown to the person refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("you must sign in first")]
    NotSignedIn,
    #[error("{0}")]
    NotAllowed(String),
}

/// Create a catalogue entry owned by `owner`: administrators, and members of the owning organisation.
pub fn may_create_dataset(actor: &Actor, owner: &str) -> Result<(), Refusal> {
    match actor {
        Actor::Anonymous => Err(Refusal::NotSignedIn),
        _ if actor.is_admin() || actor.is_member_of(owner) => Ok(()),
        _ => Err(Refusal::NotAllowed(format!(
            "only members of organisation '{owner}' may register datasets it owns"
        ))),
    }
}

/// Write a stream's entities, or issue, list and revoke its write
/// credentials: members of its owning organisation only (not administrators,
/// not custodians: the owner answers for what its devices report).
pub fn may_write_stream(actor: &Actor, dataset: &DatasetMetadata) -> Result<(), Refusal> {
    let owner = &dataset.owner_organization_id;
    match actor {
        Actor::Anonymous => Err(Refusal::NotSignedIn),
        _ if actor.is_member_of(owner) => Ok(()),
        _ => Err(Refusal::NotAllowed(format!(
            "only members of organisation '{owner}', which owns the stream, write its entities \
             or manage its credentials"
        ))),
    }
}

/// Edit an entry: administrators, members of its owner, and members of a custodian organisation.
/// Handing an entry to another owner needs membership of the new owner too (or administration).
/// Nobody loosens how it is protected by an edit ([`loosened_protection`]): that is the
/// trustees' ([`may_reclassify`]); only the owner's members make its class stricter.
pub fn may_edit_dataset(
    actor: &Actor,
    current: &DatasetMetadata,
    proposed: &DatasetMetadata,
) -> Result<(), Refusal> {
    if matches!(actor, Actor::Anonymous) {
        return Err(Refusal::NotSignedIn);
    }
    if let Some(what) = loosened_protection(current, proposed) {
        return Err(Refusal::NotAllowed(format!(
            "{what}: loosening how a dataset is protected is the trustees' decision, not an \
             editor's (a trustee changes it with POST /api/v1/datasets/{{id}}/classification, \
             giving the reasons)"
        )));
    }
    if actor.is_admin() {
        return Ok(());
    }
    let maintains = actor.is_member_of(&current.owner_organization_id)
        || current.custodians().any(|c| actor.is_member_of(c));
    if !maintains {
        return Err(Refusal::NotAllowed(format!(
            "only members of the owner '{}' or of a custodian organisation may edit this dataset",
            current.owner_organization_id
        )));
    }
    if proposed.owner_organization_id != current.owner_organization_id {
        if !actor.is_member_of(&current.owner_organization_id) {
            return Err(Refusal::NotAllowed(
                "only the owner's members may hand a dataset to another owner".into(),
            ));
        }
        if !actor.is_member_of(&proposed.owner_organization_id) {
            return Err(Refusal::NotAllowed(format!(
                "you are not a member of '{}', so you cannot make it the owner",
                proposed.owner_organization_id
            )));
        }
    }
    if proposed.spectrum != current.spectrum && !actor.is_member_of(&current.owner_organization_id)
    {
        return Err(Refusal::NotAllowed(
            "only the owner may make a dataset's class stricter".into(),
        ));
    }
    Ok(())
}

/// What `proposed` loosens in how `current` is protected, if anything: a
/// less stringent class, "not personal data", another subject key or lawful
/// basis, personal terms dropped, fewer personal or quasi-identifying
/// columns, movements no longer marked as such, more columns released as
/// non-identifying, or a finer (or no) table bin. Making any of these
/// stricter is an editor's to do; loosening them is the trust's.
pub fn loosened_protection(
    current: &DatasetMetadata,
    proposed: &DatasetMetadata,
) -> Option<String> {
    if proposed.spectrum < current.spectrum {
        return Some(format!(
            "spectrum: {} is less stringent than {}",
            proposed.spectrum.as_str(),
            current.spectrum.as_str()
        ));
    }
    if current.personal_data && !proposed.personal_data {
        return Some("personal_data: it is personal data".into());
    }
    match (&current.personal_terms, &proposed.personal_terms) {
        (Some(_), None) => return Some("personal_terms: they may not be removed".into()),
        (Some(a), Some(b)) => {
            if a.subject_key != b.subject_key {
                return Some("personal_terms.subject_key".into());
            }
            let purposes = a
                .purposes
                .iter()
                .chain(&b.purposes)
                .map(|p| p.purpose.as_str());
            for p in purposes {
                if a.basis_for(p) != b.basis_for(p) {
                    return Some(format!(
                        "personal_terms.purposes: the lawful basis for '{p}'"
                    ));
                }
            }
        }
        _ => {}
    }
    let (a, b) = (&current.column_classes, &proposed.column_classes);
    for (field, before, after) in [
        ("column_classes.personal", &a.personal, &b.personal),
        (
            "column_classes.quasi_identifying",
            &a.quasi_identifying,
            &b.quasi_identifying,
        ),
    ] {
        if let Some(c) = before.iter().find(|c| !after.contains(c)) {
            return Some(format!("{field}: '{c}' may not be taken off"));
        }
    }
    if a.trajectories && !b.trajectories {
        return Some("column_classes.trajectories".into());
    }
    if let Some(c) = b
        .non_identifying
        .iter()
        .find(|c| !a.non_identifying.contains(c))
    {
        return Some(format!(
            "column_classes.non_identifying: '{c}' would be released as it is in anonymised rows"
        ));
    }
    for (c, bin) in &a.table_bins {
        if !b
            .table_bins
            .get(c)
            .is_some_and(|n| n.at_least_as_coarse_as(bin))
        {
            return Some(format!(
                "column_classes.table_bins.{c}: a table may not be made finer"
            ));
        }
    }
    None
}

/// Change how a dataset is protected (class, personal data, personal terms
/// and lawful bases, column classes) beyond what an editor may: trustees only.
pub fn may_reclassify(actor: &Actor) -> Result<(), Refusal> {
    match actor {
        Actor::Anonymous => Err(Refusal::NotSignedIn),
        _ if trustee(actor) => Ok(()),
        _ => Err(Refusal::NotAllowed(
            "only the trustees change how a dataset is protected once it is registered".into(),
        )),
    }
}

/// Re-assess a derived dataset's class (R-CAT-5). Its maintainers may keep
/// the class it inherited or make it stricter; lowering it below its
/// inputs' most stringent class, or saying it holds no personal data, is
/// the trustees'. Returns whether the trustees did it (their assessment
/// also releases it from its inputs' terms).
pub fn may_reassess_derived(
    actor: &Actor,
    current: &DatasetMetadata,
    inherited: crate::catalogue::Spectrum,
    proposed: crate::catalogue::Spectrum,
    clears_personal_data: bool,
) -> Result<bool, Refusal> {
    if matches!(actor, Actor::Anonymous) {
        return Err(Refusal::NotSignedIn);
    }
    if trustee(actor) {
        return Ok(true);
    }
    let maintains = actor.is_member_of(&current.owner_organization_id)
        || current.custodians().any(|c| actor.is_member_of(c));
    if !maintains {
        return Err(Refusal::NotAllowed(format!(
            "only the trustees, or members of the owner '{}', re-assess this dataset",
            current.owner_organization_id
        )));
    }
    if proposed < inherited {
        return Err(Refusal::NotAllowed(format!(
            "its inputs' most stringent class is {}: only the trustees may classify data derived \
             from them as {}",
            inherited.as_str(),
            proposed.as_str()
        )));
    }
    if clears_personal_data {
        return Err(Refusal::NotAllowed(
            "it was derived from personal data: only the trustees may say it is not".into(),
        ));
    }
    Ok(false)
}

/// Administer organisations, accounts and groups: administrators only.
pub fn may_administer(actor: &Actor) -> Result<(), Refusal> {
    match actor {
        Actor::Anonymous => Err(Refusal::NotSignedIn),
        _ if actor.is_admin() => Ok(()),
        _ => Err(Refusal::NotAllowed(
            "only administrators may manage organisations, accounts and groups".into(),
        )),
    }
}

/// Whether the actor is a trustee (the board that decides requests, keeps
/// the charter and the breach register). The one place the role is read.
fn trustee(actor: &Actor) -> bool {
    actor.has_role(crate::account::Role::Trustee)
}

/// A rule that lets one kind of actor through, or says why not.
fn only(allowed: bool, actor: &Actor, why: &str) -> Result<(), Refusal> {
    match actor {
        Actor::Anonymous => Err(Refusal::NotSignedIn),
        _ if allowed => Ok(()),
        _ => Err(Refusal::NotAllowed(why.into())),
    }
}

/// Replace the charter (R-ACC-5): trustees.
pub fn may_change_charter(actor: &Actor) -> Result<(), Refusal> {
    only(trustee(actor), actor, "only trustees change the charter")
}

/// Vote on access requests and see the trustees' queue: trustees. (Not on
/// their own request: the use case checks that, knowing the request.)
pub fn may_vote(actor: &Actor) -> Result<(), Refusal> {
    only(trustee(actor), actor, "only trustees vote on requests")
}

/// Retire an agreement before its end: trustees.
pub fn may_retire_agreement(actor: &Actor) -> Result<(), Refusal> {
    only(trustee(actor), actor, "only trustees retire agreements")
}

/// Register breaches and see the breach register: trustees, in person (an
/// agent acting for a trustee may not).
pub fn may_keep_breach_register(actor: &Actor) -> Result<(), Refusal> {
    only(
        trustee(actor) && actor.agent().is_none(),
        actor,
        "only trustees register breaches and see the breach register",
    )
}

/// Change the purpose taxonomy: administrators and trustees.
pub fn may_change_purposes(actor: &Actor) -> Result<(), Refusal> {
    only(
        actor.is_admin() || trustee(actor),
        actor,
        "only administrators and trustees change the purpose taxonomy",
    )
}

/// Record or withdraw an agent's authority to act for another person, or a
/// person's date of birth, after checking the evidence: an administrator
/// acting in person (`what` names the act, for the refusal).
pub fn may_record_evidence(actor: &Actor, what: &str) -> Result<(), Refusal> {
    only(
        actor.is_admin() && actor.agent().is_none(),
        actor,
        &format!("only an administrator, acting in person, {what}"),
    )
}

/// Issue a one-time link code for a resident's records in a dataset owned
/// by `owner`: members of the owning organisation.
pub fn may_issue_link_code(actor: &Actor, owner: &str, dataset: &str) -> Result<(), Refusal> {
    only(
        actor.is_member_of(owner),
        actor,
        &format!("only members of '{owner}' issue link codes for '{dataset}'"),
    )
}

/// Answer a demand-led data request (plan, publish, point to what exists,
/// decline): members of the organisation it is assigned to; the
/// administrators while it is unassigned.
pub fn may_answer_data_request(actor: &Actor, organization: Option<&str>) -> Result<(), Refusal> {
    match organization {
        Some(o) => only(
            actor.is_member_of(o),
            actor,
            &format!("only members of '{o}', which the request is assigned to, answer it"),
        ),
        None => only(
            actor.is_admin(),
            actor,
            "the request is not assigned to an organisation yet: only administrators answer or assign it",
        ),
    }
}

/// Assign a data request to the organisation that is to answer it: administrators.
pub fn may_assign_data_request(actor: &Actor) -> Result<(), Refusal> {
    only(
        actor.is_admin(),
        actor,
        "only administrators assign data requests",
    )
}

/// Open a consultation of residents: trustees.
pub fn may_open_consultation(actor: &Actor) -> Result<(), Refusal> {
    only(trustee(actor), actor, "only trustees open consultations")
}

/// Answer a consultation: residents (the resident role), and for an
/// audience of linked residents only those `linked` to the dataset's records.
pub fn may_answer_consultation(
    actor: &Actor,
    audience: crate::participation::Audience,
    linked: bool,
) -> Result<(), Refusal> {
    let resident = actor.has_role(crate::account::Role::Resident);
    match audience {
        crate::participation::Audience::Residents => only(
            resident,
            actor,
            "this consultation asks the city's residents: sign in with a resident's account",
        ),
        crate::participation::Audience::LinkedResidents => only(
            resident && linked,
            actor,
            "this consultation asks residents whose records are in the dataset concerned: link your records first",
        ),
    }
}

/// Work on a sharing project (edit it, add documents, renew it): members of
/// its lead or partner organisations.
pub fn may_work_on_project(actor: &Actor, organizations: &[String]) -> Result<(), Refusal> {
    only(
        organizations.iter().any(|o| actor.is_member_of(o)),
        actor,
        "only members of the project's organisations work on it",
    )
}

/// Sign off a project's stage: trustees; for a project whose data is all
/// open, also members of every organisation that owns it (`owners`).
pub fn may_sign_off_stage(
    actor: &Actor,
    open_data_owners: Option<&[String]>,
) -> Result<(), Refusal> {
    let owner = open_data_owners
        .is_some_and(|owners| !owners.is_empty() && owners.iter().all(|o| actor.is_member_of(o)));
    only(
        trustee(actor) || owner,
        actor,
        "only the trustees sign off a project's stage (or, when all its data is open, its owner)",
    )
}

/// Whether the actor sees the people behind requests and votes (the public
/// register shows organisations and roles only): trustees and administrators.
pub fn sees_names_in_requests(actor: &Actor) -> bool {
    trustee(actor) || actor.is_admin()
}

/// Whether the actor acts as an administrator (for the log's "acting for",
/// and the portal's administration links).
pub fn is_administrator(actor: &Actor) -> bool {
    actor.is_admin()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::account::Role;
    use crate::catalogue::{DatasetInput, RoleAssignment, ValueChainRole};

    fn user(roles: &[Role], orgs: &[&str]) -> Actor {
        Actor::User {
            username: "u".into(),
            display_name: "U".into(),
            roles: roles.to_vec(),
            organization_ids: orgs.iter().map(|s| s.to_string()).collect(),
            agent: None,
        }
    }

    fn dataset(owner: &str, custodian: Option<&str>) -> DatasetMetadata {
        let input: DatasetInput = serde_json::from_value(serde_json::json!({
            "title": "t", "description": "d", "owner_organization_id": owner, "spectrum": "shared_group"
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let (_, mut m) = input.validate().unwrap_or_else(|e| panic!("{e}"));
        if let Some(c) = custodian {
            m.roles.push(RoleAssignment {
                organization_id: c.into(),
                role: ValueChainRole::Custodian,
            });
        }
        m
    }

    #[test]
    fn who_may_create() {
        assert_eq!(
            may_create_dataset(&Actor::Anonymous, "city"),
            Err(Refusal::NotSignedIn)
        );
        assert!(may_create_dataset(&user(&[], &["city"]), "city").is_ok());
        assert!(may_create_dataset(&user(&[], &["uni"]), "city").is_err());
        assert!(may_create_dataset(&user(&[Role::Trustee, Role::Resident], &[]), "city").is_err());
        assert!(may_create_dataset(&user(&[Role::Administrator], &[]), "city").is_ok());
    }

    #[test]
    fn who_may_edit() {
        let d = dataset("city", Some("utility"));
        let same = d.clone();
        assert_eq!(
            may_edit_dataset(&Actor::Anonymous, &d, &same),
            Err(Refusal::NotSignedIn)
        );
        assert!(may_edit_dataset(&user(&[], &["city"]), &d, &same).is_ok());
        assert!(
            may_edit_dataset(&user(&[], &["utility"]), &d, &same).is_ok(),
            "custodian edits"
        );
        assert!(
            may_edit_dataset(&user(&[], &["uni"]), &d, &same).is_err(),
            "another organisation"
        );
        assert!(
            may_edit_dataset(&user(&[Role::Trustee], &[]), &d, &same).is_err(),
            "trustees do not edit metadata"
        );

        let mut reclassified = d.clone();
        reclassified.spectrum = crate::Spectrum::Open;
        assert!(
            may_edit_dataset(&user(&[], &["utility"]), &d, &reclassified).is_err(),
            "custodian cannot reclassify"
        );
        assert!(
            may_edit_dataset(&user(&[], &["city"]), &d, &reclassified).is_err(),
            "a less stringent class is the trustees' decision, not the owner's"
        );
        assert!(
            may_edit_dataset(&user(&[Role::Administrator], &[]), &d, &reclassified).is_err(),
            "nor an administrator's"
        );
        let mut stricter = d.clone();
        stricter.spectrum = crate::Spectrum::Closed;
        assert!(may_edit_dataset(&user(&[], &["city"]), &d, &stricter).is_ok());
        assert!(
            may_edit_dataset(&user(&[], &["utility"]), &d, &stricter).is_err(),
            "a custodian does not classify at all"
        );

        let mut handed = d.clone();
        handed.owner_organization_id = "uni".into();
        assert!(
            may_edit_dataset(&user(&[], &["city"]), &d, &handed).is_err(),
            "not a member of the new owner"
        );
        assert!(may_edit_dataset(&user(&[], &["city", "uni"]), &d, &handed).is_ok());
        assert!(
            may_edit_dataset(&user(&[], &["utility", "uni"]), &d, &handed).is_err(),
            "custodian cannot hand over"
        );
    }

    #[test]
    fn who_may_administer() {
        assert!(may_administer(&Actor::Anonymous).is_err());
        for r in [Role::Trustee, Role::Resident] {
            assert!(may_administer(&user(&[r], &["city"])).is_err());
        }
        assert!(may_administer(&user(&[Role::Administrator], &[])).is_ok());
    }

    fn as_agent(mut actor: Actor) -> Actor {
        if let Actor::User { agent, .. } = &mut actor {
            *agent = Some(crate::account::Delegation {
                agent: "ana".into(),
                agent_display_name: "Ana".into(),
                authority_id: "A-1".into(),
                kind: crate::account::AuthorityKind::PowerOfAttorney,
                area: None,
            });
        }
        actor
    }

    /// Every trustees-only rule refuses everyone else, and says so.
    #[test]
    fn only_trustees_keep_the_charter_vote_retire_and_keep_the_breach_register() {
        type Rule = fn(&Actor) -> Result<(), Refusal>;
        let rules: [(&str, Rule); 4] = [
            ("charter", may_change_charter),
            ("vote", may_vote),
            ("retire", may_retire_agreement),
            ("breaches", may_keep_breach_register),
        ];
        for (name, rule) in rules {
            assert_eq!(rule(&Actor::Anonymous), Err(Refusal::NotSignedIn), "{name}");
            for r in [Role::Administrator, Role::Resident] {
                assert!(
                    matches!(rule(&user(&[r], &["city"])), Err(Refusal::NotAllowed(_))),
                    "{name}: {r:?} may not"
                );
            }
            assert!(rule(&user(&[Role::Trustee], &[])).is_ok(), "{name}");
        }
        assert!(
            may_keep_breach_register(&as_agent(user(&[Role::Trustee], &[]))).is_err(),
            "an agent may not keep the breach register for a trustee"
        );
    }

    #[test]
    fn purposes_evidence_and_link_codes() {
        assert!(may_change_purposes(&user(&[Role::Resident], &["city"])).is_err());
        assert!(may_change_purposes(&Actor::Anonymous).is_err());
        assert!(may_change_purposes(&user(&[Role::Trustee], &[])).is_ok());
        assert!(may_change_purposes(&user(&[Role::Administrator], &[])).is_ok());

        let admin = user(&[Role::Administrator], &[]);
        assert!(may_record_evidence(&admin, "records a date of birth").is_ok());
        let refused = may_record_evidence(&as_agent(admin), "records a date of birth");
        assert_eq!(
            refused,
            Err(Refusal::NotAllowed(
                "only an administrator, acting in person, records a date of birth".into()
            )),
            "an agent may not record evidence for an administrator"
        );
        assert!(may_record_evidence(&user(&[Role::Trustee], &[]), "x").is_err());

        assert!(may_issue_link_code(&user(&[], &["city"]), "city", "d").is_ok());
        assert!(may_issue_link_code(&user(&[Role::Administrator], &[]), "city", "d").is_err());
        assert!(may_issue_link_code(&Actor::Anonymous, "city", "d").is_err());

        assert!(sees_names_in_requests(&user(&[Role::Trustee], &[])));
        assert!(sees_names_in_requests(&user(&[Role::Administrator], &[])));
        assert!(!sees_names_in_requests(&user(&[Role::Resident], &["city"])));
    }
}
