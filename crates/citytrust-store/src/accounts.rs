//! Account rows: organisations, users and their memberships, groups, and
//! sessions and API tokens (stored as hashes only).

use super::*;

impl Store {
    // ---- organisations -------------------------------------------------

    pub async fn insert_organization(
        &self,
        org: &Organization,
        entry: &NewLogEntry<'_>,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO organizations (id, name, kind, description, url, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.kind.as_str())
        .bind(&org.description)
        .bind(&org.url)
        .bind(&org.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("organisation '{}'", org.id)))?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_organization(&self, id: &str) -> Result<Option<Organization>> {
        let row = sqlx::query(
            "SELECT id, name, kind, description, url, created_at FROM organizations WHERE id = $1",
        )
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| organization_from_row(&r)).transpose()
    }

    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        let rows = sqlx::query("SELECT id, name, kind, description, url, created_at FROM organizations ORDER BY name, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(organization_from_row).collect()
    }

    // ---- users -----------------------------------------------------------

    pub async fn insert_user(&self, user: &User, password_hash: Option<&str>) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (username, display_name, email, password_hash, is_administrator, is_trustee, \
             is_resident, disabled, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(password_hash)
        .bind(flag(user.roles.contains(&Role::Administrator)))
        .bind(flag(user.roles.contains(&Role::Trustee)))
        .bind(flag(user.roles.contains(&Role::Resident)))
        .bind(flag(user.disabled))
        .bind(&user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("user '{}'", user.username)))?;
        for org in &user.organization_ids {
            sqlx::query("INSERT INTO memberships (username, organization_id) VALUES ($1, $2)")
                .bind(&user.username)
                .bind(org)
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    /// Active trustees other than `except` (who may not vote on their own
    /// request), leaving out those whose recorded term does not cover `today`
    /// (YYYY-MM-DD): they do not vote.
    pub async fn count_trustees_except(&self, except: &str, today: &str) -> Result<i64> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM users u WHERE u.is_trustee = 1 AND u.disabled = 0 AND u.username <> $1 \
             AND NOT EXISTS (SELECT 1 FROM trustee_terms t WHERE t.username = u.username \
                             AND (t.starts_on > $2 OR t.ends_on < $2))",
        )
        .bind(except)
        .bind(today)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get::<i64, _>("n")?)
    }

    pub async fn get_user(&self, username: &str) -> Result<Option<StoredUser>> {
        let row = sqlx::query(
            "SELECT username, display_name, email, password_hash, is_administrator, is_trustee, is_resident, \
             disabled, created_at FROM users WHERE username = $1",
        )
        .bind(username)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let orgs = sqlx::query(
            "SELECT organization_id FROM memberships WHERE username = $1 ORDER BY organization_id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| r.try_get::<String, _>("organization_id"))
        .collect::<Result<Vec<_>, _>>()?;
        Ok(Some(StoredUser {
            password_hash: row.try_get("password_hash")?,
            user: user_from_row(&row, orgs)?,
        }))
    }

    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(
            "SELECT username, display_name, email, is_administrator, is_trustee, is_resident, disabled, created_at \
             FROM users ORDER BY username",
        )
        .fetch_all(&self.pool)
        .await?;
        let memberships = sqlx::query(
            "SELECT username, organization_id FROM memberships ORDER BY organization_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let username: String = row.try_get("username")?;
            let mut orgs = Vec::new();
            for m in &memberships {
                if m.try_get::<String, _>("username")? == username {
                    orgs.push(m.try_get("organization_id")?);
                }
            }
            out.push(user_from_row(row, orgs)?);
        }
        Ok(out)
    }

    /// Add a person to an organisation (idempotent).
    pub async fn add_membership(&self, username: &str, organization_id: &str) -> Result<()> {
        let exists = sqlx::query(
            "SELECT 1 AS one FROM memberships WHERE username = $1 AND organization_id = $2",
        )
        .bind(username)
        .bind(organization_id)
        .fetch_optional(&self.pool)
        .await?;
        if exists.is_none() {
            sqlx::query("INSERT INTO memberships (username, organization_id) VALUES ($1, $2)")
                .bind(username)
                .bind(organization_id)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// The members of one organisation.
    pub async fn organization_members(&self, organization_id: &str) -> Result<Vec<String>> {
        let rows = sqlx::query(
            "SELECT username FROM memberships WHERE organization_id = $1 ORDER BY username",
        )
        .bind(organization_id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| r.try_get("username"))
            .collect::<Result<_, _>>()?)
    }

    // ---- groups ------------------------------------------------------------

    pub async fn insert_group(&self, group: &Group, entry: &NewLogEntry<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("INSERT INTO org_groups (id, name, description, criteria, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(&group.id)
            .bind(&group.name)
            .bind(&group.description)
            .bind(&group.criteria)
            .bind(&group.created_at)
            .execute(&mut *tx)
            .await
            .map_err(|e| conflict(e, format!("group '{}'", group.id)))?;
        for org in &group.member_organization_ids {
            sqlx::query("INSERT INTO group_members (group_id, organization_id) VALUES ($1, $2)")
                .bind(&group.id)
                .bind(org)
                .execute(&mut *tx)
                .await?;
        }
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        let rows = sqlx::query(
            "SELECT id, name, description, criteria, created_at FROM org_groups ORDER BY name, id",
        )
        .fetch_all(&self.pool)
        .await?;
        let members = sqlx::query(
            "SELECT group_id, organization_id FROM group_members ORDER BY organization_id",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let id: String = r.try_get("id")?;
            let mut member_organization_ids = Vec::new();
            for m in &members {
                if m.try_get::<String, _>("group_id")? == id {
                    member_organization_ids.push(m.try_get("organization_id")?);
                }
            }
            out.push(Group {
                id,
                name: r.try_get("name")?,
                description: r.try_get("description")?,
                criteria: r.try_get("criteria")?,
                member_organization_ids,
                created_at: r.try_get("created_at")?,
            });
        }
        Ok(out)
    }

    // ---- sessions and API tokens -------------------------------------------

    pub async fn insert_session(
        &self,
        token_hash: &str,
        username: &str,
        csrf_token: &str,
        created_at: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO sessions (token_hash, username, csrf_token, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(token_hash)
        .bind(username)
        .bind(csrf_token)
        .bind(created_at)
        .bind(expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn get_session(&self, token_hash: &str) -> Result<Option<StoredCredential>> {
        let row = sqlx::query(
            "SELECT username, csrf_token, expires_at FROM sessions WHERE token_hash = $1",
        )
        .bind(token_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(StoredCredential {
                username: r.try_get("username")?,
                csrf_token: Some(r.try_get("csrf_token")?),
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, token_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
            .bind(token_hash)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn insert_api_token(
        &self,
        token_hash: &str,
        username: &str,
        created_at: &str,
        expires_at: i64,
    ) -> Result<()> {
        sqlx::query("INSERT INTO api_tokens (token_hash, username, created_at, expires_at) VALUES ($1, $2, $3, $4)")
            .bind(token_hash)
            .bind(username)
            .bind(created_at)
            .bind(expires_at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn get_api_token(&self, token_hash: &str) -> Result<Option<StoredCredential>> {
        let row = sqlx::query("SELECT username, expires_at FROM api_tokens WHERE token_hash = $1")
            .bind(token_hash)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(StoredCredential {
                username: r.try_get("username")?,
                csrf_token: None,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    /// Remove expired sessions and tokens; returns how many went.
    pub async fn purge_expired_credentials(&self, now_unix: i64) -> Result<u64> {
        let a = sqlx::query("DELETE FROM sessions WHERE expires_at <= $1")
            .bind(now_unix)
            .execute(&self.pool)
            .await?;
        let b = sqlx::query("DELETE FROM api_tokens WHERE expires_at <= $1")
            .bind(now_unix)
            .execute(&self.pool)
            .await?;
        let c = self.purge_pending_logins(now_unix).await?;
        Ok(a.rows_affected() + b.rows_affected() + c)
    }
}
