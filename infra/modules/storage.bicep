// Storage for the Functions host (AzureWebJobsStorage, identity-based), our tables and queues,
// and the Flex Consumption deployment package container.
param location string
param tags object
param storageAccountName string
param deploymentContainerName string

@description('Shared key (account key) access; off by default (identity-based PCSYNC_STORAGE), on only when PCSYNC_STORAGE is a connection string (identityBasedStorage=false).')
param allowSharedKeyAccess bool

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: storageAccountName
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_LRS' }
  properties: {
    supportsHttpsTrafficOnly: true
    minimumTlsVersion: 'TLS1_2'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: allowSharedKeyAccess
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    publicNetworkAccess: 'Enabled'
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
