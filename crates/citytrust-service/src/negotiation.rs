//! Dataspace Protocol contract negotiations, provider side (DSP 2025-1).
//!
//! A partner node (a participant whose key an administrator pinned in a
//! remote-catalogue registration) asks, for one of its organisations, for
//! an offer of the DSP catalogue. The request becomes an **access request
//! like any other**: made by the account standing for the participant
//! (`dsp.{catalogue}`, which cannot sign in) for the organisation standing
//! for the consumer's (`dsp-{catalogue}-{org}`), decided by the charter and,
//! where the charter says so, by the trustees' votes. Nothing is agreed
//! before they decide: the negotiation stays `REQUESTED` until the request
//! is approved (the provider then owes the consumer the agreement) or
//! refused, denied or withdrawn (it owes a termination).
//!
//! What is owed is sent by the worker ([`Service::advance_negotiations`],
//! woken by every decision and verification, and every few seconds), with
//! this trust's signed token, to the consumer's callback address, which
//! must lie under the participant's own URL; the state moves only once the
//! consumer took the message, and a failed delivery is retried with
//! back-off, each failure kept on the negotiation. Every step is a log
//! entry (`dsp.negotiation_*`).
//!
//! The consumer's messages are checked against the state machine
//! ([`consumer_transition`]); a transition it does not allow is a 400
//! `ContractNegotiationError`, and a negotiation of another participant is
//! answered exactly as an unknown one (404).

use citytrust_model::access::{RequestStatus, format_day, parse_day};
use citytrust_model::federation::{Negotiation, NegotiationState, OwedMessage};
use citytrust_model::{
    AccessLevel, AccessRequest, Actor, NewAccessRequest, Organization, OrganizationKind, User,
};
use serde_json::{Value, json};

use crate::dataspace::{Caller, DSP_CONTEXT, DSP_PATH};
use crate::ledger::new_entry;
use crate::{Service, ServiceError, rfc3339};

/// Deliveries of an owed message tried before the negotiation is given up
/// (terminated here, logged): with the back-off, about a day.
pub const MAX_ATTEMPTS: u32 = 12;
/// Where a requested offer carries the answers to the trust's sharing
/// checklist (question id → answer), which every access request answers:
/// a CityTrust term beside ODRL's.
pub const CHECKLIST: &str = "citytrust:checklist";
/// When to try a delivery again after `attempts` failures: 10 s, doubling,
/// at most an hour.
pub(crate) fn retry_at(now: time::OffsetDateTime, attempts: u32) -> String {
    let wait = (5i64 << attempts.min(10)).min(3600);
    rfc3339(now + time::Duration::seconds(wait))
}

/// How the description of an organisation standing for a participant's begins.
const STAND_IN_MARK: &str = "Stands for the organisation";
/// The account standing for a participant is this and the catalogue's id.
pub const STAND_IN_USER_PREFIX: &str = "dsp.";
/// Open negotiations (not finalised or terminated) one participant may have.
pub const MAX_OPEN_PER_PARTICIPANT: usize = 100;

/// The id of the organisation standing here for `org` of the participant
/// pinned in `catalogue`: a slug no two (catalogue, organisation) pairs
/// share, whatever hyphens they hold.
pub fn stand_in_organization(catalogue: &str, org: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!("{catalogue}\n{org}").as_bytes());
    format!("dsp-{}", hex::encode(&digest[..8]))
}

/// The longest reason or code kept from a consumer's message.
const MAX_REASON: usize = 500;

/// How a protocol call failed.
#[derive(Debug)]
pub enum DspError {
    /// 404: no such negotiation — or one this caller may not see.
    NotFound,
    /// 400 with the protocol's error: a bad message, or a transition the
    /// state machine does not allow.
    BadRequest(String),
    /// 500.
    Internal(ServiceError),
}

impl From<ServiceError> for DspError {
    fn from(e: ServiceError) -> DspError {
        match e {
            ServiceError::Invalid(v) => DspError::BadRequest(format!(
                "{v} (the sharing checklist is answered in the offer's '{CHECKLIST}', \
                 an object of answers by question id)"
            )),
            ServiceError::Refused { message, .. } => DspError::BadRequest(message),
            ServiceError::Unprocessable { message, .. } => DspError::BadRequest(message),
            e => DspError::Internal(e),
        }
    }
}

impl From<citytrust_store::StoreError> for DspError {
    fn from(e: citytrust_store::StoreError) -> DspError {
        DspError::Internal(e.into())
    }
}

pub(crate) type DspResult<T> = std::result::Result<T, DspError>;

/// The messages a consumer sends a provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsumerMessage {
    /// `ContractRequestMessage` on an existing negotiation (a counter-offer).
    Request,
    /// `ContractNegotiationEventMessage` ACCEPTED.
    Accepted,
    /// `ContractNegotiationEventMessage` FINALIZED (a provider's event only).
    Finalized,
    /// `ContractAgreementVerificationMessage`.
    Verification,
    /// `ContractNegotiationTerminationMessage`.
    Termination,
}

/// Where a consumer's message takes a negotiation in `state`, if the
/// protocol's state machine allows it at all.
pub fn consumer_transition(
    state: NegotiationState,
    message: ConsumerMessage,
) -> Option<NegotiationState> {
    use ConsumerMessage as M;
    use NegotiationState as S;
    match (state, message) {
        (S::Offered, M::Request) => Some(S::Requested),
        (S::Offered, M::Accepted) => Some(S::Accepted),
        (S::Agreed, M::Verification) => Some(S::Verified),
        (S::Requested | S::Offered | S::Agreed, M::Termination) => Some(S::Terminated),
        _ => None,
    }
}

/// The `ContractNegotiation` a provider answers with.
pub fn negotiation_json(n: &Negotiation) -> Value {
    json!({
        "@context": [DSP_CONTEXT],
        "@type": "ContractNegotiation",
        "providerPid": n.provider_pid,
        "consumerPid": n.consumer_pid,
        "state": n.state.as_str(),
    })
}

pub(crate) fn text<'a>(msg: &'a Value, field: &str) -> DspResult<&'a str> {
    match msg.get(field).and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() && s.len() <= 500 => Ok(s),
        Some(_) => Err(DspError::BadRequest(format!(
            "{field} must be 1 to 500 characters"
        ))),
        None => Err(DspError::BadRequest(format!("{field} is missing"))),
    }
}

/// A message's `callbackAddress`, which must lie under the participant's
/// own URL: this trust sends nothing anywhere else (no request can make it
/// call a third party, or itself).
pub(crate) fn callback_of(caller: &Caller, msg: &Value) -> DspResult<String> {
    let callback = text(msg, "callbackAddress")?
        .trim_end_matches('/')
        .to_string();
    if !crate::dataspace::under(&callback, &caller.participant_id) {
        return Err(DspError::BadRequest(format!(
            "the callbackAddress must be an http(s) URL under the participant's own, {}",
            caller.participant_id
        )));
    }
    Ok(callback)
}

/// A process id a partner chose (`consumerPid`): a URI of at most 200
/// characters without spaces or quotes, as it goes into paths and the log.
pub(crate) fn process_id(msg: &Value, field: &str) -> DspResult<String> {
    let id = text(msg, field)?;
    let fine = id.len() <= 200
        && id.contains(':')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ':' | '-' | '.' | '_' | '/'));
    if fine {
        Ok(id.to_string())
    } else {
        Err(DspError::BadRequest(format!(
            "{field} must be a URI (e.g. urn:uuid:…) of at most 200 letters, digits and : - . _ /"
        )))
    }
}

/// What the log keeps of a partner's reason: its SHA-256 and length, never
/// its words (no free text a caller chose enters the public log).
pub(crate) fn reason_commitment(reason: &str) -> Value {
    json!({"sha256": crate::accounts::sha256_hex(reason), "chars": reason.chars().count()})
}

/// `msg`'s reason (the first, cut short) and code, for the log.
pub(crate) fn reason_of(msg: &Value) -> String {
    let code = msg.get("code").and_then(Value::as_str).unwrap_or("");
    let reason = msg
        .get("reason")
        .and_then(Value::as_array)
        .and_then(|r| r.first())
        .map(|r| match r {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
        .unwrap_or_default();
    let mut s = match (code.is_empty(), reason.is_empty()) {
        (true, true) => "no reason given".to_string(),
        (false, true) => format!("code {code}"),
        (true, false) => reason,
        (false, false) => format!("{reason} (code {code})"),
    };
    if s.len() > MAX_REASON {
        let mut cut = MAX_REASON;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
    }
    s
}

/// The purpose a requested offer names: one, from a `purpose` constraint
/// of its permissions (a string, or a list of one).
fn requested_purpose(offer: &Value) -> DspResult<Option<String>> {
    let mut found = Vec::new();
    for p in offer
        .get("permission")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for c in p
            .get("constraint")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if c.get("leftOperand").and_then(Value::as_str) != Some("purpose") {
                continue;
            }
            match c.get("rightOperand") {
                Some(Value::String(s)) => found.push(s.clone()),
                Some(Value::Array(a)) if a.len() == 1 && a[0].is_string() => {
                    found.push(a[0].as_str().unwrap_or_default().to_string())
                }
                _ => {
                    return Err(DspError::BadRequest(
                        "the purpose constraint must name one purpose".into(),
                    ));
                }
            }
        }
    }
    found.dedup();
    match found.len() {
        0 => Ok(None),
        1 => Ok(found.pop()),
        _ => Err(DspError::BadRequest(
            "the offer names several purposes: ask for one".into(),
        )),
    }
}

/// The checklist's answers a requested offer carries.
fn requested_checklist(offer: &Value) -> DspResult<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    let Some(answers) = offer.get(CHECKLIST) else {
        return Ok(out);
    };
    let bad = || {
        DspError::BadRequest(format!(
            "'{CHECKLIST}' is an object of at most 30 answers (question id → text of at most 5000 characters)"
        ))
    };
    let answers = answers.as_object().ok_or_else(bad)?;
    if answers.len() > 30 {
        return Err(bad());
    }
    for (question, answer) in answers {
        let answer = answer.as_str().ok_or_else(bad)?;
        if question.len() > 100 || answer.chars().count() > 5000 {
            return Err(bad());
        }
        out.insert(question.clone(), answer.to_string());
    }
    Ok(out)
}

/// The period a requested offer names (`dateTime` `gteq` and `lteq`
/// constraints, as days), if it names one.
fn requested_period(offer: &Value) -> DspResult<(Option<i64>, Option<i64>)> {
    let (mut from, mut to) = (None, None);
    for p in offer
        .get("permission")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        for c in p
            .get("constraint")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if c.get("leftOperand").and_then(Value::as_str) != Some("dateTime") {
                continue;
            }
            let value = c.get("rightOperand").and_then(Value::as_str).unwrap_or("");
            let day = parse_day(value.get(..10).unwrap_or(value)).ok_or_else(|| {
                DspError::BadRequest(format!(
                    "the dateTime constraint's '{value}' is not a date (YYYY-MM-DD)"
                ))
            })?;
            match c.get("operator").and_then(Value::as_str) {
                Some("gteq") => from = Some(day),
                Some("lteq") => to = Some(day),
                _ => {
                    return Err(DspError::BadRequest(
                        "a dateTime constraint's operator is gteq (first day) or lteq (last day)"
                            .into(),
                    ));
                }
            }
        }
    }
    Ok((from, to))
}

impl Service {
    /// `POST /negotiations/request`: a participant asks for an offer.
    pub async fn dsp_request_negotiation(
        &self,
        caller: &Caller,
        msg: &Value,
        base: &str,
    ) -> DspResult<Value> {
        if msg.get("providerPid").is_some() {
            return Err(DspError::BadRequest(
                "a negotiation is started without a providerPid".into(),
            ));
        }
        let consumer_pid = process_id(msg, "consumerPid")?;
        let callback = callback_of(caller, msg)?;
        let open = self
            .store
            .open_negotiations_of(&caller.catalogue_id)
            .await?;
        if open >= MAX_OPEN_PER_PARTICIPANT {
            return Err(DspError::BadRequest(format!(
                "this participant has {open} negotiations open here, the most it may: \
                 finish or terminate some first"
            )));
        }
        let Some((org_id, org_name)) = caller.organization.clone() else {
            return Err(DspError::BadRequest(
                "the token names no organisation (its 'sub'): a request is made for one".into(),
            ));
        };
        let offer = msg
            .get("offer")
            .filter(|o| o.is_object())
            .ok_or_else(|| DspError::BadRequest("offer is missing".into()))?;
        let offer_id = text(offer, "@id")?.to_string();
        let offers_prefix = format!("{base}{DSP_PATH}/offers/");
        let unknown_offer = || DspError::BadRequest(format!("no offer '{offer_id}' is made here"));
        let (dataset_id, level) = offer_id
            .strip_prefix(&offers_prefix)
            .and_then(|rest| rest.split_once('/'))
            .ok_or_else(unknown_offer)?;
        let (dataset_id, level) = (dataset_id.to_string(), level.to_string());
        if let Some(target) = offer.get("target")
            && target.as_str() != Some(dataset_id.as_str())
        {
            return Err(DspError::BadRequest(format!(
                "the offer's target must be '{dataset_id}'"
            )));
        }
        // The offer must be one the catalogue makes now (under the charter in force).
        let dataset = match self.dsp_dataset(&dataset_id, base).await {
            Ok(d) => d,
            Err(ServiceError::NotFound(_)) => return Err(unknown_offer()),
            Err(e) => return Err(e.into()),
        };
        let made = dataset
            .get("hasPolicy")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|o| o.get("@id").and_then(Value::as_str) == Some(offer_id.as_str()))
            .ok_or_else(unknown_offer)?;
        let allowed: Vec<String> = made["permission"][0]["constraint"][0]["rightOperand"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p.as_str().map(str::to_string))
            .collect();
        let purpose = match requested_purpose(offer)? {
            Some(p) if allowed.contains(&p) => p,
            Some(p) => {
                return Err(DspError::BadRequest(format!(
                    "the offer is not made for the purpose '{p}' (it is for: {})",
                    allowed.join(", ")
                )));
            }
            None if allowed.len() == 1 => allowed[0].clone(),
            None => {
                return Err(DspError::BadRequest(format!(
                    "name one purpose in a purpose constraint (the offer is for: {})",
                    allowed.join(", ")
                )));
            }
        };
        let level = AccessLevel::parse(&level).ok_or_else(unknown_offer)?;
        let today = self.today();
        let (from, to) = requested_period(offer)?;
        let starts_on = from.unwrap_or(today);
        let ends_on = to.unwrap_or(starts_on + 364);
        let benefit = offer
            .get("dct:description")
            .and_then(Value::as_str)
            .map(|s| s.trim().chars().take(2000).collect::<String>())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| {
                format!(
                    "Asked for through the Dataspace Protocol by {org_name}, an organisation of \
                     the participant {} (no benefit was stated).",
                    caller.participant_id
                )
            });
        let checklist = requested_checklist(offer)?;
        let (actor, organization_id) = self.dsp_stand_ins(caller, &org_id, &org_name).await?;
        let request = self
            .create_access_request(
                &actor,
                NewAccessRequest {
                    dataset_ids: vec![dataset_id.clone()],
                    purpose: purpose.clone(),
                    level: level.as_str().into(),
                    starts_on: format_day(starts_on),
                    ends_on: format_day(ends_on),
                    benefit,
                    sharing: Default::default(),
                    checklist,
                    organization_id: Some(organization_id.clone()),
                    group_id: None,
                    columns: vec![],
                    terms: Default::default(),
                    amends: None,
                    draft: false,
                },
            )
            .await?;
        let now = rfc3339(self.now());
        let n = Negotiation {
            provider_pid: format!("urn:uuid:{}", uuid_v4()?),
            consumer_pid,
            catalogue_id: caller.catalogue_id.clone(),
            participant_id: caller.participant_id.clone(),
            consumer_organization: org_id,
            organization_id,
            dataset_id,
            offer_id,
            level,
            purpose,
            callback_address: callback,
            provider_base: base.to_string(),
            state: NegotiationState::Requested,
            access_request_id: request.id.clone(),
            agreement_id: None,
            owed: None,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            termination: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let (body, at) = self.log_entry(
            "dsp.negotiation_requested",
            json!({
                "negotiation": n.provider_pid,
                "consumer_pid": n.consumer_pid,
                "participant": n.participant_id,
                "organization": n.organization_id,
                "dataset": n.dataset_id,
                "level": n.level.as_str(),
                "purpose": n.purpose,
                "request": n.access_request_id,
            }),
        )?;
        self.store
            .insert_negotiation(&n, &[new_entry("dsp.negotiation_requested", &body, &at)])
            .await?;
        tracing::info!(negotiation = %n.provider_pid, participant = %n.participant_id, request = %n.access_request_id, "DSP negotiation requested");
        self.dsp_wake.notify_one();
        Ok(negotiation_json(&n))
    }

    /// The account and organisation standing here for a participant's
    /// organisation, made the first time it asks. The account cannot sign
    /// in; it acts only through the protocol, for that organisation only.
    pub(crate) async fn dsp_stand_ins(
        &self,
        caller: &Caller,
        org_id: &str,
        org_name: &str,
    ) -> DspResult<(Actor, String)> {
        let local_org = stand_in_organization(&caller.catalogue_id, org_id);
        match self.store.get_organization(&local_org).await? {
            Some(o)
                if o.url.as_deref() == Some(caller.participant_id.as_str())
                    && o.description.starts_with(STAND_IN_MARK) => {}
            Some(_) => {
                return Err(DspError::BadRequest(format!(
                    "the organisation id '{local_org}' is taken here by another organisation"
                )));
            }
            None => {
                let org = Organization {
                    id: local_org.clone(),
                    name: format!("{org_name} ({})", caller.catalogue_name),
                    kind: OrganizationKind::Other,
                    description: format!(
                        "{STAND_IN_MARK} '{org_id}' of the dataspace participant {} \
                         (remote catalogue '{}'), which asks for data through the Dataspace Protocol.",
                        caller.participant_id, caller.catalogue_id
                    ),
                    url: Some(caller.participant_id.clone()),
                    created_at: rfc3339(self.now()),
                };
                let (body, at) = self.log_entry(
                    "organization.created",
                    // The name is the partner's words: the log names the
                    // organisation by its id and the participant only.
                    json!({"organization": org.id, "kind": org.kind.as_str(), "participant": caller.participant_id}),
                )?;
                match self
                    .store
                    .insert_organization(&org, &new_entry("organization.created", &body, &at))
                    .await
                {
                    Ok(()) | Err(citytrust_store::StoreError::Conflict(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        let username = format!("{STAND_IN_USER_PREFIX}{}", caller.catalogue_id);
        let display_name = format!("Dataspace participant {}", caller.catalogue_name);
        // The `dsp.` names are reserved (no account made since may take
        // one); an account of that name made otherwise is not the stand-in,
        // and is never given the participant's organisations.
        if let Some(existing) = self.store.get_user(&username).await? {
            let stand_in = existing.user.disabled
                && existing.user.roles.is_empty()
                && existing.password_hash.is_none()
                && existing.user.email.is_none();
            if !stand_in {
                tracing::error!(account = %username, "an account holds the name of a participant's stand-in");
                return Err(DspError::Internal(ServiceError::Internal(format!(
                    "the account name '{username}' is taken by a person: rename that account"
                ))));
            }
        } else {
            let user = User {
                username: username.clone(),
                display_name: display_name.clone(),
                email: None,
                roles: vec![],
                organization_ids: vec![],
                disabled: true,
                created_at: rfc3339(self.now()),
            };
            match self.store.insert_user(&user, None).await {
                Ok(()) | Err(citytrust_store::StoreError::Conflict(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        match self.store.add_membership(&username, &local_org).await {
            Ok(()) | Err(citytrust_store::StoreError::Conflict(_)) => {}
            Err(e) => return Err(e.into()),
        }
        Ok((
            Actor::User {
                username,
                display_name,
                roles: vec![],
                organization_ids: vec![local_org.clone()],
                agent: None,
            },
            local_org,
        ))
    }

    /// The negotiation `pid` if `caller` is its participant; else, as for
    /// an unknown one, not found.
    async fn dsp_negotiation_of(
        &self,
        caller: &Caller,
        pid: &str,
    ) -> DspResult<(Negotiation, i64)> {
        match self.store.get_negotiation(pid).await? {
            Some((n, rev))
                if n.catalogue_id == caller.catalogue_id
                    && n.participant_id == caller.participant_id =>
            {
                Ok((n, rev))
            }
            _ => Err(DspError::NotFound),
        }
    }

    /// `GET /negotiations/{pid}`.
    pub async fn dsp_get_negotiation(&self, caller: &Caller, pid: &str) -> DspResult<Value> {
        Ok(negotiation_json(
            &self.dsp_negotiation_of(caller, pid).await?.0,
        ))
    }

    /// A consumer's message on negotiation `pid` (its `consumerPid` must
    /// match): the transition the state machine allows, or a 400.
    pub async fn dsp_consumer_message(
        &self,
        caller: &Caller,
        pid: &str,
        message: ConsumerMessage,
        msg: &Value,
    ) -> DspResult<Value> {
        let (mut n, rev) = self.dsp_negotiation_of(caller, pid).await?;
        if msg.get("consumerPid").and_then(Value::as_str) != Some(n.consumer_pid.as_str()) {
            return Err(DspError::BadRequest(format!(
                "the consumerPid does not match the negotiation's ({})",
                n.consumer_pid
            )));
        }
        if let Some(p) = msg.get("providerPid").and_then(Value::as_str)
            && p != n.provider_pid
        {
            return Err(DspError::BadRequest(
                "the providerPid does not match the negotiation's".into(),
            ));
        }
        // The consumer may verify an agreement whose delivery it took
        // before this node recorded the delivery.
        let state = match (n.state, n.owed, message) {
            (
                NegotiationState::Requested,
                Some(OwedMessage::Agreement),
                ConsumerMessage::Verification,
            ) => NegotiationState::Agreed,
            (s, _, _) => s,
        };
        let Some(next) = consumer_transition(state, message) else {
            return Err(DspError::BadRequest(format!(
                "a {} cannot be taken in state {}",
                match message {
                    ConsumerMessage::Request => "ContractRequestMessage (counter-offer)",
                    ConsumerMessage::Accepted => "ContractNegotiationEventMessage ACCEPTED",
                    ConsumerMessage::Finalized =>
                        "ContractNegotiationEventMessage FINALIZED (a provider's event)",
                    ConsumerMessage::Verification => "ContractAgreementVerificationMessage",
                    ConsumerMessage::Termination => "ContractNegotiationTerminationMessage",
                },
                n.state.as_str()
            )));
        };
        let now = rfc3339(self.now());
        let (kind, fields) = match next {
            NegotiationState::Verified => {
                n.owed = Some(OwedMessage::Finalized);
                (
                    "dsp.agreement_verified",
                    json!({"negotiation": n.provider_pid, "agreement": n.agreement_id}),
                )
            }
            NegotiationState::Terminated => {
                let reason = reason_of(msg);
                n.owed = None;
                n.termination = Some(format!("by the consumer: {reason}"));
                (
                    "dsp.negotiation_terminated",
                    json!({"negotiation": n.provider_pid, "by": "consumer", "reason": reason_commitment(&reason)}),
                )
            }
            // Counter-offers and acceptances follow only a provider's
            // offer, which this trust never makes (the charter's offers
            // stand as published): the table allows them, no state here
            // reaches them.
            other => {
                return Err(DspError::BadRequest(format!(
                    "this provider does not negotiate to {}",
                    other.as_str()
                )));
            }
        };
        n.state = next;
        n.attempts = 0;
        n.next_attempt_at = None;
        n.last_error = None;
        n.updated_at = now;
        let (body, at) = self.log_entry(kind, fields)?;
        match self
            .store
            .update_negotiation(&n, rev, &[new_entry(kind, &body, &at)])
            .await
        {
            Ok(()) => {}
            Err(citytrust_store::StoreError::StaleRevision(_)) => {
                return Err(DspError::BadRequest(
                    "the negotiation changed meanwhile: ask for its state and try again".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        // Only once the termination is written does the request go back
        // (a stale write above changed nothing).
        if next == NegotiationState::Terminated {
            let reason = reason_of(msg);
            if let Err(e) = self.dsp_undo_request(&n, &reason).await {
                tracing::error!(negotiation = %n.provider_pid, error = ?e, "a terminated negotiation's request could not be taken back");
            }
        }
        self.dsp_wake.notify_one();
        Ok(negotiation_json(&n))
    }

    /// A negotiation ended by its consumer takes its request back: a
    /// request not yet decided is withdrawn, an agreement made retired.
    async fn dsp_undo_request(&self, n: &Negotiation, reason: &str) -> DspResult<()> {
        let Some((mut request, rev)) = self.store.get_access_request(&n.access_request_id).await?
        else {
            return Ok(());
        };
        if matches!(
            request.status,
            RequestStatus::Draft | RequestStatus::PublicComment | RequestStatus::UnderReview
        ) {
            request.status = RequestStatus::Withdrawn;
            request.updated_at = rfc3339(self.now());
            let (body, at) = self.log_entry(
                "access_request.withdrawn",
                json!({"request": request.id, "negotiation": n.provider_pid, "reason": reason_commitment(reason)}),
            )?;
            self.store
                .save_access_request(
                    &request,
                    Some(rev),
                    None,
                    &[new_entry("access_request.withdrawn", &body, &at)],
                )
                .await?;
        } else if let Some(agreement) = &request.agreement_id {
            match self
                .retire_agreement_for(
                    agreement,
                    "the consumer",
                    &format!(
                        "The Dataspace Protocol negotiation was ended by the consumer: {reason}"
                    ),
                )
                .await
            {
                Ok(_) | Err(ServiceError::Unprocessable { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Wait until a decision or a consumer's message may have given the
    /// worker something to do (or `timeout` passed).
    pub async fn negotiations_waiting(&self, timeout: std::time::Duration) {
        let _ = tokio::time::timeout(timeout, self.dsp_wake.notified()).await;
    }

    /// Wake the worker (after a decision on an access request).
    pub(crate) fn wake_negotiations(&self) {
        self.dsp_wake.notify_one();
    }

    /// The worker's pass: find what decisions owe consumers and send it.
    /// Returns how many negotiations changed state.
    pub async fn advance_negotiations(&self) -> crate::Result<usize> {
        let now = self.now();
        let mut moved = 0;
        for (mut n, rev) in self.store.negotiations_to_advance(&rfc3339(now)).await? {
            if n.owed.is_none() && n.state == NegotiationState::Requested {
                let request = self
                    .store
                    .get_access_request(&n.access_request_id)
                    .await?
                    .map(|(r, _)| r);
                match decided(request.as_ref()) {
                    Decided::Pending => continue,
                    Decided::Agreed(agreement) => {
                        n.agreement_id = Some(agreement);
                        n.owed = Some(OwedMessage::Agreement);
                    }
                    Decided::No(why) => {
                        n.owed = Some(OwedMessage::Termination);
                        n.termination = Some(format!("by the provider: {why}"));
                    }
                }
            }
            let Some(owed) = n.owed else { continue };
            let (path, message) = self.owed_message(&n, owed).await?;
            match self.deliver(&n, path, &message).await {
                Ok(()) => {
                    let (next, kind) = match owed {
                        OwedMessage::Agreement => (NegotiationState::Agreed, "dsp.agreement_sent"),
                        OwedMessage::Finalized => {
                            (NegotiationState::Finalized, "dsp.negotiation_finalized")
                        }
                        OwedMessage::Termination => {
                            (NegotiationState::Terminated, "dsp.negotiation_terminated")
                        }
                    };
                    n.state = next;
                    n.owed = None;
                    n.attempts = 0;
                    n.last_error = None;
                    n.next_attempt_at = None;
                    n.updated_at = rfc3339(now);
                    let (body, at) = self.log_entry(
                        kind,
                        json!({
                            "negotiation": n.provider_pid,
                            "state": n.state.as_str(),
                            "agreement": n.agreement_id,
                            "by": "provider",
                            "reason": n.termination,
                        }),
                    )?;
                    match self
                        .store
                        .update_negotiation(&n, rev, &[new_entry(kind, &body, &at)])
                        .await
                    {
                        Ok(()) => moved += 1,
                        Err(citytrust_store::StoreError::StaleRevision(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
                Err(error) => {
                    n.attempts += 1;
                    n.last_error = Some(error.clone());
                    n.updated_at = rfc3339(now);
                    let mut entries = Vec::new();
                    let logged;
                    if n.attempts >= MAX_ATTEMPTS {
                        n.state = NegotiationState::Terminated;
                        n.owed = None;
                        n.next_attempt_at = None;
                        n.termination = Some(format!(
                            "by the provider: the consumer could not be reached ({error})"
                        ));
                        logged = self.log_entry(
                            "dsp.negotiation_terminated",
                            json!({"negotiation": n.provider_pid, "by": "provider", "reason": n.termination}),
                        )?;
                        entries.push(new_entry(
                            "dsp.negotiation_terminated",
                            &logged.0,
                            &logged.1,
                        ));
                    } else {
                        n.next_attempt_at = Some(retry_at(now, n.attempts));
                    }
                    tracing::warn!(negotiation = %n.provider_pid, attempts = n.attempts, error = %error, "a DSP message could not be delivered");
                    match self.store.update_negotiation(&n, rev, &entries).await {
                        Ok(()) | Err(citytrust_store::StoreError::StaleRevision(_)) => {}
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
        Ok(moved + self.advance_transfers().await? + self.advance_consumer().await?)
    }

    /// The callback path and body of what `n` owes.
    async fn owed_message(
        &self,
        n: &Negotiation,
        owed: OwedMessage,
    ) -> crate::Result<(&'static str, Value)> {
        let head = |t: &str| {
            json!({
                "@context": [DSP_CONTEXT],
                "@type": t,
                "providerPid": n.provider_pid,
                "consumerPid": n.consumer_pid,
            })
        };
        Ok(match owed {
            OwedMessage::Agreement => {
                let id = n.agreement_id.clone().unwrap_or_default();
                let a = self.agreement(&id).await?;
                let mut m = head("ContractAgreementMessage");
                m["agreement"] = dsp_agreement(n, &a);
                ("agreement", m)
            }
            OwedMessage::Finalized => {
                let mut m = head("ContractNegotiationEventMessage");
                m["eventType"] = json!("FINALIZED");
                ("events", m)
            }
            OwedMessage::Termination => {
                let mut m = head("ContractNegotiationTerminationMessage");
                m["code"] = json!("refused");
                m["reason"] = json!([n
                    .termination
                    .clone()
                    .unwrap_or_else(|| "the request was not granted".into())]);
                ("termination", m)
            }
        })
    }

    /// POST `message` to the consumer's `{callback}/negotiations/{consumerPid}/{path}`.
    async fn deliver(
        &self,
        n: &Negotiation,
        path: &str,
        message: &Value,
    ) -> std::result::Result<(), String> {
        self.deliver_dsp(
            &n.callback_address,
            ["negotiations", n.consumer_pid.as_str(), path],
            &n.provider_base,
            &n.participant_id,
            message,
        )
        .await
    }

    /// POST `message`, signed for participant `aud`, to `callback` and the
    /// path `segments` under it; only a 2xx answer is the consumer's ACK.
    pub(crate) async fn deliver_dsp(
        &self,
        callback: &str,
        segments: [&str; 3],
        base: &str,
        aud: &str,
        message: &Value,
    ) -> std::result::Result<(), String> {
        let mut url = url::Url::parse(callback).map_err(|e| e.to_string())?;
        url.path_segments_mut()
            .map_err(|()| "the callback address cannot take a path".to_string())?
            .pop_if_empty()
            .extend(segments);
        let token = self.dsp_token(base, aud, None).map_err(|e| e.to_string())?;
        let answer = self
            .dsp_http()
            .map_err(|e| e.to_string())?
            .post(url)
            .bearer_auth(token)
            .json(message)
            .timeout(std::time::Duration::from_secs(10))
            .send()
            .await
            .map_err(|e| format!("the consumer could not be reached: {e}"))?;
        if answer.status().is_success() {
            Ok(())
        } else {
            Err(format!("the consumer answered {}", answer.status()))
        }
    }

    /// Every negotiation this trust is the provider in (trustees and
    /// administrators see them beside the requests they became).
    pub async fn negotiations(&self) -> crate::Result<Vec<Negotiation>> {
        Ok(self.store.list_negotiations().await?)
    }
}

enum Decided {
    Pending,
    Agreed(String),
    No(String),
}

fn decided(request: Option<&AccessRequest>) -> Decided {
    let Some(r) = request else {
        return Decided::No("the access request is gone".into());
    };
    match (r.status, &r.agreement_id) {
        (RequestStatus::Approved, Some(a)) => Decided::Agreed(a.clone()),
        (RequestStatus::Denied, _) => Decided::No("the trustees voted the request down".into()),
        (RequestStatus::Refused, _) => Decided::No(
            r.decision
                .as_ref()
                .map(|d| format!("the charter refuses it: {}", d.reason))
                .unwrap_or_else(|| "the charter refuses it".into()),
        ),
        (RequestStatus::Withdrawn, _) => Decided::No("the request was withdrawn".into()),
        _ => Decided::Pending,
    }
}

/// The agreement as DSP carries it: the CityTrust agreement's terms (its
/// purpose, period and level) as an ODRL `Agreement` for one target,
/// without targets in its rules.
pub fn dsp_agreement(n: &Negotiation, a: &citytrust_model::Agreement) -> Value {
    json!({
        "@id": format!("{}/agreements/{}", n.provider_base, a.id),
        "@type": "Agreement",
        "target": n.dataset_id,
        "timestamp": a.created_at,
        "assigner": n.provider_base,
        "assignee": n.participant_id,
        "permission": [{
            "action": "use",
            "constraint": [
                {"leftOperand": "purpose", "operator": "eq", "rightOperand": a.purpose},
                {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": a.starts_on},
                {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": a.ends_on},
                {"leftOperand": format!("{}{DSP_PATH}/vocab#accessLevel", n.provider_base), "operator": "eq", "rightOperand": a.level.as_str()},
            ],
        }],
        "obligation": [{
            "action": "delete",
            "constraint": [
                {"leftOperand": "dateTime", "operator": "gt", "rightOperand": a.ends_on},
            ],
        }],
    })
}

/// A random (version 4) UUID.
pub(crate) fn uuid_v4() -> crate::Result<String> {
    let mut b = crate::accounts::random_bytes::<16>()?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The consumer's side of the protocol's state machine, transition by
    /// transition: what the diagram draws is allowed, nothing else.
    #[test]
    fn the_consumers_transitions_are_the_diagrams() {
        use ConsumerMessage as M;
        use NegotiationState as S;
        let states = [
            S::Requested,
            S::Offered,
            S::Accepted,
            S::Agreed,
            S::Verified,
            S::Finalized,
            S::Terminated,
        ];
        let messages = [
            M::Request,
            M::Accepted,
            M::Finalized,
            M::Verification,
            M::Termination,
        ];
        let allowed = [
            (S::Offered, M::Request, S::Requested),
            (S::Offered, M::Accepted, S::Accepted),
            (S::Agreed, M::Verification, S::Verified),
            (S::Requested, M::Termination, S::Terminated),
            (S::Offered, M::Termination, S::Terminated),
            (S::Agreed, M::Termination, S::Terminated),
        ];
        for s in states {
            for m in messages {
                let expected = allowed
                    .iter()
                    .find(|(from, msg, _)| *from == s && *msg == m)
                    .map(|(_, _, to)| *to);
                assert_eq!(consumer_transition(s, m), expected, "{s:?} + {m:?}");
            }
        }
        for s in [S::Finalized, S::Terminated] {
            assert!(s.is_terminal());
        }
    }

    #[test]
    fn uuids_are_version_4() {
        let u = uuid_v4().unwrap();
        assert_eq!(u.len(), 36);
        assert_eq!(&u[14..15], "4");
        assert!(matches!(&u[19..20], "8" | "9" | "a" | "b"));
        assert_ne!(u, uuid_v4().unwrap());
    }

    #[test]
    fn reasons_are_cut_short_and_say_what_they_have() {
        assert_eq!(reason_of(&json!({})), "no reason given");
        assert_eq!(reason_of(&json!({"code": "7"})), "code 7");
        assert_eq!(
            reason_of(&json!({"code": "7", "reason": ["gone"]})),
            "gone (code 7)"
        );
        let long = "é".repeat(1000);
        assert!(reason_of(&json!({"reason": [long]})).len() <= MAX_REASON);
    }

    #[test]
    fn a_requested_offer_names_one_purpose_and_a_period() {
        let offer = json!({"permission": [{"action": "use", "constraint": [
            {"leftOperand": "purpose", "operator": "eq", "rightOperand": ["service-planning"]},
            {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "2026-04-01"},
            {"leftOperand": "dateTime", "operator": "lteq", "rightOperand": "2026-06-30T00:00:00Z"},
        ]}]});
        assert_eq!(
            requested_purpose(&offer).unwrap().as_deref(),
            Some("service-planning")
        );
        let (from, to) = requested_period(&offer).unwrap();
        assert_eq!(from.map(format_day).as_deref(), Some("2026-04-01"));
        assert_eq!(to.map(format_day).as_deref(), Some("2026-06-30"));
        let two = json!({"permission": [{"action": "use", "constraint": [
            {"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": ["a", "b"]},
        ]}]});
        assert!(requested_purpose(&two).is_err());
        let bad_day = json!({"permission": [{"action": "use", "constraint": [
            {"leftOperand": "dateTime", "operator": "gteq", "rightOperand": "soon"},
        ]}]});
        assert!(requested_period(&bad_day).is_err());
    }
}
