//! What the server keeps per environment, apart from any manifest: its
//! promotion policy. A manifest can ask for a stricter gate than the
//! server's, never a looser one.

use serde::{Deserialize, Serialize};

use super::{DynStore, PutOptions, codec, layout};
use crate::domain::manifest::Promotion;
use crate::error::Result;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub format_version: u32,
    pub environment: String,
    /// `drill`: known-good moves only to a snapshot whose DR drill passed.
    pub promotion: Promotion,
    pub updated_by: String,
    pub updated_at: String,
}

impl codec::Persisted for Policy {
    const KIND: &'static str = "environment policy";
    const FORMAT: u32 = 1;
}

/// An environment's policy; one never set is `manual`.
pub async fn read(store: &DynStore, env: &str) -> Result<Option<Policy>> {
    let key = layout::policy(env);
    match store.get(&key).await? {
        None => Ok(None),
        Some(o) => Ok(Some(codec::decode(&o.bytes, &key, &store.describe())?)),
    }
}

pub async fn write(store: &DynStore, policy: &Policy) -> Result<()> {
    store.put(&layout::policy(&policy.environment), codec::encode(policy), PutOptions::overwrite()).await?;
    Ok(())
}

/// The gate that applies to a snapshot: the stricter of the server's
/// policy and the snapshot's manifest.
pub fn effective(server: Option<&Policy>, manifest: Promotion) -> Promotion {
    match (server.map(|p| p.promotion), manifest) {
        (Some(Promotion::Drill), _) | (_, Promotion::Drill) => Promotion::Drill,
        _ => Promotion::Manual,
    }
}
