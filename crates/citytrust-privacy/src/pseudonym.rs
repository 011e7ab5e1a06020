//! Keyed pseudonyms particular to one agreement (R-PRV-1).
//!
//! A trust-wide secret (kept server-side, never logged, rotatable: each has
//! an id) derives one key per agreement; a value's pseudonym is an HMAC of it
//! under that key. So a data user's extract is consistent with itself (the
//! same resident has the same pseudonym in every read under the agreement)
//! but two data users, or one under two agreements, cannot link their
//! extracts, and no one without the secret can reverse or recompute one.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// A version of the trust's pseudonym secret.
#[derive(Clone)]
pub struct PseudonymSecret {
    /// The version's id (goes into pseudonyms and log entries; not secret).
    pub id: String,
    secret: [u8; 32],
}

impl std::fmt::Debug for PseudonymSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PseudonymSecret")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl PseudonymSecret {
    pub fn new(id: impl Into<String>, secret: [u8; 32]) -> PseudonymSecret {
        PseudonymSecret {
            id: id.into(),
            secret,
        }
    }

    /// A key derived from the secret for another use (`label` names it):
    /// HMAC-SHA-256 of the label under the secret.
    pub fn derive(&self, label: &str) -> [u8; 32] {
        let mut mac = keyed(&self.secret);
        mac.update(b"citytrust derived key v1\0");
        mac.update(label.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// The pseudonymiser of one agreement (or any other scope the caller names).
    pub fn for_scope(&self, scope: &str) -> Pseudonymiser {
        let mut mac = keyed(&self.secret);
        mac.update(b"citytrust pseudonym scope v1\0");
        mac.update(scope.as_bytes());
        let key: [u8; 32] = mac.finalize().into_bytes().into();
        Pseudonymiser {
            key,
            prefix: format!("{}-", self.id),
        }
    }
}

fn keyed(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length.
    match HmacSha256::new_from_slice(key) {
        Ok(mac) => mac,
        Err(_) => unreachable_key(),
    }
}

#[allow(clippy::panic)]
fn unreachable_key() -> ! {
    panic!("HMAC-SHA-256 accepts keys of every length")
}

/// Makes the pseudonyms of one scope.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: [u8; 32],
    prefix: String,
}

impl Pseudonymiser {
    /// The pseudonym of `value` in `domain` (e.g. the subject-key column's
    /// name; the same domain in two datasets gives the same pseudonym, so
    /// extracts under one agreement still join).
    pub fn pseudonym(&self, domain: &str, value: &str) -> String {
        let mut mac = keyed(&self.key);
        mac.update(domain.as_bytes());
        mac.update(b"\0");
        mac.update(value.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut out = String::with_capacity(self.prefix.len() + 26);
        out.push_str(&self.prefix);
        // 128 bits in Crockford base32 (26 characters)
        let bits = u128::from_be_bytes(digest[..16].try_into().unwrap_or([0; 16]));
        const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";
        for i in (0..26).rev() {
            out.push(ALPHABET[((bits >> (i * 5)) & 31) as usize] as char);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_within_an_agreement_different_across() {
        let secret = PseudonymSecret::new("k1", [7; 32]);
        let a = secret.for_scope("agreement-1");
        let b = secret.for_scope("agreement-2");
        let p = a.pseudonym("household", "H0012");
        assert_eq!(p, a.pseudonym("household", "H0012"));
        assert!(p.starts_with("k1-") && p.len() == 3 + 26, "{p}");
        assert_ne!(p, b.pseudonym("household", "H0012"));
        assert_ne!(p, a.pseudonym("household", "H0013"));
        assert_ne!(p, a.pseudonym("meter", "H0012"));
        // a rotated secret gives new pseudonyms
        let rotated = PseudonymSecret::new("k2", [8; 32]).for_scope("agreement-1");
        assert_ne!(p[3..], rotated.pseudonym("household", "H0012")[3..]);
        // the secret never prints
        assert!(!format!("{secret:?}").contains('7'));
    }
}
