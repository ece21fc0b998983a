//! Local-provider artifacts, stored by content: an executable, or a tarball
//! of a directory. Written once; verified by digest when read.

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{DynStore, PutOptions, StoreError, layout};
use crate::domain::snapshot::sha256_hex;
use crate::error::{Error, Result};

pub const MAX_ARTIFACT_BYTES: usize = 512 * 1024 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ArtifactKind {
    Executable,
    Tar,
    TarGz,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ImageMeta {
    pub format_version: u32,
    /// `sha256:<hex>` of the artifact bytes.
    pub id: String,
    pub kind: ArtifactKind,
    pub size: u64,
    /// The file name it was imported from.
    pub name: String,
    pub imported_at: String,
    pub imported_by: String,
}

impl super::codec::Persisted for ImageMeta {
    const KIND: &'static str = "image metadata";
    const FORMAT: u32 = 1;
}

/// What kind of artifact these bytes are, or why they are none.
pub fn detect(bytes: &[u8]) -> std::result::Result<ArtifactKind, String> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        Ok(ArtifactKind::TarGz)
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        Ok(ArtifactKind::Tar)
    } else if bytes.starts_with(b"\x7fELF") || bytes.starts_with(b"#!") {
        Ok(ArtifactKind::Executable)
    } else {
        Err("not an executable (ELF or #! script) nor a .tar/.tar.gz archive".into())
    }
}

#[derive(Clone)]
pub struct ImageRepo {
    store: DynStore,
    limits: super::archive::Limits,
}

fn hex_of(id: &str) -> Result<&str> {
    match id.strip_prefix("sha256:") {
        Some(h) if h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) => Ok(h),
        _ => {
            Err(Error::InvalidArgument(format!("\"{}\" is not an image ID (sha256:<64 hex>)", crate::error::shown(id))))
        }
    }
}

impl ImageRepo {
    pub fn new(store: DynStore) -> ImageRepo {
        ImageRepo { store, limits: super::archive::Limits::default() }
    }

    /// What a tarball may unpack to, checked at import.
    pub fn with_limits(mut self, limits: super::archive::Limits) -> ImageRepo {
        self.limits = limits;
        self
    }

    /// Stores an artifact from a file (an import streamed to disk), never
    /// holding it whole in memory; importing the same bytes again is a no-op.
    pub async fn import_file(&self, path: &std::path::Path, name: &str, by: &str) -> Result<ImageMeta> {
        let limits = self.limits;
        let (src, shown) = (path.to_path_buf(), name.to_string());
        let inspected = tokio::task::spawn_blocking(move || -> Result<(ArtifactKind, String, u64)> {
            let summary = super::FileSummary::read(&src)
                .map_err(|e| Error::Internal(format!("cannot read the upload of {shown}: {e}")))?;
            let kind = detect(&summary.head).map_err(|why| Error::InvalidArgument(format!("{shown} is {why}")))?;
            if kind != ArtifactKind::Executable {
                super::archive::check_file(&src, kind, &limits)
                    .map_err(|why| Error::InvalidArgument(format!("{shown} is refused: {why}")))?;
            }
            Ok((kind, hex::encode(summary.sha256), summary.size))
        });
        let (kind, hex, size) = inspected.await.map_err(|e| Error::Internal(e.to_string()))??;
        if let Some(meta) = self.meta(&format!("sha256:{hex}")).await? {
            return Ok(meta);
        }
        match self.store.put_file(&layout::image_blob(&hex), path, PutOptions::create().retained()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.record(hex, kind, size, name, by).await
    }

    /// Stores an artifact; importing the same bytes again is a no-op.
    pub async fn import(&self, bytes: Bytes, name: &str, by: &str) -> Result<ImageMeta> {
        if bytes.len() > MAX_ARTIFACT_BYTES {
            return Err(Error::InvalidArgument(format!(
                "{name} is {} bytes, more than the {} MiB artifact limit",
                bytes.len(),
                MAX_ARTIFACT_BYTES >> 20
            )));
        }
        let kind = detect(&bytes).map_err(|why| Error::InvalidArgument(format!("{name} is {why}")))?;
        if kind != ArtifactKind::Executable {
            // Refuse a tarball that could not be unpacked safely now, not at launch.
            super::archive::check(&bytes, kind, &self.limits)
                .map_err(|why| Error::InvalidArgument(format!("{name} is refused: {why}")))?;
        }
        let hex = sha256_hex(&bytes);
        if let Some(meta) = self.meta(&format!("sha256:{hex}")).await? {
            return Ok(meta);
        }
        let size = bytes.len() as u64;
        match self.store.put(&layout::image_blob(&hex), bytes, PutOptions::create().retained()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e.into()),
        }
        self.record(hex, kind, size, name, by).await
    }

    /// Writes an artifact's metadata, which commits the import.
    async fn record(&self, hex: String, kind: ArtifactKind, size: u64, name: &str, by: &str) -> Result<ImageMeta> {
        let meta = ImageMeta {
            format_version: 1,
            id: format!("sha256:{hex}"),
            kind,
            size,
            name: name.to_string(),
            imported_at: super::snapshots::now_rfc3339(),
            imported_by: by.to_string(),
        };
        let m = super::codec::encode(&meta);
        match self.store.put(&layout::image_meta(&hex), m, PutOptions::create()).await {
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(meta),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn meta(&self, id: &str) -> Result<Option<ImageMeta>> {
        let hex = hex_of(id)?;
        match self.store.get(&layout::image_meta(hex)).await? {
            None => Ok(None),
            Some(obj) => super::codec::decode(&obj.bytes, &layout::image_meta(hex), &self.store.describe()).map(Some),
        }
    }

    /// The artifact's bytes, verified against its ID.
    pub async fn artifact(&self, id: &str) -> Result<Bytes> {
        let hex = hex_of(id)?;
        let key = layout::image_blob(hex);
        let obj = self.store.get(&key).await?.ok_or_else(|| {
            Error::NotFound(format!("image {id} is not in the store; import it with `lifeboat image import PATH`"))
        })?;
        let actual = sha256_hex(&obj.bytes);
        if actual != hex {
            return Err(Error::Integrity {
                what: format!("image {id}"),
                key,
                store: self.store.describe(),
                source: Box::new(crate::domain::snapshot::IntegrityError::DigestMismatch {
                    recorded: id.to_string(),
                    actual: format!("sha256:{actual}"),
                }),
            });
        }
        Ok(obj.bytes)
    }

    pub async fn list(&self) -> Result<Vec<ImageMeta>> {
        let mut out = Vec::new();
        for key in self.store.list(&layout::images_prefix()).await? {
            if let Some(hex) = layout::image_hex(&key)
                && let Some(m) = self.meta(&format!("sha256:{hex}")).await?
            {
                out.push(m);
            }
        }
        Ok(out)
    }
}
