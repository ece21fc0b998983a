//! Each provider's `launch` table, validated by the provider's own schema
//! with the same line:column:path problems as the rest of the manifest.

mod ec2;
mod local;

use std::collections::BTreeMap;

use super::Provider;
use super::validator::Validator;
use crate::domain::source::Node;

impl Validator {
    pub(crate) fn launch(
        &mut self,
        node: &Node,
        path: &str,
        provider: Option<Provider>,
    ) -> Option<BTreeMap<String, serde_json::Value>> {
        match provider {
            Some(Provider::Local) => local::launch(self, node, path),
            Some(Provider::Ec2) => ec2::launch(self, node, path),
            // The provider itself is invalid, and reported: nothing to check against.
            None => {
                let mut f = self.table(node, path)?;
                f.used.iter_mut().for_each(|u| *u = true);
                Some(f.entries.iter().map(|e| (e.key.clone(), e.node.value.to_json())).collect())
            }
        }
    }
}
