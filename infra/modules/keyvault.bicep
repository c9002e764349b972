// Key Vault for refresh tokens, the Entra app's client secret or certificate, and (only with
// identityBasedStorage=false, not the default) the PCSYNC_STORAGE connection string. RBAC only,
// soft delete and purge protection on.
param location string
param tags object
param keyVaultName string
param storageAccountName string

@description('Write the storage connection string as secret pcsync-storage-connection (PCSYNC_STORAGE Key Vault reference).')
param storeStorageConnection bool

var storageConnectionSecretName = 'pcsync-storage-connection'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' = {
  name: keyVaultName
  location: location
  tags: tags
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

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Written by the deployment (control plane); never an output. Rotate by redeploying after a key rotation.
resource storageConnection 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (storeStorageConnection) {
  parent: vault
  name: storageConnectionSecretName
  properties: {
    contentType: 'Azure Storage connection string'
    value: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
  }
}

output name string = vault.name
output uri string = vault.properties.vaultUri
output storageConnectionSecretName string = storeStorageConnection ? storageConnectionSecretName : ''
