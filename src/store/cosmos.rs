//! Azure Cosmos DB (NoSQL) record store: one document per turn, id = turn id, partition key
//! `/conversation_id`, written with idempotent upserts. Authenticates with an account key (the
//! emulator, tests) or Microsoft Entra ID (workload identity, managed identity, Azure CLI) — the
//! production default, no keys.
//!
//! At start it checks that the container exists and is partitioned by `/conversation_id`
//! (optionally creating database and container), and refuses to start when it is set up wrongly,
//! saying what is wrong and how to fix it. A Cosmos that is merely unreachable does not stop the
//! start: the store connects on first success, and records spool until then.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use azure_core::credentials::{AccessToken, Secret, TokenCredential, TokenRequestOptions};
use azure_data_cosmos::clients::{ContainerClient, DatabaseClient};
use azure_data_cosmos::feed::FeedScope;
use azure_data_cosmos::models::{ContainerProperties, PartitionKeyDefinition};
use azure_data_cosmos::options::{
    EndToEndOperationLatencyPolicy, ItemReadOptions, ItemWriteOptions, OperationOptions,
    OperationOptionsBuilder, QueryOptions,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, Query, RoutingStrategy,
};
use futures::TryStreamExt;
use secrecy::ExposeSecret;

use super::{RecordStore, StoreError, TurnRecord};
use crate::config::StoreConfig;

/// The partition key path ragchat needs: a conversation's turns live together, so loading a
/// conversation is a single-partition query and writes spread across conversations.
pub const PARTITION_KEY: &str = "/conversation_id";

/// How long start-up waits for Cosmos before starting degraded.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A Cosmos DB container of turn records.
pub struct CosmosStore {
    /// Set on the first successful connection (client built, container checked).
    container: tokio::sync::OnceCell<ContainerClient>,
    settings: StoreConfig,
    describe: String,
    timeout: Duration,
}

/// Why connecting failed: set up wrongly (refuse to start; readiness down), or not reachable
/// yet (start degraded; records spool).
enum ConnectError {
    Misconfigured(String),
    Unavailable(String),
}

impl From<ConnectError> for StoreError {
    fn from(e: ConnectError) -> Self {
        match e {
            ConnectError::Misconfigured(m) => StoreError::Misconfigured(m),
            ConnectError::Unavailable(m) => StoreError::transient(m),
        }
    }
}

/// Classifies an SDK error: what may clear (throttling, timeouts, transport, 5xx, a container
/// or role assignment not there yet) is transient; a request Cosmos refuses is not.
fn classify(e: &CosmosError) -> StoreError {
    let status = status(e);
    let message = e.to_string();
    match status {
        400 | 413 => StoreError::Rejected(format!("{status}: {message}")),
        _ => StoreError::Transient {
            message: format!("cosmos {status}: {message}"),
            retry_after: e
                .response()
                .and_then(|r| r.headers().retry_after_ms)
                .map(Duration::from_millis),
        },
    }
}

fn status(e: &CosmosError) -> u16 {
    u16::from(e.status().status_code())
}

/// The endpoint as shown in messages and /health: scheme, host and port only. A connection
/// string pasted by mistake must never reach a log.
fn redacted(endpoint: &str) -> String {
    match reqwest::Url::parse(endpoint) {
        Ok(url) if !endpoint.contains("AccountKey") => format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        ),
        _ => "(not an endpoint URL)".into(),
    }
}

impl CosmosStore {
    /// Connects (creating database and container when allowed) and checks the container.
    /// Fails when it is set up wrongly; starts degraded when Cosmos is only unreachable.
    pub async fn open(config: &StoreConfig) -> anyhow::Result<Self> {
        let endpoint = config.cosmos_endpoint.as_deref().unwrap_or_default();
        let auth = if config.cosmos_key.is_some() {
            "key"
        } else {
            "entra-id"
        };
        let store = Self {
            container: tokio::sync::OnceCell::new(),
            settings: config.clone(),
            describe: format!(
                "cosmos:{} {}/{} ({auth})",
                redacted(endpoint),
                config.cosmos_database,
                config.cosmos_container
            ),
            timeout: Duration::from_millis(config.timeout_ms).max(Duration::from_secs(1)),
        };
        match tokio::time::timeout(OPEN_TIMEOUT, store.container()).await {
            Ok(Ok(_)) => tracing::info!(store = %store.describe, "cosmos record store ready"),
            Ok(Err(ConnectError::Misconfigured(m))) => anyhow::bail!(m),
            Ok(Err(ConnectError::Unavailable(m))) => tracing::warn!(error = %m,
                "cosmos is unreachable; starting degraded: records spool until it answers"),
            Err(_) => tracing::warn!(timeout = ?OPEN_TIMEOUT,
                "cosmos did not answer; starting degraded: records spool until it answers"),
        }
        Ok(store)
    }

    /// The container, connecting and checking it on first use; failures are retried by the
    /// next call.
    async fn container(&self) -> Result<&ContainerClient, ConnectError> {
        self.container
            .get_or_try_init(|| connect(&self.settings))
            .await
    }

    /// Per-call options: an end-to-end deadline covering the SDK's own retries (including its
    /// 429 retries, which honour `x-ms-retry-after-ms`).
    fn options(&self) -> OperationOptions {
        OperationOptionsBuilder::new()
            .with_end_to_end_latency_policy(EndToEndOperationLatencyPolicy::new(self.timeout))
            .build()
    }
}

async fn connect(config: &StoreConfig) -> Result<ContainerClient, ConnectError> {
    let endpoint = config.cosmos_endpoint.as_deref().unwrap_or_default();
    let (database, container) = (&config.cosmos_database, &config.cosmos_container);
    let client = client(endpoint, config).await?;
    let db = client.database_client(database);
    if config.cosmos_create {
        create_if_missing(&client, &db, database, container).await?;
    }
    check_container(&db, database, container, config).await
}

async fn client(endpoint: &str, config: &StoreConfig) -> Result<CosmosClient, ConnectError> {
    if endpoint.contains("AccountKey") {
        return Err(ConnectError::Misconfigured(
            "RAGCHAT_COSMOS_ENDPOINT holds a connection string: set it to the account URL \
             (https://NAME.documents.azure.com:443/) and the key, if any, in RAGCHAT_COSMOS_KEY"
                .into(),
        ));
    }
    let shown = redacted(endpoint);
    let account_endpoint: AccountEndpoint = endpoint.parse().map_err(|e| {
        ConnectError::Misconfigured(format!("RAGCHAT_COSMOS_ENDPOINT: {shown} is invalid: {e}"))
    })?;
    let account = match &config.cosmos_key {
        Some(key) => AccountReference::with_authentication_key(
            account_endpoint,
            Secret::new(key.expose_secret().to_owned()),
        ),
        None => AccountReference::with_credential(
            account_endpoint,
            entra_id_credential().map_err(|e| ConnectError::Misconfigured(format!("{e:#}")))?,
        ),
    };
    CosmosClient::builder()
        // The account's own region order; a multi-region account fails over by itself.
        .build(account, RoutingStrategy::PreferredRegions(Vec::new()))
        .await
        .map_err(|e| start_error(&e, &format!("connecting to {shown}")))
}

async fn create_if_missing(
    client: &CosmosClient,
    db: &DatabaseClient,
    database: &str,
    container: &str,
) -> Result<(), ConnectError> {
    match client.create_database(database, None).await {
        Ok(_) => tracing::info!(database, "created the cosmos database"),
        Err(e) if status(&e) == 409 => {}
        // Entra ID data-plane roles cannot create databases: check what exists instead.
        Err(e) if status(&e) == 403 => {
            tracing::warn!(
                database,
                "not allowed to create the database; checking it exists"
            );
            return Ok(());
        }
        Err(e) => return Err(start_error(&e, &format!("creating database {database:?}"))),
    }
    let properties = ContainerProperties::new(
        container.to_owned(),
        PartitionKeyDefinition::new(vec![PARTITION_KEY.into()]),
    );
    match db.create_container(properties, None).await {
        Ok(_) => tracing::info!(container, "created the cosmos container"),
        Err(e) if status(&e) == 409 => {}
        Err(e) if status(&e) == 403 => {
            tracing::warn!(
                container,
                "not allowed to create the container; checking it exists"
            );
        }
        Err(e) => {
            return Err(start_error(
                &e,
                &format!("creating container {container:?}"),
            ));
        }
    }
    Ok(())
}

async fn check_container(
    db: &DatabaseClient,
    database: &str,
    container: &str,
    config: &StoreConfig,
) -> Result<ContainerClient, ConnectError> {
    let client = match db.container_client(container, None).await {
        Ok(c) => c,
        Err(e) if status(&e) == 404 => {
            let hint = if config.cosmos_create {
                ""
            } else {
                ", or set RAGCHAT_COSMOS_CREATE=true to create it at start"
            };
            return Err(ConnectError::Misconfigured(format!(
                "RAGCHAT_COSMOS_CONTAINER: container {container:?} in database {database:?} does \
                 not exist: create it with partition key {PARTITION_KEY} (infra/ does){hint}"
            )));
        }
        Err(e) => return Err(start_error(&e, &format!("opening container {container:?}"))),
    };
    match check_partition_key(&client, container).await {
        Ok(()) => Ok(client),
        Err(StoreError::Misconfigured(m)) => Err(ConnectError::Misconfigured(m)),
        Err(other) => Err(ConnectError::Unavailable(other.to_string())),
    }
}

/// The container still exists and is partitioned by `/conversation_id` (start and readiness).
async fn check_partition_key(client: &ContainerClient, container: &str) -> Result<(), StoreError> {
    let properties: ContainerProperties = match client.read(None).await {
        Ok(response) => response
            .into_model()
            .map_err(|e| StoreError::transient(format!("container properties: {e}")))?,
        Err(e) if status(&e) == 404 => {
            return Err(StoreError::Misconfigured(format!(
                "RAGCHAT_COSMOS_CONTAINER: container {container:?} does not exist (any more): \
                 create it with partition key {PARTITION_KEY}"
            )));
        }
        Err(e) => return Err(classify(&e)),
    };
    let paths: Vec<String> = properties
        .partition_key
        .paths()
        .iter()
        .map(|p| p.to_string())
        .collect();
    if paths != [PARTITION_KEY] {
        return Err(StoreError::Misconfigured(format!(
            "RAGCHAT_COSMOS_CONTAINER: container {container:?} is partitioned by {}, but ragchat \
             needs {PARTITION_KEY}. A container's partition key cannot be changed: create a new \
             container partitioned by {PARTITION_KEY} and point RAGCHAT_COSMOS_CONTAINER at it \
             (docs/records.md)",
            paths.join(",")
        )));
    }
    Ok(())
}

/// A failed set-up call: refused credentials or roles, or a bad request, are misconfiguration;
/// the rest (refused connections, timeouts, 5xx, throttling) may clear.
fn start_error(e: &CosmosError, doing: &str) -> ConnectError {
    let hint = match status(e) {
        401 => {
            " — the key or token was refused: check RAGCHAT_COSMOS_KEY, or unset it to use \
             Microsoft Entra ID"
        }
        403 => {
            " — not authorised: give this identity the \"Cosmos DB Built-in Data Contributor\" \
             role on the account"
        }
        _ => "",
    };
    let message = format!("RAGCHAT_COSMOS_ENDPOINT: {doing} failed: {e}{hint}");
    match status(e) {
        400 | 401 | 403 | 404 => ConnectError::Misconfigured(message),
        _ => ConnectError::Unavailable(message),
    }
}

#[async_trait]
impl RecordStore for CosmosStore {
    async fn put(&self, record: &TurnRecord) -> Result<(), StoreError> {
        // Whatever keeps us from the container now (even a container deleted under us) may be
        // fixed while the record waits in the spool: never reject a record for it.
        let container = self
            .container()
            .await
            .map_err(|e| StoreError::transient(StoreError::from(e)))?;
        let options = ItemWriteOptions::default().with_operation_options(self.options());
        container
            .upsert_item(
                record.conversation_id.clone(),
                &record.id,
                record,
                Some(options),
            )
            .await
            .map(drop)
            .map_err(|e| classify(&e))
    }

    async fn get(&self, conversation_id: &str, id: &str) -> Result<Option<TurnRecord>, StoreError> {
        let container = self.container().await?;
        let options = ItemReadOptions::default().with_operation_options(self.options());
        match container
            .read_item(conversation_id.to_owned(), id, Some(options))
            .await
        {
            Ok(response) => response
                .into_model::<TurnRecord>()
                .map(Some)
                .map_err(|e| StoreError::Rejected(format!("stored record: {e}"))),
            Err(e) if status(&e) == 404 => Ok(None),
            Err(e) => Err(classify(&e)),
        }
    }

    async fn conversation(
        &self,
        conversation_id: &str,
        n: usize,
    ) -> Result<Vec<TurnRecord>, StoreError> {
        let container = self.container().await?;
        // Single-partition: the partition key is both the scope and in WHERE.
        let query = Query::from(
            "SELECT TOP @n * FROM c WHERE c.conversation_id = @cid ORDER BY c.created_at DESC",
        )
        .with_parameter("@n", n as u64)
        .and_then(|q| q.with_parameter("@cid", conversation_id))
        .map_err(|e| classify(&e))?;
        let options = QueryOptions::default().with_operation_options(self.options());
        container
            .query_items::<TurnRecord>(
                query,
                FeedScope::partition(conversation_id.to_owned()),
                Some(options),
            )
            .await
            .map_err(|e| classify(&e))?
            .try_collect()
            .await
            .map_err(|e| classify(&e))
    }

    async fn recent(&self, _n: usize) -> Result<Vec<TurnRecord>, StoreError> {
        // A cross-partition ORDER BY needs a query plan the Rust SDK does not run yet.
        Err(StoreError::Unsupported(
            "listing recent turns across conversations is not supported on Cosmos DB; use \
             `ragchat records --conversation ID`, or Data Explorer in the Azure portal"
                .into(),
        ))
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let container = self.container().await?;
        check_partition_key(container, &self.settings.cosmos_container).await
    }
}

/// Microsoft Entra ID for Azure: workload identity (when its variables are set), then the
/// managed identity, then the Azure CLI login (a developer's laptop). The first that yields a
/// token is kept.
fn entra_id_credential() -> anyhow::Result<Arc<dyn TokenCredential>> {
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
