//! The witness's memory (issue 28, C2SP tlog-witness): the newest checkpoint
//! this node cosigned for each log it witnesses, advanced by compare-and-set
//! in the same transaction as the log entry that records the cosignature.

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
        let mut tx = self.pool.begin().await?;
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
