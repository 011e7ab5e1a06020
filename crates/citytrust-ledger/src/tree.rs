//! Building roots and proofs from a list of leaf hashes (RFC 6962 §2.1), and
//! the subtree hashes and proofs of the Merkle Tree Certificates draft (§4).
//!
//! These are the reference definitions: recursive, over a slice held in
//! memory. The log's tile store answers the same questions from stored
//! subtree hashes; tests check the two agree.

use crate::subtree::is_valid_subtree;
use crate::{Hash, empty_root, node_hash};

/// The largest power of two strictly smaller than `n` (n ≥ 2).
fn split(n: usize) -> usize {
    debug_assert!(n >= 2);
    1 << (usize::BITS - 1 - (n - 1).leading_zeros())
}

/// MTH(D[n]): the root of the tree over `leaves`.
pub fn root(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&root(&leaves[..k]), &root(&leaves[k..]))
        }
    }
}

/// PATH(m, D[n]): the inclusion proof for leaf `index`, or `None` if it is not in the tree.
pub fn inclusion_proof(leaves: &[Hash], index: usize) -> Option<Vec<Hash>> {
    if index >= leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    path(leaves, index, &mut proof);
    Some(proof)
}

fn path(leaves: &[Hash], m: usize, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if n <= 1 {
        return;
    }
    let k = split(n);
    if m < k {
        path(&leaves[..k], m, out);
        out.push(root(&leaves[k..]));
    } else {
        path(&leaves[k..], m - k, out);
        out.push(root(&leaves[..k]));
    }
}

/// PROOF(m, D[n]): the consistency proof from the tree of the first `size1`
/// leaves to the tree of all of them, or `None` if `size1` is larger.
pub fn consistency_proof(leaves: &[Hash], size1: usize) -> Option<Vec<Hash>> {
    if size1 > leaves.len() {
        return None;
    }
    let mut proof = Vec::new();
    if size1 > 0 && size1 < leaves.len() {
        subproof(leaves, size1, true, &mut proof);
    }
    Some(proof)
}

fn subproof(leaves: &[Hash], m: usize, whole: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if m == n {
        if !whole {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if m <= k {
        subproof(&leaves[..k], m, whole, out);
        out.push(root(&leaves[k..]));
    } else {
        subproof(&leaves[k..], m - k, false, out);
        out.push(root(&leaves[..k]));
    }
}

/// The leaves of the subtree `[start, end)`, if it is a subtree within `leaves`.
fn subtree_leaves(leaves: &[Hash], start: u64, end: u64) -> Option<&[Hash]> {
    if !is_valid_subtree(start, end) {
        return None;
    }
    let start = usize::try_from(start).ok()?;
    let end = usize::try_from(end).ok()?;
    leaves.get(start..end)
}

/// MTH(D[start:end]): the hash of the subtree `[start, end)`, or `None` if that
/// is not a subtree of the tree over `leaves`.
pub fn subtree_hash(leaves: &[Hash], start: u64, end: u64) -> Option<Hash> {
    subtree_leaves(leaves, start, end).map(root)
}

/// The subtree inclusion proof for entry `index` of the subtree `[start, end)`
/// (draft §4.3): PATH(index - start, D[start:end]), or `None` if the entry or
/// the subtree is not there.
pub fn subtree_inclusion_proof(
    leaves: &[Hash],
    index: u64,
    start: u64,
    end: u64,
) -> Option<Vec<Hash>> {
    let sub = subtree_leaves(leaves, start, end)?;
    let m = usize::try_from(index.checked_sub(start)?).ok()?;
    inclusion_proof(sub, m)
}

/// SUBTREE_PROOF(start, end, D_n) (draft §4.4.1): the consistency proof from
/// the subtree `[start, end)` to the tree over all of `leaves`, or `None` if
/// that is not a subtree of it.
pub fn subtree_consistency_proof(leaves: &[Hash], start: u64, end: u64) -> Option<Vec<Hash>> {
    subtree_leaves(leaves, start, end)?;
    let (start, end) = (usize::try_from(start).ok()?, usize::try_from(end).ok()?);
    let mut proof = Vec::new();
    if start < end {
        subtree_subproof(leaves, start, end, true, &mut proof);
    }
    Some(proof)
}

/// SUBTREE_SUBPROOF(start, end, D_n, known): `known` says whether the verifier
/// already holds the hash of the node the recursion ends at.
fn subtree_subproof(leaves: &[Hash], start: usize, end: usize, known: bool, out: &mut Vec<Hash>) {
    let n = leaves.len();
    if start == 0 && end == n {
        if !known {
            out.push(root(leaves));
        }
        return;
    }
    let k = split(n);
    if end <= k {
        subtree_subproof(&leaves[..k], start, end, known, out);
        out.push(root(&leaves[k..]));
    } else if k <= start {
        subtree_subproof(&leaves[k..], start - k, end - k, known, out);
        out.push(root(&leaves[..k]));
    } else {
        // start < k < end, so start is 0: the subtree's root is not a node of
        // this tree, and the verifier needs the hash of the right part.
        subtree_subproof(&leaves[k..], 0, end - k, false, out);
        out.push(root(&leaves[..k]));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ProofError, leaf_hash, verify_consistency, verify_inclusion};

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    fn refs(p: &[Hash]) -> Vec<&[u8]> {
        p.iter().map(|h| h.as_slice()).collect()
    }

    #[test]
    fn every_inclusion_proof_verifies_and_every_tampering_is_caught() {
        for n in 1..=70 {
            let l = leaves(n);
            let r = root(&l);
            for i in 0..n {
                let p = inclusion_proof(&l, i).unwrap();
                verify_inclusion(i as u64, n as u64, &l[i], &refs(&p), &r).unwrap();
                // The wrong leaf, index, size or a flipped bit all fail.
                let other = (i + 1) % n;
                if other != i {
                    assert!(
                        verify_inclusion(i as u64, n as u64, &l[other], &refs(&p), &r).is_err()
                    );
                    assert!(
                        verify_inclusion(other as u64, n as u64, &l[i], &refs(&p), &r).is_err()
                    );
                }
                for j in 0..p.len() {
                    let mut bad = p.clone();
                    bad[j][0] ^= 1;
                    assert_eq!(
                        verify_inclusion(i as u64, n as u64, &l[i], &refs(&bad), &r),
                        Err(ProofError::RootMismatch)
                    );
                }
            }
            assert!(inclusion_proof(&l, n).is_none());
        }
    }

    #[test]
    fn every_consistency_proof_verifies_and_every_tampering_is_caught() {
        let all = leaves(70);
        for n in 1..=70 {
            let l = &all[..n];
            let r2 = root(l);
            for m in 0..=n {
                let r1 = root(&l[..m]);
                let p = consistency_proof(l, m).unwrap();
                if m == 0 {
                    // Consistency with the empty tree proves nothing and is refused, as in the vectors.
                    assert_eq!(
                        verify_consistency(0, n as u64, &refs(&p), &r1, &r2),
                        Err(ProofError::EmptyTree)
                    );
                    continue;
                }
                verify_consistency(m as u64, n as u64, &refs(&p), &r1, &r2).unwrap();
                for j in 0..p.len() {
                    let mut bad = p.clone();
                    bad[j][31] ^= 0x80;
                    assert!(
                        verify_consistency(m as u64, n as u64, &refs(&bad), &r1, &r2).is_err(),
                        "m={m} n={n} j={j}"
                    );
                }
                if m > 0 && m < n {
                    // A forked history (same size, different last leaf) is not consistent.
                    let mut fork = l[..m].to_vec();
                    fork[m - 1] = leaf_hash(b"forged");
                    assert!(
                        verify_consistency(m as u64, n as u64, &refs(&p), &root(&fork), &r2)
                            .is_err()
                    );
                }
            }
        }
    }
}
