//! This trust's own log, witnessed (issue 28): which checkpoint to put to
//! the witnesses of its policy (C2SP tlog-policy), keeping the cosignatures
//! they return (each checked against the witness's key in the policy), and
//! which checkpoint is published — the newest whose cosignatures meet the
//! quorum. The HTTP calls to the witnesses are made by the server crate
//! (`citytrust-server/src/cosigning.rs`); a witness that is slow, down or
//! refusing never holds up an append or a read, it only leaves the newest
//! checkpoints unpublished (the backlog is a metric and on the log page).

use std::collections::BTreeSet;

use citytrust_ledger::policy::Policy;
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
    pub fn witness_policy(&self) -> Option<&Policy> {
        self.settings.witness_policy.as_ref()
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
        let Some(w) = self.witness_policy().and_then(|p| p.witnesses.get(witness)) else {
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
