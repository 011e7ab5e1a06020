//! Breaches (R-CIT-8): a trustee registers what happened and what it
//! touched; the trust works out, from the log of reads and the subject index,
//! whose records it reached, puts a plain-language notice in the inbox of
//! everyone whose account is linked to those records, and tracks the
//! regulator's deadline (`Settings::breach_notify_hours`, 72 by default) until
//! a trustee records that the regulator was told.
//!
//! The public log gets the breach, its scope and how many people it reached
//! and were told — never who.

use std::collections::{BTreeMap, BTreeSet};

use citytrust_model::access::{format_day, parse_day};
use citytrust_model::authz;
use citytrust_model::residents::{Breach, BreachScope, InboxMessage, NewBreach, RegulatorNotice};
use citytrust_model::{Actor, ValidationErrors};

use crate::accounts::random_hex;
use crate::residents::included_because;
use crate::{Result, Service, ServiceError, rfc3339};

fn trustee(actor: &Actor) -> Result<()> {
    Ok(authz::may_keep_breach_register(actor)?)
}

/// Whose records a breach reached: the count, and who of them can be told.
struct Reach {
    affected: usize,
    /// Linked accounts → the datasets of theirs it touched.
    notify: BTreeMap<String, Vec<String>>,
}

impl Service {
    /// A trustee registers a breach: its reach is computed, the people it
    /// reached are sent the notice, and the breach and its log entry are
    /// stored with the notices in one transaction.
    pub async fn register_breach(&self, actor: &Actor, new: NewBreach) -> Result<Breach> {
        trustee(actor)?;
        new.validate()?;
        let mut e = ValidationErrors::default();
        for (i, id) in new.dataset_ids.iter().enumerate() {
            if self.store.get_dataset(id).await?.is_none() {
                e.push(
                    format!("dataset_ids[{i}]"),
                    format!("there is no dataset '{id}'"),
                );
            }
        }
        if let Some(a) = &new.agreement_id
            && self.store.get_agreement(a).await?.is_none()
        {
            e.push("agreement_id", format!("there is no agreement '{a}'"));
        }
        e.into_result()?;
        let reach = self.reach_of(&new).await?;
        let now = self.now();
        let at = rfc3339(now);
        let due = rfc3339(now + time::Duration::hours(self.settings.breach_notify_hours));
        let mut dataset_ids = new.dataset_ids.clone();
        dataset_ids.sort();
        dataset_ids.dedup();
        let breach = Breach {
            id: format!("breach-{}", random_hex::<6>()?),
            title: new.title.trim().to_string(),
            description: new.description.trim().to_string(),
            dataset_ids,
            scope: new.scope,
            agreement_id: new.agreement_id.clone(),
            reads_from: new.reads_from.clone(),
            reads_to: new.reads_to.clone(),
            notice: new.notice.trim().to_string(),
            registered_at: at.clone(),
            registered_by: "trustee".into(),
            regulator_due_at: due,
            regulator_notified_at: None,
            regulator_reference: None,
            affected: reach.affected,
            notified: reach.notify.len(),
            log_entries: Vec::new(),
        };
        let mut messages = Vec::with_capacity(reach.notify.len());
        for (username, datasets) in reach.notify {
            messages.push((
                username,
                InboxMessage {
                    id: format!("msg-{}", random_hex::<8>()?),
                    at: at.clone(),
                    kind: "breach".into(),
                    title: breach.title.clone(),
                    body: breach.notice.clone(),
                    breach_id: Some(breach.id.clone()),
                    dataset_ids: datasets,
                    data_request_id: None,
                },
            ));
        }
        let (body, at) = self.log_entry(
            "breach.registered",
            serde_json::json!({
                "breach": breach.id,
                "datasets": breach.dataset_ids,
                "scope": breach.scope.as_str(),
                "agreement": breach.agreement_id,
                "reads_from": breach.reads_from,
                "reads_to": breach.reads_to,
                "affected": breach.affected,
                "notified": breach.notified,
                "regulator_due_at": breach.regulator_due_at,
                "by": "trustee",
            }),
        )?;
        Ok(self
            .store
            .insert_breach(
                &breach,
                &messages,
                &crate::ledger::new_entry("breach.registered", &body, &at),
            )
            .await?)
    }

    /// Every person whose records the breach reached. Reads scope: a read in
    /// scope reached a linked person when its subject rule included them at
    /// the time (the same replay as "who used my data"); people not linked to
    /// an account can neither consent nor object nor be erased, so a read
    /// reached them exactly when its rule was not consent.
    async fn reach_of(&self, new: &NewBreach) -> Result<Reach> {
        let mut affected: BTreeSet<(String, String)> = BTreeSet::new();
        let mut notify: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for dataset_id in &new.dataset_ids {
            let links = self.store.links_in(dataset_id).await?;
            match new.scope {
                BreachScope::Stored => {
                    for key in self.store.subjects_in(dataset_id, None).await? {
                        affected.insert((dataset_id.clone(), key));
                    }
                    for (username, key) in links {
                        affected.insert((dataset_id.clone(), key));
                        notify.entry(username).or_default().push(dataset_id.clone());
                    }
                }
                BreachScope::Reads => {
                    let from = new.reads_from.as_ref().map(|d| format!("{d}T00:00:00Z"));
                    // Up to the end of the last day: before the next one begins.
                    let until = new
                        .reads_to
                        .as_deref()
                        .and_then(parse_day)
                        .map(|d| format!("{}T00:00:00Z", format_day(d + 1)));
                    let reads: Vec<_> = self
                        .store
                        .personal_reads_of(dataset_id, from.as_deref(), until.as_deref())
                        .await?
                        .into_iter()
                        .filter(|r| match &new.agreement_id {
                            None => true,
                            Some(a) => serde_json::from_str::<serde_json::Value>(&r.body)
                                .ok()
                                .is_some_and(|b| b["agreement"].as_str() == Some(a)),
                        })
                        .collect();
                    let open_versions: BTreeSet<i64> = reads
                        .iter()
                        .filter(|r| r.rule != "only_consenting")
                        .map(|r| r.version)
                        .collect();
                    let linked: BTreeSet<&str> = links.iter().map(|(_, k)| k.as_str()).collect();
                    let open: Vec<i64> = open_versions.into_iter().collect();
                    for key in self.store.subjects_in(dataset_id, Some(&open)).await? {
                        if !linked.contains(key.as_str()) {
                            affected.insert((dataset_id.clone(), key));
                        }
                    }
                    for (username, key) in &links {
                        let held = self.store.versions_holding(dataset_id, key).await?;
                        let erased = self.store.erased_rev(dataset_id, key).await?;
                        let consents = self.store.consents_of(username).await?;
                        let reached = reads.iter().any(|r| {
                            held.contains(&r.version)
                                && erased.is_none_or(|g| g > r.rev)
                                && included_because(r, &consents).is_some()
                        });
                        if reached {
                            affected.insert((dataset_id.clone(), key.clone()));
                            notify
                                .entry(username.clone())
                                .or_default()
                                .push(dataset_id.clone());
                        }
                    }
                }
            }
        }
        Ok(Reach {
            affected: affected.len(),
            notify,
        })
    }

    /// The breach register, newest first (trustees).
    pub async fn breaches(&self, actor: &Actor) -> Result<Vec<Breach>> {
        trustee(actor)?;
        Ok(self.store.breaches().await?)
    }

    pub async fn breach(&self, actor: &Actor, id: &str) -> Result<Breach> {
        trustee(actor)?;
        self.store
            .get_breach(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("breach '{id}'")))
    }

    /// A trustee records that the regulator was told (once), with its reference.
    pub async fn regulator_notified(
        &self,
        actor: &Actor,
        id: &str,
        notice: RegulatorNotice,
    ) -> Result<Breach> {
        let mut breach = self.breach(actor, id).await?;
        let mut e = ValidationErrors::default();
        e.optional_text("reference", &notice.reference, 200);
        e.into_result()?;
        if breach.regulator_notified_at.is_some() {
            return Err(ServiceError::Conflict(format!(
                "the regulator's notification of breach '{id}'"
            )));
        }
        let at = rfc3339(self.now());
        breach.regulator_notified_at = Some(at.clone());
        breach.regulator_reference = notice
            .reference
            .map(|r| r.trim().to_string())
            .filter(|r| !r.is_empty());
        let (body, at) = self.log_entry(
            "breach.regulator_notified",
            serde_json::json!({
                "breach": breach.id,
                "within_deadline": at <= breach.regulator_due_at,
                "by": "trustee",
            }),
        )?;
        self.store
            .update_breach(
                &breach,
                &crate::ledger::new_entry("breach.regulator_notified", &body, &at),
            )
            .await?
            .ok_or_else(|| {
                ServiceError::Conflict(format!("the regulator's notification of breach '{id}'"))
            })
    }

    /// The catalogue's datasets that hold records about people (a breach
    /// form's choices). Their existence is public, like the catalogue.
    pub async fn personal_datasets(&self) -> Result<Vec<citytrust_model::Dataset>> {
        let mut out = Vec::new();
        let mut after = String::new();
        loop {
            let page = self.store.datasets_after(&after, 500).await?;
            let Some(last) = page.last() else { break };
            after = last.id.clone();
            out.extend(
                page.into_iter()
                    .filter(|d| d.metadata.personal_terms.is_some()),
            );
        }
        Ok(out)
    }

    /// The signed-in person's messages (breach notices), newest first.
    pub async fn my_inbox(&self, actor: &Actor) -> Result<Vec<InboxMessage>> {
        let username = actor.username().ok_or(ServiceError::Unauthenticated)?;
        Ok(self.store.inbox_of(username).await?)
    }
}
