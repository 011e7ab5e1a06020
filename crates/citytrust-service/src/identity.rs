//! Identity beyond passwords (R-ACC-9): accounts that sign in through the
//! city's OpenID Connect providers, and agents acting for another person
//! under an authority an administrator has checked.
//!
//! The OpenID Connect protocol itself (redirects, the token exchange, the ID
//! token's signature) lives in the HTTP crate; this module keeps the state
//! that must survive between the redirect and the answer, and decides which
//! account an identity at a provider signs in to.

use citytrust_model::ValidationErrors;
use citytrust_model::access::{format_day, parse_day};
use citytrust_model::account::{Actor, Authority, NewAuthority, Role, User, is_username};
use citytrust_model::authz;
use citytrust_store::PendingLogin;

use crate::accounts::{random_hex, sha256_hex};
use crate::{Result, Service, ServiceError, rfc3339};

/// How long a sign-in at a provider may take, from the redirect to the answer.
const LOGIN_SECONDS: i64 = 600;

/// The secrets of a sign-in in flight, handed to the browser's redirect.
pub struct StartedLogin {
    /// Sent to the provider and echoed back; also kept in the browser's cookie.
    pub state: String,
    pub nonce: String,
    /// The PKCE verifier; only its SHA-256 goes to the provider.
    pub code_verifier: String,
}

impl std::fmt::Debug for StartedLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("StartedLogin(<hidden>)")
    }
}

/// Who a provider says signed in: from a verified ID token.
#[derive(Debug, Clone)]
pub struct ExternalProfile {
    /// The provider's id in the configuration.
    pub provider: String,
    pub issuer: String,
    pub subject: String,
    pub preferred_username: Option<String>,
    pub name: Option<String>,
    /// Only when the provider says it verified the address.
    pub verified_email: Option<String>,
    /// Roles a new account from this provider gets.
    pub roles: Vec<Role>,
}

impl Service {
    // ---- OpenID Connect sign-in ------------------------------------------

    /// Begin a sign-in at `provider`: fresh state, nonce and PKCE verifier,
    /// kept (by the state's hash) for ten minutes.
    pub async fn begin_external_sign_in(&self, provider: &str) -> Result<StartedLogin> {
        let started = StartedLogin {
            state: random_hex::<32>()?,
            nonce: random_hex::<32>()?,
            code_verifier: random_hex::<32>()?,
        };
        self.store
            .insert_pending_login(
                &sha256_hex(&started.state),
                &PendingLogin {
                    provider: provider.to_string(),
                    nonce: started.nonce.clone(),
                    code_verifier: started.code_verifier.clone(),
                    expires_at: self.now().unix_timestamp() + LOGIN_SECONDS,
                },
            )
            .await?;
        Ok(started)
    }

    /// Use up the sign-in `state` stands for. Unknown, used or expired
    /// states are refused: each answer from a provider is taken once.
    pub async fn finish_external_sign_in(&self, state: &str) -> Result<PendingLogin> {
        let login = self
            .store
            .take_pending_login(&sha256_hex(state))
            .await?
            .ok_or(ServiceError::ExpiredCredentials)?;
        if login.expires_at <= self.now().unix_timestamp() {
            return Err(ServiceError::ExpiredCredentials);
        }
        Ok(login)
    }

    /// The account a verified identity signs in to, made on first sign-in
    /// (with the provider's roles, no password, a username from the
    /// identity's preferred name). A disabled account is refused.
    pub async fn sign_in_external(&self, profile: &ExternalProfile) -> Result<User> {
        let now = rfc3339(self.now());
        if let Some(username) = self
            .store
            .external_identity(&profile.issuer, &profile.subject, &now)
            .await?
        {
            let user = self.active_user(&username).await?;
            tracing::info!(user = %user.username, provider = %profile.provider, "signed in through an identity provider");
            return Ok(user);
        }
        let base = username_from(profile);
        let display_name = profile
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(200).collect())
            .unwrap_or_else(|| base.clone());
        let mut roles = profile.roles.clone();
        roles.sort();
        roles.dedup();
        for n in 1..=50u32 {
            let username = if n == 1 {
                base.clone()
            } else {
                format!("{}-{n}", base.chars().take(58).collect::<String>())
            };
            let user = User {
                username,
                display_name: display_name.clone(),
                email: profile.verified_email.clone(),
                roles: roles.clone(),
                organization_ids: vec![],
                disabled: false,
                created_at: now.clone(),
            };
            match self
                .store
                .insert_external_user(&user, &profile.provider, &profile.issuer, &profile.subject)
                .await
            {
                Ok(()) => {
                    tracing::info!(user = %user.username, provider = %profile.provider, "account created at first sign-in through an identity provider");
                    return Ok(user);
                }
                Err(citytrust_store::StoreError::Conflict(what)) if what.starts_with("user ") => {
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(ServiceError::Internal(format!(
            "no free username near '{base}' for a new account"
        )))
    }

    /// The providers an account signs in through, as (provider, issuer).
    pub async fn external_identities_of(&self, username: &str) -> Result<Vec<(String, String)>> {
        Ok(self.store.external_identities_of(username).await?)
    }

    // ---- agents' authority ------------------------------------------------

    /// An administrator records an authority after checking its evidence.
    pub async fn create_authority(&self, actor: &Actor, new: NewAuthority) -> Result<Authority> {
        let Some(checked_by) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        authz::may_record_evidence(actor, "records an authority to act for another person")?;
        new.validate()?;
        let mut e = ValidationErrors::default();
        for (field, who) in [("agent", &new.agent), ("principal", &new.principal)] {
            match self.store.get_user(who).await? {
                Some(s) if !s.user.disabled => {}
                _ => e.push(field, format!("there is no active account '{who}'")),
            }
        }
        e.into_result()?;
        let authority = Authority {
            id: format!("auth-{}", random_hex::<8>()?),
            agent: new.agent,
            principal: new.principal,
            kind: new.kind,
            scope: new.scope.trim().to_string(),
            covers: {
                let mut c = new.covers.clone();
                c.sort_by_key(|a| a.as_str());
                c.dedup();
                c
            },
            evidence: new.evidence.trim().to_string(),
            checked_by: checked_by.to_string(),
            starts_on: new.starts_on,
            ends_on: new.ends_on,
            revoked_at: None,
            created_at: rfc3339(self.now()),
        };
        // The public log names the authority and its kind, never the people.
        let (body, at) = self.log_entry(
            "authority.granted",
            serde_json::json!({
                "authority": authority.id,
                "kind": authority.kind.as_str(),
                "covers": authority.covers.iter().map(|a| a.as_str()).collect::<Vec<_>>(),
                "starts_on": authority.starts_on,
                "ends_on": authority.ends_on,
                "by": "administrator",
            }),
        )?;
        self.store
            .insert_authority(
                &authority,
                &crate::ledger::new_entry("authority.granted", &body, &at),
            )
            .await?;
        tracing::info!(authority = %authority.id, kind = authority.kind.as_str(), "authority recorded");
        Ok(authority)
    }

    /// An administrator withdraws an authority; it stops counting at once.
    pub async fn revoke_authority(&self, actor: &Actor, id: &str) -> Result<Authority> {
        authz::may_record_evidence(actor, "withdraws an authority")?;
        let mut authority = self
            .store
            .get_authority(id)
            .await?
            .ok_or_else(|| ServiceError::NotFound(format!("authority '{id}'")))?;
        if authority.revoked_at.is_some() {
            return Ok(authority);
        }
        authority.revoked_at = Some(rfc3339(self.now()));
        let (body, at) = self.log_entry(
            "authority.revoked",
            serde_json::json!({"authority": authority.id, "kind": authority.kind.as_str(), "by": "administrator"}),
        )?;
        self.store
            .revoke_authority(
                &authority,
                &crate::ledger::new_entry("authority.revoked", &body, &at),
            )
            .await?;
        Ok(authority)
    }

    /// Authorities: all for an administrator, else those the actor holds or is subject to.
    pub async fn list_authorities(&self, actor: &Actor) -> Result<Vec<Authority>> {
        let Some(username) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        if authz::may_record_evidence(actor, "sees every authority").is_ok() {
            Ok(self.store.list_authorities().await?)
        } else {
            Ok(self.store.authorities_of(username).await?)
        }
    }

    /// `actor` acting for `principal`: refused unless an authority checked by
    /// an administrator is in force today (rule `no-authority`). Agents do not
    /// chain, and the principal's offices of administrator and trustee do not
    /// pass to the agent.
    pub async fn act_for(
        &self,
        actor: &Actor,
        principal: &str,
        area: citytrust_model::AuthorityArea,
    ) -> Result<Actor> {
        let Some(agent) = actor.username() else {
            return Err(ServiceError::Unauthenticated);
        };
        if actor.agent().is_some() {
            return Err(refuse_authority(
                "an agent acting for someone cannot act for a further person".into(),
            ));
        }
        if agent == principal {
            return Ok(actor.clone());
        }
        let today = self.today();
        let authority = if is_username(principal) {
            self.store
                .authority_in_force(agent, principal, today)
                .await?
        } else {
            None
        };
        let Some(authority) = authority else {
            return Err(refuse_authority(format!(
                "you hold no authority in force on {} to act for '{}'",
                format_day(today),
                principal.chars().take(64).collect::<String>()
            )));
        };
        debug_assert!(parse_day(&authority.ends_on).is_some_and(|d| d >= today));
        if !authority.covers.contains(&area) {
            return Err(ServiceError::Refused {
                rule: Some("outside-authority".into()),
                message: format!(
                    "your authority {} to act for '{}' does not cover {} (it covers: {})",
                    authority.id,
                    principal,
                    area.as_str(),
                    authority
                        .covers
                        .iter()
                        .map(|a| a.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        let principal = match self.store.get_user(principal).await? {
            Some(s) if !s.user.disabled => s.user,
            _ => {
                return Err(refuse_authority(format!(
                    "the account '{principal}' is not active"
                )));
            }
        };
        if authority.kind == citytrust_model::AuthorityKind::Guardian
            && !self.is_minor_today(&principal.username).await?
        {
            return Err(ServiceError::Refused {
                rule: Some("guardian-of-adult".into()),
                message: format!(
                    "a guardian acts only for someone under {}; '{}' is not (or their age is not recorded)",
                    self.settings.minor_age, principal.username
                ),
            });
        }
        let agent_user = self.active_user(agent).await?;
        Ok(Actor::on_behalf(&principal, &agent_user, &authority, area))
    }
}

fn refuse_authority(message: String) -> ServiceError {
    ServiceError::Refused {
        rule: Some("no-authority".into()),
        message,
    }
}

/// A username from what the provider says: the preferred username, else the
/// e-mail's local part, else "user"; reduced to the allowed characters.
fn username_from(profile: &ExternalProfile) -> String {
    let raw = profile
        .preferred_username
        .clone()
        .or_else(|| {
            profile
                .verified_email
                .as_deref()
                .and_then(|e| e.split('@').next())
                .map(str::to_string)
        })
        .unwrap_or_default();
    let mut name: String = raw
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    name = name
        .trim_start_matches(|c: char| !c.is_ascii_alphanumeric())
        .chars()
        .take(60)
        .collect();
    // `dsp.` names the accounts standing for dataspace participants.
    if name.starts_with("dsp.") {
        name = format!("u-{name}").chars().take(60).collect();
    }
    if is_username(&name) {
        name
    } else {
        "user".into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(preferred: Option<&str>, email: Option<&str>) -> ExternalProfile {
        ExternalProfile {
            provider: "city".into(),
            issuer: "https://id.example".into(),
            subject: "s".into(),
            preferred_username: preferred.map(str::to_string),
            name: None,
            verified_email: email.map(str::to_string),
            roles: vec![],
        }
    }

    #[test]
    fn usernames_come_from_the_identity_and_are_always_valid() {
        assert_eq!(
            username_from(&profile(Some("Marta.Puig"), None)),
            "marta.puig"
        );
        assert_eq!(
            username_from(&profile(None, Some("joan@example.org"))),
            "joan"
        );
        assert_eq!(
            username_from(&profile(Some("Ñúñez López"), None)),
            "ez-l-pez"
        );
        assert_eq!(username_from(&profile(Some("__"), None)), "user");
        assert_eq!(username_from(&profile(None, None)), "user");
        // The names of the stand-ins for other trusts are not anyone's.
        assert_eq!(
            username_from(&profile(Some("dsp.city-b"), None)),
            "u-dsp.city-b"
        );
        assert_eq!(
            username_from(&profile(None, Some("DSP.City-B@example.org"))),
            "u-dsp.city-b"
        );
        assert!(is_username(&username_from(&profile(
            Some(&"x".repeat(300)),
            None
        ))));
    }
}
