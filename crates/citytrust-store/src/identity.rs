//! Identity rows: OpenID Connect sign-ins in flight, the external identities
//! linked to accounts, and agents' authorities (R-ACC-9).

use citytrust_model::access::parse_day;
use citytrust_model::account::{Authority, User};
use sqlx::Row;

use crate::{NewLogEntry, Result, Store, StoreError, append_entry, conflict, flag, json};

/// A sign-in started at a provider, as kept until its answer comes back.
#[derive(Clone, PartialEq, Eq)]
pub struct PendingLogin {
    pub provider: String,
    pub nonce: String,
    pub code_verifier: String,
    pub expires_at: i64,
}

impl std::fmt::Debug for PendingLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PendingLogin")
            .field("provider", &self.provider)
            .field("nonce", &"<hidden>")
            .field("code_verifier", &"<hidden>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

impl Store {
    pub async fn insert_pending_login(&self, state_hash: &str, login: &PendingLogin) -> Result<()> {
        sqlx::query(
            "INSERT INTO oidc_logins (state_hash, provider, nonce, code_verifier, expires_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(state_hash)
        .bind(&login.provider)
        .bind(&login.nonce)
        .bind(&login.code_verifier)
        .bind(login.expires_at)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Take (and so use up) the sign-in a `state` stands for.
    pub async fn take_pending_login(&self, state_hash: &str) -> Result<Option<PendingLogin>> {
        let row = sqlx::query(
            "DELETE FROM oidc_logins WHERE state_hash = $1 RETURNING provider, nonce, code_verifier, expires_at",
        )
        .bind(state_hash)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(PendingLogin {
                provider: r.try_get("provider")?,
                nonce: r.try_get("nonce")?,
                code_verifier: r.try_get("code_verifier")?,
                expires_at: r.try_get("expires_at")?,
            })
        })
        .transpose()
    }

    pub(crate) async fn purge_pending_logins(&self, now_unix: i64) -> Result<u64> {
        let r = sqlx::query("DELETE FROM oidc_logins WHERE expires_at <= $1")
            .bind(now_unix)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The account an identity at a provider signs in to; notes that it was seen.
    pub async fn external_identity(
        &self,
        issuer: &str,
        subject: &str,
        seen_at: &str,
    ) -> Result<Option<String>> {
        let row = sqlx::query(
            "SELECT username FROM external_identities WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        sqlx::query(
            "UPDATE external_identities SET last_seen_at = $3 WHERE issuer = $1 AND subject = $2",
        )
        .bind(issuer)
        .bind(subject)
        .bind(seen_at)
        .execute(&self.pool)
        .await?;
        Ok(Some(row.try_get("username")?))
    }

    /// A new account (no password: it signs in only through its provider)
    /// with the external identity that owns it, in one transaction. A taken
    /// username is a `Conflict`, so the caller can try another.
    pub async fn insert_external_user(
        &self,
        user: &User,
        provider: &str,
        issuer: &str,
        subject: &str,
    ) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO users (username, display_name, email, password_hash, is_administrator, is_trustee, \
             is_resident, disabled, created_at) VALUES ($1, $2, $3, NULL, $4, $5, $6, 0, $7)",
        )
        .bind(&user.username)
        .bind(&user.display_name)
        .bind(&user.email)
        .bind(flag(user.roles.contains(&citytrust_model::Role::Administrator)))
        .bind(flag(user.roles.contains(&citytrust_model::Role::Trustee)))
        .bind(flag(user.roles.contains(&citytrust_model::Role::Resident)))
        .bind(&user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("user '{}'", user.username)))?;
        sqlx::query(
            "INSERT INTO external_identities (issuer, subject, username, provider, created_at, last_seen_at) \
             VALUES ($1, $2, $3, $4, $5, $5)",
        )
        .bind(issuer)
        .bind(subject)
        .bind(&user.username)
        .bind(provider)
        .bind(&user.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("identity '{subject}' at {issuer}")))?;
        tx.commit().await?;
        Ok(())
    }

    /// The providers an account signs in through: (provider, issuer).
    pub async fn external_identities_of(&self, username: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query(
            "SELECT provider, issuer FROM external_identities WHERE username = $1 ORDER BY provider",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("provider")?, r.try_get("issuer")?)))
            .collect()
    }

    // ---- agents' authorities ----------------------------------------------

    /// Record an authority, with its log entry, in one transaction.
    pub async fn insert_authority(&self, a: &Authority, entry: &NewLogEntry<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query(
            "INSERT INTO authorities (id, agent, principal, body, starts_on, ends_on, revoked, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, 0, $7)",
        )
        .bind(&a.id)
        .bind(&a.agent)
        .bind(&a.principal)
        .bind(json(a)?)
        .bind(day(&a.starts_on)?)
        .bind(day(&a.ends_on)?)
        .bind(&a.created_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| conflict(e, format!("authority '{}'", a.id)))?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Mark an authority withdrawn, with its log entry, in one transaction.
    pub async fn revoke_authority(&self, a: &Authority, entry: &NewLogEntry<'_>) -> Result<()> {
        let mut tx = self.begin().await?;
        sqlx::query("UPDATE authorities SET body = $2, revoked = 1 WHERE id = $1")
            .bind(&a.id)
            .bind(json(a)?)
            .execute(&mut *tx)
            .await?;
        append_entry(&mut tx, entry).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn get_authority(&self, id: &str) -> Result<Option<Authority>> {
        let row = sqlx::query("SELECT body FROM authorities WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| parse(&r.try_get::<String, _>("body")?))
            .transpose()
    }

    /// An authority in force on `today` for `agent` to act for `principal`.
    pub async fn authority_in_force(
        &self,
        agent: &str,
        principal: &str,
        today: i64,
    ) -> Result<Option<Authority>> {
        let row = sqlx::query(
            "SELECT body FROM authorities WHERE agent = $1 AND principal = $2 AND revoked = 0 \
             AND starts_on <= $3 AND ends_on >= $3 ORDER BY created_at LIMIT 1",
        )
        .bind(agent)
        .bind(principal)
        .bind(today)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| parse(&r.try_get::<String, _>("body")?))
            .transpose()
    }

    /// Every authority an account holds or is subject to, newest first.
    pub async fn authorities_of(&self, username: &str) -> Result<Vec<Authority>> {
        let rows = sqlx::query(
            "SELECT body FROM authorities WHERE agent = $1 OR principal = $1 ORDER BY created_at DESC, id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?))
            .collect()
    }

    pub async fn list_authorities(&self) -> Result<Vec<Authority>> {
        let rows = sqlx::query("SELECT body FROM authorities ORDER BY created_at DESC, id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| parse(&r.try_get::<String, _>("body")?))
            .collect()
    }
}

fn parse<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt(format!("authority: {e}")))
}

fn day(text: &str) -> Result<i64> {
    parse_day(text).ok_or_else(|| StoreError::Corrupt(format!("authority: not a date: {text}")))
}
