// Flex Consumption plan + Function App (Linux, Python 3.11) running as the user-assigned
// identity. App settings carry every PCSYNC_* setting the code reads in Azure; PCSYNC_CA_BUNDLE
// is left out (it is only for the local simulator) and FUNCTIONS_WORKER_RUNTIME must not be set
// on Flex Consumption (the runtime is functionAppConfig.runtime).
param location string
param tags object
param functionAppName string
param planName string
param identityId string
param identityClientId string
param storageAccountName string
param blobEndpoint string
param deploymentContainerName string
param applicationInsightsConnectionString string
param keyVaultName string
param keyVaultUri string
param storageConnectionSecretName string
param identityBasedStorage bool
param entraClientId string
param clientSecretName string
param clientCertificateName string
param redirectUri string
param partnerCenterUrl string
param authorityHost string
param graphUrl string
param callsPerMinute int
param customerCallsPerMinute string
param sharedCallBudget bool
param scheduleCustomers string
param scheduleDelta string
param scheduleInvoices string
param scheduleWritebacks string
param scheduleUnbilled string
param webhookCertificateHosts string
param maximumInstanceCount int
param instanceMemoryMB int

@description('Subnet (delegated to Microsoft.App/environments) for outbound VNet integration; empty = none.')
param appSubnetId string = ''

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: planName
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true // Linux
  }
  // checkov:skip=CKV_AZURE_225: timer- and queue-driven sync; a zone outage delays a run and the next timer or queue retry catches up. Zone redundancy on Flex needs ZRS storage and a region with zones

}

// Host storage, identity-based (the Functions host supports it; no key anywhere).
var hostStorageSettings = [
  { name: 'AzureWebJobsStorage__accountName', value: storageAccountName }
  { name: 'AzureWebJobsStorage__credential', value: 'managedidentity' }
  { name: 'AzureWebJobsStorage__clientId', value: identityClientId }
]

// PCSYNC_STORAGE: our tables and queues, and the connection of the queue triggers. Default
// (identityBasedStorage): identity-based, the same names the Functions host reads for
// connection="PCSYNC_STORAGE" and shared/settings.py reads for our own clients; no key anywhere.
// Otherwise a Key Vault reference to the connection string (shared key access stays on).
var keyVaultStorageSettings = [
  { name: 'PCSYNC_STORAGE', value: '@Microsoft.KeyVault(VaultName=${keyVaultName};SecretName=${storageConnectionSecretName})' }
]
var identityStorageSettings = [
  { name: 'PCSYNC_STORAGE__accountName', value: storageAccountName }
  { name: 'PCSYNC_STORAGE__credential', value: 'managedidentity' }
  { name: 'PCSYNC_STORAGE__clientId', value: identityClientId }
]

var pcsyncSettings = [
  { name: 'PCSYNC_KEY_VAULT_URL', value: keyVaultUri }
  { name: 'PCSYNC_CLIENT_ID', value: entraClientId }
  { name: 'PCSYNC_CLIENT_SECRET_NAME', value: clientSecretName }
  { name: 'PCSYNC_CLIENT_CERTIFICATE_NAME', value: clientCertificateName }
  { name: 'PCSYNC_REDIRECT_URI', value: redirectUri }
  { name: 'PCSYNC_PARTNER_CENTER_URL', value: partnerCenterUrl }
  { name: 'PCSYNC_AUTHORITY_HOST', value: authorityHost }
  { name: 'PCSYNC_GRAPH_URL', value: graphUrl }
  { name: 'PCSYNC_CALLS_PER_MINUTE', value: string(callsPerMinute) }
  { name: 'PCSYNC_CUSTOMER_CALLS_PER_MINUTE', value: customerCallsPerMinute }
  { name: 'PCSYNC_SHARED_BUDGET', value: sharedCallBudget ? 'true' : 'false' }
  { name: 'PCSYNC_SCHEDULE_CUSTOMERS', value: scheduleCustomers }
  { name: 'PCSYNC_SCHEDULE_DELTA', value: scheduleDelta }
  { name: 'PCSYNC_SCHEDULE_INVOICES', value: scheduleInvoices }
  { name: 'PCSYNC_SCHEDULE_WRITEBACKS', value: scheduleWritebacks }
  { name: 'PCSYNC_SCHEDULE_UNBILLED', value: scheduleUnbilled }
  { name: 'PCSYNC_WEBHOOK_CERTIFICATE_HOSTS', value: webhookCertificateHosts }
  { name: 'PCSYNC_WEBHOOK_MAX_AGE_DAYS', value: '7' }
  // the admin page (/api/admin) takes the function key: this template sets up no App Service
  // Authentication, and app_service without it in front would trust nobody's principal header
  { name: 'PCSYNC_ADMIN_AUTH', value: 'function_key' }
  { name: 'PCSYNC_ADMIN_ROLE', value: 'pcsync.Admin' }
]

var platformSettings = [
  // DefaultAzureCredential picks the user-assigned identity by this client id
  { name: 'AZURE_CLIENT_ID', value: identityClientId }
  { name: 'APPLICATIONINSIGHTS_CONNECTION_STRING', value: applicationInsightsConnectionString }
  { name: 'APPLICATIONINSIGHTS_AUTHENTICATION_STRING', value: 'ClientId=${identityClientId};Authorization=AAD' }
]

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  name: functionAppName
  location: location
  tags: union(tags, { 'azd-service-name': 'api' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identityId}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identityId
    virtualNetworkSubnetId: empty(appSubnetId) ? null : appSubnetId
    siteConfig: {
      minTlsVersion: '1.2'
      scmMinTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
      appSettings: concat(hostStorageSettings, identityBasedStorage ? identityStorageSettings : keyVaultStorageSettings, pcsyncSettings, platformSettings)
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${blobEndpoint}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identityId
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      runtime: {
        name: 'python'
        version: '3.11'
      }
    }
  }
  // checkov:skip=CKV_AZURE_222: Partner Center webhooks and the browser consent callback reach the app from the internet; function keys and the consent state guard them
  // checkov:skip=CKV_AZURE_17: neither Partner Center webhooks nor a browser on the consent callback can present a client certificate
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales to zero between timer runs; always-ready instances would cost for idle hours and a cold start only delays a run
  // checkov:skip=CKV_AZURE_213: Flex Consumption does not support App Service health checks; the platform restarts failed instances itself
}

// No FTP or basic-auth publishing; deployments use Entra (azd / az functionapp deploy).
resource ftpPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'ftp'
  properties: { allow: false }
}

resource scmPolicy 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: functionApp
  name: 'scm'
  properties: { allow: false }
}

output name string = functionApp.name
output defaultHostName string = functionApp.properties.defaultHostName
