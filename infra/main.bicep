// pcsync: Flex Consumption Function App (Linux, Python 3.11), storage, Key Vault, Application
// Insights + Log Analytics, and one user-assigned managed identity with least-privilege roles.
// Deploy with `azd up` from the repository root (azure.yaml there) or `az deployment group create`.
// Not built or what-if'ed in CI (no Bicep CLI there); tests/unit/infra/test_infra_bicep.py parses it
// and tests/unit/infra/test_checkov.py scans it.
targetScope = 'resourceGroup'

@minLength(1)
@maxLength(32)
@description('Environment name (azd sets it); used to derive resource names.')
param environmentName string

@description('Azure region for every resource.')
param location string = resourceGroup().location

@description('Client (application) id of the Entra app that the partner consents to (PCSYNC_CLIENT_ID).')
param entraClientId string

@description('Key Vault secret that holds the Entra app client secret (PCSYNC_CLIENT_SECRET_NAME).')
param clientSecretName string = 'pcsync-client-secret'

@description('Key Vault secret that holds a PEM certificate to use instead of the client secret (PCSYNC_CLIENT_CERTIFICATE_NAME); empty = use the secret.')
param clientCertificateName string = ''

@description('Consent callback URL registered on the Entra app (PCSYNC_REDIRECT_URI); empty = https://<app>.azurewebsites.net/api/consent/callback.')
param redirectUri string = ''

@description('Partner Center API base URL (PCSYNC_PARTNER_CENTER_URL); change for sovereign clouds.')
param partnerCenterUrl string = 'https://api.partnercenter.microsoft.com'

@description('Entra authority host (PCSYNC_AUTHORITY_HOST).')
param authorityHost string = 'https://login.microsoftonline.com'

@description('Microsoft Graph base URL (PCSYNC_GRAPH_URL).')
param graphUrl string = 'https://graph.microsoft.com'

@description('Partner Center call budget per partner tenant (PCSYNC_CALLS_PER_MINUTE); shared by all instances unless sharedCallBudget is false.')
param callsPerMinute int = 450

@description('Call budget per partner+customer (PCSYNC_CUSTOMER_CALLS_PER_MINUTE); empty = same as the partner budget.')
param customerCallsPerMinute string = ''

@description('Share the call budget between instances through table callbudget (PCSYNC_SHARED_BUDGET).')
param sharedCallBudget bool = true

@description('NCRONTAB schedule of the nightly full sweep (PCSYNC_SCHEDULE_CUSTOMERS), UTC.')
param scheduleCustomers string = '0 0 2 * * *'

@description('NCRONTAB schedule of the activity-log delta sync (PCSYNC_SCHEDULE_DELTA), UTC.')
param scheduleDelta string = '0 */15 * * * *'

@description('NCRONTAB schedule of the invoices sync (PCSYNC_SCHEDULE_INVOICES), UTC.')
param scheduleInvoices string = '0 0 6 * * *'

@description('NCRONTAB schedule of the write-backs timer (PCSYNC_SCHEDULE_WRITEBACKS): due scheduled write-backs, attestation re-checks, end-of-term drift and EST alerts, UTC.')
param scheduleWritebacks string = '0 */15 * * * *'
@description('NCRONTAB schedule of the unbilled estimates (PCSYNC_SCHEDULE_UNBILLED), UTC.')
param scheduleUnbilled string = '0 30 6 * * *'

@description('Hosts allowed to serve the Partner Center webhook signing certificate (PCSYNC_WEBHOOK_CERTIFICATE_HOSTS).')
param webhookCertificateHosts string = '3psostorageacct.blob.core.windows.net'

@description('true (default): shared key access off; PCSYNC_STORAGE__accountName, __credential=managedidentity and __clientId (the user-assigned identity) for our tables, queues and the queue triggers. false: PCSYNC_STORAGE is a connection string kept in Key Vault, and shared key access stays on for it.')
param identityBasedStorage bool = true

@description('Upper bound of Flex Consumption instances. Each instance has its own Partner Center call budget.')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 40

@allowed([2048, 4096])
param instanceMemoryMB int = 2048

@description('Optional object id of an operator (user or group) who may set secrets in the vault, e.g. the client secret.')
param adminPrincipalId string = ''

@allowed(['User', 'Group', 'ServicePrincipal'])
param adminPrincipalType string = 'User'

@description('Storage replication; LRS by default (the tables are rebuilt by a full sync).')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param storageSkuName string = 'Standard_LRS'

@description('true: VNet integration for the app and private endpoints for storage and Key Vault, whose public side then closes (modules/network.bicep). Inbound HTTP to the app stays public.')
param vnetEnabled bool = false

@description('With vnetEnabled: public IP addresses (CIDR) still allowed to reach Key Vault, e.g. the operator who stores the client secret.')
param keyVaultAllowedIpAddresses array = []

@description('E-mail address for the failed-run and consent alerts; empty = the alerts show in the portal only.')
param alertEmail string = ''

var suffix = uniqueString(subscription().id, resourceGroup().id, environmentName)
var tags = { 'azd-env-name': environmentName, application: 'pcsync' }
var functionAppName = 'func-pcsync-${suffix}'
var deploymentContainerName = 'app-package-${take(suffix, 7)}'

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-pcsync-${suffix}'
  location: location
  tags: tags
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'monitoring'
  params: {
    location: location
    tags: tags
    logAnalyticsName: 'log-pcsync-${suffix}'
    applicationInsightsName: 'appi-pcsync-${suffix}'
  }
}

module storage 'modules/storage.bicep' = {
  name: 'storage'
  params: {
    location: location
    tags: tags
    storageAccountName: 'stpcsync${take(suffix, 13)}'
    deploymentContainerName: deploymentContainerName
    allowSharedKeyAccess: !identityBasedStorage
    skuName: storageSkuName
    vnetEnabled: vnetEnabled
  }
}

module keyVault 'modules/keyvault.bicep' = {
  name: 'keyvault'
  params: {
    location: location
    tags: tags
    keyVaultName: 'kv-pcsync-${take(suffix, 13)}'
    storageAccountName: storage.outputs.name
    storeStorageConnection: !identityBasedStorage
    workspaceId: monitoring.outputs.workspaceId
    vnetEnabled: vnetEnabled
    allowedIpAddresses: keyVaultAllowedIpAddresses
  }
}

module network 'modules/network.bicep' = if (vnetEnabled) {
  name: 'network'
  params: {
    location: location
    tags: tags
    vnetName: 'vnet-pcsync-${suffix}'
    storageAccountId: storage.outputs.id
    keyVaultId: keyVault.outputs.id
  }
}

module alerts 'modules/alerts.bicep' = {
  name: 'alerts'
  params: {
    location: location
    tags: tags
    namePrefix: 'pcsync-${suffix}'
    applicationInsightsId: monitoring.outputs.applicationInsightsId
    alertEmail: alertEmail
  }
}

module roles 'modules/roles.bicep' = {
  name: 'roles'
  params: {
    principalId: identity.properties.principalId
    storageAccountName: storage.outputs.name
    hostContainerNames: [deploymentContainerName, 'azure-webjobs-hosts', 'azure-webjobs-secrets']
    dataContainerNames: [storage.outputs.reportsContainerName]
    keyVaultName: keyVault.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    adminPrincipalId: adminPrincipalId
    adminPrincipalType: adminPrincipalType
  }
}

module functionApp 'modules/functionapp.bicep' = {
  name: 'functionapp'
  params: {
    location: location
    tags: tags
    functionAppName: functionAppName
    planName: 'plan-pcsync-${suffix}'
    identityId: identity.id
    identityClientId: identity.properties.clientId
    storageAccountName: storage.outputs.name
    blobEndpoint: storage.outputs.blobEndpoint
    deploymentContainerName: deploymentContainerName
    applicationInsightsConnectionString: monitoring.outputs.connectionString
    keyVaultName: keyVault.outputs.name
    keyVaultUri: keyVault.outputs.uri
    storageConnectionSecretName: keyVault.outputs.storageConnectionSecretName
    identityBasedStorage: identityBasedStorage
    entraClientId: entraClientId
    clientSecretName: clientSecretName
    clientCertificateName: clientCertificateName
    redirectUri: empty(redirectUri) ? 'https://${functionAppName}.azurewebsites.net/api/consent/callback' : redirectUri
    partnerCenterUrl: partnerCenterUrl
    authorityHost: authorityHost
    graphUrl: graphUrl
    callsPerMinute: callsPerMinute
    customerCallsPerMinute: customerCallsPerMinute
    sharedCallBudget: sharedCallBudget
    scheduleCustomers: scheduleCustomers
    scheduleDelta: scheduleDelta
    scheduleInvoices: scheduleInvoices
    scheduleWritebacks: scheduleWritebacks
    scheduleUnbilled: scheduleUnbilled
    webhookCertificateHosts: webhookCertificateHosts
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSubnetId: vnetEnabled ? network.outputs.appSubnetId : ''
  }
  // the app starts with its roles in place (storage, Key Vault references, telemetry)
  dependsOn: [roles]
}

output AZURE_LOCATION string = location
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output AZURE_FUNCTION_APP_URL string = 'https://${functionApp.outputs.defaultHostName}'
output PCSYNC_WEBHOOK_URL_TEMPLATE string = 'https://${functionApp.outputs.defaultHostName}/api/webhooks/partner-center/<provider id>?code=<function key>'
output AZURE_KEY_VAULT_URL string = keyVault.outputs.uri
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output AZURE_MANAGED_IDENTITY_CLIENT_ID string = identity.properties.clientId
