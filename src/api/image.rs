//! `lifeboat.v1.ImageService`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tonic::{Request, Response, Status, Streaming};

use super::status::to_status;
use super::{Ctx, actor, pb};
use crate::error::Error;
use crate::store::ImageMeta;
use crate::store::images::MAX_ARTIFACT_BYTES;

/// An import slower than this on average (after a grace of the idle
/// timeout) is dropped.
pub const MIN_IMPORT_RATE: usize = 64 * 1024;

/// A temporary file holding one upload, removed when dropped.
struct Upload(std::path::PathBuf);

impl Upload {
    fn new() -> std::io::Result<Upload> {
        let dir = std::env::temp_dir().join("lifeboat-uploads");
        std::fs::create_dir_all(&dir)?;
        Ok(Upload(dir.join(uuid::Uuid::new_v4().simple().to_string())))
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub struct Images {
    ctx: Arc<Ctx>,
}

impl Images {
    pub fn new(ctx: Arc<Ctx>) -> Images {
        Images { ctx }
    }
}

fn image(m: &ImageMeta) -> pb::Image {
    pb::Image {
        id: m.id.clone(),
        kind: serde_json::to_value(m.kind).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
        size: m.size,
        name: m.name.clone(),
        imported_at: m.imported_at.clone(),
        imported_by: m.imported_by.clone(),
    }
}

#[tonic::async_trait]
impl pb::image_service_server::ImageService for Images {
    async fn import(&self, req: Request<Streaming<pb::ImportChunk>>) -> Result<Response<pb::Image>, Status> {
        let who = actor(&req);
        // Each import buffers its artifact: bound how many run at once.
        let _permit = self.ctx.imports.clone().try_acquire_owned().map_err(|_| {
            to_status(Error::ResourceExhausted(format!(
                "this server already runs {} image imports; try again when one has finished",
                self.ctx.limits.imports
            )))
        })?;
        let idle = self.ctx.limits.import_idle;
        let mut stream = req.into_inner();
        // The artifact goes to a temporary file as it arrives (memory per
        // import stays at one chunk), removed when the import ends.
        let upload = Upload::new().map_err(|e| to_status(Error::Internal(format!("cannot buffer an upload: {e}"))))?;
        let mut file = tokio::fs::File::create(&upload.0)
            .await
            .map_err(|e| to_status(Error::Internal(format!("cannot buffer an upload: {e}"))))?;
        let mut size = 0usize;
        let mut name = String::new();
        let started = tokio::time::Instant::now();
        let mut last = started;
        loop {
            // Idle for `idle`, or slower on average than MIN_IMPORT_RATE
            // (after a grace of `idle`): a trickle must not hold a slot.
            let deadline = started + idle + Duration::from_secs_f64(size as f64 / MIN_IMPORT_RATE as f64);
            let wait = (last + idle).min(deadline);
            let what = if name.is_empty() { "an artifact".to_string() } else { crate::error::shown(&name) };
            let next = match tokio::time::timeout_at(wait, stream.next()).await {
                Ok(next) => next,
                Err(_) if last.elapsed() < idle => {
                    return Err(to_status(Error::ResourceExhausted(format!(
                        "the import of {what} arrives slower than {} KiB/s ({size} bytes in {}); it was dropped to free its import slot",
                        MIN_IMPORT_RATE >> 10,
                        crate::domain::duration::human(started.elapsed())
                    ))));
                }
                Err(_) => {
                    return Err(to_status(Error::ResourceExhausted(format!(
                        "the import of {what} sent nothing for {}; it was dropped to free its memory",
                        crate::domain::duration::human(idle)
                    ))));
                }
            };
            let Some(chunk) = next else { break };
            let chunk = chunk?;
            last = tokio::time::Instant::now();
            if name.is_empty() {
                name = chunk.name;
            }
            if size + chunk.data.len() > MAX_ARTIFACT_BYTES {
                return Err(to_status(Error::InvalidArgument(format!(
                    "artifact {name} is larger than the {} MiB limit",
                    MAX_ARTIFACT_BYTES >> 20
                ))));
            }
            size += chunk.data.len();
            file.write_all(&chunk.data)
                .await
                .map_err(|e| to_status(Error::Internal(format!("cannot buffer the upload of {name}: {e}"))))?;
        }
        if size == 0 {
            return Err(to_status(Error::InvalidArgument(format!("artifact {name} is empty"))));
        }
        file.flush()
            .await
            .map_err(|e| to_status(Error::Internal(format!("cannot buffer the upload of {name}: {e}"))))?;
        drop(file);
        let op = self.ctx.images.import_file(&upload.0, &name, &who);
        let meta = self.ctx.audited(&who, "image.import", &name, op).await.map_err(to_status)?;
        Ok(Response::new(image(&meta)))
    }

    async fn list(&self, _: Request<pb::ListImagesRequest>) -> Result<Response<pb::ListImagesResponse>, Status> {
        let list = self.ctx.images.list().await.map_err(to_status)?;
        Ok(Response::new(pb::ListImagesResponse { images: list.iter().map(image).collect() }))
    }
}
