// Example parameters: copy, adjust, and pass with `-p infra/main.bicepparam`.
// The API key is read from the environment of the shell that deploys, never written to a file.
using './main.bicep'

param llmProvider = 'azure'
param llmUrl = 'https://YOUR-RESOURCE.openai.azure.com'
param llmModel = 'gpt-4o-mini'
param llmApiKey = readEnvironmentVariable('RAGCHAT_LLM_API_KEY')
param appServiceSku = 'P0v3'
param cosmosCapacity = 'serverless'
// Who may ask (docs/security.md): API keys (principal=key pairs; include `smoke` for the deploy
// workflow), and/or App Service Authentication with an Entra ID app registration.
param apiKeys = readEnvironmentVariable('RAGCHAT_API_KEYS', '')
param enableEasyAuth = false
param easyAuthClientId = ''
