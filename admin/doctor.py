"""`pcsync doctor`'s checks of the settings, storage and each provider's consent: typed results,
nothing printed. The app credential and Entra checks are auth's (auth/doctor_checks.py), handed
in as ``app_checks`` so that admin does not import auth.
"""
from __future__ import annotations

import base64
import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from shared.checks import NO_TOKEN_FIX, AzureFailure, DoctorCheck, azure_failure, fail, info, ok
from shared.clock import parse_iso, to_iso
from shared.providers import ConsentStatus, ProviderConnection
from shared.settings import (
    HOST_STORAGE_SETTING,
    SCHEDULE_SETTINGS,
    STORAGE_IDENTITY_SETTINGS,
    STORAGE_SETTING,
    Settings,
    SettingsError,
)
from shared.token_health import describe

# settings, a way to read Key Vault, the providers (None: storage could not list them)
AppChecks = Callable[[Settings, Callable[[], Any], "list[ProviderConnection] | None"], Iterable[DoctorCheck]]

_SETTING_NAME = re.compile(r"\b((?:PCSYNC|AZURE)_[A-Za-z0-9_]+|AzureWebJobsStorage)\b")
_STORAGE_NAMES = frozenset({STORAGE_SETTING, HOST_STORAGE_SETTING, *STORAGE_IDENTITY_SETTINGS})
_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CALLBACK_PATH = "/api/consent/callback"  # auth/functions.py's route under the host's "api" prefix
SCRATCH_PREFIX = "pcsyncdoctor"
SCHEDULE_OCCURRENCES = 3
CONSENT_WARNING_DAYS = 14  # the infra alert's threshold (infra/modules/alerts.bicep)
_STORAGE_STAND_IN = "UseDevelopmentStorage=true"  # only to read the other settings past a storage problem
FIX_SETTING = "correct it in the Function App's settings (local.settings.json locally)"


@dataclass(frozen=True)
class DoctorReport:
    checks: tuple[DoctorCheck, ...]

    @property
    def failed(self) -> bool:
        return any(c.failed for c in self.checks)

    def to_json(self) -> dict[str, Any]:
        return {"passed": not self.failed, "checks": [c.to_json() for c in self.checks]}


def examine(environ: Mapping[str, str], services_for: Callable[[Settings], Any], app_checks: AppChecks, *,
            now: datetime) -> DoctorReport:
    """Every check, in the order an operator fixes things: settings, storage, the app credential
    and its tokens, each provider's consent. A check that needs an earlier one to pass says so."""
    settings, checks = read_settings(environ)
    if settings is None:
        checks.append(info("services", "not checked", "fix the settings above, then run pcsync doctor again"))
        return DoctorReport(tuple(checks))
    checks += required_settings(settings, environ, now=now)
    services = services_for(settings)
    scratch = f"{SCRATCH_PREFIX}{uuid.uuid4().hex[:8]}"  # a new name: Azure keeps a deleted one busy for a while
    tables = check_tables(services.tables, scratch, identity_based=settings.storage.identity_based)
    checks += [tables, check_queues(services.queues, scratch, identity_based=settings.storage.identity_based)]
    providers, listed = (list_providers(services.providers, identity_based=settings.storage.identity_based)
                         if not tables.failed else (None, None))
    if listed is not None:
        checks.append(listed)
    checks += app_checks(settings, lambda: services.secrets, providers)
    if providers is None:
        checks.append(info("consent", "not checked", "fix storage first: the providers are stored there"))
    else:
        checks += [consent_health(p, now=now) for p in providers]
    return DoctorReport(tuple(checks))


# -- settings ----------------------------------------------------------------------------------


def read_settings(environ: Mapping[str, str]) -> tuple[Settings | None, list[DoctorCheck]]:
    """The typed settings, or None and one FAIL per malformed setting. Settings stops at its first
    problem, so each setting a problem names is set aside (storage: replaced by a stand-in, as it
    has no default) and the rest read again, until the rest load."""
    env, problems = dict(environ), []
    for _ in range(len(env) + 2):  # each round sets at least one setting aside
        try:
            settings = Settings.from_environment(env)
        except SettingsError as exc:
            mentioned = list(dict.fromkeys(_SETTING_NAME.findall(str(exc))))
            named = [n for n in mentioned if (env.get(n) or "").strip()]
            problems.append(fail("setting " + (", ".join(named) or "storage"), str(exc), FIX_SETTING))
            storage = _STORAGE_NAMES.intersection(mentioned) or not mentioned
            if storage and env.get(STORAGE_SETTING) == _STORAGE_STAND_IN or not (named or storage):
                break
            for name in (_STORAGE_NAMES if storage else named):
                env.pop(name, None)
            if storage:
                env[STORAGE_SETTING] = _STORAGE_STAND_IN
            continue
        return (None if problems else settings), problems
    return None, problems


def _storage_evidence(settings: Settings) -> str:
    storage = settings.storage
    if storage.identity_based:
        return f"identity-based: {storage.table_service_uri}, {storage.queue_service_uri}"
    return "a connection string"  # never printed: it may hold the account key


def required_settings(settings: Settings, environ: Mapping[str, str], *, now: datetime) -> list[DoctorCheck]:
    """The settings the app cannot work without but Settings accepts empty, and the schedules
    (read by the Functions host, not by Settings)."""
    checks = [ok(f"setting {STORAGE_SETTING}", _storage_evidence(settings))]
    if settings.key_vault_url:
        checks.append(ok("setting PCSYNC_KEY_VAULT_URL", settings.key_vault_url))
    else:
        checks.append(fail("setting PCSYNC_KEY_VAULT_URL", "not set",
                           "set it to the vault's URL (https://<vault>.vault.azure.net): it holds the app's client "
                           "secret and the refresh tokens"))
    checks.append(_client_id_check(settings.client_id))
    checks.append(_credential_name_check(settings))
    checks.append(redirect_uri_check(settings.redirect_uri))
    for name in SCHEDULE_SETTINGS:
        checks.append(schedule_check(name, (environ.get(name) or "").strip(), now=now))
    return checks


def _client_id_check(client_id: str) -> DoctorCheck:
    name, where = "setting PCSYNC_CLIENT_ID", "the app registration's Application (client) ID"
    if not client_id:
        return fail(name, "not set", f"set it to {where}")
    if not _GUID.match(client_id):
        return fail(name, f"{client_id!r} is not a GUID", f"set it to {where}")
    return ok(name, client_id)


def _credential_name_check(settings: Settings) -> DoctorCheck:
    from shared.secrets import is_valid_secret_name  # loads the Key Vault SDK: only when doctor runs

    if settings.client_certificate_name:
        name, value = "setting PCSYNC_CLIENT_CERTIFICATE_NAME", settings.client_certificate_name
    else:
        name, value = "setting PCSYNC_CLIENT_SECRET_NAME", settings.client_secret_name
    if is_valid_secret_name(value):
        return ok(name, value)
    return fail(name, f"{value!r} is not a Key Vault secret name", "use 1-127 letters, digits and '-'")


def redirect_uri_check(uri: str) -> DoctorCheck:
    name = "setting PCSYNC_REDIRECT_URI"
    wanted = f"https://<function app host>{CALLBACK_PATH}"
    if not uri:
        return fail(name, "not set", f"set it to {wanted} and add the same URI to the app registration (Web)")
    parts = urlsplit(uri)
    local = parts.hostname in ("localhost", "127.0.0.1")
    if not (parts.scheme == "https" or (parts.scheme == "http" and local)) or not parts.hostname:
        return fail(name, f"{uri} is not https", f"Entra ID allows http only for localhost: use {wanted}")
    if not parts.path.endswith(CALLBACK_PATH):
        return fail(name, f"{uri} does not end in {CALLBACK_PATH}", f"use {wanted} (the consent callback route)")
    return ok(name, uri)


# Functions NCRONTAB: {second} {minute} {hour} {day} {month} {day of week}; each field numbers,
# three-letter names, *, ranges, steps and lists. croniter also takes 5-field crons and its own
# extensions (H, L, #, ?), which the Functions host refuses, so the shape is checked first.
_ATOM = r"(?:\*|\d+|[A-Za-z]{3})"
_ITEM = rf"{_ATOM}(?:-{_ATOM})?(?:/\d+)?"
_NCRONTAB_FIELD = re.compile(rf"^{_ITEM}(?:,{_ITEM})*$")
NCRONTAB_FIX = "use a six-field NCRONTAB expression, seconds first, e.g. '0 0 */4 * * *' (every four hours)"


def next_occurrences(expression: str, *, now: datetime, count: int = SCHEDULE_OCCURRENCES) -> list[datetime]:
    """The next ``count`` times (UTC) an NCRONTAB expression fires after ``now``; ValueError when
    the Functions host would refuse the expression."""
    from croniter import croniter

    fields = expression.split()
    if len(fields) != 6:
        raise ValueError(f"{len(fields)} fields, NCRONTAB has six (seconds first)")
    bad = [f for f in fields if not _NCRONTAB_FIELD.match(f)]
    if bad or not croniter.is_valid(expression, second_at_beginning=True):
        raise ValueError("not a valid NCRONTAB expression" + (f" ({', '.join(bad)})" if bad else ""))
    times = croniter(expression, now, second_at_beginning=True)
    return [times.get_next(datetime) for _ in range(count)]


def schedule_check(name: str, expression: str, *, now: datetime) -> DoctorCheck:
    """A timer's schedule; the host reads it in UTC unless WEBSITE_TIME_ZONE says otherwise."""
    if not expression:
        return fail(f"schedule {name}", "not set", f"set it: the timer binding reads %{name}%; {NCRONTAB_FIX}")
    try:
        times = next_occurrences(expression, now=now)
    except ValueError as exc:
        return fail(f"schedule {name}", f"{expression!r}: {exc}", NCRONTAB_FIX)
    return ok(f"schedule {name}", f"{expression!r}, next " + ", ".join(to_iso(t) or "" for t in times))


# -- storage -----------------------------------------------------------------------------------


def storage_failure(name: str, step: str, exc: Exception, *, role: str, identity_based: bool) -> DoctorCheck:
    """A storage SDK error as a FAIL naming the setting or the role to fix."""
    kind, evidence = azure_failure(exc) or (AzureFailure.REFUSED, type(exc).__name__)
    evidence = f"{step}: {evidence}"
    if kind == AzureFailure.UNREACHABLE:
        return fail(name, evidence, f"check {STORAGE_SETTING} (or {STORAGE_SETTING}__*) and that the account is "
                                    "reachable from here (firewall, private endpoints)")
    if kind == AzureFailure.NO_TOKEN:
        return fail(name, evidence, NO_TOKEN_FIX)
    if kind == AzureFailure.FORBIDDEN:
        if identity_based:
            return fail(name, evidence, f"give the app's identity the {role} role on the storage account")
        return fail(name, evidence, f"the account key or SAS in {STORAGE_SETTING} was refused: use a current one")
    return fail(name, evidence, "see the evidence; the storage account refused the request")


def check_tables(tables: Any, scratch: str, *, identity_based: bool) -> DoctorCheck:
    """Create a scratch table, write, read and delete an entity in it, delete the table."""
    name, step = "storage tables", "create table"
    try:
        repo = tables.table(scratch)
        step = "write entity"
        repo.upsert_entity({"PartitionKey": "doctor", "RowKey": "probe", "probe": scratch})
        step = "read entity"
        read_back = repo.get_entity("doctor", "probe").get("probe")
        step = "delete entity"
        repo.delete_entity("doctor", "probe")
        step = "delete table"
        repo.client.delete_table()
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        return storage_failure(name, step, exc, role="Storage Table Data Contributor", identity_based=identity_based)
    if read_back != scratch:
        return fail(name, f"read back {read_back!r}, wrote {scratch!r}", "see the evidence")
    return ok(name, f"created, wrote, read and deleted table {scratch}")


def check_queues(queues: Any, scratch: str, *, identity_based: bool) -> DoctorCheck:
    """Create a scratch queue, send, receive and delete a message in it, delete the queue."""
    name, step = "storage queues", "create queue"
    try:
        queue = queues.queue_client(scratch)
        step = "send message"
        queue.send_message(scratch)
        step = "receive message"
        received = next(iter(queue.receive_messages(max_messages=1, visibility_timeout=30)), None)
        step = "delete message"
        if received is not None:
            queue.delete_message(received)
        step = "delete queue"
        queue.delete_queue()
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        return storage_failure(name, step, exc, role="Storage Queue Data Contributor", identity_based=identity_based)
    if received is None or base64.b64decode(received.content).decode("utf-8") != scratch:
        return fail(name, "the message sent was not received back", "see the evidence")
    return ok(name, f"created, sent, received and deleted a message, deleted queue {scratch}")


def list_providers(providers: Any, *,
                   identity_based: bool) -> tuple[list[ProviderConnection] | None, DoctorCheck | None]:
    """The provider connections; None and a FAIL when they cannot be read, an info when there are none."""
    try:
        found = list(providers.list_providers())
    except Exception as exc:  # noqa: BLE001 - any failure is the check's answer
        return None, storage_failure("providers", "list providers", exc, role="Storage Table Data Contributor",
                                     identity_based=identity_based)
    if not found:
        return found, info("providers", "none yet", "add one: pcsync provider set ID --name ... --tenant-id ...")
    return found, None


# -- consent -----------------------------------------------------------------------------------


def _verify_summary(provider: ProviderConnection) -> tuple[bool | None, str]:
    """(passed, text) of the provider's last Verify Connectivity; passed None: never verified."""
    if not provider.verify_result:
        return None, "never verified"
    try:
        report = json.loads(provider.verify_result)
    except ValueError:
        return None, "verify result unreadable"
    failed = [c.get("name", "?") for c in report.get("checks", []) if not c.get("passed")]
    when = f" {provider.verified_at}" if provider.verified_at else ""
    return (not failed), (f"verify passed{when}" if not failed else f"verify failed{when}: {', '.join(failed)}")


def consent_health(provider: ProviderConnection, *, now: datetime) -> DoctorCheck:
    """Consent status, days until the refresh token expires if unused, and the last verify."""
    name, pid = f"consent {provider.id}", provider.id
    reconsent = f"open a new consent link (pcsync consent-link --provider {pid}) and sign in as the integration user"
    if not provider.enabled:
        return info(name, "provider disabled: not checked")
    blocked = provider.consent_blocked
    if blocked:
        return fail(name, f"{blocked}: {provider.consent_error or 'the stored consent no longer works'}", reconsent)
    if not provider.consent_active:
        return fail(name, f"{provider.consent_status}: no working consent yet", reconsent)
    expires = parse_iso(provider.refresh_token_expires_at)
    days = (expires - now).days if expires else None
    if days is None:
        lifetime = "refresh token expiry unknown"
    elif days < 0:
        return fail(name, f"{ConsentStatus.EXPIRED}: the refresh token was unused until {to_iso(expires)}", reconsent)
    else:
        lifetime = f"refresh token expires in {days} days if unused ({to_iso(expires)})"
    passed, verified = _verify_summary(provider)
    evidence = f"{provider.consent_status}, {lifetime}, {verified}"
    if days is not None and days < CONSENT_WARNING_DAYS:
        return fail(name, evidence, f"nothing refreshed the token lately: check the timers, or run "
                                    f"pcsync sync --provider {pid} (each refresh renews the window)")
    cause, fix = describe(provider.token_health)
    if cause:  # Partner Center refused the App+User token (MFA, Conditional Access): App+User calls fail
        return fail(name, f"{evidence}; {cause}", fix)
    if passed is False:
        return fail(name, evidence, f"pcsync verify --provider {pid} shows each failed check and its fix")
    return ok(name, evidence)
