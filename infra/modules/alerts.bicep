// Log alerts over what the app writes to Application Insights (the Functions host forwards the
// Python worker's log records as `traces`; host.json keeps Information and up):
//   failed runs  - the one summary line every sync run ends with, `sync <stream> <scope>: failed
//                  read=...` (sync/engine.py, also for a run that crashed), a failed invoice
//                  import (`import of invoice <id> for <provider> failed: ...`, WARNING), and a
//                  timer's provider that crashed (`... crashed for provider <id>`, ERROR)
//   consent      - consent already lost (`consent for provider <id> is expired|revoked`, WARNING,
//                  auth/tokens.py; `provider <id> needs consent again`, WARNING, sync/engine.py)
//                  or expiring within 14 days: the refresh-token days-left gauge of the telemetry
//                  (customMetrics name consentDaysMetricName, one value per provider)
param location string
param tags object
param namePrefix string
param applicationInsightsId string

@description('E-mail address that receives the alerts; empty = the alerts fire in the portal only.')
param alertEmail string = ''

@description('Name of the telemetry gauge with the days until a provider\'s refresh token expires.')
param consentDaysMetricName string = 'pcsync.consent.refresh_token_days_left'

@description('Alert when a consent expires within this many days.')
param consentWarningDays int = 14

var failedRunsQuery = '''
traces
| where message matches regex @"^sync \S+ \S+: failed "
    or (severityLevel >= 2 and message matches regex @"^import of invoice \S+ for \S+ failed: ")
    or (severityLevel >= 3 and message has "crashed for provider")
'''

// format(): multi-line strings take no ${} interpolation
var consentQuery = format('''
union
    (traces
     | where severityLevel >= 2
     | where message matches regex @"^consent for provider \S+ is (expired|revoked)"
         or message matches regex @"^provider \S+ needs consent again"),
    (customMetrics
     | where name == "{0}" and value < {1})
''', consentDaysMetricName, consentWarningDays)

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = if (!empty(alertEmail)) {
  name: 'ag-${namePrefix}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'pcsync'
    enabled: true
    emailReceivers: [
      { name: 'operator', emailAddress: alertEmail, useCommonAlertSchema: true }
    ]
  }
}

var actions = empty(alertEmail) ? { actionGroups: [] } : { actionGroups: [actionGroup.id] }

resource failedRuns 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'alert-${namePrefix}-failed-runs'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'pcsync: failed runs'
    description: 'A sync run, invoice import or timer failed in the last 15 minutes; see table syncruns and the traces.'
    severity: 2
    enabled: true
    scopes: [applicationInsightsId]
    evaluationFrequency: 'PT15M'
    windowSize: 'PT15M'
    criteria: {
      allOf: [
        {
          query: failedRunsQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}

resource consent 'Microsoft.Insights/scheduledQueryRules@2022-06-15' = {
  name: 'alert-${namePrefix}-consent'
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: 'pcsync: consent lost or expiring within ${consentWarningDays} days'
    description: 'A provider\'s consent expired or was revoked, or its refresh token expires soon; send a new consent link (pcsync consent-link).'
    severity: 1
    enabled: true
    scopes: [applicationInsightsId]
    evaluationFrequency: 'PT1H'
    windowSize: 'PT1H'
    criteria: {
      allOf: [
        {
          query: consentQuery
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: { numberOfEvaluationPeriods: 1, minFailingPeriodsToAlert: 1 }
        }
      ]
    }
    autoMitigate: true
    actions: actions
  }
}
