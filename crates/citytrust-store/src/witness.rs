//! Witnessing (issue 28, C2SP tlog-witness), both ways. As a witness: the
//! newest checkpoint this trust cosigned for each log it witnesses, advanced
//! by compare-and-set in the same transaction as the log entry that records
//! the cosignature. As a witnessed log: the cosignatures each of its own
//! checkpoints gathered, which checkpoints meet the quorum, and how each of
//! its witnesses is doing.

use sqlx::Row;

use crate::{NewLogEntry, Result, Store, append_entry};

/// The newest checkpoint cosigned for one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Witnessed {
    pub origin: String,
    pub size: i64,
    /// The root hash, hex.
    pub root: String,
    /// The log's signed checkpoint with this witness's cosignature.
    pub note: String,
    pub cosigned_at: String,
}

/// The outcome of advancing a log's witnessed checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Advance {
    /// Advanced; the cosignature's log entry is `log_index`.
    Advanced { log_index: i64 },
    /// Another request advanced it first: nothing was written. The size
    /// now held (0 when none).
    Lost { size: i64 },
}

fn witnessed(r: &sqlx::any::AnyRow) -> Result<Witnessed> {
    Ok(Witnessed {
        origin: r.try_get("origin")?,
        size: r.try_get("size")?,
        root: r.try_get("root")?,
        note: r.try_get("note")?,
        cosigned_at: r.try_get("cosigned_at")?,
    })
}

impl Store {
    /// The newest checkpoint cosigned for `origin`, if any.
    pub async fn witnessed(&self, origin: &str) -> Result<Option<Witnessed>> {
        sqlx::query(
            "SELECT origin, size, root, note, cosigned_at FROM witnessed_checkpoints \
             WHERE origin = $1",
        )
        .bind(origin)
        .fetch_optional(&self.pool)
        .await?
        .as_ref()
        .map(witnessed)
        .transpose()
    }

    /// Every log's newest cosigned checkpoint, by origin.
    pub async fn all_witnessed(&self) -> Result<Vec<Witnessed>> {
        sqlx::query(
            "SELECT origin, size, root, note, cosigned_at FROM witnessed_checkpoints \
             ORDER BY origin",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(witnessed)
        .collect()
    }

    /// Advance `to.origin`'s witnessed checkpoint from exactly `from` (size
    /// and hex root; `None`: none held yet) to `to`, and append `entry`, in
    /// one transaction; or change nothing when another request got there first.
    pub async fn advance_witnessed(
        &self,
        from: Option<(i64, &str)>,
        to: &Witnessed,
        entry: &NewLogEntry<'_>,
    ) -> Result<Advance> {
        let mut tx = self.begin().await?;
        let moved = if let Some((from_size, from_root)) = from {
            sqlx::query(
                "UPDATE witnessed_checkpoints SET size = $1, root = $2, note = $3, \
                 cosigned_at = $4 WHERE origin = $5 AND size = $6 AND root = $7",
            )
            .bind(to.size)
            .bind(&to.root)
            .bind(&to.note)
            .bind(&to.cosigned_at)
            .bind(&to.origin)
            .bind(from_size)
            .bind(from_root)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        } else {
            sqlx::query(
                "INSERT INTO witnessed_checkpoints (origin, size, root, note, cosigned_at) \
                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT (origin) DO NOTHING",
            )
            .bind(&to.origin)
            .bind(to.size)
            .bind(&to.root)
            .bind(&to.note)
            .bind(&to.cosigned_at)
            .execute(&mut *tx)
            .await?
            .rows_affected()
        };
        if moved != 1 {
            tx.rollback().await?;
            let size = self.witnessed(&to.origin).await?.map_or(0, |w| w.size);
            return Ok(Advance::Lost { size });
        }
        let log_index = append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(Advance::Advanced { log_index })
    }
}

/// How one witness of this trust's own log is doing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogWitness {
    /// The policy's name for the witness.
    pub witness: String,
    /// The newest size it cosigned (0: none yet).
    pub size: i64,
    pub cosigned_at: Option<String>,
    pub attempted_at: String,
    /// Why the last attempt failed, if it did.
    pub failure: Option<String>,
}

impl Store {
    /// Keep `witness`'s cosignature `line` on the checkpoint of `size` (a
    /// second one from the same witness is ignored), and mark the checkpoint
    /// witnessed when `quorum_met`.
    pub async fn add_cosignature(
        &self,
        size: i64,
        witness: &str,
        line: &str,
        at: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO checkpoint_cosignatures (size, witness, line) VALUES ($1, $2, $3) \
             ON CONFLICT (size, witness) DO NOTHING",
        )
        .bind(size)
        .bind(witness)
        .bind(line)
        .execute(&mut *tx)
        .await?;
        upsert_log_witness(&mut tx, witness, size, Some(at), at, None).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Mark the checkpoint of `size` as meeting the policy's quorum.
    pub async fn mark_witnessed(&self, size: i64) -> Result<()> {
        sqlx::query("UPDATE ledger_checkpoints SET witnessed = 1 WHERE size = $1")
            .bind(size)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Record a failed attempt to have `witness` cosign.
    pub async fn log_witness_failed(&self, witness: &str, at: &str, failure: &str) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO log_witnesses (witness, size, attempted_at) VALUES ($1, 0, $2) \
             ON CONFLICT (witness) DO NOTHING",
        )
        .bind(witness)
        .bind(at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE log_witnesses SET attempted_at = $1, failure = $2 WHERE witness = $3")
            .bind(at)
            .bind(failure)
            .bind(witness)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The cosignature lines kept for the checkpoint of `size`, by witness.
    pub async fn cosignatures_at(&self, size: i64) -> Result<Vec<(String, String)>> {
        sqlx::query(
            "SELECT witness, line FROM checkpoint_cosignatures WHERE size = $1 ORDER BY witness",
        )
        .bind(size)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("witness")?, r.try_get("line")?)))
        .collect()
    }

    /// The newest checkpoint whose cosignatures meet the quorum.
    pub async fn latest_witnessed_checkpoint(&self) -> Result<Option<crate::StoredCheckpoint>> {
        let row = sqlx::query(
            "SELECT size, root, note, created_at FROM ledger_checkpoints WHERE witnessed = 1 \
             ORDER BY size DESC LIMIT 1",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| crate::checkpoint_from_row(&r)).transpose()
    }

    /// Every witness of this trust's log that was ever asked.
    pub async fn log_witnesses(&self) -> Result<Vec<LogWitness>> {
        sqlx::query(
            "SELECT witness, size, cosigned_at, attempted_at, failure FROM log_witnesses \
             ORDER BY witness",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(LogWitness {
                witness: r.try_get("witness")?,
                size: r.try_get("size")?,
                cosigned_at: r.try_get("cosigned_at")?,
                attempted_at: r.try_get("attempted_at")?,
                failure: r.try_get("failure")?,
            })
        })
        .collect()
    }
}

async fn upsert_log_witness(
    tx: &mut crate::Tx,
    witness: &str,
    size: i64,
    cosigned_at: Option<&str>,
    at: &str,
    failure: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO log_witnesses (witness, size, attempted_at) VALUES ($1, 0, $2) \
         ON CONFLICT (witness) DO NOTHING",
    )
    .bind(witness)
    .bind(at)
    .execute(&mut **tx)
    .await?;
    // The size only moves forward (nodes may report out of order).
    sqlx::query(
        "UPDATE log_witnesses SET size = CASE WHEN size > $1 THEN size ELSE $1 END, \
         cosigned_at = $2, attempted_at = $3, failure = $4 WHERE witness = $5",
    )
    .bind(size)
    .bind(cosigned_at)
    .bind(at)
    .bind(failure)
    .bind(witness)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Evidence that a witnessed log forked: a checkpoint it signed that does
/// not extend the one this witness cosigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkEvidence {
    pub id: i64,
    pub origin: String,
    /// The checkpoint this witness had cosigned (with the log's signature).
    pub held: String,
    /// The checkpoint offered, as received.
    pub offered: String,
    /// The consistency proof offered, one base64 hash a line.
    pub proof: String,
    pub reason: String,
    pub recorded_at: String,
    /// The `witness.fork_evidence` entry of this trust's log.
    pub log_index: i64,
}

impl Store {
    /// Keep fork evidence and its log entry, in one transaction.
    pub async fn record_fork_evidence(
        &self,
        evidence: &ForkEvidence,
        entry: &NewLogEntry<'_>,
    ) -> Result<i64> {
        let mut tx = self.begin().await?;
        let log_index = append_entry(&mut tx, entry).await?;
        let id: i64 = sqlx::query("SELECT COALESCE(MAX(id), 0) + 1 AS id FROM witness_evidence")
            .fetch_one(&mut *tx)
            .await?
            .try_get("id")?;
        sqlx::query(
            "INSERT INTO witness_evidence (id, origin, held, offered, proof, reason, recorded_at, log_index) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(id)
        .bind(&evidence.origin)
        .bind(&evidence.held)
        .bind(&evidence.offered)
        .bind(&evidence.proof)
        .bind(&evidence.reason)
        .bind(&evidence.recorded_at)
        .bind(log_index)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(id)
    }

    /// All fork evidence, newest first.
    pub async fn fork_evidence(&self) -> Result<Vec<ForkEvidence>> {
        sqlx::query(
            "SELECT id, origin, held, offered, proof, reason, recorded_at, log_index \
             FROM witness_evidence ORDER BY id DESC",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(ForkEvidence {
                id: r.try_get("id")?,
                origin: r.try_get("origin")?,
                held: r.try_get("held")?,
                offered: r.try_get("offered")?,
                proof: r.try_get("proof")?,
                reason: r.try_get("reason")?,
                recorded_at: r.try_get("recorded_at")?,
                log_index: r.try_get("log_index")?,
            })
        })
        .collect()
    }
}
