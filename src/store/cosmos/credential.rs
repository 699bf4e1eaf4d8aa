//! Microsoft Entra ID credentials for Cosmos DB: workload identity, then the managed identity,
//! then the Azure CLI login; the first that yields a token is kept.

use std::sync::Arc;

use anyhow::Context;
use async_trait::async_trait;
use azure_core::credentials::{AccessToken, TokenCredential, TokenRequestOptions};

/// Microsoft Entra ID for Azure: workload identity (when its variables are set), then the
/// managed identity, then the Azure CLI login (a developer's laptop). The first that yields a
/// token is kept.
pub(super) fn entra_id() -> anyhow::Result<Arc<dyn TokenCredential>> {
    let mut sources: Vec<Arc<dyn TokenCredential>> = Vec::new();
    if let Ok(workload) = azure_identity::WorkloadIdentityCredential::new(None) {
        sources.push(workload);
    }
    sources.push(
        azure_identity::ManagedIdentityCredential::new(None)
            .context("RAGCHAT_COSMOS_KEY is unset, so Entra ID is used: managed identity")?,
    );
    sources.push(
        azure_identity::AzureCliCredential::new(None)
            .context("RAGCHAT_COSMOS_KEY is unset, so Entra ID is used: Azure CLI")?,
    );
    Ok(Arc::new(ChainedCredential {
        sources,
        chosen: std::sync::OnceLock::new(),
    }))
}

/// azure_identity 1.0 has no chained credential; this is the smallest one.
#[derive(Debug)]
struct ChainedCredential {
    sources: Vec<Arc<dyn TokenCredential>>,
    chosen: std::sync::OnceLock<usize>,
}

#[async_trait]
impl TokenCredential for ChainedCredential {
    async fn get_token(
        &self,
        scopes: &[&str],
        options: Option<TokenRequestOptions<'_>>,
    ) -> azure_core::Result<AccessToken> {
        if let Some(source) = self.chosen.get().and_then(|&i| self.sources.get(i)) {
            return source.get_token(scopes, options).await;
        }
        let mut errors = Vec::new();
        for (i, source) in self.sources.iter().enumerate() {
            match source.get_token(scopes, options.clone()).await {
                Ok(token) => {
                    let _ = self.chosen.set(i);
                    return Ok(token);
                }
                Err(e) => errors.push(e.to_string()),
            }
        }
        Err(azure_core::Error::with_message(
            azure_core::error::ErrorKind::Credential,
            format!(
                "no Microsoft Entra ID credential worked (workload identity, managed identity, \
                 Azure CLI): {}",
                errors.join("; ")
            ),
        ))
    }
}
