//! This trust as a witness of other trusts' logs (issue 28, R-AUD-2; C2SP
//! tlog-witness): it cosigns a log's checkpoint only if it extends the newest
//! one it cosigned for that log, so a log that shows two histories is caught
//! by the first witness that sees both.
//!
//! The protocol's checks are `citytrust_ledger::witness`; here is the
//! state. The newest cosigned checkpoint per log is in the database (every
//! node of a trust shares it) and advances only by compare-and-set, in the
//! same transaction as the `witness.cosigned` entry of this trust's own log:
//! two requests from the same old size cannot both advance it, and every
//! cosignature is on the record.

use citytrust_ledger::witness::{self, Cosigner, Latest};
pub use citytrust_ledger::witness::{MAX_PROOF_LINES, Refusal, WitnessedLog};
pub use citytrust_store::ForkEvidence;
use citytrust_store::{Advance, Witnessed};
use sha2::{Digest, Sha256};

use crate::ledger::LedgerSeed;
use crate::{Result, Service, ServiceError};

/// What makes this trust a witness: its name and key (never the log's), and
/// the logs it witnesses.
#[derive(Debug, Clone)]
pub struct Witnessing {
    /// The cosignatures' key name, a schema-less URL (`city.example/witness`).
    pub name: String,
    pub seed: LedgerSeed,
    pub logs: Vec<WitnessedLog>,
}

/// The witness, ready to cosign.
pub(crate) struct Witness {
    cosigner: Cosigner,
    /// The logs witnessed (a peer's is added once it answers).
    logs: std::sync::RwLock<Vec<WitnessedLog>>,
}

impl Witness {
    pub(crate) fn new(settings: &Witnessing) -> Result<Witness> {
        let cosigner = Cosigner::from_seed(&settings.name, &settings.seed.0)
            .map_err(|e| ServiceError::Internal(format!("the witness key: {e}")))?;
        Ok(Witness {
            cosigner,
            logs: std::sync::RwLock::new(settings.logs.clone()),
        })
    }
}

/// The witness's name when none is given: the log origin's host with
/// `/witness` (`city.example/ledger` → `city.example/witness`).
pub fn default_name(ledger_origin: &str) -> String {
    let host = ledger_origin.split('/').next().unwrap_or(ledger_origin);
    format!("{host}/witness")
}

/// The lowercase hex SHA-256 of an origin (the witness's monitoring path).
pub fn origin_hash(origin: &str) -> String {
    hex::encode(Sha256::digest(origin.as_bytes()))
}

impl Service {
    fn witness(&self) -> &Witness {
        &self.witness
    }

    fn witnessed_log_list(&self) -> Vec<WitnessedLog> {
        self.witness()
            .logs
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Witness one more log (a peer's), unless it is witnessed already.
    pub(crate) fn witness_log(&self, log: WitnessedLog) {
        let mut logs = self
            .witness()
            .logs
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !logs.iter().any(|l| l.origin == log.origin) {
            logs.push(log);
        }
    }

    /// The witness's verifier key (`<name>+<key id>+<base64 of 0x04 ‖ key>`).
    pub fn witness_verifier_key(&self) -> String {
        self.witness().cosigner.verifier_key()
    }

    /// The logs this trust witnesses, with the newest checkpoint it cosigned
    /// for each (if any).
    pub async fn witnessed_logs(&self) -> Result<Vec<(WitnessedLog, Option<Witnessed>)>> {
        let held = self.store.all_witnessed().await?;
        Ok(self
            .witnessed_log_list()
            .into_iter()
            .map(|log| {
                let latest = held.iter().find(|w| w.origin == log.origin).cloned();
                (log, latest)
            })
            .collect())
    }

    /// Answer a C2SP tlog-witness `add-checkpoint` request: the cosignature
    /// line, or why not (each refusal has its status). Internal failures
    /// (the database) are the outer error: nothing was cosigned.
    pub async fn add_checkpoint(
        &self,
        body: &[u8],
    ) -> Result<std::result::Result<String, Refusal>> {
        let request = match witness::parse_add_checkpoint(body) {
            Ok(r) => r,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let origin = match witness::origin_of(&request.note) {
            Ok(o) => o,
            Err(refusal) => return Ok(Err(refusal)),
        };
        let logs = self.witnessed_log_list();
        let Some(log) = logs.iter().find(|l| l.origin == origin) else {
            return Ok(Err(Refusal::UnknownLog(origin)));
        };
        let held = self.store.witnessed(&origin).await?;
        let latest = match &held {
            Some(w) => Latest {
                size: u64::try_from(w.size)
                    .map_err(|_| ServiceError::Internal("a witnessed size is negative".into()))?,
                root: hex::decode(&w.root)
                    .ok()
                    .and_then(|r| <[u8; 32]>::try_from(r).ok())
                    .ok_or_else(|| {
                        ServiceError::Internal("a witnessed root is not 32 bytes of hex".into())
                    })?,
            },
            None => Latest {
                size: 0,
                root: citytrust_ledger::empty_root(),
            },
        };
        let accepted = match witness::decide(&request, log, &latest) {
            Ok(a) => a,
            Err(Refusal::Inconsistent(reason))
                if held.is_some() && request.old_size == latest.size =>
            {
                // The log signed a checkpoint that does not extend one it
                // signed before and we cosigned: keep the evidence.
                if let Some(held) = &held {
                    self.record_fork(held, &request, &reason).await?;
                }
                return Ok(Err(Refusal::Inconsistent(reason)));
            }
            Err(refusal) => return Ok(Err(refusal)),
        };
        // A cosignature's time is never 0 (the specification forbids it).
        let timestamp = u64::try_from(self.now().unix_timestamp())
            .unwrap_or(1)
            .max(1);
        let cosignature = self.witness().cosigner.cosign(&accepted.text, timestamp);
        if held.is_some() && accepted.size == latest.size {
            // The checkpoint already held, again (a log retrying, or anyone
            // replaying it): a fresh cosignature, nothing to record — so a
            // replayed request cannot grow this trust's log.
            return Ok(Ok(cosignature));
        }
        let size = i64::try_from(accepted.size)
            .map_err(|_| ServiceError::Internal("a checkpoint size beyond i64".into()))?;
        let (body, at) = self.log_entry(
            "witness.cosigned",
            serde_json::json!({
                "origin": accepted.origin,
                "size": size,
                "root": hex::encode(accepted.root),
                "witness": self.witness().cosigner.name(),
                "timestamp": timestamp,
            }),
        )?;
        let to = Witnessed {
            origin: accepted.origin.clone(),
            size,
            root: hex::encode(accepted.root),
            note: String::from_utf8(accepted.cosigned_note(&cosignature))
                .map_err(|_| ServiceError::Internal("a checkpoint is not UTF-8".into()))?,
            cosigned_at: at.clone(),
        };
        let from = held.as_ref().map(|w| (w.size, w.root.as_str()));
        match self
            .store
            .advance_witnessed(
                from,
                &to,
                &crate::ledger::new_entry("witness.cosigned", &body, &at),
            )
            .await?
        {
            Advance::Advanced { .. } => Ok(Ok(cosignature)),
            // Another request advanced it between our read and our write:
            // the client retries from the size we now hold.
            Advance::Lost { size } => Ok(Err(Refusal::Conflict {
                old: request.old_size,
                latest: u64::try_from(size).unwrap_or_default(),
            })),
        }
    }

    async fn record_fork(
        &self,
        held: &Witnessed,
        request: &witness::AddCheckpoint,
        reason: &str,
    ) -> Result<()> {
        let offered = String::from_utf8_lossy(&request.note).into_owned();
        let proof: String = request
            .proof
            .iter()
            .map(|h| format!("{}\n", base64_hash(h)))
            .collect();
        let (body, at) = self.log_entry(
            "witness.fork_evidence",
            serde_json::json!({
                "origin": held.origin,
                "held": {"size": held.size, "root": held.root},
                "offered": offered,
                "reason": reason,
            }),
        )?;
        let evidence = ForkEvidence {
            id: 0,
            origin: held.origin.clone(),
            held: held.note.clone(),
            offered,
            proof,
            reason: reason.to_string(),
            recorded_at: at.clone(),
            log_index: 0,
        };
        self.store
            .record_fork_evidence(
                &evidence,
                &crate::ledger::new_entry("witness.fork_evidence", &body, &at),
            )
            .await?;
        tracing::error!(origin = %held.origin, reason, "a witnessed log forked: evidence recorded");
        Ok(())
    }

    /// Evidence of forks seen as a witness, newest first.
    pub async fn fork_evidence(&self) -> Result<Vec<ForkEvidence>> {
        Ok(self.store.fork_evidence().await?)
    }

    /// The newest checkpoint cosigned for the log whose origin hashes to
    /// `hash` (lowercase hex SHA-256), with the log's and this witness's
    /// signatures; `None` if it never cosigned one.
    pub async fn witnessed_checkpoint(&self, hash: &str) -> Result<Option<String>> {
        let logs = self.witnessed_log_list();
        let Some(log) = logs.iter().find(|l| origin_hash(&l.origin) == hash) else {
            return Ok(None);
        };
        Ok(self.store.witnessed(&log.origin).await?.map(|w| w.note))
    }
}

fn base64_hash(h: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(h)
}
