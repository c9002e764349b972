// Optional network isolation (main.bicep vnetEnabled=true), after the Azure-Samples Flex
// Consumption templates: a VNet with one subnet delegated to Microsoft.App/environments for the
// app's outbound VNet integration and one for private endpoints; storage (blob, queue, table)
// and Key Vault then take traffic only through their private endpoints (storage.bicep and
// keyvault.bicep close their public side). Inbound HTTP to the app stays public: Partner Center
// webhooks and the browser consent callback come from the internet.
param location string
param tags object
param vnetName string
param storageAccountId string
param keyVaultId string

@description('Address space of the VNet; the two /24 subnets below must fit in it.')
param addressPrefix string = '10.0.0.0/16'
param appSubnetPrefix string = '10.0.1.0/24'
param privateEndpointSubnetPrefix string = '10.0.2.0/24'

// one private endpoint (and private DNS zone) per service the app reaches
var endpoints = [
  { name: 'blob', resourceId: storageAccountId, zone: 'privatelink.blob.${environment().suffixes.storage}' }
  { name: 'queue', resourceId: storageAccountId, zone: 'privatelink.queue.${environment().suffixes.storage}' }
  { name: 'table', resourceId: storageAccountId, zone: 'privatelink.table.${environment().suffixes.storage}' }
  { name: 'vault', resourceId: keyVaultId, zone: 'privatelink.vaultcore.azure.net' }
]

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: '${vnetName}-nsg'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: vnetName
  location: location
  tags: tags
  properties: {
    addressSpace: { addressPrefixes: [addressPrefix] }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: { id: nsg.id }
          delegations: [
            {
              name: 'flex-consumption'
              properties: { serviceName: 'Microsoft.App/environments' }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: { id: nsg.id }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource zones 'Microsoft.Network/privateDnsZones@2024-06-01' = [for endpoint in endpoints: {
  name: endpoint.zone
  location: 'global'
  tags: tags
}]

resource zoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2024-06-01' = [for (endpoint, i) in endpoints: {
  parent: zones[i]
  name: '${vnetName}-link'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: { id: vnet.id }
  }
}]

resource privateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for (endpoint, i) in endpoints: {
  name: 'pe-${endpoint.name}-${vnetName}'
  location: location
  tags: tags
  properties: {
    subnet: { id: vnet.properties.subnets[1].id }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.resourceId
          groupIds: [endpoint.name]
        }
      }
    ]
  }
}]

resource dnsGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in endpoints: {
  parent: privateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.name
        properties: { privateDnsZoneId: zones[i].id }
      }
    ]
  }
}]

output appSubnetId string = vnet.properties.subnets[0].id
