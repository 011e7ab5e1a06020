//! The transparency log's rows: entries appended (one at a time or a batch
//! in one transaction), signed checkpoints, the integration of entries into
//! the tree, and the index the public analytics read.

use super::*;

impl Store {
    // ---- the transparency log --------------------------------------------------

    /// How many entries have been appended (committed or not yet integrated).
    pub async fn ledger_size(&self) -> Result<i64> {
        self.counter("ledger_size").await
    }

    /// Entries `from..` in index order, at most `limit`.
    pub async fn ledger_entries(&self, from: i64, limit: i64) -> Result<Vec<(i64, String)>> {
        let rows = sqlx::query(
            "SELECT idx, body FROM ledger_entries WHERE idx >= $1 ORDER BY idx LIMIT $2",
        )
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("idx")?, r.try_get("body")?)))
            .collect()
    }

    pub async fn ledger_entry(&self, idx: i64) -> Result<Option<String>> {
        let row = sqlx::query("SELECT body FROM ledger_entries WHERE idx = $1")
            .bind(idx)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok(r.try_get("body")?)).transpose()
    }

    /// The stored tiles among `keys` (tile level, index); those not stored are left out.
    pub async fn ledger_tiles(&self, keys: &[(i64, i64)]) -> Result<Vec<StoredTile>> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(200) {
            let mut sql = String::from("SELECT level, idx, width, hashes FROM ledger_tiles WHERE ");
            for i in 0..chunk.len() {
                if i > 0 {
                    sql.push_str(" OR ");
                }
                sql.push_str(&format!(
                    "(level = {} AND idx = {})",
                    self.backend.param(2 * i + 1),
                    self.backend.param(2 * i + 2)
                ));
            }
            let mut q = sqlx::query(&sql);
            for (level, idx) in chunk {
                q = q.bind(level).bind(idx);
            }
            for r in q.fetch_all(&self.pool).await? {
                out.push(StoredTile {
                    level: r
                        .try_get::<i64, _>(0)
                        .or_else(|_| r.try_get::<i32, _>(0).map(i64::from))?,
                    idx: r.try_get(1)?,
                    width: r
                        .try_get::<i64, _>(2)
                        .or_else(|_| r.try_get::<i32, _>(2).map(i64::from))?,
                    hashes: r.try_get(3)?,
                });
            }
        }
        Ok(out)
    }

    /// Store tiles outside an integration (the tree rebuilt from its entries).
    pub async fn put_ledger_tiles(&self, tiles: &[StoredTile]) -> Result<()> {
        let mut tx = self.begin().await?;
        upsert_tiles(&mut tx, tiles).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn latest_checkpoint(&self) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query("SELECT size, root, note, created_at FROM ledger_checkpoints ORDER BY size DESC LIMIT 1")
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| checkpoint_from_row(&r)).transpose()
    }

    pub async fn checkpoint_at(&self, size: i64) -> Result<Option<StoredCheckpoint>> {
        let row = sqlx::query(
            "SELECT size, root, note, created_at FROM ledger_checkpoints WHERE size = $1",
        )
        .bind(size)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| checkpoint_from_row(&r)).transpose()
    }

    /// Store the tiles that integrating entries `old_size..checkpoint.size`
    /// changed, the checkpoint that covers them and their index rows,
    /// together. Only one integration extends a given checkpoint: under a
    /// lock on PostgreSQL (SQLite has one writer), the newest stored
    /// checkpoint must still be `old_size`, or this is a `Conflict` (another
    /// node integrated first) and nothing is stored.
    pub async fn record_integration(
        &self,
        tiles: &[StoredTile],
        old_size: i64,
        checkpoint: &StoredCheckpoint,
        index: &[LedgerIndexRow],
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        if self.backend == Backend::Postgres {
            // Held to the end of the transaction: the one short lock of the sequencer.
            sqlx::query("SELECT pg_advisory_xact_lock(727275)::TEXT")
                .execute(&mut *tx)
                .await?;
        } else {
            // Write first, so SQLite takes its write lock (waiting its busy
            // timeout) before this transaction reads: a read-then-write
            // transaction is refused at once ("database is locked") when an
            // appender commits in between, and under steady appends that is
            // every time — the log would never be signed.
            sqlx::query("UPDATE counters SET value = value WHERE name = 'ledger_indexed'")
                .execute(&mut *tx)
                .await?;
        }
        let newest: i64 = sqlx::query("SELECT COALESCE(MAX(size), 0) FROM ledger_checkpoints")
            .fetch_one(&mut *tx)
            .await?
            .try_get(0)?;
        if newest != old_size {
            return Err(StoreError::Conflict(format!(
                "checkpoint {} (the log is at {newest}, not {old_size})",
                checkpoint.size
            )));
        }
        upsert_tiles(&mut tx, tiles).await?;
        sqlx::query(
            "INSERT INTO ledger_checkpoints (size, root, note, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(checkpoint.size)
        .bind(&checkpoint.root)
        .bind(&checkpoint.note)
        .bind(&checkpoint.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("checkpoint {}", checkpoint.size)))?;
        insert_ledger_index(&mut tx, index, checkpoint.size).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Entries below this index are in `ledger_index`.
    pub async fn ledger_indexed(&self) -> Result<i64> {
        self.counter("ledger_indexed").await
    }

    /// Index entries already signed (a log kept before `ledger_index`
    /// existed): `rows` cover the entries up to `upto` (exclusive).
    pub async fn add_ledger_index(&self, rows: &[LedgerIndexRow], upto: i64) -> Result<()> {
        let mut tx = self.begin().await?;
        insert_ledger_index(&mut tx, rows, upto).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Distinct entries of the given kinds counted by `facet` (rows where it is
    /// set), largest first, then by name.
    pub async fn ledger_counts(
        &self,
        facet: LedgerFacet,
        kinds: &[&str],
    ) -> Result<Vec<(String, i64)>> {
        let expr = facet.expr();
        let placeholders: Vec<String> = (1..=kinds.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT {expr} AS k, COUNT(DISTINCT idx) AS n FROM ledger_index \
             WHERE kind IN ({}) AND {expr} IS NOT NULL GROUP BY {expr} ORDER BY n DESC, k",
            placeholders.join(", ")
        );
        let mut q = sqlx::query(&sql);
        for k in kinds {
            q = q.bind(*k);
        }
        let rows = q.fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| Ok((r.try_get::<String, _>(0)?, r.try_get::<i64, _>(1)?)))
            .collect()
    }

    /// For each dataset named in more than one entry of `kind`: how many
    /// entries, and how many distinct parties made them.
    pub async fn ledger_repeats(&self, kind: &str) -> Result<Vec<(String, i64, i64)>> {
        let rows = sqlx::query(
            "SELECT dataset, COUNT(DISTINCT idx) AS n, COUNT(DISTINCT party) AS p FROM ledger_index \
             WHERE kind = $1 AND dataset IS NOT NULL GROUP BY dataset HAVING COUNT(DISTINCT idx) > 1 \
             ORDER BY n DESC, dataset",
        )
        .bind(kind)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect()
    }

    /// The signed entries about agreement `id`: those naming it, and those
    /// naming a request that made or amended it. Oldest first, at most `limit`
    /// from index `from`; with the total count.
    pub async fn ledger_entries_of_agreement(
        &self,
        id: &str,
        from: i64,
        limit: i64,
    ) -> Result<(Vec<(i64, String, String)>, i64)> {
        const MATCH: &str = "(agreement = $1 OR request IN \
             (SELECT request FROM ledger_index WHERE agreement = $1 AND request IS NOT NULL))";
        let total: i64 = sqlx::query(&format!(
            "SELECT COUNT(DISTINCT idx) FROM ledger_index WHERE {MATCH}"
        ))
        .bind(id)
        .fetch_one(&self.pool)
        .await?
        .try_get(0)?;
        let rows = sqlx::query(&format!(
            "SELECT DISTINCT idx, kind, day FROM ledger_index WHERE {MATCH} AND idx >= $2 \
             ORDER BY idx LIMIT $3"
        ))
        .bind(id)
        .bind(from)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        let entries = rows
            .iter()
            .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
            .collect::<Result<Vec<_>>>()?;
        Ok((entries, total))
    }

    /// Append entries in one transaction (a group commit): indexes are
    /// taken in one step and the rows written in multi-row inserts. Returns
    /// the index of the first; the others follow in order.
    pub async fn append_log_batch(&self, entries: &[NewLogEntry<'_>]) -> Result<i64> {
        let mut tx = self.begin().await?;
        let first = crate::append_entries(&mut tx, entries).await?;
        tx.commit().await?;
        Ok(first)
    }

    /// Append a log entry on its own (a read of content: nothing else
    /// changes). Returns the entry's index once committed.
    pub async fn append_log(&self, entry: &NewLogEntry<'_>) -> Result<i64> {
        let mut tx = self.begin().await?;
        let idx = append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(idx)
    }
}

/// Insert or widen tiles: a stored tile is only ever replaced by a wider one
/// (tiles grow; a narrower write is a node behind, and changes nothing).
async fn upsert_tiles(tx: &mut crate::Tx, tiles: &[StoredTile]) -> Result<()> {
    const ROWS: usize = 50;
    for chunk in tiles.chunks(ROWS) {
        let mut sql = format!(
            "INSERT INTO ledger_tiles (level, idx, width, hashes) VALUES {}",
            tx.backend.value_rows(chunk.len(), 4)
        );
        sql.push_str(
            " ON CONFLICT (level, idx) DO UPDATE SET width = excluded.width, hashes = excluded.hashes \
             WHERE excluded.width > ledger_tiles.width",
        );
        let mut q = sqlx::query(&sql);
        for t in chunk {
            q = q
                .bind(i32::try_from(t.level).unwrap_or(i32::MAX))
                .bind(t.idx)
                .bind(i32::try_from(t.width).unwrap_or(i32::MAX))
                .bind(t.hashes.as_slice());
        }
        q.execute(&mut **tx).await?;
    }
    Ok(())
}
