//! This trust's own log, witnessed (issue 28): which checkpoint to put to
//! the witnesses of its policy (C2SP tlog-policy), keeping the cosignatures
//! they return (each checked against the witness's key in the policy), and
//! which checkpoint is published — the newest whose cosignatures meet the
//! quorum. The HTTP calls to the witnesses are made by the server crate
//! (`citytrust-server/src/cosigning.rs`); a witness that is slow, down or
//! refusing never holds up an append or a read, it only leaves the newest
//! checkpoints unpublished (the backlog is a metric and on the log page).

use std::collections::BTreeSet;

use std::sync::Arc;

use citytrust_ledger::policy::Policy;
use citytrust_ledger::witness::WitnessedLog;
use citytrust_store::{LogWitness, StoredCheckpoint};

use crate::{Result, Service, ServiceError, rfc3339};

/// One witness to ask for a cosignature of the newest checkpoint.
#[derive(Debug, Clone)]
pub struct CosignRequest {
    /// The witness's index in the policy and its name there.
    pub witness: usize,
    pub name: String,
    /// Its submission prefix (`…/witness`).
    pub url: String,
}

/// The newest checkpoint and the witnesses that have not yet cosigned it.
#[derive(Debug, Clone)]
pub struct CosignJob {
    pub size: u64,
    /// The signed checkpoint as the log signed it (no cosignatures).
    pub note: String,
    pub ask: Vec<CosignRequest>,
}

/// The published checkpoint and what is known of the log's witnesses.
#[derive(Debug, Clone)]
pub struct WitnessingStatus {
    /// The newest signed checkpoint's size.
    pub head: u64,
    /// The newest checkpoint meeting the quorum (0: none yet).
    pub witnessed: u64,
    pub witnesses: Vec<LogWitness>,
    /// Names of the policy's witnesses, in its order.
    pub named: Vec<String>,
}

impl Service {
    /// The policy this trust's log is witnessed under, if any.
    pub fn witness_policy(&self) -> Option<Arc<Policy>> {
        self.policy
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Witness each other with a peer trust (`serve --peer`): witness its
    /// log, and have its witness cosign this log — the policy becomes this
    /// log and every peer's witness, all of them needed. A policy given with
    /// `--witness-policy` is not changed; the peer's log is still witnessed.
    pub fn add_peer(&self, log: WitnessedLog, witness_vkey: &str, witness_url: &str) -> Result<()> {
        self.witness_log(log);
        let key = citytrust_ledger::witness::CosignerKey::parse(witness_vkey)
            .map_err(|e| ServiceError::Internal(format!("a peer's witness key: {e}")))?;
        let mut peers = self
            .peers
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if self.settings.witness_policy.is_some()
            || peers.iter().any(|(k, _)| k.public == key.public)
        {
            return Ok(());
        }
        peers.push((key, witness_url.trim_end_matches('/').to_string()));
        let mut text = format!("log {}\n", self.ledger_verifier_key());
        for (k, url) in peers.iter() {
            text.push_str(&format!("witness {} {} {url}\n", k.name, k.vkey()));
        }
        let names: Vec<&str> = peers.iter().map(|(k, _)| k.name.as_str()).collect();
        text.push_str(&format!(
            "group peers all {}\nquorum peers\n",
            names.join(" ")
        ));
        let policy = Policy::parse(&text)
            .map_err(|e| ServiceError::Internal(format!("the peers' policy: {e}")))?;
        *self
            .policy
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(policy));
        Ok(())
    }

    /// What to ask of whom now: the newest checkpoint, and the witnesses of
    /// the policy (with a URL) that have not cosigned it. `None`: no policy,
    /// no checkpoint, or nothing to ask.
    pub async fn cosign_job(&self) -> Result<Option<CosignJob>> {
        let Some(policy) = self.witness_policy() else {
            return Ok(None);
        };
        let Some(head) = self.store.latest_checkpoint().await? else {
            return Ok(None);
        };
        let have: BTreeSet<String> = self
            .store
            .cosignatures_at(head.size)
            .await?
            .into_iter()
            .map(|(w, _)| w)
            .collect();
        let ask: Vec<CosignRequest> = policy
            .witnesses
            .iter()
            .enumerate()
            .filter(|(_, w)| !have.contains(&w.name))
            .filter_map(|(i, w)| {
                w.url.as_ref().map(|url| CosignRequest {
                    witness: i,
                    name: w.name.clone(),
                    url: url.trim_end_matches('/').to_string(),
                })
            })
            .collect();
        if ask.is_empty() {
            return Ok(None);
        }
        Ok(Some(CosignJob {
            size: u64::try_from(head.size).unwrap_or_default(),
            note: head.note,
            ask,
        }))
    }

    /// Keep a witness's answer to `add-checkpoint` for the checkpoint of
    /// `size`: its signature lines, of which only a valid cosignature by the
    /// policy's key for that witness is kept. Marks the checkpoint witnessed
    /// when the quorum is met. `Ok(false)`: no valid cosignature in it.
    pub async fn keep_cosignature(&self, size: u64, witness: usize, answer: &str) -> Result<bool> {
        let Some(policy) = self.witness_policy() else {
            return Ok(false);
        };
        let Some(w) = policy.witnesses.get(witness) else {
            return Ok(false);
        };
        let size_i64 =
            i64::try_from(size).map_err(|_| ServiceError::Internal("size beyond i64".into()))?;
        let Some(checkpoint) = self.store.checkpoint_at(size_i64).await? else {
            return Ok(false);
        };
        let at = rfc3339(self.now());
        let line = answer.lines().find(|line| {
            let mut note = checkpoint.note.clone();
            note.push_str(line);
            note.push('\n');
            w.key.verify(note.as_bytes()).is_ok()
        });
        let Some(line) = line else {
            self.store
                .log_witness_failed(&w.name, &at, "its answer held no valid cosignature")
                .await?;
            return Ok(false);
        };
        self.store
            .add_cosignature(size_i64, &w.name, &format!("{line}\n"), &at)
            .await?;
        // The quorum, over every cosignature this checkpoint has gathered.
        let cosigned: BTreeSet<usize> = self
            .store
            .cosignatures_at(size_i64)
            .await?
            .iter()
            .filter_map(|(name, _)| policy.witnesses.iter().position(|w| &w.name == name))
            .collect();
        if policy.quorum_met(&cosigned) {
            self.store.mark_witnessed(size_i64).await?;
        }
        Ok(true)
    }

    /// Record that asking `witness` failed (unreachable, timed out, refused).
    pub async fn cosign_failed(&self, witness: usize, why: &str) -> Result<()> {
        let Some(policy) = self.witness_policy() else {
            return Ok(());
        };
        let Some(w) = policy.witnesses.get(witness) else {
            return Ok(());
        };
        let at = rfc3339(self.now());
        self.store.log_witness_failed(&w.name, &at, why).await?;
        Ok(())
    }

    /// The checkpoint the log publishes: with a policy, the newest that meets
    /// its quorum, with every cosignature gathered; without one, the newest.
    pub async fn published_checkpoint(&self) -> Result<Option<String>> {
        match self.witness_policy() {
            None => Ok(self.store.latest_checkpoint().await?.map(|c| c.note)),
            Some(_) => match self.store.latest_witnessed_checkpoint().await? {
                Some(c) => Ok(Some(self.with_cosignatures(c).await?)),
                None => Ok(None),
            },
        }
    }

    /// The newest signed checkpoint, witnessed or not, with the cosignatures
    /// it has gathered so far.
    pub async fn head_checkpoint(&self) -> Result<Option<String>> {
        match self.store.latest_checkpoint().await? {
            Some(c) => Ok(Some(self.with_cosignatures(c).await?)),
            None => Ok(None),
        }
    }

    async fn with_cosignatures(&self, checkpoint: StoredCheckpoint) -> Result<String> {
        let mut note = checkpoint.note;
        for (_, line) in self.store.cosignatures_at(checkpoint.size).await? {
            note.push_str(&line);
        }
        Ok(note)
    }

    /// How the log's witnessing stands (for the log page and the metrics).
    pub async fn witnessing_status(&self) -> Result<Option<WitnessingStatus>> {
        let Some(policy) = self.witness_policy() else {
            return Ok(None);
        };
        let head = self.store.latest_checkpoint().await?.map_or(0, |c| c.size);
        let witnessed = self
            .store
            .latest_witnessed_checkpoint()
            .await?
            .map_or(0, |c| c.size);
        Ok(Some(WitnessingStatus {
            head: u64::try_from(head).unwrap_or_default(),
            witnessed: u64::try_from(witnessed).unwrap_or_default(),
            witnesses: self.store.log_witnesses().await?,
            named: policy.witnesses.iter().map(|w| w.name.clone()).collect(),
        }))
    }
}
