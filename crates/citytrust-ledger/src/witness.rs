//! A transparency-log witness's protocol (C2SP tlog-witness and
//! tlog-cosignature, Ed25519 `cosignature/v1`): reading an `add-checkpoint`
//! request, deciding it against the newest checkpoint the witness cosigned
//! for that log, and cosigning.
//!
//! No IO and no clock: the caller keeps the witness's state (and advances it
//! atomically) and supplies the time of each cosignature.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use ed25519_dalek::{Signer as _, Verifier as _};
use sha2::{Digest, Sha256};
use signed_note::{Note, StandardVerifier, VerifierList};
use tlog_tiles::Checkpoint;

use crate::{HASH_SIZE, Hash};

/// A cosigner's signature type for Ed25519 `cosignature/v1` (its key ID and
/// verifier keys use it where a log's key uses 0x01).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Most consistency-proof lines a request may carry.
pub const MAX_PROOF_LINES: usize = 63;

/// Why a witness will not cosign, each with the status C2SP tlog-witness
/// gives it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// 400: the body is not an `old` line, proof lines, an empty line and a checkpoint.
    #[error("the request is malformed: {0}")]
    Malformed(String),
    /// 404: the witness does not witness a log of this origin.
    #[error("this witness does not witness the log '{0}'")]
    UnknownLog(String),
    /// 403: no signature of the log's key, or one that does not verify.
    #[error("the checkpoint carries no valid signature of the log's key")]
    BadSignature,
    /// 400: the old size is larger than the checkpoint's.
    #[error("the old size {old} is larger than the checkpoint's size {size}")]
    OldBeyondSize { old: u64, size: u64 },
    /// 409: the old size is not the size the witness last cosigned.
    #[error("the witness last cosigned size {latest}, not {old}")]
    Conflict { old: u64, latest: u64 },
    /// 422: the checkpoint does not extend the one the witness cosigned.
    #[error("the checkpoint is not consistent with the one last cosigned: {0}")]
    Inconsistent(String),
}

impl Refusal {
    /// The HTTP status the specification gives this refusal.
    pub fn status(&self) -> u16 {
        match self {
            Refusal::Malformed(_) | Refusal::OldBeyondSize { .. } => 400,
            Refusal::BadSignature => 403,
            Refusal::UnknownLog(_) => 404,
            Refusal::Conflict { .. } => 409,
            Refusal::Inconsistent(_) => 422,
        }
    }
}

/// An `add-checkpoint` request, read but not yet checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    pub old_size: u64,
    pub proof: Vec<Hash>,
    /// The signed checkpoint note, as sent.
    pub note: Vec<u8>,
}

fn malformed(why: impl Into<String>) -> Refusal {
    Refusal::Malformed(why.into())
}

/// Read an `add-checkpoint` body: `old N`, up to 63 base64 hash lines, an
/// empty line, then the signed checkpoint.
pub fn parse_add_checkpoint(body: &[u8]) -> Result<AddCheckpoint, Refusal> {
    let mut rest = body;
    let mut next_line = |what: &str| -> Result<&[u8], Refusal> {
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| malformed(format!("{what} does not end in a newline")))?;
        let line = &rest[..end];
        rest = &rest[end + 1..];
        Ok(line)
    };
    let old = next_line("the old size line")?;
    let old = std::str::from_utf8(old)
        .ok()
        .and_then(|l| l.strip_prefix("old "))
        .ok_or_else(|| malformed("the first line must be 'old <size>'"))?;
    let old_size = decimal(old)
        .ok_or_else(|| malformed("the old size must be a decimal number without leading zeroes"))?;
    let mut proof = Vec::new();
    loop {
        let line = next_line("a proof line")?;
        if line.is_empty() {
            break;
        }
        if proof.len() == MAX_PROOF_LINES {
            return Err(malformed(format!(
                "more than {MAX_PROOF_LINES} consistency proof lines"
            )));
        }
        let hash = STANDARD
            .decode(line)
            .ok()
            .and_then(|h| Hash::try_from(h.as_slice()).ok())
            .ok_or_else(|| {
                malformed(format!(
                    "proof line {} is not a base64 {HASH_SIZE}-byte hash",
                    proof.len() + 1
                ))
            })?;
        proof.push(hash);
    }
    if rest.is_empty() {
        return Err(malformed("no checkpoint after the empty line"));
    }
    Ok(AddCheckpoint {
        old_size,
        proof,
        note: rest.to_vec(),
    })
}

/// An ASCII decimal with no leading zeroes (`0` itself allowed).
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

/// A log this witness witnesses: its origin and its verifier key(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WitnessedLog {
    pub origin: String,
    pub verifier_keys: Vec<String>,
}

impl WitnessedLog {
    /// Read `ORIGIN=VERIFIER_KEY` (how an operator names a log to witness):
    /// the key must be an Ed25519 signed-note verifier key named as the origin.
    pub fn parse(text: &str) -> Result<WitnessedLog, String> {
        let (origin, key) = text
            .split_once('=')
            .ok_or_else(|| format!("{text:?}: expected ORIGIN=VERIFIER_KEY"))?;
        if StandardVerifier::new(key).is_err() {
            return Err(format!(
                "{text:?}: '{key}' is not a log's verifier key (<name>+<key id>+<base64 key>)"
            ));
        }
        let name = key.split('+').next().unwrap_or_default();
        if name != origin {
            return Err(format!(
                "{text:?}: the verifier key is named '{name}', not the log's origin '{origin}'"
            ));
        }
        Ok(WitnessedLog {
            origin: origin.to_string(),
            verifier_keys: vec![key.to_string()],
        })
    }
}

/// The newest checkpoint a witness cosigned for one log (size 0 and the
/// empty tree's root when it never did).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Latest {
    pub size: u64,
    pub root: Hash,
}

/// A checkpoint the witness may cosign: the request passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The checkpoint's text (the note's body, without signatures).
    pub text: Vec<u8>,
    /// The log's signature lines that verified (others are dropped).
    pub log_signatures: Vec<u8>,
}

impl Accepted {
    /// The checkpoint as the witness keeps and serves it: the text, the
    /// log's verified signatures, then `cosignature` (a signature line).
    pub fn cosigned_note(&self, cosignature: &str) -> Vec<u8> {
        let mut note = self.text.clone();
        note.push(b'\n');
        note.extend_from_slice(&self.log_signatures);
        note.extend_from_slice(cosignature.as_bytes());
        note
    }
}

/// The origin a checkpoint note names (its first line), before any check:
/// which log's state and keys to use.
pub fn origin_of(note: &[u8]) -> Result<String, Refusal> {
    let end = note
        .iter()
        .position(|&b| b == b'\n')
        .ok_or_else(|| malformed("the checkpoint has no origin line"))?;
    let origin = std::str::from_utf8(&note[..end])
        .map_err(|_| malformed("the checkpoint's origin is not UTF-8"))?;
    if origin.is_empty() {
        return Err(malformed("the checkpoint's origin is empty"));
    }
    Ok(origin.to_string())
}

/// Decide a request for `log` against the witness's `latest` for it. The
/// caller must then advance its state from `latest` to the accepted size and
/// root *only if it is still `latest`* (otherwise answer
/// [`Refusal::Conflict`] with the size it holds), and cosign.
pub fn decide(
    request: &AddCheckpoint,
    log: &WitnessedLog,
    latest: &Latest,
) -> Result<Accepted, Refusal> {
    // The log's signature first: nothing else is looked at for a note no
    // trusted key signed. Signatures of unknown keys are ignored.
    let mut verifiers: Vec<Box<dyn signed_note::Verifier>> = Vec::new();
    for key in &log.verifier_keys {
        if let Ok(v) = StandardVerifier::new(key) {
            verifiers.push(Box::new(v));
        }
    }
    let note = Note::from_bytes(&request.note).map_err(|_| {
        malformed("the checkpoint is not a signed note (text, an empty line, signature lines)")
    })?;
    let (verified, _unknown) = note
        .verify(&VerifierList::new(verifiers))
        .map_err(|_| Refusal::BadSignature)?;
    let checkpoint =
        Checkpoint::from_bytes(note.text()).map_err(|_| malformed("not a checkpoint"))?;
    if checkpoint.origin() != log.origin {
        return Err(Refusal::UnknownLog(checkpoint.origin().to_string()));
    }
    let (size, root) = (checkpoint.size(), checkpoint.hash().0);
    let old = request.old_size;
    if old > size {
        return Err(Refusal::OldBeyondSize { old, size });
    }
    if old != latest.size {
        return Err(Refusal::Conflict {
            old,
            latest: latest.size,
        });
    }
    if size == 0 && root != crate::empty_root() {
        return Err(Refusal::Inconsistent(
            "a checkpoint of size 0 must have the empty tree's root".into(),
        ));
    }
    let proof: Vec<&[u8]> = request.proof.iter().map(|h| h.as_slice()).collect();
    if old == 0 {
        if !proof.is_empty() {
            return Err(Refusal::Inconsistent(
                "the old size is 0, so the proof must be empty".into(),
            ));
        }
    } else if old == size {
        if !proof.is_empty() || root != latest.root {
            return Err(Refusal::Inconsistent(format!(
                "a checkpoint of size {size} with a different root than the one cosigned"
            )));
        }
    } else {
        crate::verify_consistency(old, size, &proof, &latest.root, &root)
            .map_err(|e| Refusal::Inconsistent(e.to_string()))?;
    }
    Ok(Accepted {
        origin: log.origin.clone(),
        size,
        root,
        text: note.text().to_vec(),
        log_signatures: verified.iter().flat_map(|s| s.to_bytes()).collect(),
    })
}

/// A witness's signing identity (its own key, never the log's).
pub struct Cosigner {
    name: String,
    key: ed25519_dalek::SigningKey,
    id: u32,
}

impl std::fmt::Debug for Cosigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cosigner")
            .field("name", &self.name)
            .field("key_id", &format_args!("{:08x}", self.id))
            .finish()
    }
}

/// `SHA-256(name ‖ "\n" ‖ 0x04 ‖ public key)[:4]`, big-endian.
pub fn cosigner_key_id(name: &str, public: &[u8; 32]) -> u32 {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([ALG_COSIGNATURE_V1])
        .chain_update(public)
        .finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// The message an Ed25519 `cosignature/v1` signs: the header line, the
/// time line, then the checkpoint's text.
pub fn cosigned_message(text: &[u8], timestamp: u64) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {timestamp}\n").into_bytes();
    message.extend_from_slice(text);
    message
}

impl Cosigner {
    /// The cosigner `name` (a schema-less URL, as a key name) from a 32-byte seed.
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Cosigner, Refusal> {
        if !signed_note::is_key_name_valid(name) {
            return Err(malformed(format!(
                "'{name}' cannot name a witness key: it must be non-empty without spaces or '+'"
            )));
        }
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let id = cosigner_key_id(name, key.verifying_key().as_bytes());
        Ok(Cosigner {
            name: name.to_string(),
            key,
            id,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `<name>+<key id>+<base64 of 0x04 ‖ public key>` (a C2SP vkey).
    pub fn verifier_key(&self) -> String {
        let public = [
            &[ALG_COSIGNATURE_V1][..],
            self.key.verifying_key().as_bytes(),
        ]
        .concat();
        format!("{}+{:08x}+{}", self.name, self.id, STANDARD.encode(public))
    }

    /// The signature line (`— <name> base64(key id ‖ timestamp ‖ signature)\n`)
    /// cosigning the checkpoint `text` at `timestamp` (POSIX seconds, > 0).
    pub fn cosign(&self, text: &[u8], timestamp: u64) -> String {
        let signature = self.key.sign(&cosigned_message(text, timestamp));
        let mut blob = Vec::with_capacity(4 + 8 + 64);
        blob.extend_from_slice(&self.id.to_be_bytes());
        blob.extend_from_slice(&timestamp.to_be_bytes());
        blob.extend_from_slice(&signature.to_bytes());
        format!("\u{2014} {} {}\n", self.name, STANDARD.encode(blob))
    }
}

/// Why a cosignature was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CosignatureError {
    #[error("the witness's verifier key is malformed")]
    BadKey,
    #[error("no cosignature of this witness is on the checkpoint")]
    Missing,
    #[error("the witness's cosignature does not verify")]
    Invalid,
}

/// A witness's verifier key, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignerKey {
    pub name: String,
    pub id: u32,
    pub public: ed25519_dalek::VerifyingKey,
}

impl CosignerKey {
    pub fn parse(vkey: &str) -> Result<CosignerKey, CosignatureError> {
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(CosignatureError::BadKey);
        };
        let id = u32::from_str_radix(id, 16).map_err(|_| CosignatureError::BadKey)?;
        let key = STANDARD.decode(key).map_err(|_| CosignatureError::BadKey)?;
        let (Some(&ALG_COSIGNATURE_V1), Ok(public)) =
            (key.first(), <[u8; 32]>::try_from(&key[1.min(key.len())..]))
        else {
            return Err(CosignatureError::BadKey);
        };
        if cosigner_key_id(name, &public) != id || !signed_note::is_key_name_valid(name) {
            return Err(CosignatureError::BadKey);
        }
        let public = ed25519_dalek::VerifyingKey::from_bytes(&public)
            .map_err(|_| CosignatureError::BadKey)?;
        Ok(CosignerKey {
            name: name.to_string(),
            id,
            public,
        })
    }

    /// The verifier key again (`<name>+<key id>+<base64 of 0x04 ‖ key>`).
    pub fn vkey(&self) -> String {
        let public = [&[ALG_COSIGNATURE_V1][..], self.public.as_bytes()].concat();
        format!("{}+{:08x}+{}", self.name, self.id, STANDARD.encode(public))
    }

    /// Find this witness's cosignature on a signed checkpoint `note` and
    /// check it; its timestamp when it verifies.
    pub fn verify(&self, note: &[u8]) -> Result<u64, CosignatureError> {
        let parsed = Note::from_bytes(note).map_err(|_| CosignatureError::Missing)?;
        let mut found = false;
        for line in note_signature_lines(note) {
            let Some((name, blob)) = line.split_once(' ') else {
                continue;
            };
            let Ok(blob) = STANDARD.decode(blob) else {
                continue;
            };
            if name != self.name || blob.len() != 4 + 8 + 64 || blob[..4] != self.id.to_be_bytes() {
                continue;
            }
            found = true;
            let timestamp = u64::from_be_bytes(blob[4..12].try_into().unwrap_or_default());
            let signature = ed25519_dalek::Signature::from_bytes(
                &blob[12..]
                    .try_into()
                    .map_err(|_| CosignatureError::Invalid)?,
            );
            if timestamp > 0
                && self
                    .public
                    .verify(&cosigned_message(parsed.text(), timestamp), &signature)
                    .is_ok()
            {
                return Ok(timestamp);
            }
        }
        Err(if found {
            CosignatureError::Invalid
        } else {
            CosignatureError::Missing
        })
    }
}

/// The signature lines of a note (after its last blank line), without the
/// leading "— ".
fn note_signature_lines(note: &[u8]) -> impl Iterator<Item = &str> {
    let text = std::str::from_utf8(note).unwrap_or_default();
    let sigs = text.rsplit_once("\n\n").map(|(_, s)| s).unwrap_or_default();
    sigs.lines().filter_map(|l| l.strip_prefix("\u{2014} "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::LogSigner;

    const LOG: &str = "city.example/ledger";

    fn log_signer() -> LogSigner {
        LogSigner::from_seed(LOG, &[3u8; 32]).unwrap()
    }

    fn witnessed() -> WitnessedLog {
        WitnessedLog {
            origin: LOG.into(),
            verifier_keys: vec![log_signer().verifier_key().to_string()],
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n)
            .map(|i| crate::leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    fn body(old: u64, proof: &[Hash], note: &[u8]) -> Vec<u8> {
        let mut b = format!("old {old}\n").into_bytes();
        for h in proof {
            b.extend_from_slice(STANDARD.encode(h).as_bytes());
            b.push(b'\n');
        }
        b.push(b'\n');
        b.extend_from_slice(note);
        b
    }

    fn request(old: u64, new: u64) -> AddCheckpoint {
        let all = leaves(new);
        let proof = if old == 0 || old == new {
            Vec::new()
        } else {
            crate::tree::consistency_proof(&all, old as usize).unwrap()
        };
        let note = log_signer()
            .sign_checkpoint(new, &crate::tree::root(&all))
            .unwrap();
        parse_add_checkpoint(&body(old, &proof, &note)).unwrap()
    }

    fn latest(size: u64) -> Latest {
        Latest {
            size,
            root: crate::tree::root(&leaves(size)),
        }
    }

    #[test]
    fn a_consistent_checkpoint_is_accepted_from_nothing_and_from_before() {
        let a = decide(&request(0, 10), &witnessed(), &latest(0)).unwrap();
        assert_eq!((a.size, a.root), (10, latest(10).root));
        let b = decide(&request(10, 17), &witnessed(), &latest(10)).unwrap();
        assert_eq!(b.size, 17);
        // The same checkpoint again (a retry): accepted, nothing to prove.
        decide(&request(17, 17), &witnessed(), &latest(17)).unwrap();
    }

    #[test]
    fn every_refusal_has_the_specifications_status() {
        let w = witnessed();
        // 409: the witness holds another size; the answer names it.
        let r = decide(&request(5, 17), &w, &latest(10)).unwrap_err();
        assert_eq!(r, Refusal::Conflict { old: 5, latest: 10 });
        assert_eq!(r.status(), 409);
        // 400: an old size beyond the checkpoint.
        let mut req = request(0, 10);
        req.old_size = 11;
        assert_eq!(decide(&req, &w, &latest(11)).unwrap_err().status(), 400);
        // 422: a proof that does not connect the sizes (a different history).
        let mut forked = leaves(17);
        forked[3] = crate::leaf_hash(b"rewritten");
        let note = log_signer()
            .sign_checkpoint(17, &crate::tree::root(&forked))
            .unwrap();
        let proof = crate::tree::consistency_proof(&forked, 10).unwrap();
        let req = parse_add_checkpoint(&body(10, &proof, &note)).unwrap();
        let r = decide(&req, &w, &latest(10)).unwrap_err();
        assert!(matches!(r, Refusal::Inconsistent(_)), "{r:?}");
        assert_eq!(r.status(), 422);
        // 422: a proof that is cut short.
        let mut req = request(10, 17);
        req.proof.pop();
        assert_eq!(decide(&req, &w, &latest(10)).unwrap_err().status(), 422);
        // 422: a proof sent with old size 0.
        let mut req = request(0, 17);
        req.proof = request(10, 17).proof;
        assert_eq!(decide(&req, &w, &latest(0)).unwrap_err().status(), 422);
        // 422: the same size with another root.
        let note = log_signer()
            .sign_checkpoint(10, &crate::leaf_hash(b"x"))
            .unwrap();
        let req = parse_add_checkpoint(&body(10, &[], &note)).unwrap();
        assert_eq!(decide(&req, &w, &latest(10)).unwrap_err().status(), 422);
        // 422: size 0 must have the empty tree's root.
        let note = log_signer()
            .sign_checkpoint(0, &crate::leaf_hash(b"x"))
            .unwrap();
        let req = parse_add_checkpoint(&body(0, &[], &note)).unwrap();
        assert_eq!(decide(&req, &w, &latest(0)).unwrap_err().status(), 422);
        // 403: signed by another key only (an unknown key's signature is ignored).
        let other = LogSigner::from_seed(LOG, &[4u8; 32]).unwrap();
        let note = other.sign_checkpoint(10, &latest(10).root).unwrap();
        let req = parse_add_checkpoint(&body(0, &[], &note)).unwrap();
        assert_eq!(
            decide(&req, &w, &latest(0)).unwrap_err(),
            Refusal::BadSignature
        );
        // 403: the log's key named, the signature broken.
        let good = log_signer().sign_checkpoint(10, &latest(10).root).unwrap();
        let text = String::from_utf8(good).unwrap();
        let (head, sig) = text.rsplit_once(' ').unwrap();
        let mut blob = STANDARD.decode(sig.trim_end()).unwrap();
        blob[10] ^= 1;
        let broken = format!("{head} {}\n", STANDARD.encode(blob));
        let req = parse_add_checkpoint(&body(0, &[], broken.as_bytes())).unwrap();
        assert_eq!(decide(&req, &w, &latest(0)).unwrap_err().status(), 403);
        // 403 before anything else: a forged note with a wrong old size is
        // not told the witness's size.
        let req = parse_add_checkpoint(&body(3, &[], broken.as_bytes())).unwrap();
        assert_eq!(decide(&req, &w, &latest(0)).unwrap_err().status(), 403);
    }

    #[test]
    fn malformed_bodies_are_refused_with_400() {
        let note = log_signer().sign_checkpoint(1, &latest(1).root).unwrap();
        let hash = STANDARD.encode([7u8; 32]);
        for (body, why) in [
            (b"old 01\n\n".to_vec(), "leading zero"),
            (b"old -1\n\n".to_vec(), "negative"),
            (b"old 1".to_vec(), "no newline"),
            (b"new 1\n\n".to_vec(), "not 'old'"),
            (b"old 1\nAAAA\n\n".to_vec(), "short hash"),
            (b"old 1\n".to_vec(), "no empty line"),
            (b"old 1\n\n".to_vec(), "no checkpoint"),
            (
                format!("old 1\n{}\n", format!("{hash}\n").repeat(64)).into_bytes(),
                "64 proof lines",
            ),
        ] {
            let mut body = body;
            if why != "no checkpoint" && body.ends_with(b"\n\n") {
                body.extend_from_slice(&note);
            }
            let r = parse_add_checkpoint(&body).unwrap_err();
            assert_eq!(r.status(), 400, "{why}: {r:?}");
        }
        // 63 lines are allowed.
        let body = format!("old 1\n{}\n", format!("{hash}\n").repeat(63));
        let mut body = body.into_bytes();
        body.extend_from_slice(&note);
        assert_eq!(parse_add_checkpoint(&body).unwrap().proof.len(), 63);
    }

    /// The byte layout of tlog-cosignature, checked from the specification's
    /// text rather than from this module's functions.
    #[test]
    fn a_cosignature_has_the_specifications_byte_layout() {
        let text =
            "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let witness = Cosigner::from_seed("witness.example.com/w1", &[9u8; 32]).unwrap();
        let line = witness.cosign(text.as_bytes(), 1679315147);
        let blob = line
            .strip_prefix("\u{2014} witness.example.com/w1 ")
            .and_then(|b| b.strip_suffix('\n'))
            .map(|b| STANDARD.decode(b).unwrap())
            .unwrap();
        assert_eq!(blob.len(), 4 + 8 + 64);
        let public = ed25519_dalek::SigningKey::from_bytes(&[9u8; 32]).verifying_key();
        // key ID = SHA-256(<name> || "\n" || 0x04 || public key)[:4]
        let mut id_input = b"witness.example.com/w1\n\x04".to_vec();
        id_input.extend_from_slice(public.as_bytes());
        assert_eq!(blob[..4], Sha256::digest(&id_input)[..4]);
        // the timestamp, u64 big-endian
        assert_eq!(blob[4..12], 1679315147u64.to_be_bytes());
        // the signature, over exactly the specification's example message
        let message = "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n";
        let signature = ed25519_dalek::Signature::from_bytes(&blob[12..].try_into().unwrap());
        public.verify(message.as_bytes(), &signature).unwrap();
        // the vkey: name + id + base64(0x04 || public key)
        let vkey = witness.verifier_key();
        let parts: Vec<&str> = vkey.split('+').collect();
        assert_eq!(parts[0], "witness.example.com/w1");
        assert_eq!(
            parts[1],
            blob[..4]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        );
        assert_eq!(STANDARD.decode(parts[2]).unwrap()[0], 0x04);
    }

    /// A cosignature verifier built on the `signed_note` crate's own note
    /// parsing and key matching, from the specification alone.
    struct SpecVerifier {
        name: String,
        id: u32,
        key: ed25519_dalek::VerifyingKey,
    }

    impl signed_note::Verifier for SpecVerifier {
        fn name(&self) -> &str {
            &self.name
        }
        fn key_id(&self) -> u32 {
            self.id
        }
        fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
            let Ok(sig) = <[u8; 72]>::try_from(sig) else {
                return false;
            };
            let ts = u64::from_be_bytes(sig[..8].try_into().unwrap());
            let mut m = format!("cosignature/v1\ntime {ts}\n").into_bytes();
            m.extend_from_slice(msg);
            let s = ed25519_dalek::Signature::from_bytes(&sig[8..].try_into().unwrap());
            ts > 0 && self.key.verify(&m, &s).is_ok()
        }
    }

    #[test]
    fn cosignatures_verify_with_the_signed_note_crate_and_with_ours() {
        let witness = Cosigner::from_seed("witness.example/w1", &[5u8; 32]).unwrap();
        let accepted = decide(&request(0, 8), &witnessed(), &latest(0)).unwrap();
        let note = log_signer().sign_checkpoint(8, &accepted.root).unwrap();
        let mut cosigned = note.clone();
        cosigned.extend_from_slice(witness.cosign(&accepted.text, 1_780_000_000).as_bytes());
        let public = ed25519_dalek::SigningKey::from_bytes(&[5u8; 32]).verifying_key();
        let spec = SpecVerifier {
            name: "witness.example/w1".into(),
            id: cosigner_key_id("witness.example/w1", public.as_bytes()),
            key: public,
        };
        let parsed = Note::from_bytes(&cosigned).unwrap();
        let (verified, _) = parsed
            .verify(&VerifierList::new(vec![Box::new(spec)]))
            .unwrap();
        assert_eq!(verified.len(), 1);
        // The log's own signature still verifies beside it, and the note the
        // witness keeps is the same bytes.
        crate::checkpoint::open_checkpoint(&cosigned, log_signer().verifier_key()).unwrap();
        assert_eq!(
            accepted.cosigned_note(&witness.cosign(&accepted.text, 1_780_000_000)),
            cosigned
        );
        // Ours: found, checked, timestamp returned; missing and forged told apart.
        let key = CosignerKey::parse(&witness.verifier_key()).unwrap();
        assert_eq!(key.verify(&cosigned), Ok(1_780_000_000));
        assert_eq!(key.verify(&note), Err(CosignatureError::Missing));
        let other = log_signer().sign_checkpoint(9, &latest(9).root).unwrap();
        let text = String::from_utf8(other).unwrap();
        let line = witness.cosign(&accepted.text, 1_780_000_000);
        let forged = format!("{text}{line}");
        assert_eq!(
            key.verify(forged.as_bytes()),
            Err(CosignatureError::Invalid)
        );
        assert!(CosignerKey::parse(log_signer().verifier_key()).is_err());
    }
}
