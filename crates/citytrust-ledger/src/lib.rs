//! The transparency log's mathematics: RFC 6962 Merkle tree hashing, and the
//! building and checking of inclusion and consistency proofs (RFC 6962 §2.1,
//! as in C2SP tlog and transparency-dev/merkle).
//!
//! The [`subtree`] module adds the subtrees of the Merkle Tree Certificates
//! draft and their inclusion and consistency proofs; [`checkpoint`] signs
//! and opens the log's checkpoints; [`witness`] is a witness's side of C2SP
//! tlog-witness (deciding an `add-checkpoint` request, Ed25519
//! `cosignature/v1`); [`policy`] reads C2SP tlog-policy files and says
//! whether a checkpoint's cosignatures meet the quorum.
//!
//! Pure functions over hashes: no IO, no clock, no randomness. Verification
//! takes proof elements as byte slices of any length, because proofs come
//! from outside and a malformed one must be refused, never trusted to be the
//! right shape.

pub mod checkpoint;
pub mod entry;
pub mod hashtile;
pub mod policy;
pub mod subtree;
pub mod tiles;
pub mod tree;
pub mod witness;

pub use subtree::{
    is_valid_subtree, subtree_hash_from_inclusion_proof, verify_subtree_consistency,
    verify_subtree_inclusion,
};

use sha2::{Digest, Sha256};

/// Size of every hash in the tree (SHA-256).
pub const HASH_SIZE: usize = 32;

/// A node or leaf hash.
pub type Hash = [u8; HASH_SIZE];

/// The hash of a leaf: SHA-256(0x00 ‖ entry).
pub fn leaf_hash(entry: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(entry);
    h.finalize().into()
}

/// The hash of an interior node: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &[u8], right: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// Why a proof was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    #[error("index {index} is not in a tree of size {size}")]
    IndexBeyondSize { index: u64, size: u64 },
    #[error("the leaf hash is {0} bytes, not {HASH_SIZE}")]
    LeafHashSize(usize),
    #[error("the proof has {got} hashes; a proof for this position has {want}")]
    WrongProofSize { got: usize, want: usize },
    #[error("the proof does not lead to the expected root")]
    RootMismatch,
    #[error("the second tree (size {size2}) is smaller than the first (size {size1})")]
    TreeShrank { size1: u64, size2: u64 },
    #[error("trees of equal size need an empty consistency proof")]
    UnexpectedProof,
    #[error("the consistency proof is empty")]
    EmptyProof,
    #[error("consistency with the empty tree proves nothing")]
    EmptyTree,
    #[error("[{start}, {end}) is not a subtree")]
    InvalidSubtree { start: u64, end: u64 },
    #[error("index {index} is not in the subtree [{start}, {end})")]
    IndexOutsideSubtree { index: u64, start: u64, end: u64 },
    #[error("the subtree [{start}, {end}) is not in a tree of size {size}")]
    SubtreeBeyondSize { start: u64, end: u64, size: u64 },
    #[error("a proof hash is {0} bytes, not {HASH_SIZE}")]
    ProofHashSize(usize),
    #[error("the subtree hash is {0} bytes, not {HASH_SIZE}")]
    SubtreeHashSize(usize),
    #[error("the proof does not lead to the expected subtree hash")]
    SubtreeMismatch,
}

/// Check that `leaf_hash` is the `index`-th leaf of the tree of `size` leaves with root `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[&[u8]],
    root: &[u8],
) -> Result<(), ProofError> {
    let computed = root_from_inclusion_proof(index, size, leaf_hash, proof)?;
    if computed.as_slice() == root {
        Ok(())
    } else {
        Err(ProofError::RootMismatch)
    }
}

/// The root an inclusion proof leads to.
pub fn root_from_inclusion_proof(
    index: u64,
    size: u64,
    leaf_hash: &[u8],
    proof: &[&[u8]],
) -> Result<Hash, ProofError> {
    if index >= size {
        return Err(ProofError::IndexBeyondSize { index, size });
    }
    let seed: Hash = leaf_hash
        .try_into()
        .map_err(|_| ProofError::LeafHashSize(leaf_hash.len()))?;
    let (inner, border) = decompose_inclusion_proof(index, size);
    if proof.len() != inner + border {
        return Err(ProofError::WrongProofSize {
            got: proof.len(),
            want: inner + border,
        });
    }
    let hash = chain_inner(seed, &proof[..inner], index);
    Ok(chain_border_right(hash, &proof[inner..]))
}

/// Check that the tree of `size2` leaves with root `root2` extends the tree of
/// `size1` leaves with root `root1`.
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[&[u8]],
    root1: &[u8],
    root2: &[u8],
) -> Result<(), ProofError> {
    if size2 < size1 {
        return Err(ProofError::TreeShrank { size1, size2 });
    }
    if size1 == 0 {
        // Every tree extends the empty one, so such a check says nothing; a
        // verifier asking for it has lost its state. Refuse, as RFC 6962's
        // reference verifiers do.
        return Err(ProofError::EmptyTree);
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::UnexpectedProof);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::RootMismatch)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::EmptyProof);
    }
    let (inner, border) = decompose_inclusion_proof(size1 - 1, size2);
    let shift = size1.trailing_zeros() as usize;
    let inner = inner - shift; // shift < inner because size1 < size2
    // The proof starts with the root of the subtree of size 2^shift holding
    // the last leaf of the first tree, unless that subtree is the whole first tree.
    let (seed, rest): (&[u8], &[&[u8]]) = if size1 == 1u64 << shift {
        (root1, proof)
    } else {
        (proof[0], &proof[1..])
    };
    if rest.len() != inner + border {
        let start = proof.len() - rest.len();
        return Err(ProofError::WrongProofSize {
            got: proof.len(),
            want: start + inner + border,
        });
    }
    let Ok(seed) = Hash::try_from(seed) else {
        return Err(ProofError::RootMismatch);
    };
    let mask = (size1 - 1) >> shift;
    let hash1 = chain_border_right(
        chain_inner_right(seed, &rest[..inner], mask),
        &rest[inner..],
    );
    if hash1.as_slice() != root1 {
        return Err(ProofError::RootMismatch);
    }
    let hash2 = chain_border_right(chain_inner(seed, &rest[..inner], mask), &rest[inner..]);
    if hash2.as_slice() != root2 {
        return Err(ProofError::RootMismatch);
    }
    Ok(())
}

/// How many proof hashes sit below the point where the path to `index`
/// leaves the left edge of the tree (inner), and how many above it (border).
fn decompose_inclusion_proof(index: u64, size: u64) -> (usize, usize) {
    let inner = (u64::BITS - (index ^ (size - 1)).leading_zeros()) as usize;
    let border = (index.checked_shr(inner as u32).unwrap_or(0)).count_ones() as usize;
    (inner, border)
}

fn chain_inner(mut seed: Hash, proof: &[&[u8]], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        seed = if (index >> i) & 1 == 0 {
            node_hash(&seed, h)
        } else {
            node_hash(h, &seed)
        };
    }
    seed
}

fn chain_inner_right(mut seed: Hash, proof: &[&[u8]], index: u64) -> Hash {
    for (i, h) in proof.iter().enumerate() {
        if (index >> i) & 1 == 1 {
            seed = node_hash(h, &seed);
        }
    }
    seed
}

fn chain_border_right(mut seed: Hash, proof: &[&[u8]]) -> Hash {
    for h in proof {
        seed = node_hash(h, &seed);
    }
    seed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6962_hashes_are_domain_separated() {
        // The empty tree's root is SHA-256("").
        assert_eq!(
            hex(&empty_root()),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        // A leaf is not the node of the same bytes.
        assert_ne!(leaf_hash(b"ab"), node_hash(b"a", b"b"));
        // RFC 6962 reference: the leaf hash of the empty entry.
        assert_eq!(
            hex(&leaf_hash(b"")),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    fn hex(h: &[u8]) -> String {
        h.iter().map(|b| format!("{b:02x}")).collect()
    }
}
