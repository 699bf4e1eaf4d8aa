// ragchat on Azure: everything one deployment needs.
//   Log Analytics + Application Insights; Container Registry (admin user off); Linux App Service
//   plan + Web App for Containers (WebSockets on, Always On, HTTPS only, TLS >= 1.2, FTP off,
//   health check on readiness, ARR affinity off) with a staging slot; system-assigned managed
//   identities with AcrPull, Key Vault Secrets User and the Cosmos DB Built-in Data Contributor
//   role; Cosmos DB for NoSQL (serverless by default, local key auth disabled) with the records
//   container partitioned by /conversation_id; Key Vault for third-party keys.
//
//   az group create -n ragchat -l westeurope
//   az deployment group create -g ragchat -f infra/main.bicep -p infra/main.bicepparam
//
// See docs/deploy-azure.md. Not compiled here (no Bicep CLI offline); scanned by checkov in
// `make test`.

targetScope = 'resourceGroup'

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Prefix for resource names (lowercase letters and digits, 3-11 characters).')
@minLength(3)
@maxLength(11)
param namePrefix string = 'ragchat'

@description('App Service plan SKU. Deployment slots need Standard (S1) or Premium (P0v3 and up).')
@allowed(['S1', 'S2', 'S3', 'P0v3', 'P1v3', 'P2v3', 'P3v3'])
param appServiceSku string = 'P0v3'

@description('Instances of the web app. More than one needs a shared index (RAGCHAT_INDEX=qdrant).')
@minValue(1)
@maxValue(30)
param instanceCount int = 1

@description('Cosmos DB capacity: serverless (pay per request) or provisioned autoscale throughput.')
@allowed(['serverless', 'autoscale'])
param cosmosCapacity string = 'serverless'

@description('Autoscale maximum RU/s of the records container (cosmosCapacity = autoscale).')
@minValue(1000)
param cosmosMaxThroughput int = 1000

@description('Default time to live of turn records in seconds; -1 keeps them forever.')
param recordTtlSeconds int = -1

@description('OpenAI-compatible chat endpoint including /v1, or the Azure OpenAI resource URL.')
param llmUrl string

@description('openai (OpenAI, vLLM, Ollama, llama-server, any compatible URL) or azure (Azure OpenAI).')
@allowed(['openai', 'azure'])
param llmProvider string = 'azure'

@description('Model name (OpenAI-compatible endpoints) or the Azure OpenAI deployment name.')
param llmModel string = 'gpt-4o-mini'

@description('API key of the chat endpoint; stored in Key Vault, referenced from app settings.')
@secure()
param llmApiKey string

@description('Qdrant server or Qdrant Cloud URL (gRPC, e.g. https://xyz.cloud.qdrant.io:6334); empty uses the embedded index (one instance only).')
param qdrantUrl string = ''

@description('Qdrant API key; stored in Key Vault when given.')
@secure()
param qdrantApiKey string = ''

@description('API keys of the chat service, principal=key pairs, comma-separated (docs/security.md); stored in Key Vault. Include a key named smoke for the deploy workflow\'s smoke test. Needed unless Easy Auth is on.')
@secure()
param apiKeys string = ''

@description('Turn on App Service Authentication (Easy Auth) with Microsoft Entra ID: people sign in to use the page; ragchat trusts the platform\'s principal headers (RAGCHAT_AUTH=easy_auth).')
param enableEasyAuth bool = false

@description('Client id of the Entra ID app registration used by Easy Auth.')
param easyAuthClientId string = ''

@description('When the stored keys expire (Unix time); rotate them before (docs/deploy-azure.md). Default: one year from deployment.')
param secretExpiry int = dateTimeToEpoch(dateTimeAdd(utcNow(), 'P1Y'))

@description('Container image to run before the first pipeline deployment replaces it.')
param initialImage string = 'mcr.microsoft.com/appsvc/staticsite:latest'

@description('E-mail address for the alerts on day one (empty: they show in the portal only).')
param alertEmail string = ''

@description('Alert when the p99 time to first token over 15 minutes exceeds this many milliseconds.')
param ttftAlertMs int = 5000

var suffix = uniqueString(resourceGroup().id)
var names = {
  logs: '${namePrefix}-logs-${suffix}'
  insights: '${namePrefix}-ai-${suffix}'
  registry: take('${namePrefix}acr${suffix}', 50)
  plan: '${namePrefix}-plan-${suffix}'
  app: '${namePrefix}-${suffix}'
  cosmos: '${namePrefix}-cosmos-${suffix}'
  vault: take('${namePrefix}kv${suffix}', 24)
}
var roles = {
  acrPull: '7f951dda-4ed3-4680-a7ca-43fe172d538d'
  keyVaultSecretsUser: '4633458b-17de-408a-b874-0445c86b69e6'
  cosmosDataContributor: '00000000-0000-0000-0000-000000000002'
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: names.logs
  location: location
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 30
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: names.insights
  location: location
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: false
  }
}

resource registry 'Microsoft.ContainerRegistry/registries@2023-07-01' = {
  // checkov:skip=CKV_AZURE_166: quarantine needs Premium; images are built by ACR Tasks from our own source, tagged by commit
  // checkov:skip=CKV_AZURE_139: App Service pulls over the public endpoint unless VNet-integrated (Premium + private endpoint: docs/deploy-azure.md, hardening)
  name: names.registry
  location: location
  sku: { name: 'Standard' }
  properties: {
    adminUserEnabled: false
    anonymousPullEnabled: false
    policies: {
      retentionPolicy: { status: 'disabled', days: 7 }
    }
  }
}

resource cosmos 'Microsoft.DocumentDB/databaseAccounts@2024-05-15' = {
  // checkov:skip=CKV_AZURE_101: key auth is disabled (Entra ID only); a private endpoint needs VNet integration of the app (docs/deploy-azure.md, hardening)
  // checkov:skip=CKV_AZURE_99: same: access is by Entra ID role assignment only, not by network location
  name: names.cosmos
  location: location
  kind: 'GlobalDocumentDB'
  properties: {
    databaseAccountOfferType: 'Standard'
    // Microsoft Entra ID only: no account keys, no connection strings to leak.
    disableLocalAuth: true
    disableKeyBasedMetadataWriteAccess: true
    minimalTlsVersion: 'Tls12'
    consistencyPolicy: { defaultConsistencyLevel: 'Session' }
    locations: [
      { locationName: location, failoverPriority: 0, isZoneRedundant: false }
    ]
    capabilities: cosmosCapacity == 'serverless' ? [{ name: 'EnableServerless' }] : []
    backupPolicy: {
      type: 'Continuous'
      continuousModeProperties: { tier: 'Continuous7Days' }
    }
  }
}

resource database 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases@2024-05-15' = {
  parent: cosmos
  name: 'ragchat'
  properties: {
    resource: { id: 'ragchat' }
  }
}

resource turns 'Microsoft.DocumentDB/databaseAccounts/sqlDatabases/containers@2024-05-15' = {
  parent: database
  name: 'turns'
  properties: {
    resource: {
      id: 'turns'
      // One logical partition per conversation: loading a conversation is a single-partition
      // query and writes spread over every conversation. It cannot be changed later.
      partitionKey: { paths: ['/conversation_id'], kind: 'Hash', version: 2 }
      // Records are written far more often than queried: index only what ragchat queries.
      indexingPolicy: {
        indexingMode: 'consistent'
        automatic: true
        includedPaths: [
          { path: '/conversation_id/?' }
          { path: '/created_at/?' }
        ]
        excludedPaths: [
          { path: '/*' }
        ]
      }
      defaultTtl: recordTtlSeconds
    }
    options: cosmosCapacity == 'autoscale' ? { autoscaleSettings: { maxThroughput: cosmosMaxThroughput } } : {}
  }
}

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  // checkov:skip=CKV_AZURE_109: App Service Key Vault references are not a trusted-service bypass; a firewall needs VNet integration (hardening)
  // checkov:skip=CKV_AZURE_189: same; access is RBAC-only (Key Vault Secrets User for the app identities)
  name: names.vault
  location: location
  properties: {
    tenantId: subscription().tenantId
    sku: { family: 'A', name: 'standard' }
    enableRbacAuthorization: true
    enableSoftDelete: true
    softDeleteRetentionInDays: 90
    enablePurgeProtection: true
    publicNetworkAccess: 'Enabled'
    networkAcls: { defaultAction: 'Allow', bypass: 'AzureServices' }
  }
}

resource llmKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = {
  parent: vault
  name: 'llm-api-key'
  properties: {
    value: llmApiKey
    contentType: 'text/plain'
    attributes: {
      enabled: true
      exp: secretExpiry
    }
  }
}

resource qdrantKeySecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(qdrantApiKey)) {
  // checkov:skip=CKV_AZURE_41: false positive: checkov does not read a conditional resource's properties; exp is set below
  // checkov:skip=CKV_AZURE_114: false positive, as above; contentType is set below
  parent: vault
  name: 'qdrant-api-key'
  properties: {
    value: qdrantApiKey
    contentType: 'text/plain'
    attributes: {
      enabled: true
      exp: secretExpiry
    }
  }
}

resource apiKeysSecret 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (!empty(apiKeys)) {
  // checkov:skip=CKV_AZURE_41: false positive: checkov does not read a conditional resource's properties; exp is set below
  // checkov:skip=CKV_AZURE_114: false positive, as above; contentType is set below
  parent: vault
  name: 'api-keys'
  properties: {
    value: apiKeys
    contentType: 'text/plain'
    attributes: {
      enabled: true
      exp: secretExpiry
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2023-12-01' = {
  // checkov:skip=CKV_AZURE_225: zone redundancy needs P1v3+ and 3 instances; one instance is the default until the index is shared (Qdrant server)
  name: names.plan
  location: location
  kind: 'linux'
  sku: { name: appServiceSku, capacity: instanceCount }
  properties: {
    reserved: true
    zoneRedundant: false
  }
}

var baseSettings = [
  { name: 'WEBSITES_PORT', value: '8000' }
  // /home is persistent storage shared by the instances: the embedded index and the record
  // spool live there across restarts and slot swaps.
  { name: 'WEBSITES_ENABLE_APP_SERVICE_STORAGE', value: 'true' }
  { name: 'WEBSITES_CONTAINER_START_TIME_LIMIT', value: '600' }
  { name: 'RAGCHAT_DATA_DIR', value: '/home/data' }
  { name: 'RAGCHAT_LOG_FORMAT', value: 'json' }
  { name: 'RAGCHAT_INGEST_ON_START', value: '/opt/ragchat/docs' }
  { name: 'RAGCHAT_STORE', value: 'cosmos' }
  { name: 'RAGCHAT_COSMOS_ENDPOINT', value: cosmos.properties.documentEndpoint }
  { name: 'RAGCHAT_COSMOS_DATABASE', value: database.name }
  { name: 'RAGCHAT_COSMOS_CONTAINER', value: turns.name }
  { name: 'RAGCHAT_LLM_URL', value: llmUrl }
  { name: 'RAGCHAT_LLM_PROVIDER', value: llmProvider }
  { name: 'RAGCHAT_LLM_MODEL', value: llmModel }
  { name: 'RAGCHAT_LLM_AZURE_DEPLOYMENT', value: llmModel }
  { name: 'RAGCHAT_LLM_API_KEY', value: '@Microsoft.KeyVault(SecretUri=${llmKeySecret.properties.secretUri})' }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: insights.properties.ConnectionString }
]
var qdrantUrlSettings = empty(qdrantUrl) ? [] : [
  { name: 'RAGCHAT_INDEX', value: 'qdrant' }
  { name: 'RAGCHAT_QDRANT_URL', value: qdrantUrl }
]
var qdrantKeySettings = empty(qdrantApiKey) ? [] : [
  { name: 'RAGCHAT_QDRANT_API_KEY', value: '@Microsoft.KeyVault(SecretUri=${qdrantKeySecret.properties.secretUri})' }
]
// Who may ask (docs/security.md). With neither Easy Auth nor keys, RAGCHAT_AUTH=api_key without
// keys makes the app refuse to start, naming RAGCHAT_API_KEYS: never an open relay by mistake.
var authModes = enableEasyAuth ? (empty(apiKeys) ? 'easy_auth' : 'easy_auth,api_key') : 'api_key'
var authSettings = [
  { name: 'RAGCHAT_AUTH', value: authModes }
  // App Service's front end is the one proxy in front: its X-Forwarded-For entry is the client.
  { name: 'RAGCHAT_TRUSTED_PROXIES', value: '1' }
]
var apiKeySettings = empty(apiKeys) ? [] : [
  { name: 'RAGCHAT_API_KEYS', value: '@Microsoft.KeyVault(SecretUri=${apiKeysSecret.properties.secretUri})' }
]
// The same settings for production and the staging slot (each slot has its own identity).
var appSettings = concat(baseSettings, authSettings, apiKeySettings, qdrantUrlSettings, qdrantKeySettings)

var siteConfig = {
  linuxFxVersion: 'DOCKER|${initialImage}'
  acrUseManagedIdentityCreds: true
  webSocketsEnabled: true
  alwaysOn: true
  http20Enabled: true
  minTlsVersion: '1.2'
  scmMinTlsVersion: '1.2'
  ftpsState: 'Disabled'
  healthCheckPath: '/health/ready'
  httpLoggingEnabled: true
  detailedErrorLoggingEnabled: true
  requestTracingEnabled: true
  remoteDebuggingEnabled: false
  appSettings: appSettings
}

resource app 'Microsoft.Web/sites@2023-12-01' = {
  // checkov:skip=CKV_AZURE_222: a public chat service; browsers connect over wss
  // checkov:skip=CKV_AZURE_17: browsers do not present client certificates; the WebSocket checks Origin
  // checkov:skip=CKV_AZURE_212: instanceCount is a parameter; >1 needs the shared Qdrant index (docs/deploy-azure.md)
  name: names.app
  location: location
  kind: 'app,linux,container'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    // Stateless replicas: no sticky sessions.
    clientAffinityEnabled: false
    keyVaultReferenceIdentity: 'SystemAssigned'
    siteConfig: siteConfig
  }
}

resource staging 'Microsoft.Web/sites/slots@2023-12-01' = {
  // checkov:skip=CKV_AZURE_222: the slot is smoke-tested over the public wss endpoint before each swap
  // checkov:skip=CKV_AZURE_212: a staging slot runs on the plan's instances
  parent: app
  name: 'staging'
  location: location
  kind: 'app,linux,container'
  identity: { type: 'SystemAssigned' }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientAffinityEnabled: false
    keyVaultReferenceIdentity: 'SystemAssigned'
    siteConfig: siteConfig
  }
}

resource ftpOff 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'ftp'
  properties: { allow: false }
}

resource scmBasicAuthOff 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2023-12-01' = {
  parent: app
  name: 'scm'
  properties: { allow: false }
}

resource logsToWorkspace 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'to-log-analytics'
  scope: app
  properties: {
    workspaceId: logs.id
    logs: [
      { category: 'AppServiceConsoleLogs', enabled: true }
      { category: 'AppServiceHTTPLogs', enabled: true }
      { category: 'AppServicePlatformLogs', enabled: true }
    ]
    metrics: [{ category: 'AllMetrics', enabled: true }]
  }
}

// Role assignments for both identities (production and staging slot).
var principals = [
  app.identity.principalId
  staging.identity.principalId
]

resource acrPull 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (principal, i) in principals: {
  name: guid(registry.id, roles.acrPull, string(i))
  scope: registry
  properties: {
    principalId: principal
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.acrPull)
  }
}]

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for (principal, i) in principals: {
  name: guid(vault.id, roles.keyVaultSecretsUser, string(i))
  scope: vault
  properties: {
    principalId: principal
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.keyVaultSecretsUser)
  }
}]

resource cosmosWriter 'Microsoft.DocumentDB/databaseAccounts/sqlRoleAssignments@2024-05-15' = [for (principal, i) in principals: {
  parent: cosmos
  name: guid(cosmos.id, roles.cosmosDataContributor, string(i))
  properties: {
    principalId: principal
    roleDefinitionId: '${cosmos.id}/sqlRoleDefinitions/${roles.cosmosDataContributor}'
    scope: cosmos.id
  }
}]

@description('Public URL of the app (the WebSocket is at wss://HOST/ws).')
// Alerts on the Application Insights data ragchat sends (docs/observability.md): each turn is a
// request named chat.turn (failed = an error frame), the model call an llm.stream dependency
// carrying ttft_ms.
resource alertGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: '${namePrefix}-alerts-${suffix}'
  location: 'global'
  properties: {
    groupShortName: take(namePrefix, 12)
    enabled: true
    emailReceivers: [
      { name: 'operator', emailAddress: alertEmail, useCommonAlertSchema: true }
    ]
  }
}

var alertActions = empty(alertEmail) ? [] : [ alertGroup.id ]

resource failedTurnsAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-failed-turns-${suffix}'
  location: location
  properties: {
    displayName: 'ragchat: more than 5 % of turns fail'
    description: 'Turns ending with an error frame; customDimensions.error_code says which.'
    severity: 2
    enabled: true
    scopes: [ insights.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'requests | where name == "chat.turn" | summarize total = count(), failed = countif(success == false) | where total >= 20 | extend failed_pct = 100.0 * failed / total'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'failed_pct'
          operator: 'GreaterThan'
          threshold: 5
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: alertActions }
  }
}

resource ttftAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-ttft-${suffix}'
  location: location
  properties: {
    displayName: 'ragchat: p99 time to first token is high'
    description: 'From the llm.stream dependency of each turn (ttft_ms: from the ask to the first token).'
    severity: 3
    enabled: true
    scopes: [ insights.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'dependencies | where name == "llm.stream" | extend ttft_ms = todouble(customDimensions.ttft_ms) | where isnotnull(ttft_ms) | summarize p99_ttft_ms = percentile(ttft_ms, 99)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'p99_ttft_ms'
          operator: 'GreaterThan'
          threshold: ttftAlertMs
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    actions: { actionGroups: alertActions }
  }
}

resource spoolAlert 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = {
  name: '${namePrefix}-spool-${suffix}'
  location: location
  properties: {
    displayName: 'ragchat: turn records waiting in a replica spool'
    description: 'The record store has not taken records; they wait on the replica disk (/home/data).'
    severity: 2
    enabled: true
    scopes: [ insights.id ]
    evaluationFrequency: 'PT5M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: 'customMetrics | where name == "ragchat.record.spool.depth" | summarize spooled = max(valueMax)'
          timeAggregation: 'Maximum'
          metricMeasureColumn: 'spooled'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 2, minFailingPeriodsToAlert: 2 }
        }
      ]
    }
    actions: { actionGroups: alertActions }
  }
}

output appUrl string = 'https://${app.properties.defaultHostName}'

@description('Web app name.')
output webAppName string = app.name

@description('Container registry name.')
output registryName string = registry.name

@description('Container registry login server.')
output registryLoginServer string = registry.properties.loginServer

// App Service Authentication (Easy Auth) with Entra ID. The platform signs people in and adds
// X-MS-CLIENT-PRINCIPAL-* to what it forwards (stripping those headers from clients' requests).
// The page and the socket are served to signed-in people; the health probes and, for scripts and
// the deploy smoke test with an API key, the socket are not redirected to a login page: ragchat
// itself refuses a socket without a principal or a key.
resource easyAuth 'Microsoft.Web/sites/config@2023-12-01' = if (enableEasyAuth) {
  // checkov treats every Microsoft.Web/sites/config as the site's `web` config and cannot read a
  // conditional resource's properties: its site checks do not apply to authsettingsV2.
  // checkov:skip=CKV_AZURE_13: this resource *is* App Service Authentication
  // checkov:skip=CKV_AZURE_63: HTTP logging is set on the site (siteConfig.httpLoggingEnabled)
  // checkov:skip=CKV_AZURE_65: detailed errors are set on the site
  // checkov:skip=CKV_AZURE_66: failed request tracing is set on the site
  // checkov:skip=CKV_AZURE_80: not a .NET site config
  // checkov:skip=CKV_AZURE_88: not a site config (storage is decided on the site)
  // checkov:skip=CKV_AZURE_222: a public chat service, as on the site
  parent: app
  name: 'authsettingsV2'
  properties: {
    platform: { enabled: true }
    globalValidation: {
      requireAuthentication: true
      unauthenticatedClientAction: 'RedirectToLoginPage'
      redirectToProvider: 'azureactivedirectory'
      excludedPaths: ['/health/live', '/health/ready', '/ws']
    }
    identityProviders: {
      azureActiveDirectory: {
        enabled: true
        registration: {
          clientId: easyAuthClientId
          openIdIssuer: 'https://sts.windows.net/${subscription().tenantId}/v2.0'
        }
        validation: { allowedAudiences: ['api://${easyAuthClientId}'] }
      }
    }
    login: { tokenStore: { enabled: true } }
  }
}
