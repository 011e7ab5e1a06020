//! Dataspace Protocol transfer processes, provider side (DSP 2025-1):
//! `HttpData-PULL` only.
//!
//! A participant whose negotiation was finalised asks to transfer under
//! its agreement (`TransferRequestMessage`). The worker sends the
//! consumer a `TransferStartMessage` whose data address is this trust's
//! `/dsp/transfers/{pid}/data` with a data token (kept here only as its
//! SHA-256). A read there needs that token **and** the participant's signed
//! token naming the organisation the agreement was made for; it is then a
//! read like any other, by the account standing for the participant, for
//! that organisation — through `read_content`, so purpose, level, period,
//! columns and residents' choices are enforced and the read is logged
//! before its first byte leaves. A transfer whose agreement ends or is
//! retired is terminated (the consumer is told), and reads under it stop
//! at once whatever the worker has done (the read path checks the
//! agreement itself).
//!
//! The consumer's messages follow the transfer state machine
//! ([`consumer_transfer_transition`]); anything else is a 400
//! `TransferError`, and a transfer of another participant is a 404.

use citytrust_model::AgreementStatus;
use citytrust_model::access::parse_day;
use citytrust_model::federation::{
    NegotiationState, OwedTransferMessage, TransferProcess, TransferState,
};
use citytrust_model::{AccessLevel, Actor};
use serde_json::{Value, json};

use crate::accounts::sha256_hex;
use crate::dataspace::{Caller, DSP_CONTEXT, DSP_PATH, HTTP_PULL};
use crate::ledger::new_entry;
use crate::negotiation::{
    DspError, DspResult, callback_of, process_id, reason_commitment, reason_of, text, uuid_v4,
};
use crate::{Service, ServiceError, rfc3339};

/// Transfers open at once under one agreement.
pub const MAX_OPEN_TRANSFERS: usize = 10;

/// The endpoint type of the data address: plain HTTP(S).
pub const HTTP_ENDPOINT: &str = "https://w3id.org/idsa/v4.1/HTTP";

/// The messages a consumer sends a provider about a transfer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransferMessage {
    /// `TransferStartMessage`: resume a suspended transfer.
    Start,
    Completion,
    Suspension,
    Termination,
}

impl TransferMessage {
    pub fn type_name(self) -> &'static str {
        match self {
            TransferMessage::Start => "TransferStartMessage",
            TransferMessage::Completion => "TransferCompletionMessage",
            TransferMessage::Suspension => "TransferSuspensionMessage",
            TransferMessage::Termination => "TransferTerminationMessage",
        }
    }
}

/// Where a consumer's message takes a transfer in `state`, if the
/// protocol's state machine allows it.
pub fn consumer_transfer_transition(
    state: TransferState,
    message: TransferMessage,
) -> Option<TransferState> {
    use TransferMessage as M;
    use TransferState as S;
    match (state, message) {
        (S::Requested, M::Termination) => Some(S::Terminated),
        (S::Started, M::Completion) => Some(S::Completed),
        (S::Started, M::Suspension) => Some(S::Suspended),
        (S::Started, M::Termination) => Some(S::Terminated),
        (S::Suspended, M::Start) => Some(S::Started),
        (S::Suspended, M::Termination) => Some(S::Terminated),
        _ => None,
    }
}

/// The `TransferProcess` a provider answers with.
pub fn transfer_json(t: &TransferProcess) -> Value {
    json!({
        "@context": [DSP_CONTEXT],
        "@type": "TransferProcess",
        "providerPid": t.provider_pid,
        "consumerPid": t.consumer_pid,
        "state": t.state.as_str(),
    })
}

/// Who reads through a transfer, and under which terms by default.
#[derive(Debug, Clone)]
pub struct TransferReader {
    pub actor: Actor,
    pub dataset_id: String,
    pub purpose: String,
    pub level: AccessLevel,
    pub transfer: String,
}

impl Service {
    /// A transfer's data token: keyed by this trust's participant key, so
    /// only this trust can make it, and the same for every retry of the start.
    fn data_token(&self, provider_pid: &str) -> String {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"citytrust dsp data token v1\n");
        h.update(self.dsp_key.secret_bytes());
        h.update(provider_pid.as_bytes());
        hex::encode(h.finalize())
    }

    /// Whether agreement `id` is active and its period holds today; why not otherwise.
    async fn agreement_in_force(&self, id: &str) -> crate::Result<Result<(), String>> {
        let a = self.agreement(id).await?;
        let today = self.today();
        Ok(if a.status != AgreementStatus::Active {
            Err(format!("the agreement is {}", a.status.as_str()))
        } else if parse_day(&a.starts_on).is_some_and(|d| today < d) {
            Err(format!("the agreement starts on {}", a.starts_on))
        } else if parse_day(&a.ends_on).is_some_and(|d| today > d) {
            Err(format!("the agreement ended on {}", a.ends_on))
        } else {
            Ok(())
        })
    }

    /// `POST /transfers/request`.
    pub async fn dsp_request_transfer(
        &self,
        caller: &Caller,
        msg: &Value,
        base: &str,
    ) -> DspResult<Value> {
        let consumer_pid = process_id(msg, "consumerPid")?;
        let callback = callback_of(caller, msg)?;
        let format = text(msg, "format")?;
        if format != HTTP_PULL {
            return Err(DspError::BadRequest(format!(
                "the format '{format}' is not offered: only {HTTP_PULL}"
            )));
        }
        if msg.get("dataAddress").is_some() {
            return Err(DspError::BadRequest(
                "a pull transfer takes no dataAddress (the provider sends one)".into(),
            ));
        }
        let agreement_ref = text(msg, "agreementId")?;
        let agreement_id = agreement_ref
            .strip_prefix(&format!("{base}/agreements/"))
            .unwrap_or(agreement_ref)
            .to_string();
        let unknown = || {
            DspError::BadRequest(format!(
                "no agreement '{agreement_ref}' was made with this participant's organisation"
            ))
        };
        let n = self
            .store
            .negotiation_for_agreement(&agreement_id)
            .await?
            .ok_or_else(unknown)?;
        let same_org = caller
            .organization
            .as_ref()
            .is_some_and(|(o, _)| *o == n.consumer_organization);
        if n.catalogue_id != caller.catalogue_id
            || n.participant_id != caller.participant_id
            || n.state != NegotiationState::Finalized
            || !same_org
        {
            return Err(unknown());
        }
        if let Err(why) = self.agreement_in_force(&agreement_id).await? {
            return Err(DspError::BadRequest(format!(
                "the agreement is not in force: {why}"
            )));
        }
        let open = self.store.open_transfers_under(&agreement_id).await?;
        if open >= MAX_OPEN_TRANSFERS {
            return Err(DspError::BadRequest(format!(
                "{open} transfers are open under this agreement, the most it may have: \
                 complete or terminate one first"
            )));
        }
        let now = rfc3339(self.now());
        let t = TransferProcess {
            provider_pid: format!("urn:uuid:{}", uuid_v4()?),
            consumer_pid,
            negotiation_pid: n.provider_pid.clone(),
            catalogue_id: n.catalogue_id.clone(),
            participant_id: n.participant_id.clone(),
            organization_id: n.organization_id.clone(),
            agreement_id,
            dataset_id: n.dataset_id.clone(),
            callback_address: callback,
            provider_base: base.to_string(),
            state: TransferState::Requested,
            owed: Some(OwedTransferMessage::Start),
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            token_hash: None,
            termination: None,
            created_at: now.clone(),
            updated_at: now,
        };
        let (body, at) = self.log_entry(
            "dsp.transfer_requested",
            json!({
                "transfer": t.provider_pid,
                "consumer_pid": t.consumer_pid,
                "participant": t.participant_id,
                "organization": t.organization_id,
                "agreement": t.agreement_id,
                "dataset": t.dataset_id,
            }),
        )?;
        self.store
            .insert_transfer(&t, &[new_entry("dsp.transfer_requested", &body, &at)])
            .await?;
        self.wake_negotiations();
        Ok(transfer_json(&t))
    }

    async fn dsp_transfer_of(
        &self,
        caller: &Caller,
        pid: &str,
    ) -> DspResult<(TransferProcess, i64)> {
        match self.store.get_transfer(pid).await? {
            Some((t, rev))
                if t.catalogue_id == caller.catalogue_id
                    && t.participant_id == caller.participant_id =>
            {
                Ok((t, rev))
            }
            _ => Err(DspError::NotFound),
        }
    }

    /// `GET /transfers/{pid}`.
    pub async fn dsp_get_transfer(&self, caller: &Caller, pid: &str) -> DspResult<Value> {
        Ok(transfer_json(&self.dsp_transfer_of(caller, pid).await?.0))
    }

    /// A consumer's message on transfer `pid`.
    pub async fn dsp_transfer_message(
        &self,
        caller: &Caller,
        pid: &str,
        message: TransferMessage,
        msg: &Value,
    ) -> DspResult<Value> {
        let (mut t, rev) = self.dsp_transfer_of(caller, pid).await?;
        if msg.get("consumerPid").and_then(Value::as_str) != Some(t.consumer_pid.as_str())
            || msg
                .get("providerPid")
                .and_then(Value::as_str)
                .is_some_and(|p| p != t.provider_pid)
        {
            return Err(DspError::BadRequest(
                "the consumerPid and providerPid must be the transfer's".into(),
            ));
        }
        let Some(next) = consumer_transfer_transition(t.state, message) else {
            return Err(DspError::BadRequest(format!(
                "a {} cannot be taken in state {}",
                message.type_name(),
                t.state.as_str()
            )));
        };
        if next == TransferState::Started
            && let Err(why) = self.agreement_in_force(&t.agreement_id).await?
        {
            return Err(DspError::BadRequest(format!(
                "the transfer cannot resume: {why}"
            )));
        }
        let reason = reason_of(msg);
        t.state = next;
        if next == TransferState::Terminated || next == TransferState::Completed {
            t.owed = None;
            t.token_hash = None;
            t.next_attempt_at = None;
            if next == TransferState::Terminated {
                t.termination = Some(format!("by the consumer: {reason}"));
            }
        }
        t.updated_at = rfc3339(self.now());
        let kind = match next {
            TransferState::Started => "dsp.transfer_resumed",
            TransferState::Completed => "dsp.transfer_completed",
            TransferState::Suspended => "dsp.transfer_suspended",
            _ => "dsp.transfer_terminated",
        };
        let (body, at) = self.log_entry(
            kind,
            json!({"transfer": t.provider_pid, "by": "consumer", "reason": reason_commitment(&reason)}),
        )?;
        match self
            .store
            .update_transfer(&t, rev, &[new_entry(kind, &body, &at)])
            .await
        {
            Ok(()) => Ok(transfer_json(&t)),
            Err(citytrust_store::StoreError::StaleRevision(_)) => Err(DspError::BadRequest(
                "the transfer changed meanwhile: ask for its state and try again".into(),
            )),
            Err(e) => Err(e.into()),
        }
    }

    /// Who reads through transfer `pid` with `data_token`, for `caller`:
    /// the transfer must be the caller's, started, its token this one, and
    /// the caller's token must name the organisation the agreement was made
    /// for. Unknown transfers and wrong tokens are not found; the rest is
    /// refused saying why.
    pub async fn dsp_transfer_reader(
        &self,
        caller: &Caller,
        pid: &str,
        data_token: &str,
        purpose: Option<&str>,
        level: Option<AccessLevel>,
    ) -> crate::Result<TransferReader> {
        let not_found = || ServiceError::NotFound(format!("transfer '{pid}'"));
        let (t, _) = self
            .store
            .get_transfer(pid)
            .await?
            .filter(|(t, _)| {
                t.catalogue_id == caller.catalogue_id && t.participant_id == caller.participant_id
            })
            .ok_or_else(not_found)?;
        if t.token_hash.as_deref() != Some(sha256_hex(data_token).as_str()) {
            return Err(not_found());
        }
        let n = self
            .store
            .get_negotiation(&t.negotiation_pid)
            .await?
            .map(|(n, _)| n)
            .ok_or_else(not_found)?;
        match &caller.organization {
            Some((org, _)) if *org == n.consumer_organization => {}
            _ => {
                return Err(ServiceError::Forbidden(format!(
                    "transfer {pid} is for the organisation '{}' of the participant; the read is \
                     not made for it",
                    n.consumer_organization
                )));
            }
        }
        if t.state != TransferState::Started {
            return Err(ServiceError::Forbidden(format!(
                "transfer {pid} is {}: reads are made while it is STARTED",
                t.state.as_str()
            )));
        }
        // A transfer reads under its own agreement only: not under another
        // agreement or rule the stand-in organisation may have, and not
        // after this one ended (before the worker has told the partner).
        if let Err(why) = self.agreement_in_force(&t.agreement_id).await? {
            return Err(ServiceError::Refused {
                rule: Some("agreement-in-force".into()),
                message: format!("transfer {pid} reads under an agreement not in force: {why}"),
            });
        }
        let agreement = self.agreement(&t.agreement_id).await?;
        if purpose.is_some_and(|p| p != agreement.purpose)
            || level.is_some_and(|l| l != agreement.level)
        {
            return Err(ServiceError::Refused {
                rule: Some("agreement-terms".into()),
                message: format!(
                    "transfer {pid} reads for the purpose '{}' at the level '{}' only, as its agreement says",
                    agreement.purpose,
                    agreement.level.as_str()
                ),
            });
        }
        let username = format!(
            "{}{}",
            crate::negotiation::STAND_IN_USER_PREFIX,
            t.catalogue_id
        );
        Ok(TransferReader {
            actor: Actor::User {
                display_name: format!("Dataspace participant {}", caller.catalogue_name),
                username,
                roles: vec![],
                organization_ids: vec![t.organization_id.clone()],
                agent: None,
            },
            dataset_id: t.dataset_id.clone(),
            purpose: agreement.purpose.clone(),
            level: agreement.level,
            transfer: t.provider_pid.clone(),
        })
    }

    /// The worker's pass over transfers: start those requested (sending
    /// the data address), terminate those whose agreement ended.
    pub(crate) async fn advance_transfers(&self) -> crate::Result<usize> {
        let now = self.now();
        let mut moved = 0;
        for (mut t, rev) in self.store.transfers_to_advance(&rfc3339(now)).await? {
            if t.owed.is_none()
                && let Err(why) = self.agreement_in_force(&t.agreement_id).await?
            {
                t.owed = Some(OwedTransferMessage::Termination);
                t.termination = Some(format!("by the provider: {why}"));
            }
            let Some(owed) = t.owed else { continue };
            let head = |kind: &str| {
                json!({
                    "@context": [DSP_CONTEXT],
                    "@type": kind,
                    "providerPid": t.provider_pid,
                    "consumerPid": t.consumer_pid,
                })
            };
            let mut token = None;
            let (path, message) = match owed {
                OwedTransferMessage::Start => {
                    // The same token on every retry: a start the consumer
                    // took but whose answer was lost is not made worthless.
                    let secret = self.data_token(&t.provider_pid);
                    let mut m = head("TransferStartMessage");
                    m["dataAddress"] = json!({
                        "@type": "DataAddress",
                        "endpointType": HTTP_ENDPOINT,
                        "endpoint": format!("{}{DSP_PATH}/transfers/{}/data", t.provider_base, t.provider_pid),
                        "endpointProperties": [
                            {"@type": "EndpointProperty", "name": "authorization", "value": secret},
                            {"@type": "EndpointProperty", "name": "authType", "value": "bearer"},
                        ],
                    });
                    token = Some(secret);
                    ("start", m)
                }
                OwedTransferMessage::Termination => {
                    let mut m = head("TransferTerminationMessage");
                    m["code"] = json!("agreement-ended");
                    m["reason"] = json!([t.termination.clone().unwrap_or_default()]);
                    ("termination", m)
                }
            };
            let delivered = self
                .deliver_dsp(
                    &t.callback_address,
                    ["transfers", t.consumer_pid.as_str(), path],
                    &t.provider_base,
                    &t.participant_id,
                    &message,
                )
                .await;
            t.updated_at = rfc3339(now);
            let mut logged = None;
            match delivered {
                Ok(()) => {
                    let kind = match owed {
                        OwedTransferMessage::Start => {
                            t.state = TransferState::Started;
                            t.token_hash = token.as_deref().map(sha256_hex);
                            "dsp.transfer_started"
                        }
                        OwedTransferMessage::Termination => {
                            t.state = TransferState::Terminated;
                            t.token_hash = None;
                            "dsp.transfer_terminated"
                        }
                    };
                    t.owed = None;
                    t.attempts = 0;
                    t.last_error = None;
                    t.next_attempt_at = None;
                    // The token never enters the log.
                    logged = Some((
                        kind,
                        self.log_entry(
                            kind,
                            json!({"transfer": t.provider_pid, "by": "provider", "reason": t.termination}),
                        )?,
                    ));
                }
                Err(error) => {
                    t.attempts += 1;
                    tracing::warn!(transfer = %t.provider_pid, attempts = t.attempts, error = %error, "a DSP transfer message could not be delivered");
                    t.last_error = Some(error);
                    if t.attempts >= crate::negotiation::MAX_ATTEMPTS {
                        t.state = TransferState::Terminated;
                        t.owed = None;
                        t.token_hash = None;
                        t.next_attempt_at = None;
                        t.termination =
                            Some("by the provider: the consumer could not be reached".into());
                        logged = Some((
                            "dsp.transfer_terminated",
                            self.log_entry(
                                "dsp.transfer_terminated",
                                json!({"transfer": t.provider_pid, "by": "provider", "reason": t.termination}),
                            )?,
                        ));
                    } else {
                        t.next_attempt_at = Some(crate::negotiation::retry_at(now, t.attempts));
                    }
                }
            }
            let entries: Vec<_> = logged
                .iter()
                .map(|(kind, (body, at))| new_entry(kind, body, at))
                .collect();
            match self.store.update_transfer(&t, rev, &entries).await {
                Ok(()) if !entries.is_empty() => moved += 1,
                Ok(()) | Err(citytrust_store::StoreError::StaleRevision(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(moved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The consumer's side of the transfer state machine, as the diagram draws it.
    #[test]
    fn the_consumers_transfer_transitions_are_the_diagrams() {
        use TransferMessage as M;
        use TransferState as S;
        let allowed = [
            (S::Requested, M::Termination, S::Terminated),
            (S::Started, M::Completion, S::Completed),
            (S::Started, M::Suspension, S::Suspended),
            (S::Started, M::Termination, S::Terminated),
            (S::Suspended, M::Start, S::Started),
            (S::Suspended, M::Termination, S::Terminated),
        ];
        for s in [
            S::Requested,
            S::Started,
            S::Completed,
            S::Suspended,
            S::Terminated,
        ] {
            for m in [M::Start, M::Completion, M::Suspension, M::Termination] {
                let expected = allowed
                    .iter()
                    .find(|(from, msg, _)| *from == s && *msg == m)
                    .map(|(_, _, to)| *to);
                assert_eq!(
                    consumer_transfer_transition(s, m),
                    expected,
                    "{s:?} + {m:?}"
                );
            }
        }
    }
}
