"""Hand-built fakes shared by the Partner Center client and sync engine unit tests.

No mocks: a fake HTTP session that answers from a script or a small in-memory Partner Center,
a fake token source, fake tables with the TableRepository verbs, and a fake queue publisher.
"""
from __future__ import annotations

import json
from collections import defaultdict
from typing import Any, Callable
from urllib.parse import parse_qsl, unquote, urlsplit

import requests
from requests.structures import CaseInsensitiveDict

from shared.call_budget import CallBudget
from shared.errors import ConsentRequired
from shared.partner_center import PartnerCenterClient
from shared.jsonutil import dumps_exact
from shared.transport import RetryPolicy

BASE = "https://pc.example.test"


def response(status: int = 200, body: Any = None, *, headers: dict[str, str] | None = None,
             raw: bytes | None = None, reason: str = "") -> requests.Response:
    r = requests.Response()
    r.status_code = status
    r.reason = reason or {200: "OK", 401: "Unauthorized", 429: "Too Many Requests"}.get(status, "")
    r.headers = CaseInsensitiveDict(headers or {})
    if raw is not None:
        r._content = raw
    elif body is not None:
        try:
            r._content = json.dumps(body).encode()
        except TypeError:  # Decimals: written digit for digit, as a service prints them
            r._content = dumps_exact(body).encode()
        r.headers.setdefault("Content-Type", "application/json")
    else:
        r._content = b""
    return r


class Sent:
    def __init__(self, method, url, params, headers):
        self.method = method
        self.url = url
        parts = urlsplit(url)
        self.path = parts.path
        self.query = dict(parse_qsl(parts.query)) | dict(params or [])
        self.headers = CaseInsensitiveDict(headers or {})


class ScriptedSession:
    """Answers each request with the next scripted item (a Response, an exception instance, or
    a callable taking the Sent request). A request past the end of the script fails the test;
    ``assert_consumed()`` fails it when scripted answers were never asked for."""

    def __init__(self, *script: Any):
        self.script = list(script)
        self.sent: list[Sent] = []

    def assert_consumed(self) -> None:
        assert not self.script, f"{len(self.script)} scripted answer(s) never requested after {len(self.sent)} request(s)"

    def request(self, method, url, *, params=None, headers=None, **_):
        sent = Sent(method, url, params, headers)
        self.sent.append(sent)
        if not self.script:
            raise AssertionError(f"unexpected request {method} {url}")
        item = self.script.pop(0)
        if callable(item) and not isinstance(item, requests.Response):
            item = item(sent)
        if isinstance(item, BaseException):
            raise item
        return item

    def close(self):
        pass


class FakeTokenSource:
    """Caches its token like auth's TokenProvider; force_refresh moves to the next one. Serves
    Graph tokens too (``graph_token``), from the same list."""

    def __init__(self, tokens=("token-1", "token-2", "token-3"), *, consent_error: bool = False):
        self.tokens = list(tokens)
        self.index = 0
        self.calls: list[bool] = []
        self.consent_error = consent_error

    def access_token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        if self.consent_error:
            raise ConsentRequired("p1", "expired", "refresh token expired (AADSTS700082)")
        if force_refresh:
            self.index = min(self.index + 1, len(self.tokens) - 1)
        return self.tokens[self.index]

    def graph_token(self, *, force_refresh: bool = False) -> str:
        return self.access_token(force_refresh=force_refresh)


class NoSleep:
    def __init__(self):
        self.slept: list[float] = []

    def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def make_client(session, *, tokens=None, budget=None, sleep=None, retry=None, **kwargs) -> PartnerCenterClient:
    return PartnerCenterClient(
        BASE, tokens or FakeTokenSource(), session=session, budget=budget or CallBudget(partner_limit=10_000),
        sleep=sleep or NoSleep(), retry=retry or RetryPolicy(), **kwargs,
    )


# ---------------------------------------------------------------------------------------------
# A tiny Partner Center: customers (seek paging), subscriptions, agreements
# ---------------------------------------------------------------------------------------------


def fake_customer_id(n: int) -> str:
    """The fake's n-th customer id: a GUID, as Partner Center's are (and as the sync requires)."""
    return f"0000000c-0000-4000-8000-{n:012d}"  # a letter, so that its upper case differs


class FakePartnerCenter:
    """Serves /v1/customers (seek), /v1/customers/{id}/subscriptions and /agreements from dicts.
    ``faults`` is a list of callables(sent) -> Response|Exception|None consulted first."""

    def __init__(self, customers: int = 5, subs_per_customer: int = 2, page_size: int = 2):
        self.page_size = page_size
        self.customers: dict[str, dict] = {}
        self.subscriptions: dict[str, dict[str, dict]] = {}
        self.agreements: dict[str, list[dict]] = {}
        self.sent: list[Sent] = []
        self.faults: list[Callable[[Sent], Any]] = []
        for c in range(customers):
            cid = fake_customer_id(c)
            self.customers[cid] = {
                "id": cid,
                "companyProfile": {"tenantId": cid, "domain": f"c{c:04d}.example", "companyName": f"Customer {c}"},
                "relationshipToPartner": "reseller",
                "attributes": {"objectType": "Customer"},
            }
            self.subscriptions[cid] = {
                f"s{c:04d}-{s}": {
                    "id": f"s{c:04d}-{s}", "offerId": "ABC:0001:XYZ" if s % 2 else "2828BE95-46BA-4F91-B2FD-0BEF192ECF60",
                    "offerName": "Offer", "friendlyName": "nickname", "quantity": 1 + s, "unitType": "Licenses",
                    "status": "active", "autoRenewEnabled": True, "billingCycle": "monthly",
                    "attributes": {"etag": "e1", "objectType": "Subscription"},
                }
                for s in range(subs_per_customer)
            }
            self.agreements[cid] = [{
                "primaryContact": {"firstName": "Tania", "lastName": "Carr", "email": f"t@c{c:04d}.example"},
                "templateId": "117a77b0-9360-443b-8795-c6dedc750cf9", "dateAgreed": "2019-08-26T00:00:00",
                "type": "MicrosoftCustomerAgreement", "agreementLink": "https://aka.ms/customeragreement",
            }]

    def request(self, method, url, *, params=None, headers=None, **_):
        sent = Sent(method, url, params, headers)
        self.sent.append(sent)
        for fault in list(self.faults):
            answer = fault(sent)
            if isinstance(answer, BaseException):
                raise answer
            if answer is not None:
                return answer
        parts = sent.path.split("/")
        if sent.path == "/v1/customers":
            ids = sorted(self.customers)
            start = int(sent.headers.get("MS-ContinuationToken", "0"))
            size = min(int(sent.query.get("size", self.page_size)), self.page_size)  # server-side cap
            page = ids[start:start + size]
            body: dict[str, Any] = {"totalCount": len(page), "items": [self.customers[i] for i in page],
                                    "attributes": {"objectType": "Collection"}}
            if start + size < len(ids):
                body["continuationToken"] = str(start + size)
                body["links"] = {"next": {"uri": f"/customers?size={size}&seekOperation=Next", "method": "GET",
                                          "headers": [{"key": "MS-ContinuationToken", "value": str(start + size)}]}}
            return response(200, body)
        if len(parts) == 5 and parts[2] == "customers" and parts[4] in ("subscriptions", "agreements"):
            # customer ids are case-insensitive GUIDs, as in Partner Center
            cid = next((known for known in self.customers if known.lower() == unquote(parts[3]).lower()), None)
            if cid is None:
                return response(404, {"code": 60003, "description": "Tenant not found"})
            items = list(self.subscriptions[cid].values()) if parts[4] == "subscriptions" else self.agreements[cid]
            return response(200, {"totalCount": len(items), "items": items})
        return response(404, {"code": 1000, "description": "Not found"})

    def close(self):
        pass

    def paths(self) -> list[str]:
        return [s.path for s in self.sent]


# ---------------------------------------------------------------------------------------------
# Tables and queues
# ---------------------------------------------------------------------------------------------


class FakeTable:
    def __init__(self, name: str):
        self.name = name
        self.rows: dict[tuple[str, str], dict] = {}
        self.writes = 0
        self.batches: list[int] = []

    def upsert_entities(self, entities, *, replace: bool = True, on_rejected=None) -> int:
        entities = list(entities)
        assert len(entities) <= 100
        assert len({e["PartitionKey"] for e in entities}) <= 1
        self.batches.append(len(entities))
        for e in entities:
            self.upsert_entity(e, replace=replace)
        return len(entities)

    def upsert_entity(self, entity, *, replace: bool = False) -> None:
        key = (entity["PartitionKey"], entity["RowKey"])
        self.writes += 1
        if replace or key not in self.rows:
            self.rows[key] = dict(entity)
        else:
            self.rows[key].update(entity)

    def list_entities(self, *, partition_key=None, query=None, parameters=None, select=None):
        assert query is None
        for (pk, _), row in list(self.rows.items()):
            if partition_key is None or pk == partition_key:
                yield {k: v for k, v in row.items() if not select or k in select or k in ("PartitionKey", "RowKey")}

    def find_entity(self, pk, rk):
        row = self.rows.get((pk, rk))
        return dict(row) if row else None

    def partition(self, pk: str) -> dict[str, dict]:
        return {rk: row for (p, rk), row in self.rows.items() if p == pk}


class FakeTables:
    def __init__(self):
        self.tables: dict[str, FakeTable] = {}

    def table(self, name: str) -> FakeTable:
        return self.tables.setdefault(name, FakeTable(name))

    def writes(self, *names: str) -> int:
        return sum(self.table(n).writes for n in names)


class FakeQueues:
    def __init__(self):
        self.sent: dict[str, list[dict]] = defaultdict(list)

    def send_json(self, queue_name: str, message, *, delay_seconds=None) -> None:
        self.sent[queue_name].append(dict(message))
