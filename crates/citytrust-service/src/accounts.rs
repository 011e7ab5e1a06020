//! Accounts: organisations, people and groups; password sign-in; browser
//! sessions and API bearer tokens.
//!
//! Passwords are hashed with Argon2id. Session and token secrets are random
//! 256-bit values given to the client once; the store keeps only their
//! SHA-256, so a copy of the database signs nobody in.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use citytrust_model::ValidationErrors;
use citytrust_model::account::{
    Actor, Group, NewGroup, NewOrganization, NewUser, Organization, User,
};
use citytrust_model::authz;
use sha2::{Digest, Sha256};

use crate::{Result, Service, ServiceError, rfc3339};

/// A credential handed to a client once.
#[derive(Clone)]
pub struct IssuedSecret {
    pub secret: String,
    pub expires_at: time::OffsetDateTime,
}

impl std::fmt::Debug for IssuedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSecret")
            .field("secret", &"<hidden>")
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// A signed-in browser session: who, and the token its forms must carry.
#[derive(Debug, Clone)]
pub struct Session {
    pub actor: Actor,
    pub user: User,
    pub csrf_token: String,
}

impl Service {
    // ---- organisations, people, groups ----------------------------------

    pub async fn create_organization(
        &self,
        actor: &Actor,
        new: NewOrganization,
    ) -> Result<Organization> {
        authz::may_administer(actor)?;
        new.validate()?;
        let org = Organization {
            id: new.id,
            name: new.name.trim().to_string(),
            kind: new.kind,
            description: new.description,
            url: new.url,
            created_at: rfc3339(self.now()),
        };
        let (body, at) = self.log_entry(
            "organization.created",
            serde_json::json!({"organization": org.id, "name": org.name, "kind": org.kind.as_str()}),
        )?;
        self.store
            .insert_organization(
                &org,
                &crate::ledger::new_entry("organization.created", &body, &at),
            )
            .await?;
        tracing::info!(organization = %org.id, by = actor.username().unwrap_or("-"), "organisation created");
        Ok(org)
    }

    pub async fn list_organizations(&self) -> Result<Vec<Organization>> {
        Ok(self.store.list_organizations().await?)
    }

    /// Every organisation, by id.
    pub async fn organizations_by_id(
        &self,
    ) -> Result<std::collections::HashMap<String, Organization>> {
        Ok(self
            .store
            .list_organizations()
            .await?
            .into_iter()
            .map(|o| (o.id.clone(), o))
            .collect())
    }

    pub async fn get_organization(&self, id: &str) -> Result<Organization> {
        self.store
            .get_organization(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("organisation '{id}'")))
    }

    pub async fn create_user(&self, actor: &Actor, new: NewUser) -> Result<User> {
        authz::may_administer(actor)?;
        self.insert_user(new).await
    }

    /// Create the first administrator of a fresh installation; refused once any account exists.
    pub async fn bootstrap_administrator(&self, new: NewUser) -> Result<User> {
        if self.store.user_count().await? > 0 {
            return Err(ServiceError::Forbidden(
                "accounts exist already; an administrator must create further accounts".into(),
            ));
        }
        let mut new = new;
        if !new.roles.contains(&citytrust_model::Role::Administrator) {
            new.roles.push(citytrust_model::Role::Administrator);
        }
        self.insert_user(new).await
    }

    /// Create an account without an authorisation check: for the demo loader and the CLI.
    pub async fn insert_user(&self, new: NewUser) -> Result<User> {
        new.validate()?;
        let mut e = ValidationErrors::default();
        for (i, org) in new.organization_ids.iter().enumerate() {
            if self.store.get_organization(org).await?.is_none() {
                e.push(
                    format!("organization_ids[{i}]"),
                    format!("there is no organisation '{org}'"),
                );
            }
        }
        e.into_result()?;
        let password = new.password.clone();
        let hash = tokio::task::spawn_blocking(move || hash_password(&password))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let mut roles = new.roles.clone();
        roles.sort();
        roles.dedup();
        let user = User {
            username: new.username,
            display_name: new.display_name.trim().to_string(),
            email: new.email,
            roles,
            organization_ids: new.organization_ids,
            disabled: false,
            created_at: rfc3339(self.now()),
        };
        self.store.insert_user(&user, Some(&hash)).await?;
        tracing::info!(user = %user.username, "account created");
        Ok(user)
    }

    pub async fn list_users(&self, actor: &Actor) -> Result<Vec<User>> {
        authz::may_administer(actor)?;
        Ok(self.store.list_users().await?)
    }

    pub async fn add_membership(
        &self,
        actor: &Actor,
        username: &str,
        organization_id: &str,
    ) -> Result<()> {
        authz::may_administer(actor)?;
        if self.store.get_user(username).await?.is_none() {
            return Err(ValidationErrors::single(
                "username",
                format!("there is no user '{username}'"),
            )
            .into());
        }
        if self
            .store
            .get_organization(organization_id)
            .await?
            .is_none()
        {
            return Err(ValidationErrors::single(
                "organization_id",
                format!("there is no organisation '{organization_id}'"),
            )
            .into());
        }
        Ok(self.store.add_membership(username, organization_id).await?)
    }

    pub async fn create_group(&self, actor: &Actor, new: NewGroup) -> Result<Group> {
        authz::may_administer(actor)?;
        new.validate()?;
        let mut e = ValidationErrors::default();
        for (i, org) in new.member_organization_ids.iter().enumerate() {
            if self.store.get_organization(org).await?.is_none() {
                e.push(
                    format!("member_organization_ids[{i}]"),
                    format!("there is no organisation '{org}'"),
                );
            }
        }
        e.into_result()?;
        let group = Group {
            id: new.id,
            name: new.name.trim().to_string(),
            description: new.description,
            criteria: new.criteria,
            member_organization_ids: new.member_organization_ids,
            created_at: rfc3339(self.now()),
        };
        let (body, at) = self.log_entry(
            "group.created",
            serde_json::json!({
                "group": group.id, "name": group.name, "criteria": group.criteria,
                "members": group.member_organization_ids,
            }),
        )?;
        self.store
            .insert_group(
                &group,
                &crate::ledger::new_entry("group.created", &body, &at),
            )
            .await?;
        Ok(group)
    }

    pub async fn list_groups(&self) -> Result<Vec<Group>> {
        Ok(self.store.list_groups().await?)
    }

    // ---- sign-in ------------------------------------------------------------

    /// Check a username and password. Unknown users cost as much time as wrong passwords.
    /// An account with too many recent failures is refused before any
    /// password is checked, and only a few checks run at once on a node.
    pub async fn authenticate(&self, username: &str, password: &str) -> Result<User> {
        self.sign_in_allowed(username)?;
        let _check = self.password_check_slot().await?;
        let stored = self.store.get_user(username).await?;
        let (hash, user) = match stored {
            Some(s) if !s.user.disabled => (s.password_hash.clone(), Some(s.user)),
            _ => (None, None),
        };
        let password = password.to_string();
        let ok = tokio::task::spawn_blocking(move || verify_password(hash.as_deref(), &password))
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        match (ok, user) {
            (true, Some(user)) => Ok(user),
            _ => {
                tracing::info!(user = %username.chars().take(64).collect::<String>(), "sign-in refused");
                self.sign_in_failed(username);
                Err(ServiceError::BadCredentials)
            }
        }
    }

    /// Exchange a username and password for an API bearer token.
    pub async fn issue_api_token(&self, username: &str, password: &str) -> Result<IssuedSecret> {
        let user = self.authenticate(username, password).await?;
        let secret = format!("ct_{}", random_hex::<32>()?);
        let now = self.now();
        let expires_at = now + time::Duration::seconds(self.settings.api_token_seconds);
        self.store
            .insert_api_token(
                &sha256_hex(&secret),
                &user.username,
                &rfc3339(now),
                expires_at.unix_timestamp(),
            )
            .await?;
        Ok(IssuedSecret { secret, expires_at })
    }

    /// The actor a bearer token acts as.
    pub async fn actor_for_token(&self, token: &str) -> Result<Actor> {
        let cred = self
            .store
            .get_api_token(&sha256_hex(token))
            .await?
            .ok_or(ServiceError::ExpiredCredentials)?;
        if cred.expires_at <= self.now().unix_timestamp() {
            return Err(ServiceError::ExpiredCredentials);
        }
        let user = self.active_user(&cred.username).await?;
        Ok(Actor::from_user(&user))
    }

    /// Start a browser session after a password sign-in.
    pub async fn start_session(&self, user: &User) -> Result<IssuedSecret> {
        let secret = random_hex::<32>()?;
        let csrf = random_hex::<32>()?;
        let now = self.now();
        let expires_at = now + time::Duration::seconds(self.settings.session_seconds);
        self.store
            .insert_session(
                &sha256_hex(&secret),
                &user.username,
                &csrf,
                &rfc3339(now),
                expires_at.unix_timestamp(),
            )
            .await?;
        Ok(IssuedSecret { secret, expires_at })
    }

    /// The session a cookie stands for, if it is live.
    pub async fn session(&self, secret: &str) -> Result<Session> {
        let cred = self
            .store
            .get_session(&sha256_hex(secret))
            .await?
            .ok_or(ServiceError::ExpiredCredentials)?;
        if cred.expires_at <= self.now().unix_timestamp() {
            return Err(ServiceError::ExpiredCredentials);
        }
        let user = self.active_user(&cred.username).await?;
        Ok(Session {
            actor: Actor::from_user(&user),
            user,
            csrf_token: cred.csrf_token.unwrap_or_default(),
        })
    }

    pub async fn end_session(&self, secret: &str) -> Result<()> {
        Ok(self.store.delete_session(&sha256_hex(secret)).await?)
    }

    pub async fn purge_expired_credentials(&self) -> Result<u64> {
        Ok(self
            .store
            .purge_expired_credentials(self.now().unix_timestamp())
            .await?)
    }

    pub async fn get_user(&self, username: &str) -> Result<User> {
        self.active_user(username).await
    }

    pub(crate) async fn active_user(&self, username: &str) -> Result<User> {
        match self.store.get_user(username).await? {
            Some(s) if !s.user.disabled => Ok(s.user),
            _ => Err(ServiceError::ExpiredCredentials),
        }
    }
}

fn hash_password(password: &str) -> Result<String> {
    let salt_bytes = random_bytes::<16>()?;
    let salt =
        SaltString::encode_b64(&salt_bytes).map_err(|e| ServiceError::Internal(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| ServiceError::Internal(e.to_string()))
}

/// A fixed Argon2 hash verified against when the user is unknown, so timing does not reveal accounts.
const DECOY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$pm2hTMu6/mbqAj3SJGsjKDvMPnqRvYvt53BfgcN/q+4";

fn verify_password(hash: Option<&str>, password: &str) -> bool {
    let real = hash.is_some();
    let Ok(parsed) = PasswordHash::new(hash.unwrap_or(DECOY_HASH)) else {
        return false;
    };
    let ok = Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    ok && real
}

pub(crate) fn random_bytes<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|e| ServiceError::Internal(format!("random source: {e}")))?;
    Ok(buf)
}

pub(crate) fn random_hex<const N: usize>() -> Result<String> {
    Ok(hex::encode(random_bytes::<N>()?))
}

pub(crate) fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

/// A fresh unguessable token for a form that is shown before anyone signs in
/// (the sign-in form's double-submit CSRF token).
pub fn new_form_token() -> Result<String> {
    random_hex::<16>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_verify_only_against_their_hash() {
        let h = hash_password("correct horse battery").unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(verify_password(Some(&h), "correct horse battery"));
        assert!(!verify_password(Some(&h), "correct horse battery!"));
        assert!(
            !verify_password(None, "anything"),
            "unknown users never verify"
        );
        assert!(!verify_password(Some("not a hash"), "x"));
    }

    #[test]
    fn hashes_are_salted() {
        assert_ne!(
            hash_password("same password").unwrap(),
            hash_password("same password").unwrap()
        );
    }
}
