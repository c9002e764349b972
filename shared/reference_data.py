"""Reference code lists used to validate provider connections."""
from __future__ import annotations

# ISO 3166-1 alpha-2 (officially assigned codes).
COUNTRY_CODES = frozenset(
    """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS
    BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ EC EE
    EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM
    HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ LA LB LC
    LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
    NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA RE RO RS RU RW
    SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO
    TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW
    """.split()
)

# ISO 4217 active currency codes.
CURRENCY_CODES = frozenset(
    """
    AED AFN ALL AMD ANG AOA ARS AUD AWG AZN BAM BBD BDT BGN BHD BIF BMD BND BOB BRL BSD BTN BWP BYN
    BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS
    GIP GMD GNF GTQ GYD HKD HNL HTG HUF IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW
    KWD KYD KZT LAK LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN NAD
    NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF SAR SBD SCR SDG SEK SGD
    SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VES
    VND VUV WST XAF XCD XCG XOF XPF YER ZAR ZMW ZWG
    """.split()
)

# Microsoft Solutions Partner specializations for Azure (key -> display name). Partners that
# hold one may see extra Azure discounts; the key is what the API and the table store.
AZURE_SPECIALIZATIONS = {
    "ai-platform": "AI Platform on Microsoft Azure",
    "analytics": "Analytics on Microsoft Azure",
    "azure-virtual-desktop": "Azure Virtual Desktop",
    "build-ai-apps": "Build and Modernize AI Apps with Microsoft Azure",
    "data-warehouse-migration": "Data Warehouse Migration to Microsoft Azure",
    "devops-github": "DevOps with GitHub on Microsoft Azure",
    "hybrid-cloud-arc": "Hybrid Operations and Management with Microsoft Azure Arc",
    "infra-database-migration": "Infra and Database Migration to Microsoft Azure",
    "kubernetes": "Kubernetes on Microsoft Azure",
    "linux-oss-database-migration": "Linux and Open Source Databases Migration to Microsoft Azure",
    "migrate-enterprise-apps": "Migrate Enterprise Applications to Microsoft Azure",
    "networking-services": "Networking Services in Microsoft Azure",
    "sap-on-azure": "SAP on Microsoft Azure",
    "azure-vmware-solution": "Microsoft Azure VMware Solution",
    "web-app-modernization": "Modernization of Web Applications to Microsoft Azure",
}
