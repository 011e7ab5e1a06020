//! Signed checkpoints: the log's commitment to its size and root, in the C2SP
//! tlog-checkpoint format, signed as a C2SP signed note with an Ed25519 key.
//!
//! The key's verifier string (`<name>+<key id>+<base64 of 0x01 ‖ public key>`)
//! is what `GET /ledger/key` publishes and what Go's `sumdb/note` and the Rust
//! `signed_note` crate read. The signing key is made from a 32-byte seed the
//! caller supplies: this crate draws no randomness.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use signed_note::{Note, Signer, StandardSigner, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::Hash;

/// Why a checkpoint could not be made or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("'{0}' cannot name a log key: it must be non-empty without spaces or '+'")]
    BadName(String),
    #[error("the verifier key is malformed")]
    BadVerifierKey,
    #[error("the note is malformed or its signature does not verify with the log's key")]
    BadSignature,
    #[error("the note's text is not a well-formed checkpoint")]
    Malformed,
    #[error("the checkpoint is for log '{found}', not '{expected}'")]
    WrongOrigin { expected: String, found: String },
}

/// A checkpoint whose signature has been checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The whole signed note as received.
    pub note: Vec<u8>,
}

/// The log's signing identity.
pub struct LogSigner {
    signer: StandardSigner,
    origin: String,
    verifier_key: String,
}

impl std::fmt::Debug for LogSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSigner")
            .field("origin", &self.origin)
            .field("verifier_key", &self.verifier_key)
            .finish()
    }
}

const ALG_ED25519: u8 = 1;

impl LogSigner {
    /// The signer for log `origin` (also the key's name) from a 32-byte Ed25519 seed.
    pub fn from_seed(origin: &str, seed: &[u8; 32]) -> Result<LogSigner, CheckpointError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(CheckpointError::BadName(origin.to_string()));
        }
        let signing = ed25519_dalek::SigningKey::from_bytes(seed);
        let public = [&[ALG_ED25519][..], signing.verifying_key().as_bytes()].concat();
        let id = signed_note::key_id(origin, &public);
        let private = [&[ALG_ED25519][..], seed.as_slice()].concat();
        let skey = format!("PRIVATE+KEY+{origin}+{id:08x}+{}", STANDARD.encode(private));
        let signer =
            StandardSigner::new(&skey).map_err(|_| CheckpointError::BadName(origin.to_string()))?;
        let verifier_key = signed_note::new_ed25519_verifier_key(origin, &signing.verifying_key());
        Ok(LogSigner {
            signer,
            origin: origin.to_string(),
            verifier_key,
        })
    }

    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// `<name>+<8 hex digits key id>+<base64 of 0x01 ‖ Ed25519 public key>`.
    pub fn verifier_key(&self) -> &str {
        &self.verifier_key
    }

    /// Sign a note whose text is `text` (which must end in a newline).
    pub fn sign_note(&self, text: &[u8]) -> Result<Vec<u8>, CheckpointError> {
        let mut note = Note::new(text, &[]).map_err(|_| CheckpointError::Malformed)?;
        note.add_sigs(&[&self.signer as &dyn Signer])
            .map_err(|_| CheckpointError::Malformed)?;
        Ok(note.to_bytes())
    }

    /// The signed checkpoint for a tree of `size` entries with root `root`.
    pub fn sign_checkpoint(&self, size: u64, root: &Hash) -> Result<Vec<u8>, CheckpointError> {
        let checkpoint = Checkpoint::new(&self.origin, size, tlog_tiles::Hash(*root), "")
            .map_err(|_| CheckpointError::Malformed)?;
        self.sign_note(&checkpoint.to_bytes())
    }
}

/// Check any note the log's key signed (a consent receipt, say) and return
/// its text.
pub fn open_note(note: &[u8], verifier_key: &str) -> Result<String, CheckpointError> {
    let verifier =
        StandardVerifier::new(verifier_key).map_err(|_| CheckpointError::BadVerifierKey)?;
    let parsed = Note::from_bytes(note).map_err(|_| CheckpointError::BadSignature)?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|_| CheckpointError::BadSignature)?;
    String::from_utf8(parsed.text().to_vec()).map_err(|_| CheckpointError::Malformed)
}

/// Check a signed checkpoint against the log's verifier key, and read it.
pub fn open_checkpoint(
    note: &[u8],
    verifier_key: &str,
) -> Result<VerifiedCheckpoint, CheckpointError> {
    let verifier =
        StandardVerifier::new(verifier_key).map_err(|_| CheckpointError::BadVerifierKey)?;
    let expected = verifier_key
        .split('+')
        .next()
        .unwrap_or_default()
        .to_string();
    let parsed = Note::from_bytes(note).map_err(|_| CheckpointError::BadSignature)?;
    parsed
        .verify(&VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|_| CheckpointError::BadSignature)?;
    let checkpoint =
        Checkpoint::from_bytes(parsed.text()).map_err(|_| CheckpointError::Malformed)?;
    if checkpoint.origin() != expected {
        return Err(CheckpointError::WrongOrigin {
            expected,
            found: checkpoint.origin().to_string(),
        });
    }
    Ok(VerifiedCheckpoint {
        origin: checkpoint.origin().to_string(),
        size: checkpoint.size(),
        root: checkpoint.hash().0,
        note: note.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // The example key and note of Go's golang.org/x/mod/sumdb/note documentation.
    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const SKEY_B64: &str = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const TEXT: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
    const SIGNED: &str = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n\n\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    fn peter() -> LogSigner {
        let key = STANDARD.decode(SKEY_B64).unwrap();
        assert_eq!(key[0], ALG_ED25519);
        LogSigner::from_seed("PeterNeumann", key[1..].try_into().unwrap()).unwrap()
    }

    #[test]
    fn keys_and_signatures_match_the_go_reference_byte_for_byte() {
        let signer = peter();
        assert_eq!(signer.verifier_key(), VKEY);
        assert_eq!(
            String::from_utf8(signer.sign_note(TEXT.as_bytes()).unwrap()).unwrap(),
            SIGNED
        );
    }

    #[test]
    fn a_checkpoint_round_trips_and_tampering_is_caught() {
        let signer = LogSigner::from_seed("citytrust.example/ledger", &[7u8; 32]).unwrap();
        let root = crate::leaf_hash(b"x");
        let note = signer.sign_checkpoint(42, &root).unwrap();
        let text = String::from_utf8(note.clone()).unwrap();
        assert!(text.starts_with("citytrust.example/ledger\n42\n"), "{text}");
        let opened = open_checkpoint(&note, signer.verifier_key()).unwrap();
        assert_eq!((opened.size, opened.root), (42, root));

        // A changed size, a different key, or another log's name are all refused.
        let forged = text.replacen("\n42\n", "\n43\n", 1);
        assert_eq!(
            open_checkpoint(forged.as_bytes(), signer.verifier_key()),
            Err(CheckpointError::BadSignature)
        );
        let other = LogSigner::from_seed("citytrust.example/ledger", &[8u8; 32]).unwrap();
        assert_eq!(
            open_checkpoint(&note, other.verifier_key()),
            Err(CheckpointError::BadSignature)
        );
        assert_eq!(
            open_checkpoint(&note, "garbage"),
            Err(CheckpointError::BadVerifierKey)
        );
        assert!(LogSigner::from_seed("has space", &[7u8; 32]).is_err());
    }
}
