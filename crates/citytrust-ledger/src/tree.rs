//! Building roots and proofs from a list of leaf hashes (RFC 6962 §2.1).
//!
//! These are the reference definitions: recursive, over a slice held in
//! memory. The log's tile store answers the same questions from stored
//! subtree hashes; tests check the two agree.

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
