//! The C2SP tlog-tiles layout (tile height 8): tile paths and entry bundles.

/// Hashes (or entries) in a full tile.
pub const TILE_WIDTH: u64 = 256;

/// `N` written as C2SP tile paths write it: 3-digit groups, all but the last prefixed with `x`.
pub fn index_path(n: u64) -> String {
    let mut groups = vec![format!("{:03}", n % 1000)];
    let mut rest = n / 1000;
    while rest > 0 {
        groups.push(format!("x{:03}", rest % 1000));
        rest /= 1000;
    }
    groups.reverse();
    groups.join("/")
}

/// The path (below the log's prefix) of level `level` tile `n` of `width` hashes,
/// or of entry bundle `n` when `level` is `None`.
pub fn tile_path(level: Option<u8>, n: u64, width: u64) -> String {
    let l = level.map_or_else(|| "entries".to_string(), |l| l.to_string());
    let p = if width < TILE_WIDTH {
        format!(".p/{width}")
    } else {
        String::new()
    };
    format!("tile/{l}/{}{p}", index_path(n))
}

/// Split an entry bundle into its entries (each prefixed by a big-endian uint16 length).
pub fn parse_entry_bundle(bundle: &[u8]) -> Result<Vec<&[u8]>, BundleError> {
    let mut out = Vec::new();
    let mut rest = bundle;
    while !rest.is_empty() {
        let [a, b, tail @ ..] = rest else {
            return Err(BundleError::Truncated(out.len()));
        };
        let len = usize::from(u16::from_be_bytes([*a, *b]));
        if tail.len() < len {
            return Err(BundleError::Truncated(out.len()));
        }
        out.push(&tail[..len]);
        rest = &tail[len..];
    }
    Ok(out)
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    #[error("the bundle is cut short in entry {0} of the bundle")]
    Truncated(usize),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_bundles() {
        assert_eq!(tile_path(Some(0), 0, 256), "tile/0/000");
        assert_eq!(tile_path(None, 1234, 7), "tile/entries/x001/234.p/7");
        assert_eq!(tile_path(Some(2), 123_456_789, 256), "tile/2/x123/x456/789");
        let bundle = [0u8, 2, b'h', b'i', 0, 0, 0, 1, b'!'];
        assert_eq!(
            parse_entry_bundle(&bundle).unwrap(),
            vec![&b"hi"[..], &b""[..], &b"!"[..]]
        );
        assert_eq!(
            parse_entry_bundle(&bundle[..8]),
            Err(BundleError::Truncated(2))
        );
        assert_eq!(parse_entry_bundle(&[0u8]), Err(BundleError::Truncated(0)));
    }
}
