//! The catalogue's rows: datasets and their value-chain roles, the
//! catalogue revision, versions (with the subjects they hold), feedback and
//! quality rules.

use super::*;

/// The columns a [`StoredVersion`] is read from.
const VERSION_COLUMNS: &str = "dataset_id, version, input_format, row_count, rejected, bytes, sha256, \
     source_sha256, columns, quality, created_by, created_at, removed_at, removed_reason";

impl Store {
    // ---- the catalogue -------------------------------------------------------

    /// Insert a new catalogue entry (revision 1) and bump the catalogue revision.
    pub async fn insert_dataset(
        &self,
        dataset: &Dataset,
        created_by: Option<&str>,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let metadata = serde_json::to_string(&dataset.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO datasets (id, owner_organization_id, spectrum, title, metadata, created_by, created_at, \
             updated_at, revision) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&dataset.id)
        .bind(&dataset.metadata.owner_organization_id)
        .bind(dataset.metadata.spectrum.as_str())
        .bind(&dataset.metadata.title)
        .bind(&metadata)
        .bind(created_by)
        .bind(&dataset.created_at)
        .bind(&dataset.updated_at)
        .bind(dataset.revision)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("dataset '{}'", dataset.id)))?;
        write_roles(&mut tx, dataset).await?;
        bump_catalogue_revision(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Replace a catalogue entry if it is still at `expected_revision`.
    pub async fn update_dataset(
        &self,
        dataset: &Dataset,
        expected_revision: i64,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let metadata = serde_json::to_string(&dataset.metadata)
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE datasets SET owner_organization_id = $1, spectrum = $2, title = $3, metadata = $4, updated_at = $5, \
             revision = $6 WHERE id = $7 AND revision = $8",
        )
        .bind(&dataset.metadata.owner_organization_id)
        .bind(dataset.metadata.spectrum.as_str())
        .bind(&dataset.metadata.title)
        .bind(&metadata)
        .bind(&dataset.updated_at)
        .bind(dataset.revision)
        .bind(&dataset.id)
        .bind(expected_revision)
        .execute(&mut *tx)
        .await?;
        if done.rows_affected() != 1 {
            return Err(StoreError::StaleRevision(format!(
                "dataset '{}'",
                dataset.id
            )));
        }
        sqlx::query("DELETE FROM dataset_roles WHERE dataset_id = $1")
            .bind(&dataset.id)
            .execute(&mut *tx)
            .await?;
        write_roles(&mut tx, dataset).await?;
        bump_catalogue_revision(&mut tx).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_dataset(&self, id: &str) -> Result<Option<Dataset>> {
        let row = sqlx::query(
            "SELECT id, metadata, created_at, updated_at, revision FROM datasets WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| dataset_from_row(&r)).transpose()
    }

    /// Every catalogue entry, for building the search index.
    pub async fn list_datasets(&self) -> Result<Vec<Dataset>> {
        let rows = sqlx::query(
            "SELECT id, metadata, created_at, updated_at, revision FROM datasets ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dataset_from_row).collect()
    }

    /// Up to `limit` catalogue entries after `after` in id order: a page for
    /// exports that stream the whole catalogue without holding it.
    pub async fn datasets_after(&self, after: &str, limit: i64) -> Result<Vec<Dataset>> {
        let rows = sqlx::query(
            "SELECT id, metadata, created_at, updated_at, revision FROM datasets WHERE id > $1 ORDER BY id LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(dataset_from_row).collect()
    }

    /// How many changes the catalogue has seen; search indexes compare it to know they are current.
    pub async fn catalogue_revision(&self) -> Result<i64> {
        self.counter("catalogue_revision").await
    }
    /// Take the next version number of a dataset for an upload about to
    /// store its files: one more than any version recorded or claimed. Two
    /// nodes taking it at once: one gets it, the other a `Conflict` (take
    /// again).
    pub async fn claim_version(&self, dataset_id: &str, at: &str) -> Result<i64> {
        let row = sqlx::query(
            "INSERT INTO version_claims (dataset_id, version, claimed_at) \
             SELECT $1, COALESCE(MAX(n), 0) + 1, $2 FROM ( \
                 SELECT version AS n FROM dataset_versions WHERE dataset_id = $1 \
                 UNION ALL SELECT version AS n FROM version_claims WHERE dataset_id = $1) AS taken \
             RETURNING version",
        )
        .bind(dataset_id)
        .bind(at)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| conflict(e, format!("the next version of dataset '{dataset_id}'")))?;
        Ok(row.try_get("version")?)
    }

    /// Give up a claim (the upload failed; its files are gone).
    pub async fn release_version_claim(&self, dataset_id: &str, version: i64) -> Result<()> {
        sqlx::query("DELETE FROM version_claims WHERE dataset_id = $1 AND version = $2")
            .bind(dataset_id)
            .bind(version)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Claims taken at `cutoff` or later (uploads that may still be storing
    /// their files); older ones are removed — a crash's leftovers, whose
    /// files the caller sweeps.
    pub async fn live_version_claims(&self, cutoff: &str) -> Result<Vec<(String, i64)>> {
        sqlx::query("DELETE FROM version_claims WHERE claimed_at < $1")
            .bind(cutoff)
            .execute(&self.pool)
            .await?;
        let rows = sqlx::query("SELECT dataset_id, version FROM version_claims")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("dataset_id")?, r.try_get("version")?)))
            .collect()
    }

    /// Record a version (with the subjects it holds, for a personal dataset)
    /// and its log entry in one transaction, ending its number's claim.
    pub async fn insert_version(
        &self,
        v: &StoredVersion,
        subjects: &[String],
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dataset_versions (dataset_id, version, input_format, row_count, rejected, bytes, sha256, \
             source_sha256, columns, quality, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
        )
        .bind(&v.dataset_id)
        .bind(v.version)
        .bind(&v.input_format)
        .bind(v.rows)
        .bind(v.rejected)
        .bind(v.bytes)
        .bind(&v.sha256)
        .bind(&v.source_sha256)
        .bind(&v.columns)
        .bind(&v.quality)
        .bind(&v.created_by)
        .bind(&v.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("version {} of dataset '{}'", v.version, v.dataset_id)))?;
        sqlx::query("DELETE FROM version_claims WHERE dataset_id = $1 AND version = $2")
            .bind(&v.dataset_id)
            .bind(v.version)
            .execute(&mut *tx)
            .await?;
        residents::insert_subjects(&mut tx, &v.dataset_id, v.version, subjects).await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Record a report, with its log entry, in one transaction.
    pub async fn insert_feedback(&self, f: &StoredFeedback, entry: &NewLogEntry<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO dataset_feedback (id, dataset_id, version, column_name, row_number, description, \
             reported_by, reported_at, status) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&f.id)
        .bind(&f.dataset_id)
        .bind(f.version)
        .bind(&f.column_name)
        .bind(f.row_number)
        .bind(&f.description)
        .bind(&f.reported_by)
        .bind(&f.reported_at)
        .bind(&f.status)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("feedback '{}'", f.id)))?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Answer an open report (with its log entry); `false` when it was no longer open.
    pub async fn answer_feedback(
        &self,
        f: &StoredFeedback,
        entry: &NewLogEntry<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE dataset_feedback SET status = $1, response = $2, resolved_version = $3, answered_by = $4, \
             answered_at = $5 WHERE id = $6 AND status = 'open'",
        )
        .bind(&f.status)
        .bind(&f.response)
        .bind(f.resolved_version)
        .bind(&f.answered_by)
        .bind(&f.answered_at)
        .bind(&f.id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    /// A dataset's reports, oldest first.
    pub async fn list_feedback(&self, dataset_id: &str) -> Result<Vec<StoredFeedback>> {
        let rows = sqlx::query(
            "SELECT id, dataset_id, version, column_name, row_number, description, reported_by, reported_at, \
             status, response, resolved_version, answered_by, answered_at FROM dataset_feedback \
             WHERE dataset_id = $1 ORDER BY reported_at, id",
        )
        .bind(dataset_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(feedback_from_row).collect()
    }

    /// A dataset's versions, newest first (removed ones too).
    pub async fn list_versions(&self, dataset_id: &str) -> Result<Vec<StoredVersion>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM dataset_versions WHERE dataset_id = $1 ORDER BY version DESC"
        ))
        .bind(dataset_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(version_from_row).collect()
    }

    /// One version (removed or not), or the latest not removed when
    /// `version` is `None`.
    pub async fn get_version(
        &self,
        dataset_id: &str,
        version: Option<i64>,
    ) -> Result<Option<StoredVersion>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM dataset_versions WHERE dataset_id = $1 \
             AND (version = $2 OR ($2 < 0 AND removed_at IS NULL)) ORDER BY version DESC LIMIT 1"
        ))
        .bind(dataset_id)
        .bind(version.unwrap_or(-1))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| version_from_row(&r)).transpose()
    }

    /// The latest version not removed of each of `dataset_ids` that has one
    /// (any order).
    pub async fn latest_versions(&self, dataset_ids: &[String]) -> Result<Vec<StoredVersion>> {
        let mut out = Vec::new();
        for chunk in dataset_ids.chunks(500) {
            let sql = format!(
                "SELECT {VERSION_COLUMNS} FROM dataset_versions v WHERE dataset_id IN ({}) \
                 AND version = (SELECT MAX(version) FROM dataset_versions w WHERE w.dataset_id = v.dataset_id \
                 AND w.removed_at IS NULL)",
                self.backend.params(1, chunk.len())
            );
            let mut query = sqlx::query(&sql);
            for id in chunk {
                query = query.bind(id);
            }
            for row in query.fetch_all(&self.pool).await? {
                out.push(version_from_row(&row)?);
            }
        }
        Ok(out)
    }

    /// Every (dataset, version) pair that has files (not removed), for
    /// sweeping orphan files.
    pub async fn all_version_keys(&self) -> Result<Vec<(String, i64)>> {
        let rows = sqlx::query(
            "SELECT dataset_id, version FROM dataset_versions WHERE removed_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("dataset_id")?, r.try_get("version")?)))
            .collect()
    }

    /// Mark a version removed (`at`, `reason`) with its log entry, in one
    /// transaction: its subjects' index rows are marked erased (the rows are
    /// gone) and kept for "who used my data". `false` when it was removed
    /// already. The caller deletes the files after.
    pub async fn remove_version(
        &self,
        dataset_id: &str,
        version: i64,
        at: &str,
        reason: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<bool> {
        let mut tx = self.begin().await?;
        let done = sqlx::query(
            "UPDATE dataset_versions SET removed_at = $3, removed_reason = $4 \
             WHERE dataset_id = $1 AND version = $2 AND removed_at IS NULL",
        )
        .bind(dataset_id)
        .bind(version)
        .bind(at)
        .bind(reason)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if done == 0 {
            return Ok(false);
        }
        sqlx::query("UPDATE subject_index SET erased = 1 WHERE dataset_id = $1 AND version = $2")
            .bind(dataset_id)
            .bind(version)
            .execute(&mut *tx)
            .await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(true)
    }

    pub async fn quality_rules(&self, dataset_id: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT rules FROM dataset_quality_rules WHERE dataset_id = $1")
            .bind(dataset_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get("rules").map_err(StoreError::from))
            .transpose()
    }

    /// Replace a dataset's quality rules, logging the change.
    pub async fn set_quality_rules(
        &self,
        dataset_id: &str,
        rules: &str,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("DELETE FROM dataset_quality_rules WHERE dataset_id = $1")
            .bind(dataset_id)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO dataset_quality_rules (dataset_id, rules, updated_at) VALUES ($1, $2, $3)",
        )
        .bind(dataset_id)
        .bind(rules)
        .bind(entry.at)
        .execute(&mut *tx)
        .await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }
}
