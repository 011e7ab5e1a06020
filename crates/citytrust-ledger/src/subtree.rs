//! Subtrees of a Merkle tree and their proofs, as in the Merkle Tree
//! Certificates draft (draft-ietf-plants-merkle-tree-certs, §4 and
//! Appendix B).
//!
//! A subtree `[start, end)` is the Merkle tree built over the entries
//! `D[start:end]` as a list of its own. Only intervals aligned with the
//! enclosing tree are subtrees (`start` a multiple of `BIT_CEIL(end - start)`),
//! which is what lets a subtree be proven consistent with any tree that holds
//! all of its entries. An inclusion proof shows an entry is in a subtree; a
//! consistency proof shows the subtree's entries are the same entries, at the
//! same positions, as in a tree of `size` entries.
//!
//! As in the rest of the crate, every proof element is a byte slice from
//! outside and is checked before it is trusted to be a hash.

use crate::{HASH_SIZE, Hash, ProofError, empty_root, node_hash, root_from_inclusion_proof};

/// Whether `[start, end)` is a subtree (draft §4.1): `start <= end`, and
/// `start` is a multiple of `BIT_CEIL(end - start)`, the smallest power of two
/// at least the subtree's size.
///
/// The empty interval `[x, x)` is a subtree (`BIT_CEIL(0)` is 1), and so is
/// every `[0, x)`. Whether the subtree fits in a given tree (`end <= size`) is
/// the caller's question.
pub fn is_valid_subtree(start: u64, end: u64) -> bool {
    let Some(size) = end.checked_sub(start) else {
        return false;
    };
    match size.checked_next_power_of_two() {
        Some(ceil) => start.is_multiple_of(ceil),
        // BIT_CEIL(size) is 2^64, beyond u64: only 0 is a multiple of it below 2^64.
        None => start == 0,
    }
}

/// The subtree hash a subtree inclusion proof leads to (draft §4.3.2): the
/// proof is an RFC 6962 inclusion proof for entry `index - start` of the tree
/// over `D[start:end]`.
pub fn subtree_hash_from_inclusion_proof(
    index: u64,
    start: u64,
    end: u64,
    leaf_hash: &[u8],
    proof: &[&[u8]],
) -> Result<Hash, ProofError> {
    if !is_valid_subtree(start, end) {
        return Err(ProofError::InvalidSubtree { start, end });
    }
    if index < start || index >= end {
        return Err(ProofError::IndexOutsideSubtree { index, start, end });
    }
    check_proof_hash_sizes(proof)?;
    root_from_inclusion_proof(index - start, end - start, leaf_hash, proof)
}

/// Check that `leaf_hash` is entry `index` of the subtree `[start, end)` whose
/// hash is `subtree_hash` (draft §4.3.3).
pub fn verify_subtree_inclusion(
    index: u64,
    start: u64,
    end: u64,
    leaf_hash: &[u8],
    proof: &[&[u8]],
    subtree_hash: &[u8],
) -> Result<(), ProofError> {
    let computed = subtree_hash_from_inclusion_proof(index, start, end, leaf_hash, proof)?;
    if computed.as_slice() == subtree_hash {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// Check that the subtree `[start, end)` with hash `subtree_hash` is part of
/// the tree of `size` entries with root `root` (draft §4.4.3 and Appendix B.5).
///
/// The empty subtree `[x, x)` is part of every tree that reaches `x`: its
/// proof is empty, and its hash must be that of the empty list, whatever the
/// root. The subtree `[0, size)` is the tree itself: its proof is empty and
/// its hash must equal the root.
pub fn verify_subtree_consistency(
    start: u64,
    end: u64,
    size: u64,
    proof: &[&[u8]],
    subtree_hash: &[u8],
    root: &[u8],
) -> Result<(), ProofError> {
    if !is_valid_subtree(start, end) {
        return Err(ProofError::InvalidSubtree { start, end });
    }
    if end > size {
        return Err(ProofError::SubtreeBeyondSize { start, end, size });
    }
    if start == end {
        if !proof.is_empty() {
            return Err(ProofError::UnexpectedProof);
        }
        return if subtree_hash == empty_root().as_slice() {
            Ok(())
        } else {
            Err(ProofError::SubtreeMismatch)
        };
    }
    if start == 0 && end == size {
        // The subtree is the whole tree: nothing to prove beyond equal hashes,
        // compared as given, as for two trees of equal size (RFC 6962).
        if !proof.is_empty() {
            return Err(ProofError::UnexpectedProof);
        }
        return if subtree_hash == root {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    check_proof_hash_sizes(proof)?;
    let subtree: Hash = subtree_hash
        .try_into()
        .map_err(|_| ProofError::SubtreeHashSize(subtree_hash.len()))?;

    // Walk up from the subtree's first and last entries and the tree's last
    // entry; shifting all three right by one climbs a level.
    let mut walk = Walk {
        first: start,
        last: end - 1,
        tree_last: size - 1,
    };
    // Climb the levels that need no proof hash: to the subtree's own root when
    // it ends where the tree ends, else while its last entry is a right child
    // (those levels are inside the subtree, its hash already covers them).
    if walk.last == walk.tree_last {
        while walk.first != walk.last {
            walk.up();
        }
    } else {
        while walk.first != walk.last && walk.last & 1 == 1 {
            walk.up();
        }
    }
    // When the walk reached a single node, that node is the subtree itself and
    // the climb starts from its hash; otherwise the proof starts with the hash
    // of the node holding the subtree's last entry.
    let starts_at_subtree = walk.first == walk.last;
    let want = usize::from(!starts_at_subtree) + walk.steps_to_root();
    if proof.len() != want {
        return Err(ProofError::WrongProofSize {
            got: proof.len(),
            want,
        });
    }
    let (seed, rest): (Hash, &[&[u8]]) = match proof.split_first() {
        Some((first, rest)) if !starts_at_subtree => (as_hash(first)?, rest),
        _ => (subtree, proof),
    };

    // Rebuild both hashes from the same seed: `sub` takes only the left
    // siblings inside the subtree, `full` every sibling up to the root.
    let (mut sub, mut full) = (seed, seed);
    for c in rest {
        if walk.last & 1 == 1 || walk.last == walk.tree_last {
            if walk.first < walk.last {
                sub = node_hash(c, &sub);
            }
            full = node_hash(c, &full);
            // On the tree's ragged right edge a node may be a left child with
            // no right sibling: those levels take no proof hash.
            while walk.last & 1 == 0 {
                walk.up();
            }
        } else {
            full = node_hash(&full, c);
        }
        walk.up();
    }
    if sub != subtree {
        return Err(ProofError::SubtreeMismatch);
    }
    if full.as_slice() != root {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// Positions of the subtree's first and last entries and of the tree's last
/// entry, at the current level.
#[derive(Clone, Copy)]
struct Walk {
    first: u64,
    last: u64,
    tree_last: u64,
}

impl Walk {
    fn up(&mut self) {
        self.first >>= 1;
        self.last >>= 1;
        self.tree_last >>= 1;
    }

    /// How many proof hashes the climb from here to the root takes: one per
    /// level where the node has a sibling.
    fn steps_to_root(mut self) -> usize {
        let mut steps = 0;
        while self.tree_last != 0 {
            if self.last & 1 == 1 || self.last == self.tree_last {
                while self.last & 1 == 0 {
                    self.up();
                }
            }
            self.up();
            steps += 1;
        }
        steps
    }
}

fn as_hash(bytes: &[u8]) -> Result<Hash, ProofError> {
    bytes
        .try_into()
        .map_err(|_| ProofError::ProofHashSize(bytes.len()))
}

fn check_proof_hash_sizes(proof: &[&[u8]]) -> Result<(), ProofError> {
    match proof.iter().find(|h| h.len() != HASH_SIZE) {
        Some(h) => Err(ProofError::ProofHashSize(h.len())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::leaf_hash;
    use crate::tree::{subtree_consistency_proof, subtree_hash, subtree_inclusion_proof};

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n)
            .map(|i| leaf_hash(format!("entry {i}").as_bytes()))
            .collect()
    }

    fn refs(p: &[Hash]) -> Vec<&[u8]> {
        p.iter().map(|h| h.as_slice()).collect()
    }

    /// Every subtree `[start, end)` with `end <= n`, empty ones included.
    fn subtrees(n: u64) -> Vec<(u64, u64)> {
        (0..=n)
            .flat_map(|start| (start..=n).map(move |end| (start, end)))
            .filter(|&(start, end)| is_valid_subtree(start, end))
            .collect()
    }

    #[test]
    fn validity_follows_the_draft() {
        // [0, x) and [x, x) are always subtrees.
        for x in 0..100 {
            assert!(is_valid_subtree(0, x));
            assert!(is_valid_subtree(x, x));
        }
        // The draft's examples.
        assert!(is_valid_subtree(4, 8));
        assert!(is_valid_subtree(8, 13));
        assert!(is_valid_subtree(4, 7));
        assert!(!is_valid_subtree(7, 9));
        assert!(!is_valid_subtree(3, 5));
        assert!(!is_valid_subtree(2, 5));
        assert!(!is_valid_subtree(2, 1));
        // Sizes whose BIT_CEIL does not fit in 64 bits.
        assert!(is_valid_subtree(0, u64::MAX));
        assert!(!is_valid_subtree(1, (1 << 63) + 2));
        assert!(is_valid_subtree(1 << 63, u64::MAX));
        // Brute force against the definition, in u128.
        for start in 0..70u64 {
            for end in 0..70u64 {
                let want = start <= end
                    && u128::from(start) % u128::from(end - start).next_power_of_two().max(1) == 0;
                assert_eq!(is_valid_subtree(start, end), want, "[{start}, {end})");
            }
        }
    }

    #[test]
    fn every_subtree_inclusion_proof_verifies_and_tampering_is_caught() {
        let all = leaves(40);
        for n in 1..=40u64 {
            let l = &all[..n as usize];
            for (start, end) in subtrees(n) {
                let hash = subtree_hash(l, start, end).unwrap();
                for index in start..end {
                    let leaf = &l[index as usize];
                    let p = subtree_inclusion_proof(l, index, start, end).unwrap();
                    verify_subtree_inclusion(index, start, end, leaf, &refs(&p), &hash).unwrap();
                    for j in 0..p.len() {
                        let mut bad = p.clone();
                        bad[j][7] ^= 0x10;
                        assert_eq!(
                            verify_subtree_inclusion(index, start, end, leaf, &refs(&bad), &hash),
                            Err(ProofError::RootMismatch),
                            "[{start}, {end}) index {index} j={j}"
                        );
                    }
                    if end - start > 1 {
                        let other = if index + 1 < end { index + 1 } else { start };
                        assert!(
                            verify_subtree_inclusion(other, start, end, leaf, &refs(&p), &hash)
                                .is_err()
                        );
                    }
                }
                // No entry is outside its subtree.
                assert!(subtree_inclusion_proof(l, end, start, end).is_none());
                assert!(matches!(
                    verify_subtree_inclusion(end, start, end, &l[0], &[], &hash),
                    Err(ProofError::IndexOutsideSubtree { .. })
                ));
            }
        }
    }

    #[test]
    fn every_subtree_consistency_proof_verifies_and_tampering_is_caught() {
        let all = leaves(40);
        for n in 1..=40u64 {
            let l = &all[..n as usize];
            let root = crate::tree::root(l);
            for (start, end) in subtrees(n) {
                let hash = subtree_hash(l, start, end).unwrap();
                let p = subtree_consistency_proof(l, start, end).unwrap();
                verify_subtree_consistency(start, end, n, &refs(&p), &hash, &root)
                    .unwrap_or_else(|e| panic!("[{start}, {end}) in {n}: {e}"));
                for j in 0..p.len() {
                    let mut bad = p.clone();
                    bad[j][31] ^= 0x80;
                    assert!(
                        verify_subtree_consistency(start, end, n, &refs(&bad), &hash, &root)
                            .is_err(),
                        "[{start}, {end}) in {n}, j={j}"
                    );
                }
                // A proof one hash short or long, a flipped bit in either hash,
                // or a bigger tree is refused.
                if let Some((_, shorter)) = p.split_last() {
                    assert!(
                        verify_subtree_consistency(start, end, n, &refs(shorter), &hash, &root)
                            .is_err()
                    );
                }
                let mut longer = p.clone();
                longer.push(root);
                assert!(
                    verify_subtree_consistency(start, end, n, &refs(&longer), &hash, &root)
                        .is_err()
                );
                let mut bad_root = root;
                bad_root[0] ^= 1;
                let mut bad_hash = hash;
                bad_hash[0] ^= 1;
                if start < end {
                    assert!(
                        verify_subtree_consistency(start, end, n, &refs(&p), &hash, &bad_root)
                            .is_err()
                    );
                }
                assert!(
                    verify_subtree_consistency(start, end, n, &refs(&p), &bad_hash, &root).is_err()
                );
                if end > 0 {
                    assert!(matches!(
                        verify_subtree_consistency(start, end, end - 1, &refs(&p), &hash, &root),
                        Err(ProofError::SubtreeBeyondSize { .. })
                    ));
                }
                // A forked history (one entry of the subtree changed) is not consistent.
                if start < end {
                    let mut fork = l.to_vec();
                    fork[end as usize - 1] = leaf_hash(b"forged");
                    let forged = subtree_hash(&fork, start, end).unwrap();
                    assert!(
                        verify_subtree_consistency(start, end, n, &refs(&p), &forged, &root)
                            .is_err()
                    );
                }
            }
            // Invalid intervals have no proof.
            assert!(subtree_consistency_proof(l, 0, n + 1).is_none());
        }
    }

    #[test]
    fn subtree_proofs_agree_with_rfc6962_proofs() {
        // SUBTREE_PROOF(0, end, D_n) = PROOF(end, D_n), and
        // SUBTREE_PROOF(start, start + 1, D_n) = PATH(start, D_n) (draft §4.4.1).
        let all = leaves(40);
        for n in 1..=40usize {
            let l = &all[..n];
            for end in 1..=n {
                assert_eq!(
                    subtree_consistency_proof(l, 0, end as u64),
                    crate::tree::consistency_proof(l, end)
                );
            }
            for start in 0..n {
                assert_eq!(
                    subtree_consistency_proof(l, start as u64, start as u64 + 1),
                    crate::tree::inclusion_proof(l, start)
                );
            }
        }
    }

    #[test]
    fn draft_examples() {
        // [4, 8) in a tree of 14: MTH(D[0:4]), MTH(D[8:14]).
        let l = leaves(14);
        let r = crate::tree::root;
        assert_eq!(
            subtree_consistency_proof(&l, 4, 8).unwrap(),
            vec![r(&l[0..4]), r(&l[8..14])]
        );
        // [8, 13) in a tree of 14: d[12], d[13], MTH(D[8:12]), MTH(D[0:8]).
        assert_eq!(
            subtree_consistency_proof(&l, 8, 13).unwrap(),
            vec![l[12], l[13], r(&l[8..12]), r(&l[0..8])]
        );
        // Entry 10 of [8, 13): d[11], MTH(D[8:10]), d[12].
        assert_eq!(
            subtree_inclusion_proof(&l, 10, 8, 13).unwrap(),
            vec![l[11], r(&l[8..10]), l[12]]
        );
    }

    #[test]
    fn malformed_inputs_are_refused() {
        let l = leaves(8);
        let root = crate::tree::root(&l);
        let hash = subtree_hash(&l, 4, 6).unwrap();
        let p = subtree_consistency_proof(&l, 4, 6).unwrap();
        let mut short: Vec<&[u8]> = refs(&p);
        short[0] = &p[0][..31];
        assert_eq!(
            verify_subtree_consistency(4, 6, 8, &short, &hash, &root),
            Err(ProofError::ProofHashSize(31))
        );
        assert_eq!(
            verify_subtree_consistency(4, 6, 8, &refs(&p), &hash[..5], &root),
            Err(ProofError::SubtreeHashSize(5))
        );
        assert_eq!(
            verify_subtree_consistency(3, 5, 8, &refs(&p), &hash, &root),
            Err(ProofError::InvalidSubtree { start: 3, end: 5 })
        );
        // The empty subtree: empty proof and the empty hash, whatever the root.
        let empty = empty_root();
        verify_subtree_consistency(3, 3, 8, &[], &empty, b"anything").unwrap();
        verify_subtree_consistency(0, 0, 0, &[], &empty, b"anything").unwrap();
        assert!(verify_subtree_consistency(3, 3, 8, &[&empty], &empty, &root).is_err());
        assert!(verify_subtree_consistency(3, 3, 8, &[], &root, &root).is_err());
        assert!(verify_subtree_consistency(9, 9, 8, &[], &empty, &root).is_err());
    }
}
