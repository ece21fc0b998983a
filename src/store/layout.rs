//! The one place that knows object keys. Documented in the README so users
//! can inspect a store with ordinary tools.

pub fn snapshots_prefix(env: &str) -> String {
    format!("environments/{env}/snapshots/")
}

pub fn snapshot(env: &str, version: u64) -> String {
    format!("environments/{env}/snapshots/{version:010}.json")
}

/// The version a snapshot key names, if it is one.
pub fn snapshot_version(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    if name.len() == 10 && name.bytes().all(|b| b.is_ascii_digit()) { name.parse().ok() } else { None }
}

pub fn reference(env: &str, name: &str) -> String {
    format!("environments/{env}/refs/{name}")
}

pub fn refs_prefix(env: &str) -> String {
    format!("environments/{env}/refs/")
}

/// Digest → version index, so a snapshot can be named by (a prefix of) its digest.
pub fn digest_index(env: &str, hex: &str) -> String {
    format!("environments/{env}/digests/{hex}")
}

pub fn rejection(env: &str, version: u64) -> String {
    format!("environments/{env}/rejections/{version:010}.json")
}

pub fn audit(date: &str, stamp: &str, id: &str) -> String {
    format!("audit/{date}/{stamp}-{id}.json")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_keys_sort_by_version() {
        assert!(snapshot("e", 9) < snapshot("e", 10));
        assert_eq!(snapshot_version(&snapshot("e", 42)), Some(42));
        assert_eq!(snapshot_version("environments/e/snapshots/x.json"), None);
    }
}
