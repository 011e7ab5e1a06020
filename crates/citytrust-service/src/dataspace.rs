//! The Dataspace Protocol (DSP 2025-1), provider side, first part: the
//! catalogue. Every shared dataset (not closed, not open — open data needs
//! no contract — not withdrawn, not a derivation awaiting re-assessment) is
//! a DSP `Dataset` whose ODRL `Offer`s say what the charter in force would
//! let an organisation outside the trust ask for: one offer per access
//! level, its `purpose` constraint listing the purposes of the trust's
//! taxonomy the charter does not refuse at that level (granted outright,
//! open for comment or put to the trustees — every request still goes
//! through the same decision as any other). A dataset no purpose may be
//! asked for at any level is not offered.
//!
//! Messages are JSON-LD in the compact form the DSP schemas describe, with
//! the specification's context named by its IRI (never fetched).

use std::sync::Arc;

use citytrust_model::AccessLevel;
use citytrust_model::catalogue::{Dataset, PublicationStatus, Spectrum};
use citytrust_policy::{RequestFacts, RequestOutcome};
use serde_json::{Value, json};

use crate::governance::{Who, facts, policy_error};
use crate::{Result, Service, ServiceError};

/// The DSP JSON-LD context every message names.
pub const DSP_CONTEXT: &str = "https://w3id.org/dspace/2025/1/context.jsonld";
/// The protocol version served.
pub const DSP_VERSION: &str = "2025-1";
/// Where the protocol's endpoints live under the trust's base URL.
pub const DSP_PATH: &str = "/dsp";
/// The transfer type offered: the consumer pulls over HTTP through the governed read path.
pub const HTTP_PULL: &str = "HttpData-PULL";

/// The levels a request can be made at (metadata needs none).
const REQUESTABLE: [AccessLevel; 6] = [
    AccessLevel::Index,
    AccessLevel::Aggregate,
    AccessLevel::DpAggregate,
    AccessLevel::Anonymised,
    AccessLevel::Pseudonymised,
    AccessLevel::Identified,
];

/// Whether a dataset is offered over the Dataspace Protocol.
pub fn offered(d: &Dataset) -> bool {
    let m = &d.metadata;
    !matches!(m.spectrum, Spectrum::Open | Spectrum::Closed)
        && matches!(
            m.publication_status,
            PublicationStatus::Published | PublicationStatus::Archived
        )
        && !m.derivation.as_ref().is_some_and(|x| x.needs_reassessment)
}

impl Service {
    /// `GET /.well-known/dspace-version`'s answer.
    pub fn dsp_versions(&self) -> Value {
        json!({"protocolVersions": [{
            "version": DSP_VERSION,
            "path": DSP_PATH,
            "binding": "HTTPS",
        }]})
    }

    /// The catalogue as a DSP `Catalog` (the answer to a `CatalogRequestMessage`).
    /// Made once per catalogue revision, charter version and purpose
    /// taxonomy: asking again costs nothing while none of them changes.
    pub async fn dsp_catalog(&self, base: &str) -> Result<Arc<Value>> {
        let revision = self.store.catalogue_revision().await?;
        let (version, charter) = self.charter_in_force().await?;
        let purposes = self.purposes().await?;
        let key = format!(
            "{revision}/{version}/{}/{base}",
            crate::accounts::sha256_hex(&serde_json::to_string(&purposes).unwrap_or_default())
        );
        if let Ok(cache) = self.dsp_catalog_cache.lock()
            && let Some((k, v)) = cache.as_ref()
            && *k == key
        {
            return Ok(v.clone());
        }
        let mut datasets = Vec::new();
        for d in self.store.list_datasets().await? {
            if !offered(&d) {
                continue;
            }
            let offers = offers(&charter, &purposes, &d, base)?;
            if !offers.is_empty() {
                datasets.push(dataset(&d, offers, base));
            }
        }
        let mut catalog = json!({
            "@context": [DSP_CONTEXT],
            "@id": format!("{base}{DSP_PATH}/catalog"),
            "@type": "Catalog",
            "participantId": base,
            "dct:title": "CityTrust shared data",
            "service": [data_service(base)],
        });
        if !datasets.is_empty() {
            catalog["dataset"] = Value::Array(datasets);
        }
        let catalog = Arc::new(catalog);
        if let Ok(mut cache) = self.dsp_catalog_cache.lock() {
            *cache = Some((key, catalog.clone()));
        }
        Ok(catalog)
    }

    /// One offered dataset (the answer to `GET /catalog/datasets/{id}`); a
    /// dataset that is not offered is not found.
    pub async fn dsp_dataset(&self, id: &str, base: &str) -> Result<Value> {
        let not_found = || ServiceError::NotFound(format!("dataset '{id}'"));
        let d = self.store.get_dataset(id).await?.ok_or_else(not_found)?;
        if !offered(&d) {
            return Err(not_found());
        }
        let (_, charter) = self.charter_in_force().await?;
        let purposes = self.purposes().await?;
        let offers = offers(&charter, &purposes, &d, base)?;
        if offers.is_empty() {
            return Err(not_found());
        }
        let mut v = dataset(&d, offers, base);
        if let Some(map) = v.as_object_mut() {
            map.insert("@context".into(), json!([DSP_CONTEXT]));
        }
        Ok(v)
    }
}

fn data_service(base: &str) -> Value {
    json!({
        "@id": format!("{base}{DSP_PATH}"),
        "@type": "DataService",
        "endpointURL": format!("{base}{DSP_PATH}"),
    })
}

fn dataset(d: &Dataset, offers: Vec<Value>, base: &str) -> Value {
    let m = &d.metadata;
    json!({
        "@id": d.id,
        "@type": "Dataset",
        "dct:title": m.title,
        "dct:description": m.description,
        "dcat:keyword": m.keywords,
        "dcat:landingPage": format!("{base}/datasets/{}", d.id),
        "hasPolicy": offers,
        "distribution": [{
            "@type": "Distribution",
            "format": HTTP_PULL,
            "accessService": format!("{base}{DSP_PATH}"),
        }],
    })
}

/// The offers the charter in force makes for `d` to an organisation outside the trust.
fn offers(
    charter: &citytrust_policy::Charter,
    purposes: &[citytrust_model::Purpose],
    d: &Dataset,
    base: &str,
) -> Result<Vec<Value>> {
    let outsider = Who::outsider();
    let mut out = Vec::new();
    for level in REQUESTABLE {
        let mut allowed = Vec::new();
        for p in purposes {
            let request = RequestFacts {
                purpose: &p.id,
                purpose_kind: p.kind.as_str(),
                commercial: p.commercial,
                level: level.rank(),
                row_level: level.is_row_level(),
                sharing: citytrust_model::Sharing::Systematic.as_str(),
                standing_agreement: false,
                outcome_report_overdue: false,
            };
            let outcome = outsider
                .with(|who| charter.decide_request(who, &facts(d), &request))
                .map_err(policy_error)?;
            if !matches!(outcome, RequestOutcome::Refused(_)) {
                allowed.push(p.id.clone());
            }
        }
        if allowed.is_empty() {
            continue;
        }
        out.push(json!({
            "@id": format!("{base}{DSP_PATH}/offers/{}/{}", d.id, level.as_str()),
            "@type": "Offer",
            "permission": [{
                "action": "use",
                "constraint": [
                    {"leftOperand": "purpose", "operator": "isAnyOf", "rightOperand": allowed},
                    {"leftOperand": format!("{base}{DSP_PATH}/vocab#accessLevel"), "operator": "eq", "rightOperand": level.as_str()},
                ],
            }],
        }));
    }
    Ok(out)
}

/// How long a participant token lives (seconds): long enough for one
/// message to cross, short enough that a copied one is soon worthless.
pub const TOKEN_LIFETIME_SECS: i64 = 300;
/// Clock skew tolerated between two nodes (seconds).
const TOKEN_SKEW_SECS: i64 = 60;

/// This trust's key as a Dataspace Protocol participant. It is derived
/// from the log's seed under a label of its own, so no message it signs
/// can be taken for a checkpoint and no new secret needs keeping.
pub(crate) struct ParticipantKey(ed25519_dalek::SigningKey);

impl ParticipantKey {
    pub(crate) fn derive(seed: &crate::ledger::LedgerSeed) -> ParticipantKey {
        use sha2::Digest;
        let mut h = sha2::Sha256::new();
        h.update(b"citytrust dataspace participant key v1\n");
        h.update(seed.0);
        ParticipantKey(ed25519_dalek::SigningKey::from_bytes(&h.finalize().into()))
    }

    /// The secret key's bytes, to key other secrets derived from it.
    pub(crate) fn secret_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// `ed25519:` and the public key in hexadecimal, as administrators pin it.
    pub(crate) fn public(&self) -> String {
        format!("ed25519:{}", hex::encode(self.0.verifying_key().as_bytes()))
    }
}

/// What a participant token says: a JWT (RFC 7519) signed with EdDSA.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TokenClaims {
    /// The sending participant (its public URL).
    pub iss: String,
    /// The participant it is for.
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: String,
    /// The sender's organisation the message is sent for, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// That organisation's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub org_name: Option<String>,
}

const TOKEN_HEADER: &str = r#"{"alg":"EdDSA","typ":"JWT"}"#;

/// Sign `claims` with `key` (compact JWS).
pub fn sign_token(key: &ed25519_dalek::SigningKey, claims: &TokenClaims) -> String {
    use base64::Engine;
    use ed25519_dalek::Signer;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let signing_input = format!(
        "{}.{}",
        b64.encode(TOKEN_HEADER),
        b64.encode(serde_json::to_vec(claims).unwrap_or_default())
    );
    let signature = key.sign(signing_input.as_bytes());
    format!("{signing_input}.{}", b64.encode(signature.to_bytes()))
}

/// The claims of `token` when `key` signed it (nothing else is checked).
fn verified_claims(key: &ed25519_dalek::VerifyingKey, token: &str) -> Option<TokenClaims> {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut parts = token.split('.');
    let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || token.len() > 4096 {
        return None;
    }
    let h: Value = serde_json::from_slice(&b64.decode(header).ok()?).ok()?;
    if h.get("alg").and_then(Value::as_str) != Some("EdDSA") {
        return None;
    }
    let signature: [u8; 64] = b64.decode(signature).ok()?.try_into().ok()?;
    key.verify_strict(
        format!("{header}.{claims}").as_bytes(),
        &ed25519_dalek::Signature::from_bytes(&signature),
    )
    .ok()?;
    serde_json::from_slice(&b64.decode(claims).ok()?).ok()
}

/// The claims of `token` before its signature is checked: only to find
/// which pinned key to check it with.
fn unverified_issuer(token: &str) -> Option<String> {
    use base64::Engine;
    let claims = token.split('.').nth(1)?;
    let v: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(claims)
            .ok()?,
    )
    .ok()?;
    v.get("iss").and_then(Value::as_str).map(str::to_string)
}

/// A participant whose signed token this trust checked: the remote
/// catalogue its key is pinned in, and the organisation it speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub catalogue_id: String,
    pub catalogue_name: String,
    pub participant_id: String,
    /// (id, name) of the sender's organisation, when the token names one.
    pub organization: Option<(String, String)>,
}

/// Whether URL `candidate` lies at or under `base`, compared as parsed URLs
/// (scheme, host, port, then whole path segments, after the parser
/// resolved `..` and its encodings), with no user, query or fragment. A
/// string prefix would let `https://b.example/x/../admin` pass for
/// `https://b.example/x`.
pub(crate) fn under(candidate: &str, base: &str) -> bool {
    let (Ok(c), Ok(b)) = (url::Url::parse(candidate), url::Url::parse(base)) else {
        return false;
    };
    if !matches!(c.scheme(), "http" | "https")
        || c.scheme() != b.scheme()
        || c.host_str() != b.host_str()
        || c.port_or_known_default() != b.port_or_known_default()
        || !c.username().is_empty()
        || c.password().is_some()
        || c.query().is_some()
        || c.fragment().is_some()
    {
        return false;
    }
    let segments = |u: &url::Url| -> Vec<String> {
        u.path_segments()
            .map(|s| s.filter(|x| !x.is_empty()).map(str::to_string).collect())
            .unwrap_or_default()
    };
    let (cs, bs) = (segments(&c), segments(&b));
    cs.len() >= bs.len() && cs[..bs.len()] == bs[..]
}

fn is_org_id(s: &str) -> bool {
    s.len() <= 40 && citytrust_model::validation::is_slug(s)
}

impl Service {
    /// The client every message and pull to another trust goes through:
    /// no redirects followed (a partner cannot send this trust elsewhere),
    /// bounded connects and reads (control messages add a total limit).
    pub(crate) fn dsp_http(&self) -> Result<&reqwest::Client> {
        if let Some(c) = self.dsp_client.get() {
            return Ok(c);
        }
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(10))
            .read_timeout(std::time::Duration::from_secs(60))
            // Header names as usually written (`Link`, `Content-Type`): some
            // receivers of notifications match them case-sensitively.
            .http1_title_case_headers()
            .build()
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
        Ok(self.dsp_client.get_or_init(|| client))
    }

    /// `GET /dsp/participant`: who this trust is in the dataspace, for
    /// partners' administrators to pin.
    pub fn dsp_participant(&self, base: &str) -> Value {
        json!({"participantId": base, "key": self.dsp_key.public()})
    }

    /// A token for a message from this trust (`base`) to participant `aud`.
    pub fn dsp_token(&self, base: &str, aud: &str, org: Option<(&str, &str)>) -> Result<String> {
        let now = self.now().unix_timestamp();
        Ok(sign_token(
            &self.dsp_key.0,
            &TokenClaims {
                iss: base.to_string(),
                aud: aud.to_string(),
                iat: now,
                exp: now + TOKEN_LIFETIME_SECS,
                jti: hex::encode(crate::accounts::random_bytes::<12>()?),
                sub: org.map(|(id, _)| id.to_string()),
                org_name: org.map(|(_, name)| name.to_string()),
            },
        ))
    }

    /// Who sent a message to this trust (`base`), from its `Authorization`
    /// header: a token signed with the key pinned for its issuer, for this
    /// trust, current. `None` for anything else — the protocol answers
    /// unauthorised callers as it answers unknown ids (404).
    pub async fn dsp_caller(
        &self,
        authorization: Option<&str>,
        base: &str,
    ) -> Result<Option<Caller>> {
        let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer ")) else {
            return Ok(None);
        };
        let Some(issuer) = unverified_issuer(token) else {
            return Ok(None);
        };
        let now = self.now().unix_timestamp();
        for c in self.store.list_remote_catalogues().await? {
            let Some(p) = &c.participant else { continue };
            if p.id != issuer {
                continue;
            }
            let Some(key) = p
                .key_bytes()
                .and_then(|k| ed25519_dalek::VerifyingKey::from_bytes(&k).ok())
            else {
                continue;
            };
            let Some(claims) = verified_claims(&key, token) else {
                continue;
            };
            let current = claims.iat <= now + TOKEN_SKEW_SECS
                && now <= claims.exp + TOKEN_SKEW_SECS
                && claims.exp - claims.iat <= 2 * TOKEN_LIFETIME_SECS;
            if claims.aud.trim_end_matches('/') != base.trim_end_matches('/') || !current {
                return Ok(None);
            }
            let organization = match claims.sub {
                Some(id) if is_org_id(&id) => {
                    let name = claims
                        .org_name
                        .map(|n| n.trim().chars().take(120).collect::<String>())
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| id.clone());
                    Some((id, name))
                }
                Some(_) => return Ok(None),
                None => None,
            };
            return Ok(Some(Caller {
                catalogue_id: c.id.clone(),
                catalogue_name: c.name.clone(),
                participant_id: p.id.clone(),
                organization,
            }));
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A callback or data address lies under a participant's URL as parsed
    /// URLs do, not as strings do.
    #[test]
    fn under_compares_parsed_urls_whole_segment_by_segment() {
        let base = "https://b.example/trust";
        for fine in [
            "https://b.example/trust",
            "https://b.example/trust/",
            "https://b.example/trust/dsp/callback",
            "https://b.example:443/trust/x",
        ] {
            assert!(under(fine, base), "{fine}");
        }
        for bad in [
            "https://b.example/trust/../admin",
            "https://b.example/trust/%2e%2e/admin",
            "https://b.example/trustee",
            "https://b.example.evil.com/trust",
            "https://b.example:8443/trust",
            "http://b.example/trust",
            "https://user@b.example/trust",
            "https://b.example/trust?x=1",
            "https://b.example/trust#x",
            "ftp://b.example/trust",
            "not a url",
        ] {
            assert!(!under(bad, base), "{bad}");
        }
    }

    #[test]
    fn tokens_verify_only_under_their_key_and_unchanged() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let claims = TokenClaims {
            iss: "https://a.example".into(),
            aud: "https://b.example".into(),
            iat: 1,
            exp: 301,
            jti: "j".into(),
            sub: Some("lab".into()),
            org_name: None,
        };
        let token = sign_token(&key, &claims);
        assert_eq!(verified_claims(&key.verifying_key(), &token), Some(claims));
        assert_eq!(verified_claims(&other.verifying_key(), &token), None);
        // Any change to the claims breaks the signature.
        let mut parts: Vec<&str> = token.split('.').collect();
        use base64::Engine;
        let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"https://a.example","aud":"https://b.example","iat":1,"exp":99999,"jti":"j","sub":"lab"}"#);
        parts[1] = &forged;
        assert_eq!(
            verified_claims(&key.verifying_key(), &parts.join(".")),
            None
        );
        // "alg": "none" is not EdDSA.
        let none = format!(
            "{}.{}.",
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            token.split('.').nth(1).unwrap()
        );
        assert_eq!(verified_claims(&key.verifying_key(), &none), None);
    }
}
