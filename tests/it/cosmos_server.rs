//! The Cosmos DB–compatible test server (tests/cosmos-server/launcher.js, a patched
//! `@vercel/cosmosdb-server` over TLS on loopback), its fault-injection admin API, and the
//! official Python SDK that reads back what ragchat wrote.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// Any key works with the test server; this is the public emulator key.
pub const KEY: &str =
    "C2y6yDjf5/R+ob0N8A7Cgv30VRDJIWEHLM+4QDU5DE2nQ9nDuVTqobD4b8mGGyPMbIZnqyMsEcaGQy67XIw/Jw==";

pub struct CosmosServer {
    child: Child,
    pub endpoint: String,
    admin: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
struct Started {
    endpoint: String,
    admin: String,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cosmos-server")
}

impl CosmosServer {
    /// Starts a fresh, empty server on free loopback ports.
    pub async fn start() -> Self {
        assert!(
            dir().join("node_modules").is_dir(),
            "tests/cosmos-server/node_modules is missing: run the tests with `make test`, which \
             installs the pinned Cosmos test server"
        );
        let mut child = Command::new("node")
            .arg(dir().join("launcher.js"))
            // Held open by `child`: if this test process dies, the server exits too.
            .arg("--exit-with-stdin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts the Cosmos test server");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        tokio::time::timeout(
            Duration::from_secs(30),
            BufReader::new(stdout).read_line(&mut line),
        )
        .await
        .expect("the Cosmos test server starts within 30 s")
        .expect("its stdout is readable");
        let started: Started = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("unexpected launcher output {line:?}: {e}"));
        Self {
            child,
            endpoint: started.endpoint,
            admin: started.admin,
            http: reqwest::Client::new(),
        }
    }

    /// Flags that point ragchat at this server, in database `database` (created on start).
    pub fn args(&self, database: &str) -> Vec<String> {
        [
            "--store",
            "cosmos",
            "--cosmos-endpoint",
            &self.endpoint,
            "--cosmos-key",
            KEY,
            "--cosmos-database",
            database,
            "--cosmos-create",
            "true",
        ]
        .map(String::from)
        .to_vec()
    }

    pub async fn admin(&self, path: &str, body: serde_json::Value) -> serde_json::Value {
        self.http
            .post(format!("{}{path}", self.admin))
            .json(&body)
            .send()
            .await
            .expect("admin request")
            .error_for_status()
            .expect("admin accepts")
            .json()
            .await
            .unwrap_or(serde_json::Value::Null)
    }

    pub async fn stats(&self) -> serde_json::Value {
        self.http
            .get(format!("{}/stats", self.admin))
            .send()
            .await
            .expect("stats")
            .json()
            .await
            .expect("stats json")
    }

    /// Reads a document with the official Python SDK (`azure-cosmos`): what Azure tooling sees.
    pub async fn read_back(
        &self,
        database: &str,
        id: &str,
        partition_key: &str,
    ) -> serde_json::Value {
        let out = self
            .python(&[
                "--database",
                database,
                "--container",
                "turns",
                "--id",
                id,
                "--partition-key",
                partition_key,
            ])
            .await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("read_back output {out:?}: {e}"))
    }

    /// Every document id in the container, sorted, duplicates kept, per the Python SDK.
    pub async fn ids(&self, database: &str) -> Vec<String> {
        let out = self
            .python(&["--database", database, "--container", "turns", "--list-ids"])
            .await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("list-ids output {out:?}: {e}"))
    }

    async fn python(&self, args: &[&str]) -> String {
        let python = std::env::var("RAGCHAT_TEST_COSMOS_PYTHON").expect(
            "RAGCHAT_TEST_COSMOS_PYTHON is not set: run the tests with `make test`, which \
             installs the pinned azure-cosmos SDK in a venv",
        );
        let out = Command::new(python)
            .arg(dir().join("read_back.py"))
            .arg("--endpoint")
            .arg(&self.endpoint)
            .args(args)
            .output()
            .await
            .expect("python runs");
        assert!(
            out.status.success(),
            "read_back.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    }

    /// Creates a container partitioned by `path` with the SDK directly (to set up a wrong one).
    pub async fn create_container(&self, database: &str, container: &str, path: &'static str) {
        use azure_data_cosmos::models::{ContainerProperties, PartitionKeyDefinition};
        let endpoint: azure_data_cosmos::AccountEndpoint = self.endpoint.parse().expect("endpoint");
        let account = azure_data_cosmos::AccountReference::with_authentication_key(
            endpoint,
            azure_core::credentials::Secret::new(KEY.to_owned()),
        );
        let client = azure_data_cosmos::CosmosClient::builder()
            .build(
                account,
                azure_data_cosmos::RoutingStrategy::PreferredRegions(Vec::new()),
            )
            .await
            .expect("client");
        match client.create_database(database, None).await {
            Ok(_) => {}
            Err(e) if e.status().is_conflict() => {}
            Err(e) => panic!("create database: {e}"),
        }
        let properties = ContainerProperties::new(
            container.to_owned(),
            PartitionKeyDefinition::new(vec![path.into()]),
        );
        client
            .database_client(database)
            .create_container(properties, None)
            .await
            .expect("create container");
    }

    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}
