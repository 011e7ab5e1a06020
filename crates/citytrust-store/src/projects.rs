//! Sharing projects' rows: the project document (its edits conditional on
//! the revision read, so two editors cannot overwrite each other) and its
//! documents' bytes, each stored with its log entry in one transaction.

use citytrust_model::projects::Project;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{NewLogEntry, Result, Store, StoreError, append_entry, conflict, json};

fn project_from_row(r: &AnyRow) -> Result<Project> {
    let mut p: Project = serde_json::from_str(&r.try_get::<String, _>("body")?)
        .map_err(|e| StoreError::Corrupt(format!("project: {e}")))?;
    p.revision = r.try_get("revision")?;
    Ok(p)
}

impl Store {
    /// Store a new project (revision 1) with its log entry.
    pub async fn insert_project(&self, p: &Project, entry: &NewLogEntry<'_>) -> Result<Project> {
        let mut tx = self.begin().await?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = p.clone();
        doc.log_entries.push(idx);
        doc.revision = 1;
        sqlx::query(
            "INSERT INTO projects (id, created_at, stage, lead_organization_id, revision, body) \
             VALUES ($1, $2, $3, $4, 1, $5)",
        )
        .bind(&doc.id)
        .bind(&doc.created_at)
        .bind(doc.stage.as_str())
        .bind(&doc.lead_organization_id)
        .bind(json(&doc)?)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("project '{}'", doc.id)))?;
        tx.commit().await?;
        Ok(doc)
    }

    pub async fn get_project(&self, id: &str) -> Result<Option<Project>> {
        let row = sqlx::query("SELECT body, revision FROM projects WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(project_from_row).transpose()
    }

    /// Every project, newest first.
    pub async fn list_projects(&self) -> Result<Vec<Project>> {
        let rows = sqlx::query("SELECT body, revision FROM projects ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(project_from_row).collect()
    }

    /// Save a project's new state with its log entry (and a document's bytes,
    /// when one is added), only if it is still at `expected` revision.
    /// `None` back: someone changed it meanwhile.
    pub async fn update_project(
        &self,
        p: &Project,
        expected: i64,
        entry: &NewLogEntry<'_>,
        document: Option<(&str, &str, i64, &[u8])>,
    ) -> Result<Option<Project>> {
        let mut tx = self.begin().await?;
        let Some(row) = sqlx::query(
            "UPDATE projects SET revision = revision + 1, stage = $2 WHERE id = $1 AND revision = $3 \
             RETURNING revision",
        )
        .bind(&p.id)
        .bind(p.stage.as_str())
        .bind(expected)
        .fetch_optional(&mut *tx)
        .await?
        else {
            return Ok(None);
        };
        let revision: i64 = row.try_get("revision")?;
        let idx = append_entry(&mut tx, entry).await?;
        let mut doc = p.clone();
        doc.revision = revision;
        doc.log_entries.push(idx);
        if let Some((doc_id, name, version, bytes)) = document {
            if let Some(d) = doc.documents.iter_mut().find(|d| d.id == doc_id) {
                d.log_entry = idx;
            }
            sqlx::query(
                "INSERT INTO project_documents (id, project_id, name, version, content) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(doc_id)
            .bind(&doc.id)
            .bind(name)
            .bind(version)
            .bind(bytes.to_vec())
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("version {version} of '{name}'")))?;
        }
        if let Some(last) = doc.sign_offs.last_mut()
            && last.log_entry == 0
        {
            last.log_entry = idx;
        }
        sqlx::query("UPDATE projects SET body = $2 WHERE id = $1")
            .bind(&doc.id)
            .bind(json(&doc)?)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(doc))
    }

    /// A document's bytes.
    pub async fn project_document(
        &self,
        project_id: &str,
        doc_id: &str,
    ) -> Result<Option<Vec<u8>>> {
        let row =
            sqlx::query("SELECT content FROM project_documents WHERE project_id = $1 AND id = $2")
                .bind(project_id)
                .bind(doc_id)
                .fetch_optional(&self.pool)
                .await?;
        Ok(row
            .map(|r| r.try_get::<Vec<u8>, _>("content"))
            .transpose()?)
    }
}
