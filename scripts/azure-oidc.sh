#!/usr/bin/env bash
# Sets up GitHub Actions -> Azure sign-in with OpenID Connect (no stored secret), idempotently:
# an app registration with federated credentials for pushes to main and the `production`
# environment, least-privilege role assignments on what infra/ deployed, and the three
# repository variables the deploy workflow reads. Safe to run again.
#
# usage: scripts/azure-oidc.sh OWNER/REPO [RESOURCE_GROUP]      (after `az login`; gh optional)
set -euo pipefail
repo="${1:?usage: $0 OWNER/REPO [RESOURCE_GROUP]}"
rg="${2:-ragchat}"
name="${RAGCHAT_OIDC_APP_NAME:-ragchat-github-deploy}"

subscription="$(az account show --query id -o tsv)"
tenant="$(az account show --query tenantId -o tsv)"

app_id="$(az ad app list --display-name "$name" --query '[0].appId' -o tsv)"
if [[ -z "$app_id" ]]; then
  app_id="$(az ad app create --display-name "$name" --query appId -o tsv)"
  echo "created app registration $name ($app_id)"
fi
sp_id="$(az ad sp show --id "$app_id" --query id -o tsv 2>/dev/null || true)"
if [[ -z "$sp_id" ]]; then
  sp_id="$(az ad sp create --id "$app_id" --query id -o tsv)"
  echo "created service principal $sp_id"
fi

federate() {
  local cred="$1" subject="$2"
  local existing
  existing="$(az ad app federated-credential list --id "$app_id" --query "[?name=='$cred'].name" -o tsv)"
  if [[ -z "$existing" ]]; then
    az ad app federated-credential create --id "$app_id" --parameters "$(printf \
      '{"name":"%s","issuer":"https://token.actions.githubusercontent.com","subject":"%s","audiences":["api://AzureADTokenExchange"]}' \
      "$cred" "$subject")" >/dev/null
    echo "federated credential $cred -> $subject"
  fi
}
federate github-main "repo:$repo:ref:refs/heads/main"
federate github-production "repo:$repo:environment:production"

assign() {
  local role="$1" scope="$2"
  if [[ -z "$scope" ]]; then
    echo "nothing to assign $role on: deploy infra/ into resource group $rg first" >&2
    exit 1
  fi
  if [[ -z "$(az role assignment list --assignee "$sp_id" --role "$role" --scope "$scope" --query '[0].id' -o tsv)" ]]; then
    az role assignment create --assignee-object-id "$sp_id" --assignee-principal-type ServicePrincipal \
      --role "$role" --scope "$scope" >/dev/null
    echo "granted $role on $scope"
  fi
}
# Least privilege: find resources (Reader on the group), build and push images in the registry
# (Contributor there: `az acr build` schedules a run, which AcrPush does not allow), and deploy /
# swap the web app and its slot (Website Contributor on the app only).
assign Reader "$(az group show -n "$rg" --query id -o tsv)"
assign Contributor "$(az acr list -g "$rg" --query '[0].id' -o tsv)"
assign "Website Contributor" "$(az webapp list -g "$rg" --query '[0].id' -o tsv)"

echo
echo "GitHub repository variables (not secrets):"
echo "  AZURE_CLIENT_ID=$app_id"
echo "  AZURE_TENANT_ID=$tenant"
echo "  AZURE_SUBSCRIPTION_ID=$subscription"
if [[ "$rg" != ragchat ]]; then echo "  AZURE_RESOURCE_GROUP=$rg"; fi
if command -v gh >/dev/null && gh auth status >/dev/null 2>&1; then
  gh variable set AZURE_CLIENT_ID -R "$repo" -b "$app_id"
  gh variable set AZURE_TENANT_ID -R "$repo" -b "$tenant"
  gh variable set AZURE_SUBSCRIPTION_ID -R "$repo" -b "$subscription"
  if [[ "$rg" != ragchat ]]; then gh variable set AZURE_RESOURCE_GROUP -R "$repo" -b "$rg"; fi
  echo "set them on $repo with gh"
else
  echo "set them under Settings > Secrets and variables > Actions > Variables (or install gh)"
fi
