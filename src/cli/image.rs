//! `lifeboat image import|list`.

use std::path::Path;

use serde_json::{Value, json};

use super::client::Client;
use super::output::{print_json, table};
use super::{Failure, Output};
use crate::api::pb;
use crate::store::images::{MAX_ARTIFACT_BYTES, detect};

fn image_json(i: &pb::Image) -> Value {
    json!({"id": i.id, "kind": i.kind, "size": i.size, "name": i.name, "imported_at": i.imported_at, "imported_by": i.imported_by})
}

/// Uploads an artifact in 1 MiB chunks; returns its image.
pub async fn import_file(client: &Client, path: &Path) -> Result<pb::Image, Failure> {
    let meta = std::fs::metadata(path).map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    if meta.is_dir() {
        return Err(Failure::invalid(format!(
            "{} is a directory: pack it as a .tar.gz (tar czf app.tar.gz -C {} .) and name the program with launch.entrypoint",
            path.display(),
            path.display()
        )));
    }
    if meta.len() > MAX_ARTIFACT_BYTES as u64 {
        return Err(Failure::invalid(format!(
            "{} is larger than the {} MiB artifact limit",
            path.display(),
            MAX_ARTIFACT_BYTES >> 20
        )));
    }
    let bytes = std::fs::read(path).map_err(|e| Failure::invalid(format!("cannot read {}: {e}", path.display())))?;
    if let Err(why) = detect(&bytes) {
        return Err(Failure::invalid(format!("{} is {why}", path.display())));
    }
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let chunks: Vec<pb::ImportChunk> = bytes
        .chunks(1 << 20)
        .enumerate()
        .map(|(i, c)| pb::ImportChunk { name: if i == 0 { name.clone() } else { String::new() }, data: c.to_vec() })
        .collect();
    let mut svc = client.images();
    let resp = svc.import(client.request(tokio_stream::iter(chunks))).await.map_err(|e| client.fail(e))?;
    Ok(resp.into_inner())
}

pub async fn import(client: &Client, path: &Path, output: Output) -> Result<(), Failure> {
    let image = import_file(client, path).await?;
    match output {
        Output::Json => print_json(&image_json(&image)),
        Output::Text => println!("{}", image.id),
    }
    Ok(())
}

pub async fn list(client: &Client, output: Output) -> Result<(), Failure> {
    let mut svc = client.images();
    let images =
        svc.list(client.request(pb::ListImagesRequest {})).await.map_err(|e| client.fail(e))?.into_inner().images;
    match output {
        Output::Json => print_json(&Value::Array(images.iter().map(image_json).collect())),
        Output::Text => {
            let rows: Vec<Vec<String>> = images
                .iter()
                .map(|i| vec![i.id.clone(), i.kind.clone(), i.size.to_string(), i.name.clone(), i.imported_at.clone()])
                .collect();
            println!("{}", table(&["ID", "KIND", "BYTES", "NAME", "IMPORTED"], &rows));
        }
    }
    Ok(())
}
