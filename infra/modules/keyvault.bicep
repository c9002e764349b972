// Key Vault for refresh tokens, the Entra app's client secret or certificate, and (only with
// identityBasedStorage=false, not the default) the PCSYNC_STORAGE connection string. RBAC only,
// soft delete and purge protection on.
param location string
param tags object
param keyVaultName string
param storageAccountName string

@description('Write the storage connection string as secret pcsync-storage-connection (PCSYNC_STORAGE Key Vault reference).')
param storeStorageConnection bool

@description('Log Analytics workspace that receives the vault\'s audit logs.')
param workspaceId string

@description('true: default-deny firewall; the app reaches the vault through its private endpoint (network.bicep).')
param vnetEnabled bool = false

@description('With vnetEnabled: public IP addresses (CIDR) allowed through the firewall, e.g. the operator who stores the client secret.')
param allowedIpAddresses array = []

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
    networkAcls: {
      defaultAction: vnetEnabled ? 'Deny' : 'Allow'
      bypass: 'AzureServices'
      ipRules: [for address in (vnetEnabled ? allowedIpAddresses : []): { value: address }]
    }
  }
  // checkov:skip=CKV_AZURE_109: default-deny needs the VNet; vnetEnabled=true sets it (without VNet integration the app reaches the vault over the public endpoint; RBAC only, no access policies)
  // checkov:skip=CKV_AZURE_189: public access stays on even with vnetEnabled so that an operator can store the client secret (allowedIpAddresses); the firewall then denies everyone else
}

// Who read or changed which secret (refresh tokens, the client secret): AuditEvent to the workspace.
resource audit 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'audit-to-log-analytics'
  scope: vault
  properties: {
    workspaceId: workspaceId
    logs: [
      { categoryGroup: 'audit', enabled: true }
    ]
    metrics: [
      { category: 'AllMetrics', enabled: true }
    ]
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

// Written by the deployment (control plane); never an output. Rotate by redeploying after a key rotation.
resource storageConnection 'Microsoft.KeyVault/vaults/secrets@2023-07-01' = if (storeStorageConnection) {
  parent: vault
  // checkov:skip=CKV_AZURE_41: an account key does not expire; an expiry date would only break the PCSYNC_STORAGE reference on that day (rotate the key, then redeploy)
  // checkov:skip=CKV_AZURE_114: contentType is set below; checkov reads the body of a conditional resource as empty
  name: storageConnectionSecretName
  properties: {
    contentType: 'Azure Storage connection string'
    value: 'DefaultEndpointsProtocol=https;AccountName=${storage.name};AccountKey=${storage.listKeys().keys[0].value};EndpointSuffix=${environment().suffixes.storage}'
  }
}

output name string = vault.name
output id string = vault.id
output uri string = vault.properties.vaultUri
output storageConnectionSecretName string = storeStorageConnection ? storageConnectionSecretName : ''
