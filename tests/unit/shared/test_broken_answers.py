"""Issue 9 point 6: a 2xx answer that is not what was asked for is never read as "nothing there".

Partner Center collection pages, single-resource reads and Graph export manifests are checked;
a broken answer is retried like a cut-short body and then fails the call.
"""
from __future__ import annotations

import pytest

from shared.graph_billing import GraphBillingClient, Manifest
from shared.graph_billing_errors import BlobFormatError, GraphServiceError
from shared.paging import PageRequest, SeekPaginator, SinglePagePaginator, collection_problem
from shared.partner_center import resource_problem
from shared.partner_center_errors import TransportError
from shared.transport import RetryPolicy
from tests.fakes.partner_center import FakeTokenSource, NoSleep, ScriptedSession, make_client, response

ATTEMPTS = 3
CUSTOMER = {"id": "00000000-0000-4000-8000-000000000001", "attributes": {"objectType": "Customer"}}
GOOD_PAGE = {"totalCount": 1, "items": [CUSTOMER], "attributes": {"objectType": "Collection"}}

# 2xx answers that are not a collection page
BROKEN_PAGES = {
    "error envelope": response(200, {"error": {"code": "InternalError", "message": "boom"}}),
    "html": response(200, raw=b"<html><body>Service Unavailable</body></html>"),
    "empty body": response(200, raw=b""),
    "missing items": response(200, {"totalCount": 0, "attributes": {"objectType": "Collection"}}),
    "items not an array": response(200, {"items": {"id": "x"}}),
    "item not an object": response(200, {"items": ["x"], "totalCount": 1}),
    "totalCount disagrees": response(200, {"items": [], "totalCount": 27}),
    "not a collection": response(200, {"items": [], "attributes": {"objectType": "Customer"}}),
    "json null": response(200, raw=b"null"),
    "json string": response(200, raw=b'"ok"'),
}


def client(session):
    return make_client(session, retry=RetryPolicy(max_attempts=ATTEMPTS))


@pytest.mark.parametrize("name", sorted(BROKEN_PAGES))
def test_a_broken_collection_page_is_retried_then_fails_the_read(name):
    session = ScriptedSession(*[BROKEN_PAGES[name]] * ATTEMPTS)
    with pytest.raises(TransportError) as info:
        list(client(session).iter_items(SeekPaginator(PageRequest.of("/customers"))))
    assert len(session.sent) == ATTEMPTS  # retried like a transient fault, not read as an empty page
    assert "/customers" in str(info.value)


def test_a_broken_page_followed_by_a_good_one_reads_the_good_one():
    session = ScriptedSession(BROKEN_PAGES["missing items"], response(200, GOOD_PAGE))
    items = list(client(session).iter_items(SinglePagePaginator(PageRequest.of("/customers"))))
    assert [i["id"] for i in items] == [CUSTOMER["id"]]


def test_a_broken_second_page_fails_the_read_after_the_first_page_was_handed_out():
    first = dict(GOOD_PAGE, links={"next": {"uri": "/customers?seekOperation=Next",
                                            "headers": [{"key": "MS-ContinuationToken", "value": "t"}]}})
    session = ScriptedSession(response(200, first), *[BROKEN_PAGES["error envelope"]] * ATTEMPTS)
    seen = []
    with pytest.raises(TransportError):
        for item in client(session).iter_items(SeekPaginator(PageRequest.of("/customers"))):
            seen.append(item["id"])
    assert seen == [CUSTOMER["id"]]


def test_valid_collection_shapes_pass():
    assert collection_problem(GOOD_PAGE) is None
    assert collection_problem({"items": []}) is None  # totalCount and objectType are optional
    assert collection_problem({"Items": [], "TotalCount": 0}) is None  # key case varies


@pytest.mark.parametrize("body", [None, "ok", 3, {"error": {"code": "x"}}])
def test_a_single_resource_read_that_is_not_a_json_object_fails(body):
    raw = b"null" if body is None else None
    answer = (lambda: response(200, raw=raw)) if raw else (lambda: response(200, body))
    session = ScriptedSession(*[answer() for _ in range(ATTEMPTS)])
    with pytest.raises(TransportError):
        client(session).get_json("/customers/x")
    assert len(session.sent) == ATTEMPTS


def test_a_single_resource_read_of_another_resource_fails():
    check = resource_problem("Invoice", "G000000001")
    assert check({"id": "G000000001", "attributes": {"objectType": "Invoice"}}) is None
    assert check({"id": "g000000001"}) is None  # ids compare case-insensitively
    assert "Invoice" in check({"id": "G000000001", "attributes": {"objectType": "Customer"}})
    assert "G000000001" in check({"id": "G000000002"})
    session = ScriptedSession(*[response(200, {"id": "OTHER"}) for _ in range(ATTEMPTS)])
    with pytest.raises(TransportError):
        client(session).get_json("/invoices/G000000001", expect=check)


# -- Graph export manifests ------------------------------------------------------------------------

GRAPH = "https://graph.example.test"
ROOT = "https://blobs.example.test/exports/x"
MANIFEST_URL = GRAPH + "/v1.0/reports/partners/billing/operations/op-1/manifest"
GOOD_MANIFEST = {"id": "m", "rootDirectory": ROOT, "sasToken": "sig=1", "blobCount": 1, "blobs": [{"name": "a.json.gz"}]}
BROKEN_MANIFESTS = {
    "missing blobs": {"id": "m", "rootDirectory": ROOT, "blobCount": 2},
    "blobCount disagrees": {**GOOD_MANIFEST, "blobCount": 3},
    "blob without a name": {**GOOD_MANIFEST, "blobCount": 2, "blobs": [{"name": "a.json.gz"}, {"size": 1}]},
    "blobs not an array": {**GOOD_MANIFEST, "blobs": "a.json.gz"},
    "no root": {"blobs": []},
}


def graph_client(session) -> GraphBillingClient:
    return GraphBillingClient(GRAPH, FakeTokenSource(), session=session, sleep=NoSleep(),
                              retry=RetryPolicy(max_attempts=ATTEMPTS))


@pytest.mark.parametrize("name", sorted(BROKEN_MANIFESTS))
def test_a_broken_manifest_is_retried_then_fails_the_import(name):
    session = ScriptedSession(*[response(200, BROKEN_MANIFESTS[name]) for _ in range(ATTEMPTS)])
    with pytest.raises(GraphServiceError):
        graph_client(session).get_manifest(MANIFEST_URL)
    assert len(session.sent) == ATTEMPTS
    with pytest.raises(BlobFormatError):
        Manifest.from_json(BROKEN_MANIFESTS[name])


def test_an_inline_manifest_that_does_not_add_up_fails_the_operation_read():
    broken = {"id": "op-1", "status": "succeeded", "resourceLocation": BROKEN_MANIFESTS["missing blobs"]}
    session = ScriptedSession(*[response(200, broken) for _ in range(ATTEMPTS)])
    with pytest.raises(GraphServiceError):
        graph_client(session).get_operation(GRAPH + "/v1.0/reports/partners/billing/operations/op-1")


def test_a_good_manifest_after_a_broken_one_is_read():
    session = ScriptedSession(response(200, BROKEN_MANIFESTS["missing blobs"]), response(200, GOOD_MANIFEST))
    manifest = graph_client(session).get_manifest(MANIFEST_URL)
    assert [b.name for b in manifest.blobs] == ["a.json.gz"]
