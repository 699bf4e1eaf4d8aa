// Example parameters: copy, adjust, and pass with `-p infra/main.bicepparam`.
// The API key is read from the environment of the shell that deploys, never written to a file.
using './main.bicep'

param llmProvider = 'azure'
param llmUrl = 'https://YOUR-RESOURCE.openai.azure.com'
param llmModel = 'gpt-4o-mini'
param llmApiKey = readEnvironmentVariable('RAGCHAT_LLM_API_KEY')
param appServiceSku = 'P0v3'
param cosmosCapacity = 'serverless'
