//! The log's stored hashes as tiles with their interior levels.
//!
//! A C2SP tile at tile level `L` holds the 256 hashes of tree level `8L`
//! under it. Answering a proof from that alone costs up to 255 hashings per
//! tile (the interior nodes are recomputed), so the log keeps each tile with
//! its seven interior rows as well: row `j` holds the complete nodes of tree
//! level `8L + j` under the tile (`width >> j` of them), 511 hashes in a full
//! tile. Every stored hash of the tlog layout (`tlog::stored_hash_index`) is
//! in exactly one tile, so a proof is a handful of lookups, and the tree can
//! be kept in the database a tile at a time instead of in memory.
//!
//! Tiles only grow: a hash, once stored, never changes. [`TileSet`] answers
//! `tlog::HashReader` from the tiles it holds; [`Recorder`] is a reader that
//! only notes which hashes a computation needs (the indexes a proof reads
//! depend on the sizes alone), so a caller can fetch those tiles first.

use std::collections::HashMap;
use std::sync::Mutex;

use tlog_tiles::tlog;

/// Tree levels per tile.
pub const HEIGHT: u8 = 8;
/// Hashes in a tile's bottom row when it is full.
pub const WIDTH: u64 = 1 << HEIGHT;
/// Hashes in a full tile, all rows.
const CAPACITY: usize = 2 * WIDTH as usize - 1;
const HASH: usize = tlog::HASH_SIZE;

/// Tile `index` at tile level `level`.
pub type TileKey = (u8, u64);

/// Where a stored hash lives: its tile, its row in the tile, its position
/// in the row, and the tile width that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub tile: TileKey,
    pub row: u8,
    pub position: u64,
    /// The tile holds the hash once its bottom row has this many hashes.
    pub width: u64,
}

/// The tile holding stored hash `index`.
pub fn locate(index: u64) -> Location {
    let (level, n) = tlog::split_stored_hash_index(index);
    locate_node(level, n)
}

/// The tile holding node `n` of tree level `level`.
pub fn locate_node(level: u8, n: u64) -> Location {
    let row = level % HEIGHT;
    let per_tile = WIDTH >> row;
    Location {
        tile: (level / HEIGHT, n / per_tile),
        row,
        position: n % per_tile,
        width: ((n % per_tile) + 1) << row,
    }
}

/// Offset of row `row` in a full tile's layout.
fn row_offset(row: u8) -> usize {
    (2 * WIDTH as usize) - ((2 * WIDTH as usize) >> row)
}

/// The tiles (key and width) that hold the right edge of the tree of `size`
/// entries: at each tile level, the tile the next node will go into. A width
/// of 0 is a tile not started yet.
pub fn edge(size: u64) -> Vec<(TileKey, u64)> {
    let mut out = Vec::new();
    let mut level = 0u8;
    loop {
        let nodes = size
            .checked_shr(u32::from(level) * u32::from(HEIGHT))
            .unwrap_or(0);
        if nodes == 0 {
            break;
        }
        out.push(((level, nodes / WIDTH), nodes % WIDTH));
        level += 1;
    }
    out
}

/// Why stored tile bytes were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TileError {
    #[error("tile {level}/{index} claims a width of {width} (at most {WIDTH})")]
    Width { level: u8, index: u64, width: u64 },
    #[error("tile {level}/{index} of width {width} has {got} bytes; it needs {want}")]
    Length {
        level: u8,
        index: u64,
        width: u64,
        got: usize,
        want: usize,
    },
}

/// One tile, its bottom row and interior rows.
#[derive(Clone)]
pub struct HashTile {
    width: u64,
    hashes: Box<[tlog::Hash]>,
}

impl std::fmt::Debug for HashTile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashTile(width {})", self.width)
    }
}

impl Default for HashTile {
    fn default() -> Self {
        HashTile {
            width: 0,
            hashes: vec![tlog::Hash([0; HASH]); CAPACITY].into_boxed_slice(),
        }
    }
}

/// Bytes a tile of `width` takes when encoded.
fn encoded_len(width: u64) -> usize {
    (0..HEIGHT).map(|j| (width >> j) as usize).sum::<usize>() * HASH
}

impl HashTile {
    /// How many hashes its bottom row holds.
    pub fn width(&self) -> u64 {
        self.width
    }

    pub fn is_full(&self) -> bool {
        self.width == WIDTH
    }

    /// Node `position` of row `row`, if the tile holds it.
    pub fn get(&self, row: u8, position: u64) -> Option<tlog::Hash> {
        (row < HEIGHT && position < self.width >> row)
            .then(|| self.hashes[row_offset(row) + position as usize])
    }

    /// Store a node. The bottom row grows one at a time, in order; an interior
    /// node is stored once the bottom row holds everything under it.
    fn set(&mut self, row: u8, position: u64, hash: tlog::Hash) -> Result<(), tlog::Error> {
        if row == 0 {
            if position != self.width || self.width == WIDTH {
                return Err(tlog::Error::BadMath);
            }
            self.width += 1;
        } else if position >= self.width >> row {
            return Err(tlog::Error::BadMath);
        }
        self.hashes[row_offset(row) + position as usize] = hash;
        Ok(())
    }

    /// The tile as it was when its bottom row held `width` hashes (a tile
    /// read from the database may be wider than the tree a node builds on:
    /// another node has grown it since).
    pub fn cut_to(&self, width: u64) -> HashTile {
        HashTile {
            width: width.min(self.width),
            hashes: self.hashes.clone(),
        }
    }

    /// The C2SP tile of `width` hashes: the bottom row's first `width`.
    pub fn bottom(&self, width: u64) -> Option<Vec<u8>> {
        (width <= self.width).then(|| {
            self.hashes[..width as usize]
                .iter()
                .flat_map(|h| h.0)
                .collect()
        })
    }

    /// The tile as stored: each row's nodes in order, bottom row first.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(encoded_len(self.width));
        for row in 0..HEIGHT {
            let n = (self.width >> row) as usize;
            let start = row_offset(row);
            for h in &self.hashes[start..start + n] {
                out.extend_from_slice(&h.0);
            }
        }
        out
    }

    /// Read a stored tile back. The bytes must be exactly what a tile of
    /// `width` encodes to (a shorter or longer row is refused, never padded).
    pub fn decode(key: TileKey, width: u64, bytes: &[u8]) -> Result<HashTile, TileError> {
        let (level, index) = key;
        if width > WIDTH {
            return Err(TileError::Width {
                level,
                index,
                width,
            });
        }
        let want = encoded_len(width);
        if bytes.len() != want {
            return Err(TileError::Length {
                level,
                index,
                width,
                got: bytes.len(),
                want,
            });
        }
        let mut tile = HashTile {
            width,
            ..HashTile::default()
        };
        let mut chunks = bytes.chunks_exact(HASH);
        for row in 0..HEIGHT {
            let start = row_offset(row);
            for slot in &mut tile.hashes[start..start + (width >> row) as usize] {
                if let Some(c) = chunks.next() {
                    slot.0.copy_from_slice(c);
                }
            }
        }
        Ok(tile)
    }

    /// The first interior node that is not the hash of the two below it, if any.
    pub fn first_inconsistency(&self) -> Option<(u8, u64)> {
        for row in 1..HEIGHT {
            for p in 0..self.width >> row {
                let (l, r) = (self.get(row - 1, 2 * p)?, self.get(row - 1, 2 * p + 1)?);
                if self.get(row, p) != Some(tlog::node_hash(l, r)) {
                    return Some((row, p));
                }
            }
        }
        None
    }

    /// The hash of the whole tile (a node one level above its top row), if full.
    pub fn root(&self) -> Option<tlog::Hash> {
        let top = HEIGHT - 1;
        Some(tlog::node_hash(self.get(top, 0)?, self.get(top, 1)?))
    }
}

/// Tiles by key, read as a tree of stored hashes.
#[derive(Debug, Default, Clone)]
pub struct TileSet {
    tiles: HashMap<TileKey, HashTile>,
}

impl TileSet {
    pub fn get(&self, key: &TileKey) -> Option<&HashTile> {
        self.tiles.get(key)
    }

    pub fn insert(&mut self, key: TileKey, tile: HashTile) {
        self.tiles.insert(key, tile);
    }

    pub fn remove(&mut self, key: &TileKey) -> Option<HashTile> {
        self.tiles.remove(key)
    }

    pub fn len(&self) -> usize {
        self.tiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tiles.is_empty()
    }

    pub fn keys(&self) -> impl Iterator<Item = &TileKey> {
        self.tiles.keys()
    }

    /// Whether the tile holding `loc` is here and wide enough.
    pub fn holds(&self, loc: &Location) -> bool {
        self.tiles
            .get(&loc.tile)
            .is_some_and(|t| t.width >= loc.width)
    }

    /// The stored hash at `index`, if held.
    pub fn hash(&self, index: u64) -> Option<tlog::Hash> {
        let loc = locate(index);
        self.tiles.get(&loc.tile)?.get(loc.row, loc.position)
    }

    /// Append entry `n` (its data) to the tree of `n` entries held here:
    /// stores its leaf hash and every node it completes, creating tiles as
    /// it goes. Returns the keys of the tiles it changed. The tiles of the
    /// tree's right edge (see [`edge`]) must be here.
    pub fn append(&mut self, n: u64, data: &[u8]) -> Result<Vec<TileKey>, tlog::Error> {
        let hashes = tlog::stored_hashes(n, data, &*self)?;
        let first = tlog::stored_hash_index(0, n);
        let mut changed = Vec::with_capacity(2);
        for (i, h) in hashes.into_iter().enumerate() {
            let loc = locate(first + i as u64);
            let tile = self.tiles.entry(loc.tile).or_default();
            tile.set(loc.row, loc.position, h)?;
            if changed.last() != Some(&loc.tile) {
                changed.push(loc.tile);
            }
        }
        Ok(changed)
    }
}

impl tlog::HashReader for TileSet {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|&i| self.hash(i).ok_or(tlog::Error::IndexesNotInTree))
            .collect()
    }
}

/// Two tile sets read as one: the first where it holds the hash.
pub struct Layered<'a>(pub &'a TileSet, pub &'a TileSet);

impl tlog::HashReader for Layered<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        indexes
            .iter()
            .map(|&i| {
                self.0
                    .hash(i)
                    .or_else(|| self.1.hash(i))
                    .ok_or(tlog::Error::IndexesNotInTree)
            })
            .collect()
    }
}

/// A reader that answers zeros and remembers what was asked: run a
/// computation over it to learn which tiles it needs.
#[derive(Default)]
pub struct Recorder {
    asked: Mutex<Vec<u64>>,
}

impl Recorder {
    /// Where every hash asked for lives, one location per tile (the widest).
    pub fn needs(self) -> Vec<Location> {
        let asked = self.asked.into_inner().unwrap_or_else(|e| e.into_inner());
        let mut by_tile: HashMap<TileKey, Location> = HashMap::new();
        for i in asked {
            let loc = locate(i);
            by_tile
                .entry(loc.tile)
                .and_modify(|l| {
                    if loc.width > l.width {
                        *l = loc;
                    }
                })
                .or_insert(loc);
        }
        let mut out: Vec<Location> = by_tile.into_values().collect();
        out.sort_by_key(|l| l.tile);
        out
    }
}

impl tlog::HashReader for Recorder {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<tlog::Hash>, tlog::Error> {
        self.asked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(indexes);
        Ok(vec![tlog::Hash([0; HASH]); indexes.len()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree;

    fn data(i: u64) -> Vec<u8> {
        format!("entry {i}").into_bytes()
    }

    /// A tree of `n` entries held in tiles, built one append at a time.
    fn build(n: u64) -> TileSet {
        let mut set = TileSet::default();
        for i in 0..n {
            set.append(i, &data(i)).unwrap();
        }
        set
    }

    #[test]
    fn every_stored_hash_is_in_one_tile_and_proofs_match_the_reference() {
        let n = 70_000u64; // three tile levels, partial at each
        let set = build(n);
        let leaves: Vec<crate::Hash> = (0..n).map(|i| crate::leaf_hash(&data(i))).collect();
        // Every stored hash of the tlog layout is held.
        for i in 0..tlog::stored_hash_count(n) {
            assert!(set.hash(i).is_some(), "stored hash {i}");
        }
        for size in [1, 2, 255, 256, 257, 511, 512, 65_535, 65_536, 65_537, n] {
            let root = tlog::tree_hash(size, &set).unwrap();
            assert_eq!(root.0, tree::root(&leaves[..size as usize]), "size {size}");
            for index in [0, size / 3, size - 1] {
                let proof = tlog::prove_record(size, index, &set).unwrap();
                let reference =
                    tree::inclusion_proof(&leaves[..size as usize], index as usize).unwrap();
                assert_eq!(proof.iter().map(|h| h.0).collect::<Vec<_>>(), reference);
            }
            for old in [1, size / 2, size] {
                if old == 0 {
                    continue;
                }
                let proof = tlog::prove_tree(size, old, &set).unwrap();
                let reference =
                    tree::consistency_proof(&leaves[..size as usize], old as usize).unwrap();
                assert_eq!(proof.iter().map(|h| h.0).collect::<Vec<_>>(), reference);
            }
        }
        assert!(set.get(&(0, 0)).unwrap().first_inconsistency().is_none());
        assert_eq!(
            set.get(&(0, 0)).unwrap().root(),
            set.get(&(1, 0)).unwrap().get(0, 0)
        );
    }

    #[test]
    fn the_edge_is_enough_to_grow_and_a_recorder_names_the_tiles_a_proof_needs() {
        let n = 66_000u64;
        let full = build(n);
        // Keep only the right edge, as a node does after start: it can append.
        let mut edge_only = TileSet::default();
        for (key, width) in edge(n) {
            if width > 0 {
                edge_only.insert(key, full.get(&key).unwrap().clone());
            }
        }
        assert_eq!(
            tlog::tree_hash(n, &edge_only).unwrap(),
            tlog::tree_hash(n, &full).unwrap()
        );
        let mut grown = full.clone();
        for i in n..n + 600 {
            edge_only.append(i, &data(i)).unwrap();
            grown.append(i, &data(i)).unwrap();
        }
        assert_eq!(
            tlog::tree_hash(n + 600, &edge_only).unwrap(),
            tlog::tree_hash(n + 600, &grown).unwrap()
        );
        // A proof of an old entry needs tiles the edge lacks; the recorder says which.
        assert!(tlog::prove_record(n, 5, &edge_only).is_err());
        let rec = Recorder::default();
        tlog::prove_record(n, 5, &rec).unwrap();
        let mut fetched = edge_only.clone();
        for loc in rec.needs() {
            fetched.insert(loc.tile, full.get(&loc.tile).unwrap().clone());
        }
        assert_eq!(
            tlog::prove_record(n, 5, &fetched).unwrap(),
            tlog::prove_record(n, 5, &full).unwrap()
        );
    }

    #[test]
    fn tiles_round_trip_and_bad_bytes_are_refused() {
        let set = build(300);
        for (key, width) in [((0u8, 0u64), 256u64), ((0, 1), 44), ((1, 0), 1)] {
            let tile = set.get(&key).unwrap();
            assert_eq!(tile.width(), width);
            let bytes = tile.encode();
            let back = HashTile::decode(key, width, &bytes).unwrap();
            assert_eq!(back.encode(), bytes);
            assert_eq!(back.bottom(width), tile.bottom(width));
            assert!(matches!(
                HashTile::decode(key, width, &bytes[..bytes.len() - 1]),
                Err(TileError::Length { .. })
            ));
            let mut longer = bytes.clone();
            longer.extend_from_slice(&[0; HASH]);
            assert!(HashTile::decode(key, width, &longer).is_err());
        }
        assert!(matches!(
            HashTile::decode((0, 0), 257, &[]),
            Err(TileError::Width { .. })
        ));
        // A changed interior node is found.
        let mut bytes = set.get(&(0, 0)).unwrap().encode();
        bytes[256 * HASH + 3] ^= 1;
        let bad = HashTile::decode((0, 0), 256, &bytes).unwrap();
        assert_eq!(bad.first_inconsistency(), Some((1, 0)));
        // A tile grown elsewhere, cut back to the tree one builds on, grows again
        // to the same hashes.
        let wide = set.get(&(0, 1)).unwrap();
        let mut cut = TileSet::default();
        cut.insert((0, 1), wide.cut_to(10));
        cut.insert((1, 0), set.get(&(1, 0)).unwrap().clone());
        for i in 266..300 {
            cut.append(i, &data(i)).unwrap();
        }
        assert_eq!(cut.get(&(0, 1)).unwrap().encode(), wide.encode());
        // Out of order growth is refused.
        let mut t = HashTile::default();
        assert!(t.set(0, 1, tlog::Hash([0; HASH])).is_err());
        assert!(t.set(1, 0, tlog::Hash([0; HASH])).is_err());
    }

    #[test]
    fn edges_and_locations() {
        assert_eq!(edge(0), vec![]);
        assert_eq!(edge(1), vec![((0, 0), 1)]);
        assert_eq!(edge(256), vec![((0, 1), 0), ((1, 0), 1)]);
        assert_eq!(edge(65_537), vec![((0, 256), 1), ((1, 1), 0), ((2, 0), 1)]);
        assert_eq!(
            locate_node(9, 3),
            Location {
                tile: (1, 0),
                row: 1,
                position: 3,
                width: 8
            }
        );
        assert_eq!(locate_node(0, 300).tile, (0, 1));
        assert_eq!(locate_node(7, 3).tile, (0, 1));
    }
}
