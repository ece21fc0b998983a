//! How every persisted record is encoded and decoded: JSON with a
//! `format_version` that readers check before anything else. A record that
//! does not decode is an integrity error naming its key, never a default.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::domain::snapshot::IntegrityError;
use crate::error::Error;

/// A record kept in the object store (or a provider's directory).
pub trait Persisted: Serialize + DeserializeOwned {
    /// What it is, for messages: "lease", "journal entry", …
    const KIND: &'static str;
    /// The newest format this binary writes and reads.
    const FORMAT: u32;
    /// The oldest format it still reads (and writes where the newer one's
    /// fields are not used, so that older binaries read those records).
    const OLDEST: u32 = Self::FORMAT;
}

pub fn encode<T: Persisted>(record: &T) -> Bytes {
    Bytes::from(serde_json::to_vec_pretty(record).expect("records always serialise"))
}

/// `encode` without the indentation, for the bulk records of a run (its
/// record and journal), which are written on the way to the first launch
/// and on every link of the critical path. Readers take either form.
pub fn encode_compact<T: Persisted>(record: &T) -> Bytes {
    Bytes::from(serde_json::to_vec(record).expect("records always serialise"))
}

/// Decodes a record read from `key` in `store` (a description, for messages).
pub fn decode<T: Persisted>(bytes: &[u8], key: &str, store: &str) -> Result<T, Error> {
    decode_raw::<T>(bytes).map_err(|source| integrity::<T>(key, store, source))
}

/// `decode` of a record already parsed as JSON (a reader that looked at its
/// fields to tell what kind of record it is).
pub fn decode_value<T: Persisted>(value: serde_json::Value, key: &str, store: &str) -> Result<T, Error> {
    from_value::<T>(value).map_err(|source| integrity::<T>(key, store, source))
}

/// The integrity error of a `T` read from `key` in `store`.
pub fn integrity<T: Persisted>(key: &str, store: &str, source: IntegrityError) -> Error {
    Error::Integrity {
        what: T::KIND.to_string(),
        key: key.to_string(),
        store: store.to_string(),
        source: Box::new(source),
    }
}

/// JSON, or the reason it is not.
pub fn parse(bytes: &[u8]) -> Result<serde_json::Value, IntegrityError> {
    serde_json::from_slice(bytes).map_err(|e| IntegrityError::Malformed(format!("not JSON: {e}")))
}

/// The same check, with the bare reason. The version is read first without
/// building the document, so a big record (a run's plan: megabytes at
/// 10,000 services) decodes straight into its type; anything odd (not an
/// object, a repeated field) takes the slower path through a JSON value,
/// which names what is wrong.
pub fn decode_raw<T: Persisted>(bytes: &[u8]) -> Result<T, IntegrityError> {
    #[derive(serde::Deserialize)]
    struct Version {
        format_version: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Version>(bytes) {
        Ok(v) if bytes.trim_ascii_start().starts_with(b"{") => {
            check_format::<T>(v.format_version.as_ref().and_then(serde_json::Value::as_u64))?;
            serde_json::from_slice(bytes).map_err(|e| IntegrityError::Malformed(e.to_string()))
        }
        _ => from_value(parse(bytes)?),
    }
}

fn check_format<T: Persisted>(found: Option<u64>) -> Result<(), IntegrityError> {
    match found {
        Some(v) if (u64::from(T::OLDEST)..=u64::from(T::FORMAT)).contains(&v) => Ok(()),
        Some(v) => Err(IntegrityError::UnknownFormat { found: v, known: T::FORMAT.into() }),
        None => Err(IntegrityError::Malformed("it has no format_version".into())),
    }
}

fn from_value<T: Persisted>(value: serde_json::Value) -> Result<T, IntegrityError> {
    check_format::<T>(value.get("format_version").and_then(serde_json::Value::as_u64))?;
    serde_json::from_value(value).map_err(|e| IntegrityError::Malformed(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq)]
    struct Thing {
        format_version: u32,
        n: u64,
    }
    impl Persisted for Thing {
        const KIND: &'static str = "thing";
        const FORMAT: u32 = 2;
    }

    #[test]
    fn checks_the_format_before_the_fields() {
        let ok = encode(&Thing { format_version: 2, n: 7 });
        assert_eq!(decode::<Thing>(&ok, "k", "s").unwrap().n, 7);
        let newer = br#"{"format_version": 3, "n": "seven"}"#;
        let err = decode::<Thing>(newer, "things/k", "/data").unwrap_err().to_string();
        assert!(
            err.contains("format_version 3") && err.contains("newer lifeboat") && err.contains("things/k"),
            "{err}"
        );
        for bad in [&b"\x00\xff garbage"[..], b"{}", br#"{"format_version": 2}"#, b"[1,2]"] {
            let err = decode::<Thing>(bad, "things/k", "/data").unwrap_err();
            assert!(matches!(err, Error::Integrity { .. }), "{err}");
        }
    }

    /// The fast path (the version read first, then the type) and the path
    /// through a JSON value agree on what decodes and on what is wrong.
    #[test]
    fn both_paths_agree() {
        let compact = encode_compact(&Thing { format_version: 2, n: 7 });
        assert_eq!(decode_raw::<Thing>(&compact).unwrap().n, 7);
        let cases: [(&[u8], Option<&str>); 5] = [
            (br#"{"format_version": 2, "n": "seven"}"#, Some("invalid type")),
            (br#"{"format_version": "2", "n": 7}"#, Some("no format_version")),
            (br#"{"n": 7}"#, Some("no format_version")),
            (br#" {"format_version": 2, "format_version": 2, "n": 7}"#, None),
            (br#"{"format_version": 2, "n": 7, "later": [1, {"x": null}]}"#, None),
        ];
        for (bytes, wrong) in cases {
            let fast = decode_raw::<Thing>(bytes);
            let slow = parse(bytes).and_then(from_value::<Thing>);
            match wrong {
                None => assert_eq!(fast.unwrap(), slow.unwrap()),
                Some(what) => {
                    let (fast, slow) = (fast.unwrap_err().to_string(), slow.unwrap_err().to_string());
                    assert!(fast.contains(what) && slow.contains(what), "{fast} / {slow}");
                }
            }
        }
    }
}
