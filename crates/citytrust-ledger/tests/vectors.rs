//! Every RFC 6962 inclusion and consistency vector of transparency-dev/merkle,
//! and every subtree inclusion and consistency vector (Merkle Tree
//! Certificates draft): happy paths must verify, every mutated proof
//! (`wantErr`) must be refused.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};

use base64::Engine;
use citytrust_ledger::{
    verify_consistency, verify_inclusion, verify_subtree_consistency, verify_subtree_inclusion,
};
use serde::Deserialize;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Inclusion {
    leaf_idx: u64,
    tree_size: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Consistency {
    size1: u64,
    size2: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubtreeInclusion {
    leaf_idx: u64,
    start: u64,
    end: u64,
    root: String,
    leaf_hash: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct SubtreeConsistency {
    start: u64,
    end: u64,
    size: u64,
    root1: String,
    root2: String,
    proof: Option<Vec<String>>,
    desc: String,
    want_err: bool,
}

fn b64(s: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

fn files(kind: &str) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                walk(&p, out);
            } else if p.extension().is_some_and(|x| x == "json") {
                out.push(p);
            }
        }
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("testdata/merkle-vectors")
        .join(kind);
    let mut out = Vec::new();
    walk(&dir, &mut out);
    out.sort();
    out
}

#[test]
fn inclusion_vectors() {
    let files = files("inclusion");
    assert!(files.len() > 50, "vectors missing");
    let (mut ok, mut refused) = (0, 0);
    for f in &files {
        let v: Inclusion = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = v.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
        let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
        let result = verify_inclusion(
            v.leaf_idx,
            v.tree_size,
            &b64(&v.leaf_hash),
            &proof,
            &b64(&v.root),
        );
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{} ({}): {result:?}",
            f.display(),
            v.desc
        );
        if v.want_err { refused += 1 } else { ok += 1 }
    }
    assert!(ok > 0 && refused > 0);
}

#[test]
fn consistency_vectors() {
    let files = files("consistency");
    assert!(files.len() > 50, "vectors missing");
    let (mut ok, mut refused) = (0, 0);
    for f in &files {
        let v: Consistency = serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = v.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
        let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
        let result = verify_consistency(v.size1, v.size2, &proof, &b64(&v.root1), &b64(&v.root2));
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{} ({}): {result:?}",
            f.display(),
            v.desc
        );
        if v.want_err { refused += 1 } else { ok += 1 }
    }
    assert!(ok > 0 && refused > 0);
}

#[test]
fn subtree_inclusion_vectors() {
    let files = files("subtreeinclusion");
    assert!(files.len() > 50, "vectors missing");
    let (mut ok, mut refused) = (0, 0);
    for f in &files {
        let v: SubtreeInclusion =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = v.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
        let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
        let result = verify_subtree_inclusion(
            v.leaf_idx,
            v.start,
            v.end,
            &b64(&v.leaf_hash),
            &proof,
            &b64(&v.root),
        );
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{} ({}): {result:?}",
            f.display(),
            v.desc
        );
        if v.want_err { refused += 1 } else { ok += 1 }
    }
    eprintln!("subtree inclusion vectors: {ok} verified, {refused} refused");
    assert!(ok > 0 && refused > 0);
}

#[test]
fn subtree_consistency_vectors() {
    let files = files("subtreeconsistency");
    assert!(files.len() > 50, "vectors missing");
    let (mut ok, mut refused) = (0, 0);
    for f in &files {
        let v: SubtreeConsistency =
            serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap();
        let proof: Vec<Vec<u8>> = v.proof.unwrap_or_default().iter().map(|p| b64(p)).collect();
        let proof: Vec<&[u8]> = proof.iter().map(Vec::as_slice).collect();
        let result = verify_subtree_consistency(
            v.start,
            v.end,
            v.size,
            &proof,
            &b64(&v.root1),
            &b64(&v.root2),
        );
        assert_eq!(
            result.is_err(),
            v.want_err,
            "{} ({}): {result:?}",
            f.display(),
            v.desc
        );
        if v.want_err { refused += 1 } else { ok += 1 }
    }
    eprintln!("subtree consistency vectors: {ok} verified, {refused} refused");
    assert!(ok > 0 && refused > 0);
}
