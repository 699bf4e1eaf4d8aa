//! Azure Cosmos DB (NoSQL) record store: one document per turn, id = turn id, partition key
//! `/conversation_id`, written with idempotent upserts. Authenticates with an account key (the
//! emulator, tests) or Microsoft Entra ID (workload identity, managed identity, Azure CLI) — the
//! production default, no keys.
//!
//! At start it checks that the container exists and is partitioned by `/conversation_id`
//! (optionally creating database and container), and refuses to start when it is set up wrongly,
//! saying what is wrong and how to fix it. A Cosmos that is merely unreachable does not stop the
//! start: the store connects on first success, and records spool until then.

use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::Secret;
use azure_data_cosmos::clients::{ContainerClient, DatabaseClient};
use azure_data_cosmos::feed::FeedScope;
use azure_data_cosmos::models::{ContainerProperties, PartitionKeyDefinition};
use azure_data_cosmos::options::{
    EndToEndOperationLatencyPolicy, ItemWriteOptions, OperationOptions, OperationOptionsBuilder,
    QueryOptions,
};
use azure_data_cosmos::{
    AccountEndpoint, AccountReference, CosmosClient, CosmosError, Query, RoutingStrategy,
};
use futures::TryStreamExt;
use secrecy::ExposeSecret;

mod credential;

use super::{RecordStore, StoreError, TurnRecord};
use crate::config::{CosmosSettings, redact_endpoint};

/// The partition key path ragchat needs: a conversation's turns live together, so loading a
/// conversation is a single-partition query and writes spread across conversations.
pub const PARTITION_KEY: &str = "/conversation_id";

/// How long start-up waits for Cosmos before starting degraded.
const OPEN_TIMEOUT: Duration = Duration::from_secs(30);

/// A Cosmos DB container of turn records.
pub struct CosmosStore {
    /// Set on the first successful connection (client built, container checked).
    container: tokio::sync::OnceCell<ContainerClient>,
    settings: CosmosSettings,
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

impl CosmosStore {
    /// Connects (creating database and container when allowed) and checks the container.
    /// Fails when it is set up wrongly; starts degraded when Cosmos is only unreachable.
    pub async fn open(config: &CosmosSettings) -> anyhow::Result<Self> {
        let endpoint = &config.endpoint;
        let auth = if config.key.is_some() {
            "key"
        } else {
            "entra-id"
        };
        let store = Self {
            container: tokio::sync::OnceCell::new(),
            settings: config.clone(),
            describe: format!(
                "cosmos:{} {}/{} ({auth})",
                redact_endpoint(endpoint),
                config.database,
                config.container
            ),
            timeout: config.timeout,
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

async fn connect(config: &CosmosSettings) -> Result<ContainerClient, ConnectError> {
    let (database, container) = (&config.database, &config.container);
    let client = client(&config.endpoint, config).await?;
    let db = client.database_client(database);
    if config.create {
        create_if_missing(&client, &db, database, container).await?;
    }
    check_container(&db, database, container, config).await
}

async fn client(endpoint: &str, config: &CosmosSettings) -> Result<CosmosClient, ConnectError> {
    if endpoint.contains("AccountKey") {
        return Err(ConnectError::Misconfigured(
            "RAGCHAT_COSMOS_ENDPOINT holds a connection string: set it to the account URL \
             (https://NAME.documents.azure.com:443/) and the key, if any, in RAGCHAT_COSMOS_KEY"
                .into(),
        ));
    }
    let shown = redact_endpoint(endpoint);
    let account_endpoint: AccountEndpoint = endpoint.parse().map_err(|e| {
        ConnectError::Misconfigured(format!("RAGCHAT_COSMOS_ENDPOINT: {shown} is invalid: {e}"))
    })?;
    let account = match &config.key {
        Some(key) => AccountReference::with_authentication_key(
            account_endpoint,
            Secret::new(key.expose_secret().to_owned()),
        ),
        None => AccountReference::with_credential(
            account_endpoint,
            credential::entra_id().map_err(|e| ConnectError::Misconfigured(format!("{e:#}")))?,
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
    config: &CosmosSettings,
) -> Result<ContainerClient, ConnectError> {
    let client = match db.container_client(container, None).await {
        Ok(c) => c,
        Err(e) if status(&e) == 404 => {
            let hint = if config.create {
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

    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let container = self.container().await?;
        check_partition_key(container, &self.settings.container).await
    }
}

#[cfg(test)]
mod tests {
    use azure_core::http::StatusCode;
    use azure_data_cosmos::CosmosStatus;

    use super::*;

    fn error(status: u16) -> CosmosError {
        CosmosError::builder()
            .with_status(CosmosStatus::new(StatusCode::from(status)))
            .with_message("the service said no")
            .build()
    }

    #[test]
    fn a_request_cosmos_refuses_is_rejected_and_the_rest_is_retried() {
        for status in [400, 413] {
            assert!(
                matches!(classify(&error(status)), StoreError::Rejected(_)),
                "{status}"
            );
        }
        // Throttling, timeouts, outages, and a role or container being fixed may all clear.
        for status in [401, 403, 404, 408, 409, 429, 449, 500, 503] {
            assert!(classify(&error(status)).is_transient(), "{status}");
        }
    }

    #[test]
    fn start_up_errors_say_what_to_fix_or_wait() {
        let misconfigured = |status| match start_error(&error(status), "opening") {
            ConnectError::Misconfigured(m) => Some(m),
            ConnectError::Unavailable(_) => None,
        };
        let refused = misconfigured(401).expect("a refused key stops the start");
        assert!(refused.contains("RAGCHAT_COSMOS_KEY"), "{refused}");
        let no_role = misconfigured(403).expect("a missing role stops the start");
        assert!(no_role.contains("Data Contributor"), "{no_role}");
        assert!(misconfigured(400).is_some());
        assert!(misconfigured(404).is_some());
        for status in [408, 429, 500, 503] {
            assert!(
                misconfigured(status).is_none(),
                "{status} may clear: start degraded"
            );
        }
    }

    #[test]
    fn the_endpoint_shown_never_carries_a_key_or_a_path() {
        assert_eq!(
            redact_endpoint("https://acct.documents.azure.com:443/dbs/x?sig=secret"),
            "https://acct.documents.azure.com"
        );
        assert_eq!(
            redact_endpoint("https://127.0.0.1:8081/"),
            "https://127.0.0.1:8081"
        );
        let pasted = "AccountEndpoint=https://a.documents.azure.com:443/;AccountKey=c2VjcmV0;";
        assert!(!redact_endpoint(pasted).contains("c2VjcmV0"));
        assert!(
            !redact_endpoint("https://u:p4ss@h:6334").contains("p4ss"),
            "no credentials"
        );
    }
}
