//! Transparency-log trust policies (C2SP tlog-policy): the logs a verifier
//! accepts, the witnesses it knows, and the quorum of cosignatures a
//! checkpoint needs — read from the policy file, and applied to a
//! checkpoint to say which witnesses cosigned it, which are missing, and
//! whether the quorum holds.

use std::collections::BTreeSet;

use signed_note::{Note, StandardVerifier, VerifierList};

use crate::witness::CosignerKey;

/// Most logs, witnesses and groups a policy may define (the specification
/// recommends supporting at least 32 of each).
pub const MAX_ENTRIES: usize = 64;

/// A witness the policy names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyWitness {
    /// The policy's own name for it (used by groups and the quorum).
    pub name: String,
    pub key: CosignerKey,
    /// Its submission prefix (`…/witness`), when the policy gives one.
    pub url: Option<String>,
}

/// A log the policy accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyLog {
    /// The log's verifier key; its name is the log's origin.
    pub vkey: String,
    pub url: Option<String>,
}

impl PolicyLog {
    pub fn origin(&self) -> &str {
        self.vkey.split('+').next().unwrap_or_default()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    Witness(usize),
    Group(usize),
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Group {
    name: String,
    threshold: usize,
    members: Vec<Member>,
}

/// A parsed policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    pub logs: Vec<PolicyLog>,
    pub witnesses: Vec<PolicyWitness>,
    groups: Vec<Group>,
    /// `None`: `quorum none`.
    quorum: Option<Member>,
}

/// What a policy says of one checkpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// The origin of the policy's log that signed it.
    pub log: String,
    /// The witnesses (by policy name) whose cosignatures verify.
    pub cosigned_by: Vec<String>,
    /// The witnesses whose cosignatures are absent or do not verify.
    pub missing: Vec<String>,
    pub quorum_met: bool,
}

/// Why a policy file, or a checkpoint under it, was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy line {line}: {why}")]
    Syntax { line: usize, why: String },
    #[error("the policy has no quorum line")]
    NoQuorum,
    #[error("the checkpoint is not signed by any log the policy lists")]
    UnknownLog,
}

fn syntax(line: usize, why: impl Into<String>) -> PolicyError {
    PolicyError::Syntax {
        line,
        why: why.into(),
    }
}

impl Policy {
    /// Read a policy file.
    pub fn parse(text: &str) -> Result<Policy, PolicyError> {
        let mut policy = Policy {
            logs: Vec::new(),
            witnesses: Vec::new(),
            groups: Vec::new(),
            quorum: None,
        };
        let mut quorum_seen = false;
        let mut names: Vec<(String, Member)> = Vec::new();
        for (i, raw) in text.split('\n').enumerate() {
            let n = i + 1;
            if raw.bytes().any(|b| b != b'\t' && (b < 0x20 || b == 0x7f)) {
                return Err(syntax(n, "a control character other than tab"));
            }
            let words: Vec<&str> = raw.split([' ', '\t']).filter(|w| !w.is_empty()).collect();
            let Some(&keyword) = words.first() else {
                continue;
            };
            if keyword.starts_with('#') {
                continue;
            }
            match keyword {
                "log" => {
                    let (vkey, url) = match words[1..] {
                        [vkey] => (vkey, None),
                        [vkey, url] => (vkey, Some(url.to_string())),
                        _ => return Err(syntax(n, "expected 'log <vkey> [<url>]'")),
                    };
                    if StandardVerifier::new(vkey).is_err() {
                        return Err(syntax(n, format!("'{vkey}' is not a log's verifier key")));
                    }
                    if policy.logs.iter().any(|l| same_key(&l.vkey, vkey)) {
                        return Err(syntax(n, "the same log key is listed twice"));
                    }
                    policy.logs.push(PolicyLog {
                        vkey: vkey.to_string(),
                        url,
                    });
                }
                "witness" => {
                    let (name, vkey, url) = match words[1..] {
                        [name, vkey] => (name, vkey, None),
                        [name, vkey, url] => (name, vkey, Some(url.to_string())),
                        _ => return Err(syntax(n, "expected 'witness <name> <vkey> [<url>]'")),
                    };
                    let key = CosignerKey::parse(vkey).map_err(|_| {
                        syntax(
                            n,
                            format!("'{vkey}' is not an Ed25519 cosignature/v1 witness key"),
                        )
                    })?;
                    if policy.witnesses.iter().any(|w| w.key.public == key.public) {
                        return Err(syntax(n, "the same witness key is listed twice"));
                    }
                    define(&mut names, n, name, Member::Witness(policy.witnesses.len()))?;
                    policy.witnesses.push(PolicyWitness {
                        name: name.to_string(),
                        key,
                        url,
                    });
                }
                "group" => {
                    let [_, name, k, members @ ..] = words.as_slice() else {
                        return Err(syntax(n, "expected 'group <name> all|any|<k> <name>...'"));
                    };
                    if members.is_empty() {
                        return Err(syntax(n, "a group needs at least one member"));
                    }
                    let mut resolved = Vec::new();
                    let mut seen = BTreeSet::new();
                    for m in members {
                        if !seen.insert(*m) {
                            return Err(syntax(n, format!("'{m}' is listed twice in the group")));
                        }
                        let member = names
                            .iter()
                            .find(|(defined, _)| defined == m)
                            .map(|(_, member)| member.clone())
                            .ok_or_else(|| {
                                syntax(n, format!("'{m}' is not a witness or group defined above"))
                            })?;
                        resolved.push(member);
                    }
                    let threshold = match *k {
                        "all" => resolved.len(),
                        "any" => 1,
                        k => match decimal(k) {
                            Some(k) if (1..=resolved.len()).contains(&k) => k,
                            _ => {
                                return Err(syntax(
                                    n,
                                    format!(
                                        "the threshold '{k}' must be all, any, or 1 to {}",
                                        resolved.len()
                                    ),
                                ));
                            }
                        },
                    };
                    define(&mut names, n, name, Member::Group(policy.groups.len()))?;
                    policy.groups.push(Group {
                        name: name.to_string(),
                        threshold,
                        members: resolved,
                    });
                }
                "quorum" => {
                    let [_, name] = words.as_slice() else {
                        return Err(syntax(n, "expected 'quorum <name>'"));
                    };
                    if quorum_seen {
                        return Err(syntax(n, "a second quorum line"));
                    }
                    quorum_seen = true;
                    policy.quorum = if *name == "none" {
                        None
                    } else {
                        Some(
                            names
                                .iter()
                                .find(|(defined, _)| defined == name)
                                .map(|(_, m)| m.clone())
                                .ok_or_else(|| {
                                    syntax(n, format!("'{name}' is not defined above"))
                                })?,
                        )
                    };
                }
                other => return Err(syntax(n, format!("unknown keyword '{other}'"))),
            }
            if policy.logs.len() > MAX_ENTRIES
                || policy.witnesses.len() > MAX_ENTRIES
                || policy.groups.len() > MAX_ENTRIES
            {
                return Err(syntax(
                    n,
                    format!("more than {MAX_ENTRIES} logs, witnesses or groups"),
                ));
            }
        }
        if !quorum_seen {
            return Err(PolicyError::NoQuorum);
        }
        Ok(policy)
    }

    /// Whether the witnesses in `cosigned` (indexes into `witnesses`)
    /// satisfy the quorum.
    pub fn quorum_met(&self, cosigned: &BTreeSet<usize>) -> bool {
        match &self.quorum {
            None => true,
            Some(m) => self.witnessed(m, cosigned),
        }
    }

    fn witnessed(&self, member: &Member, cosigned: &BTreeSet<usize>) -> bool {
        match member {
            Member::Witness(i) => cosigned.contains(i),
            Member::Group(g) => {
                let group = &self.groups[*g];
                group
                    .members
                    .iter()
                    .filter(|m| self.witnessed(m, cosigned))
                    .count()
                    >= group.threshold
            }
        }
    }

    /// Check a signed checkpoint: a signature of one of the policy's logs,
    /// then each witness's cosignature, then the quorum.
    pub fn check(&self, note: &[u8]) -> Result<Verdict, PolicyError> {
        let parsed = Note::from_bytes(note).map_err(|_| PolicyError::UnknownLog)?;
        let log = self
            .logs
            .iter()
            .find(|log| {
                StandardVerifier::new(&log.vkey)
                    .is_ok_and(|v| parsed.verify(&VerifierList::new(vec![Box::new(v)])).is_ok())
            })
            .ok_or(PolicyError::UnknownLog)?;
        let origin_line = parsed
            .text()
            .split(|&b| b == b'\n')
            .next()
            .unwrap_or_default();
        if origin_line != log.origin().as_bytes() {
            return Err(PolicyError::UnknownLog);
        }
        let cosigned: BTreeSet<usize> = self
            .witnesses
            .iter()
            .enumerate()
            .filter(|(_, w)| w.key.verify(note).is_ok())
            .map(|(i, _)| i)
            .collect();
        Ok(Verdict {
            log: log.origin().to_string(),
            cosigned_by: cosigned
                .iter()
                .map(|&i| self.witnesses[i].name.clone())
                .collect(),
            missing: (0..self.witnesses.len())
                .filter(|i| !cosigned.contains(i))
                .map(|i| self.witnesses[i].name.clone())
                .collect(),
            quorum_met: self.quorum_met(&cosigned),
        })
    }
}

fn define(
    names: &mut Vec<(String, Member)>,
    line: usize,
    name: &str,
    member: Member,
) -> Result<(), PolicyError> {
    if name == "none" || names.iter().any(|(n, _)| n == name) {
        return Err(syntax(
            line,
            format!("the name '{name}' is already defined"),
        ));
    }
    names.push((name.to_string(), member));
    Ok(())
}

/// Two verifier keys for the same public key (whatever their names).
fn same_key(a: &str, b: &str) -> bool {
    a.rsplit('+').next() == b.rsplit('+').next()
}

fn decimal(s: &str) -> Option<usize> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) || (s.len() > 1 && s.starts_with('0'))
    {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::LogSigner;
    use crate::witness::Cosigner;

    fn witness(i: u8) -> Cosigner {
        Cosigner::from_seed(&format!("w{i}.example/witness"), &[i; 32]).unwrap()
    }

    fn log() -> LogSigner {
        LogSigner::from_seed("city.example/ledger", &[200u8; 32]).unwrap()
    }

    /// The specification's example: two of the X witnesses and one of the Y.
    fn example() -> String {
        let mut p = format!("# the example\nlog {}\n\n", log().verifier_key());
        for i in 1..=3 {
            p.push_str(&format!("witness X{i} {}\n", witness(i).verifier_key()));
        }
        p.push_str("group X-witnesses 2 X1 X2 X3\n");
        for i in 4..=6 {
            p.push_str(&format!(
                "  witness\tY{} {} https://y{i}.example/witness\n",
                i - 3,
                witness(i).verifier_key()
            ));
        }
        p.push_str("group Y-witnesses any Y1 Y2 Y3\ngroup X-and-Y all X-witnesses Y-witnesses\nquorum X-and-Y\n");
        p
    }

    fn cosigned_by(which: &[u8]) -> Vec<u8> {
        let root = crate::tree::root(&[crate::leaf_hash(b"a")]);
        let mut note = log().sign_checkpoint(1, &root).unwrap();
        let text = note[..note.windows(2).position(|w| w == b"\n\n").unwrap() + 1].to_vec();
        for &i in which {
            note.extend_from_slice(witness(i).cosign(&text, 1_700_000_000).as_bytes());
        }
        note
    }

    #[test]
    fn the_specifications_example_quorum() {
        let policy = Policy::parse(&example()).unwrap();
        assert_eq!(policy.witnesses.len(), 6);
        assert_eq!(
            policy.witnesses[3].url.as_deref(),
            Some("https://y4.example/witness")
        );
        for (which, met) in [
            (&[1, 2, 4][..], true),
            (&[1, 3, 6], true),
            (&[1, 2], false),
            (&[1, 4, 5, 6], false),
            (&[1, 2, 3, 4, 5, 6], true),
            (&[], false),
        ] {
            let verdict = policy.check(&cosigned_by(which)).unwrap();
            assert_eq!(verdict.quorum_met, met, "{which:?}");
            assert_eq!(verdict.cosigned_by.len(), which.len());
            assert_eq!(verdict.missing.len(), 6 - which.len());
            assert_eq!(verdict.log, "city.example/ledger");
        }
        // A cosignature by a key not in the policy counts for nothing.
        let mut note = cosigned_by(&[1]);
        let text = cosigned_by(&[])[..].to_vec();
        let text = &text[..text.windows(2).position(|w| w == b"\n\n").unwrap() + 1];
        note.extend_from_slice(witness(9).cosign(text, 1_700_000_000).as_bytes());
        assert_eq!(
            policy.check(&note).unwrap().cosigned_by,
            vec!["X1".to_string()]
        );
    }

    #[test]
    fn quorum_none_and_a_single_witness() {
        let base = format!(
            "log {}\nwitness A {}\n",
            log().verifier_key(),
            witness(1).verifier_key()
        );
        let none = Policy::parse(&format!("{base}quorum none\n")).unwrap();
        assert!(none.check(&cosigned_by(&[])).unwrap().quorum_met);
        let one = Policy::parse(&format!("{base}quorum A\n")).unwrap();
        assert!(!one.check(&cosigned_by(&[])).unwrap().quorum_met);
        assert!(one.check(&cosigned_by(&[1])).unwrap().quorum_met);
        // Another log's checkpoint is refused outright.
        let other = LogSigner::from_seed("other.example/ledger", &[1u8; 32]).unwrap();
        let note = other.sign_checkpoint(1, &[0u8; 32]).unwrap();
        assert_eq!(one.check(&note), Err(PolicyError::UnknownLog));
    }

    #[test]
    fn malformed_policies_name_the_line() {
        let w = witness(1).verifier_key();
        let l = log().verifier_key().to_string();
        for (text, line) in [
            (format!("witness A {w}\n"), None),              // no quorum
            (format!("witness A {w}\nquorum B\n"), Some(2)), // undefined
            (format!("quorum A\nwitness A {w}\n"), Some(1)), // defined later
            (format!("witness A {w}\nwitness B {w}\nquorum A\n"), Some(2)), // duplicate key
            (format!("witness A {w}\ngroup G 2 A\nquorum G\n"), Some(2)), // k > n
            (format!("witness A {w}\ngroup G 0 A\nquorum G\n"), Some(2)), // k = 0
            (
                format!("witness A {w}\ngroup G any A A\nquorum G\n"),
                Some(2),
            ), // member twice
            (format!("witness A {w}\ngroup A any A\nquorum A\n"), Some(2)), // name reused
            (format!("witness none {w}\nquorum none\n"), Some(1)), // reserved
            (format!("log {l}\nlog {l}\nquorum none\n"), Some(2)), // duplicate log
            (format!("witness A {l}\nquorum A\n"), Some(1)), // a log key as witness
            (format!("log {w}\nquorum none\n"), Some(1)),    // a witness key as log
            (format!("witnes A {w}\nquorum A\n"), Some(1)),  // unknown keyword
            (format!("witness A {w}\nquorum A\nquorum A\n"), Some(3)), // two quorums
            ("quorum none\x01\n".to_string(), Some(1)),      // control character
        ] {
            match (Policy::parse(&text), line) {
                (Err(PolicyError::NoQuorum), None) => {}
                (Err(PolicyError::Syntax { line: got, .. }), Some(want)) => {
                    assert_eq!(got, want, "{text}")
                }
                (other, _) => panic!("{text}: {other:?}"),
            }
        }
    }
}
