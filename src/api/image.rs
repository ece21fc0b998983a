//! `lifeboat.v1.ImageService`.

use std::sync::Arc;

use bytes::BytesMut;
use futures::StreamExt;
use tonic::{Request, Response, Status, Streaming};

use super::status::to_status;
use super::{Ctx, actor, pb};
use crate::error::Error;
use crate::store::ImageMeta;
use crate::store::images::MAX_ARTIFACT_BYTES;

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
        let mut buf = BytesMut::new();
        let mut name = String::new();
        loop {
            let next = tokio::time::timeout(idle, stream.next()).await.map_err(|_| {
                to_status(Error::ResourceExhausted(format!(
                    "the import of {} sent nothing for {idle:?}; it was dropped to free its memory",
                    if name.is_empty() { "an artifact" } else { &name }
                )))
            })?;
            let Some(chunk) = next else { break };
            let chunk = chunk?;
            if name.is_empty() {
                name = chunk.name;
            }
            if buf.len() + chunk.data.len() > MAX_ARTIFACT_BYTES {
                return Err(to_status(Error::InvalidArgument(format!(
                    "artifact {name} is larger than the {} MiB limit",
                    MAX_ARTIFACT_BYTES >> 20
                ))));
            }
            buf.extend_from_slice(&chunk.data);
        }
        if buf.is_empty() {
            return Err(to_status(Error::InvalidArgument(format!("artifact {name} is empty"))));
        }
        let op = self.ctx.images.import(buf.freeze(), &name, &who);
        let meta = self.ctx.audited(&who, "image.import", &name, op).await.map_err(to_status)?;
        Ok(Response::new(image(&meta)))
    }

    async fn list(&self, _: Request<pb::ListImagesRequest>) -> Result<Response<pb::ListImagesResponse>, Status> {
        let list = self.ctx.images.list().await.map_err(to_status)?;
        Ok(Response::new(pb::ListImagesResponse { images: list.iter().map(image).collect() }))
    }
}
