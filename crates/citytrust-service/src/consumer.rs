//! The Dataspace Protocol, consumer side: a member of this trust asks a
//! partner node (a pinned participant) for one of the datasets harvested
//! from it, for one of the member's organisations.
//!
//! [`Service::ask_remote`] reads the partner's offer for the entry (its DSP
//! catalogue), checks the level and purpose against it and sends the
//! `ContractRequestMessage` with this trust's signed token naming the
//! organisation; the partner's trustees decide there. The partner's
//! messages arrive at this trust's callback (`/dsp/callback/…`), signed
//! with the key pinned for it, and move the negotiation along the
//! protocol's state machine; what this trust then owes (the agreement's
//! verification, the transfer request) the worker sends. Once a transfer
//! is started, [`Service::remote_read`] pulls through it for a member —
//! signing for the member's organisation, so the partner decides each read
//! and logs it; this trust logs the read too, and stores nothing of the data.

use citytrust_model::federation::{
    AskRemote, ConsumerNegotiation, ConsumerTransfer, NegotiationState, TransferState,
};
use citytrust_model::{Actor, ProblemCode, ValidationErrors};
use serde_json::{Value, json};

use crate::dataspace::{Caller, DSP_CONTEXT, DSP_PATH, HTTP_PULL};
use crate::ledger::new_entry;
use crate::negotiation::{DspError, DspResult, reason_of, uuid_v4};
use crate::{Result, Service, ServiceError, rfc3339};

/// Where partners send this trust's callbacks, under its public URL.
pub const CALLBACK_PATH: &str = "/dsp/callback";

fn refused(message: impl Into<String>) -> ServiceError {
    ServiceError::Unprocessable {
        code: ProblemCode::RemoteRefused,
        message: message.into(),
    }
}

fn not_offered(message: impl Into<String>) -> ServiceError {
    ServiceError::Unprocessable {
        code: ProblemCode::NotOffered,
        message: message.into(),
    }
}

/// The total time a control message to a partner may take.
const MESSAGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(20);

/// The most of a partner's answer read as JSON (its catalogue entry, its
/// acknowledgements and errors): a partner cannot make this trust hold more.
const MAX_ANSWER: usize = 4 << 20;

/// A partner's answer as JSON, read to at most [`MAX_ANSWER`] bytes.
async fn capped_json(mut res: reqwest::Response) -> std::result::Result<Value, String> {
    let mut body = Vec::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| e.to_string())? {
        if body.len() + chunk.len() > MAX_ANSWER {
            return Err(format!("the answer is larger than {MAX_ANSWER} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    serde_json::from_slice(&body).map_err(|e| format!("the answer is not JSON: {e}"))
}

/// The `reason` a partner's DSP error gives, cut short.
async fn partner_reason(res: reqwest::Response) -> String {
    let status = res.status();
    match capped_json(res).await {
        Ok(v) => format!("{status}: {}", reason_of(&v)),
        Err(_) => status.to_string(),
    }
}

/// The `ContractRequestMessage` asking for `offer_id` of `dataset`, with
/// the asker's purpose, period, benefit and checklist answers.
pub fn contract_request_message(
    consumer_pid: &str,
    offer_id: &str,
    dataset: &str,
    ask: &AskRemote,
    callback: &str,
) -> Value {
    let mut constraints =
        vec![json!({"leftOperand": "purpose", "operator": "eq", "rightOperand": ask.purpose})];
    for (op, day) in [("gteq", &ask.starts_on), ("lteq", &ask.ends_on)] {
        if let Some(day) = day {
            constraints
                .push(json!({"leftOperand": "dateTime", "operator": op, "rightOperand": day}));
        }
    }
    json!({
        "@context": [DSP_CONTEXT],
        "@type": "ContractRequestMessage",
        "consumerPid": consumer_pid,
        "offer": {
            "@type": "Offer",
            "@id": offer_id,
            "target": dataset,
            "dct:description": ask.benefit.trim(),
            crate::negotiation::CHECKLIST: ask.checklist,
            "permission": [{"action": "use", "constraint": constraints}],
        },
        "callbackAddress": callback,
    })
}

/// The `ContractAgreementVerificationMessage` for a negotiation.
pub fn verification_message(provider_pid: &str, consumer_pid: &str) -> Value {
    json!({
        "@context": [DSP_CONTEXT],
        "@type": "ContractAgreementVerificationMessage",
        "providerPid": provider_pid,
        "consumerPid": consumer_pid,
    })
}

/// The `TransferRequestMessage` for a pull under `agreement_id`.
pub fn transfer_request_message(consumer_pid: &str, agreement_id: &str, callback: &str) -> Value {
    json!({
        "@context": [DSP_CONTEXT],
        "@type": "TransferRequestMessage",
        "consumerPid": consumer_pid,
        "agreementId": agreement_id,
        "format": HTTP_PULL,
        "callbackAddress": callback,
    })
}

/// The state the partner's message takes a negotiation to, from `state`,
/// if the protocol's state machine lets a provider send it then.
pub fn provider_transition(state: NegotiationState, message: &str) -> Option<NegotiationState> {
    use NegotiationState as S;
    match (state, message) {
        (S::Requested | S::Accepted, "agreement") => Some(S::Agreed),
        (S::Verified, "finalized") => Some(S::Finalized),
        (S::Requested | S::Offered | S::Accepted | S::Verified, "termination") => {
            Some(S::Terminated)
        }
        _ => None,
    }
}

/// The same for a transfer.
pub fn provider_transfer_transition(state: TransferState, message: &str) -> Option<TransferState> {
    use TransferState as S;
    match (state, message) {
        (S::Requested | S::Suspended, "start") => Some(S::Started),
        (S::Started, "completion") => Some(S::Completed),
        (S::Started, "suspension") => Some(S::Suspended),
        (S::Requested | S::Started | S::Suspended, "termination") => Some(S::Terminated),
        _ => None,
    }
}

/// A negotiation as its readers see it: without the transfer's data token.
fn shown(mut n: ConsumerNegotiation) -> ConsumerNegotiation {
    if let Some(t) = n.transfer.as_mut() {
        t.token = None;
    }
    n
}

impl Service {
    /// Whether an entry's node can be asked through the Dataspace
    /// Protocol (its catalogue has a pinned participant).
    pub async fn remote_askable(
        &self,
        entry: &citytrust_model::federation::FederatedEntry,
    ) -> Result<bool> {
        Ok(self
            .store
            .get_remote_catalogue(&entry.source.catalogue_id)
            .await?
            .is_some_and(|c| c.participant.is_some()))
    }

    /// Ask the node an entry came from for it, for one of the asker's
    /// organisations (`base`: this trust's public URL).
    pub async fn ask_remote(
        &self,
        actor: &Actor,
        federated_id: &str,
        ask: AskRemote,
        base: &str,
    ) -> Result<ConsumerNegotiation> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        if !actor.is_member_of(&ask.organization_id) {
            return Err(ValidationErrors::single(
                "organization_id",
                "you can ask only for an organisation you belong to",
            )
            .into());
        }
        let mut e = ValidationErrors::default();
        e.required_text("benefit", &ask.benefit, 2000);
        e.required_text("purpose", &ask.purpose, 100);
        e.required_text("level", &ask.level, 40);
        e.into_result()?;
        let entry = self.federated_entry(federated_id).await?;
        let catalogue = self
            .store
            .get_remote_catalogue(&entry.source.catalogue_id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("federated entry '{federated_id}'")))?;
        let Some(participant) = catalogue.participant.clone() else {
            return Err(not_offered(format!(
                "'{}' is not a dataspace participant here: an administrator pins its key first",
                catalogue.name
            )));
        };
        // A CityTrust names its datasets `{base}/datasets/{id}#dataset`.
        let remote_dataset_id = entry
            .source
            .remote_id
            .strip_prefix(&format!("{}/datasets/", participant.id))
            .map(|rest| rest.trim_end_matches("#dataset").to_string())
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| {
                not_offered(format!(
                    "the entry is not one of {}'s own datasets",
                    participant.id
                ))
            })?;
        let http = self.dsp_http()?;
        let res = http
            .get(format!(
                "{}{DSP_PATH}/catalog/datasets/{remote_dataset_id}",
                participant.id
            ))
            .timeout(MESSAGE_TIMEOUT)
            .send()
            .await
            .map_err(|e| refused(format!("{} could not be reached: {e}", participant.id)))?;
        if !res.status().is_success() {
            return Err(not_offered(format!(
                "{} does not offer this dataset through the Dataspace Protocol ({})",
                catalogue.name,
                partner_reason(res).await
            )));
        }
        let dataset: Value = capped_json(res)
            .await
            .map_err(|e| refused(format!("{}: {e}", participant.id)))?;
        let offers: Vec<&Value> = dataset
            .get("hasPolicy")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .collect();
        let level_of = |o: &Value| -> Option<String> {
            o["permission"][0]["constraint"]
                .as_array()?
                .iter()
                .find(|c| {
                    c["leftOperand"]
                        .as_str()
                        .is_some_and(|l| l.ends_with("#accessLevel"))
                })
                .and_then(|c| c["rightOperand"].as_str())
                .map(str::to_string)
        };
        let Some(offer) = offers
            .iter()
            .find(|o| level_of(o).as_deref() == Some(ask.level.as_str()))
        else {
            let levels: Vec<String> = offers.iter().filter_map(|o| level_of(o)).collect();
            return Err(ValidationErrors::single(
                "level",
                format!("{} offers it at: {}", catalogue.name, levels.join(", ")),
            )
            .into());
        };
        let purposes: Vec<&str> = offer["permission"][0]["constraint"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["leftOperand"] == "purpose")
            .and_then(|c| c["rightOperand"].as_array())
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if !purposes.contains(&ask.purpose.as_str()) {
            return Err(ValidationErrors::single(
                "purpose",
                format!(
                    "{} offers it at this level for: {}",
                    catalogue.name,
                    purposes.join(", ")
                ),
            )
            .into());
        }
        let offer_id = offer["@id"].as_str().unwrap_or_default().to_string();
        let org = self
            .store
            .get_organization(&ask.organization_id)
            .await?
            .ok_or_else(|| ValidationErrors::single("organization_id", "unknown organisation"))?;
        let consumer_pid = format!("urn:uuid:{}", uuid_v4()?);
        let message = contract_request_message(
            &consumer_pid,
            &offer_id,
            &remote_dataset_id,
            &ask,
            &format!("{base}{CALLBACK_PATH}"),
        );
        let token = self.dsp_token(base, &participant.id, Some((&org.id, &org.name)))?;
        let res = http
            .post(format!("{}{DSP_PATH}/negotiations/request", participant.id))
            .bearer_auth(token)
            .json(&message)
            .timeout(MESSAGE_TIMEOUT)
            .send()
            .await
            .map_err(|e| refused(format!("{} could not be reached: {e}", participant.id)))?;
        if res.status() == reqwest::StatusCode::NOT_FOUND {
            return Err(refused(format!(
                "{} does not know this trust as a participant (its administrators pin this \
                 trust's key, shown at {base}{DSP_PATH}/participant)",
                catalogue.name
            )));
        }
        if res.status() != reqwest::StatusCode::CREATED {
            return Err(refused(format!(
                "{} refused the request: {}",
                catalogue.name,
                partner_reason(res).await
            )));
        }
        let answer: Value = capped_json(res)
            .await
            .map_err(|e| refused(format!("{}: {e}", participant.id)))?;
        let now = rfc3339(self.now());
        let n = ConsumerNegotiation {
            consumer_pid,
            provider_pid: answer["providerPid"].as_str().map(str::to_string),
            catalogue_id: catalogue.id.clone(),
            participant_id: participant.id.clone(),
            federated_id: federated_id.to_string(),
            remote_dataset_id,
            title: entry.title.clone(),
            offer_id,
            level: ask.level.clone(),
            purpose: ask.purpose.clone(),
            requester: username.to_string(),
            organization_id: org.id.clone(),
            state: NegotiationState::Requested,
            agreement: None,
            transfer: None,
            consumer_base: base.to_string(),
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            termination: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let (body, at) = self.log_entry(
            "dsp.negotiation_asked",
            json!({
                "negotiation": n.consumer_pid,
                "provider_pid": n.provider_pid,
                "participant": n.participant_id,
                "organization": n.organization_id,
                "dataset": n.remote_dataset_id,
                "level": n.level,
                "purpose": n.purpose,
            }),
        )?;
        self.store
            .insert_consumer_negotiation(&n, &[new_entry("dsp.negotiation_asked", &body, &at)])
            .await?;
        Ok(n)
    }

    /// The negotiations the actor asked for, or made for an organisation of theirs.
    pub async fn my_remote_requests(&self, actor: &Actor) -> Result<Vec<ConsumerNegotiation>> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        Ok(self
            .store
            .list_consumer_negotiations()
            .await?
            .into_iter()
            .filter(|n| n.requester == username || actor.is_member_of(&n.organization_id))
            .map(shown)
            .collect())
    }

    /// A message from a partner at this trust's callback: `area` is
    /// "negotiations" or "transfers", `kind` the last path segment.
    pub async fn dsp_callback(
        &self,
        caller: &Caller,
        area: &str,
        pid: &str,
        kind: &str,
        msg: &Value,
    ) -> DspResult<Value> {
        let (mut n, rev) = match self.store.get_consumer_negotiation(pid).await? {
            Some((n, rev))
                if n.catalogue_id == caller.catalogue_id
                    && n.participant_id == caller.participant_id =>
            {
                (n, rev)
            }
            _ => return Err(DspError::NotFound),
        };
        let now = rfc3339(self.now());
        let (log_kind, fields) = if area == "negotiations" {
            if n.consumer_pid != pid {
                return Err(DspError::NotFound);
            }
            if let Some(p) = msg.get("providerPid").and_then(Value::as_str)
                && Some(p) != n.provider_pid.as_deref()
            {
                return Err(DspError::BadRequest(
                    "the providerPid is not the negotiation's".into(),
                ));
            }
            let message = match kind {
                "events" => match msg.get("eventType").and_then(Value::as_str) {
                    Some("FINALIZED" | "dspace:FINALIZED") => "finalized",
                    Some(other) => {
                        return Err(DspError::BadRequest(format!(
                            "a provider's event is FINALIZED, not {other}"
                        )));
                    }
                    None => return Err(DspError::BadRequest("eventType is missing".into())),
                },
                "offers" => {
                    return Err(DspError::BadRequest(
                        "this consumer does not take counter-offers: terminate and offer anew"
                            .into(),
                    ));
                }
                other => other,
            };
            // A message this trust already took, sent again because its
            // answer was lost: acknowledged, nothing changes.
            let repeat = matches!(
                (n.state, message),
                (
                    NegotiationState::Agreed
                        | NegotiationState::Verified
                        | NegotiationState::Finalized,
                    "agreement"
                ) | (NegotiationState::Finalized, "finalized")
                    | (NegotiationState::Terminated, "termination")
            );
            if repeat {
                return Ok(json!({}));
            }
            let Some(next) = provider_transition(n.state, message) else {
                return Err(DspError::BadRequest(format!(
                    "a {message} message cannot be taken in state {}",
                    n.state.as_str()
                )));
            };
            if message == "agreement" {
                let agreement = msg
                    .get("agreement")
                    .filter(|a| a.is_object())
                    .ok_or_else(|| DspError::BadRequest("agreement is missing".into()))?;
                if agreement.get("target").and_then(Value::as_str)
                    != Some(n.remote_dataset_id.as_str())
                {
                    return Err(DspError::BadRequest(format!(
                        "the agreement's target must be '{}'",
                        n.remote_dataset_id
                    )));
                }
                n.agreement = Some(agreement.clone());
            }
            if next == NegotiationState::Terminated {
                n.termination = Some(format!("by the provider: {}", reason_of(msg)));
            }
            n.state = next;
            (
                match next {
                    NegotiationState::Agreed => "dsp.agreement_received",
                    NegotiationState::Finalized => "dsp.negotiation_finalized",
                    _ => "dsp.negotiation_terminated",
                },
                json!({"negotiation": n.consumer_pid, "agreement": n.agreement.as_ref().and_then(|a| a.get("@id")), "reason": crate::negotiation::reason_commitment(n.termination.as_deref().unwrap_or(""))}),
            )
        } else {
            let Some(t) = n.transfer.as_mut().filter(|t| t.consumer_pid == pid) else {
                return Err(DspError::NotFound);
            };
            let repeat = matches!(
                (t.state, kind),
                (TransferState::Started, "start")
                    | (TransferState::Completed, "completion")
                    | (TransferState::Suspended, "suspension")
                    | (TransferState::Terminated, "termination")
            );
            if repeat {
                return Ok(json!({}));
            }
            let Some(next) = provider_transfer_transition(t.state, kind) else {
                return Err(DspError::BadRequest(format!(
                    "a transfer {kind} message cannot be taken in state {}",
                    t.state.as_str()
                )));
            };
            if kind == "start" {
                if let Some(address) = msg.get("dataAddress") {
                    let endpoint = address
                        .get("endpoint")
                        .and_then(Value::as_str)
                        .filter(|e| crate::dataspace::under(e, &n.participant_id))
                        .ok_or_else(|| {
                            DspError::BadRequest(
                                "the data address's endpoint must lie under the provider's URL"
                                    .into(),
                            )
                        })?;
                    let token = address
                        .get("endpointProperties")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .find(|p| p["name"] == "authorization")
                        .and_then(|p| p["value"].as_str())
                        .filter(|v| !v.is_empty() && v.len() <= 512)
                        .ok_or_else(|| {
                            DspError::BadRequest("the data address carries no authorization".into())
                        })?;
                    t.endpoint = Some(endpoint.to_string());
                    t.token = Some(token.to_string());
                } else if t.endpoint.is_none() {
                    return Err(DspError::BadRequest(
                        "a pull transfer's start carries a dataAddress".into(),
                    ));
                }
            }
            if next != TransferState::Started && next != TransferState::Suspended {
                t.token = None;
            }
            t.state = next;
            (
                match next {
                    TransferState::Started => "dsp.transfer_started",
                    TransferState::Suspended => "dsp.transfer_suspended",
                    TransferState::Completed => "dsp.transfer_completed",
                    _ => "dsp.transfer_terminated",
                },
                // The data token never enters the log.
                json!({"transfer": pid, "negotiation": n.consumer_pid, "by": "provider", "reason": crate::negotiation::reason_commitment(&reason_of(msg))}),
            )
        };
        n.updated_at = now;
        n.attempts = 0;
        n.next_attempt_at = None;
        let (body, at) = self.log_entry(log_kind, fields)?;
        match self
            .store
            .update_consumer_negotiation(&n, rev, &[new_entry(log_kind, &body, &at)])
            .await
        {
            Ok(()) => {}
            Err(citytrust_store::StoreError::StaleRevision(_)) => {
                return Err(DspError::BadRequest(
                    "the process changed meanwhile: send the message again".into(),
                ));
            }
            Err(e) => return Err(e.into()),
        }
        self.wake_negotiations();
        Ok(json!({}))
    }

    /// `GET {callback}/negotiations/{pid}`: the consumer's view of a negotiation.
    pub async fn dsp_callback_negotiation(&self, caller: &Caller, pid: &str) -> DspResult<Value> {
        match self.store.get_consumer_negotiation(pid).await? {
            Some((n, _))
                if n.consumer_pid == pid
                    && n.catalogue_id == caller.catalogue_id
                    && n.participant_id == caller.participant_id =>
            {
                Ok(json!({
                    "@context": [DSP_CONTEXT],
                    "@type": "ContractNegotiation",
                    "providerPid": n.provider_pid.unwrap_or_default(),
                    "consumerPid": n.consumer_pid,
                    "state": n.state.as_str(),
                }))
            }
            _ => Err(DspError::NotFound),
        }
    }

    /// The worker's pass over this trust's own asks: verify agreements
    /// received, and ask for a transfer under finalised ones.
    pub(crate) async fn advance_consumer(&self) -> Result<usize> {
        let now = self.now();
        let mut moved = 0;
        for (mut n, rev) in self
            .store
            .consumer_negotiations_to_advance(&rfc3339(now))
            .await?
        {
            let Some(ppid) = n.provider_pid.clone() else {
                continue;
            };
            let org = self.store.get_organization(&n.organization_id).await?;
            let org = org.as_ref().map(|o| (o.id.as_str(), o.name.as_str()));
            let token = self.dsp_token(&n.consumer_base, &n.participant_id, org)?;
            let http = self.dsp_http()?;
            let (url, message) = if n.state == NegotiationState::Agreed {
                (
                    format!(
                        "{}{DSP_PATH}/negotiations/{ppid}/agreement/verification",
                        n.participant_id
                    ),
                    verification_message(&ppid, &n.consumer_pid),
                )
            } else {
                let agreement_id = n
                    .agreement
                    .as_ref()
                    .and_then(|a| a["@id"].as_str())
                    .unwrap_or_default()
                    .to_string();
                (
                    format!("{}{DSP_PATH}/transfers/request", n.participant_id),
                    transfer_request_message(
                        &format!("urn:uuid:{}", uuid_v4()?),
                        &agreement_id,
                        &format!("{}{CALLBACK_PATH}", n.consumer_base),
                    ),
                )
            };
            let sent = http
                .post(&url)
                .bearer_auth(token)
                .json(&message)
                .send()
                .await;
            n.updated_at = rfc3339(now);
            let mut entries = Vec::new();
            let logged;
            match sent {
                Ok(res) if res.status().is_success() => {
                    let kind = if n.state == NegotiationState::Agreed {
                        n.state = NegotiationState::Verified;
                        "dsp.agreement_verified"
                    } else {
                        let answer: Value = capped_json(res).await.unwrap_or(Value::Null);
                        n.transfer = Some(ConsumerTransfer {
                            consumer_pid: message["consumerPid"]
                                .as_str()
                                .unwrap_or_default()
                                .into(),
                            provider_pid: answer["providerPid"].as_str().map(str::to_string),
                            state: TransferState::Requested,
                            endpoint: None,
                            token: None,
                        });
                        "dsp.transfer_requested"
                    };
                    n.attempts = 0;
                    n.last_error = None;
                    n.next_attempt_at = None;
                    logged = self.log_entry(
                        kind,
                        json!({"negotiation": n.consumer_pid, "transfer": n.transfer.as_ref().map(|t| &t.consumer_pid)}),
                    )?;
                    entries.push(new_entry(kind, &logged.0, &logged.1));
                    moved += 1;
                }
                other => {
                    let error = match other {
                        Ok(res) => partner_reason(res).await,
                        Err(e) => format!("could not be reached: {e}"),
                    };
                    n.attempts += 1;
                    n.next_attempt_at = Some(crate::negotiation::retry_at(now, n.attempts));
                    tracing::warn!(negotiation = %n.consumer_pid, error = %error, "a DSP message to a partner failed");
                    n.last_error = Some(error);
                }
            }
            match self
                .store
                .update_consumer_negotiation(&n, rev, &entries)
                .await
            {
                Ok(()) | Err(citytrust_store::StoreError::StaleRevision(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(moved)
    }

    /// Read, for `actor`, the data of the transfer started under their
    /// negotiation `pid` — for `organization` (one of theirs; the
    /// negotiation's by default). The partner decides and logs the read;
    /// this trust logs it first, and relays the answer without keeping it.
    pub async fn remote_read(
        &self,
        actor: &Actor,
        pid: &str,
        organization: Option<&str>,
        query: &[(String, String)],
    ) -> Result<reqwest::Response> {
        if actor.username().is_none() {
            return Err(ServiceError::Unauthenticated);
        }
        let not_found = || ServiceError::NotFound(format!("negotiation '{pid}'"));
        // Only the asker and the members of the organisation it was made
        // for may read under a negotiation; to anyone else it does not exist.
        let username = actor.username().unwrap_or_default();
        let (n, _) = self
            .store
            .get_consumer_negotiation(pid)
            .await?
            .filter(|(n, _)| n.consumer_pid == pid)
            .filter(|(n, _)| n.requester == username || actor.is_member_of(&n.organization_id))
            .ok_or_else(not_found)?;
        // The read is signed for the organisation it is for — one of the
        // reader's, the negotiation's by default — and the partner decides:
        // a read for another organisation is the partner's to refuse.
        let org_id = match organization {
            Some(o) if actor.is_member_of(o) => o.to_string(),
            Some(_) => {
                return Err(ValidationErrors::single(
                    "organization_id",
                    "you can read only for an organisation you belong to",
                )
                .into());
            }
            None if actor.is_member_of(&n.organization_id) => n.organization_id.clone(),
            None => match actor.organization_ids().first() {
                Some(o) => o.clone(),
                None => return Err(not_found()),
            },
        };
        let Some(t) = n
            .transfer
            .as_ref()
            .filter(|t| t.state == TransferState::Started)
        else {
            return Err(ServiceError::Unprocessable {
                code: ProblemCode::TransferNotStarted,
                message: format!(
                    "no transfer is started under this negotiation yet (it is {})",
                    n.state.as_str()
                ),
            });
        };
        let (Some(endpoint), Some(data_token)) = (&t.endpoint, &t.token) else {
            return Err(not_found());
        };
        let org = self
            .store
            .get_organization(&org_id)
            .await?
            .ok_or_else(not_found)?;
        // The purpose asked for is the reader's words: the log says only
        // whether it is the agreement's.
        let purpose = match query.iter().find(|(k, _)| k == "purpose") {
            None => n.purpose.clone(),
            Some((_, p)) if *p == n.purpose => n.purpose.clone(),
            Some(_) => "(another)".to_string(),
        };
        let (body, at) = self.log_entry(
            "dsp.remote_read",
            json!({
                "negotiation": n.consumer_pid,
                "transfer": t.consumer_pid,
                "participant": n.participant_id,
                "organization": org.id,
                "purpose": purpose,
            }),
        )?;
        self.appender.append("dsp.remote_read", body, at).await?;
        let token = self.dsp_token(
            &n.consumer_base,
            &n.participant_id,
            Some((&org.id, &org.name)),
        )?;
        self.dsp_http()?
            .get(endpoint)
            .query(query)
            .bearer_auth(data_token)
            .header("citytrust-participant", token)
            .send()
            .await
            .map_err(|e| refused(format!("{} could not be reached: {e}", n.participant_id)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_provider_moves_a_consumers_negotiation_only_as_the_diagram_draws() {
        use NegotiationState as S;
        let all = [
            S::Requested,
            S::Offered,
            S::Accepted,
            S::Agreed,
            S::Verified,
            S::Finalized,
            S::Terminated,
        ];
        for s in all {
            assert_eq!(
                provider_transition(s, "agreement").is_some(),
                matches!(s, S::Requested | S::Accepted),
                "{s:?}"
            );
            assert_eq!(
                provider_transition(s, "finalized").is_some(),
                s == S::Verified
            );
            assert_eq!(
                provider_transition(s, "termination").is_some(),
                matches!(s, S::Requested | S::Offered | S::Accepted | S::Verified)
            );
        }
        use TransferState as T;
        for s in [
            T::Requested,
            T::Started,
            T::Completed,
            T::Suspended,
            T::Terminated,
        ] {
            assert_eq!(
                provider_transfer_transition(s, "start").is_some(),
                matches!(s, T::Requested | T::Suspended)
            );
            assert_eq!(
                provider_transfer_transition(s, "termination").is_some(),
                matches!(s, T::Requested | T::Started | T::Suspended)
            );
        }
    }
}
