// Storage for the Functions host (AzureWebJobsStorage, identity-based), our tables and queues,
// and the Flex Consumption deployment package container.
param location string
param tags object
// main.bicep builds it from 'stpcsync' and 13 characters of uniqueString(): lower-case letters and digits
@minLength(3)
@maxLength(24)
param storageAccountName string
param deploymentContainerName string
@description('The container of the invoice imports\' CSV reports (errors, warnings, mismatches).')
param reportsContainerName string = 'invoice-reports'

@description('Shared key (account key) access; off by default (identity-based PCSYNC_STORAGE), on only when PCSYNC_STORAGE is a connection string (identityBasedStorage=false).')
param allowSharedKeyAccess bool

@description('Replication; Standard_ZRS (or GRS) where the region has zones and the data is worth it.')
@allowed(['Standard_LRS', 'Standard_ZRS', 'Standard_GRS', 'Standard_GZRS'])
param skuName string = 'Standard_LRS'

@description('true: public network access off; the app reaches blob, queue and table through private endpoints (network.bicep).')
param vnetEnabled bool = false

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: skuName }
  // checkov:skip=CKV_AZURE_35: default-deny needs the VNet; vnetEnabled=true sets it (Flex Consumption without VNet integration reaches storage over its public endpoint)
  // checkov:skip=CKV_AZURE_59: public network access is off with vnetEnabled=true; without a VNet the Functions host and the app need the public endpoint (identity-only, no shared key by default)
  // checkov:skip=CKV_AZURE_206: skuName parameter; LRS by default because the tables are a copy that a full sync rebuilds from Partner Center, and refresh tokens live in Key Vault
  // checkov:skip=CKV_AZURE_43: the name is a parameter checkov cannot resolve; main.bicep makes it 'stpcsync' + 13 lower-case characters of uniqueString() (21, within 3-24)
  properties: {
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: allowSharedKeyAccess
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    publicNetworkAccess: vnetEnabled ? 'Disabled' : 'Enabled'
    networkAcls: vnetEnabled ? { defaultAction: 'Deny', bypass: 'None' } : { defaultAction: 'Allow', bypass: 'AzureServices' }
    encryption: {
      keySource: 'Microsoft.Storage'
      services: {
        blob: { enabled: true }
        file: { enabled: true }
        table: { enabled: true, keyType: 'Account' }
        queue: { enabled: true, keyType: 'Account' }
      }
    }
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

// The deployment package container plus the two the Functions host uses (keys, timer and
// singleton locks); created here so that role assignments can be scoped to each container.
resource containers 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = [for name in [deploymentContainerName, 'azure-webjobs-hosts', 'azure-webjobs-secrets']: {
  parent: blobService
  name: name
  properties: { publicAccess: 'None' }
}]

// pcsync's own files (an invoice import's CSV reports: sync/invoices/csvreports.py
// REPORTS_CONTAINER); created here so that the app's blob role is scoped to this container only.
resource reportsContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: reportsContainerName
  properties: { publicAccess: 'None' }
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

output name string = storage.name
output id string = storage.id
output blobEndpoint string = storage.properties.primaryEndpoints.blob
output reportsContainerName string = reportsContainer.name
