"""GraphBillingClient against a scripted transport: export, polling, manifest, streamed blobs."""
from __future__ import annotations

import gzip
from decimal import Decimal
import io
import json
import random

import pytest

from tests.support import SAMPLES_DIR
import requests

from shared.graph_billing import GraphBillingClient, Manifest
from shared.graph_billing_errors import (
    BlobFormatError,
    ExportExpired,
    ExportFailed,
    ExportTimedOut,
    GraphBillingError,
    GraphPermissionMissing,
)
from shared.jsonlines import iter_gzip_json_lines
from shared.transport import RetryPolicy, TruncatedBody
from tests.fakes.partner_center import NoSleep, ScriptedSession, response

GRAPH = "https://graph.example.test"
OPS = GRAPH + "/v1.0/reports/partners/billing/operations/op-1"
MANIFEST_URL = GRAPH + "/v1.0/reports/partners/billing/manifests/m-1"
ROOT = "https://blobs.example.test/recon/InvoiceId=G1"
SAS = "sv=2021-08-06&sr=d&sp=rl&sig=abc%3D"


class GraphTokens:
    def __init__(self):
        self.calls: list[bool] = []

    def graph_token(self, *, force_refresh: bool = False) -> str:
        self.calls.append(force_refresh)
        return "graph-2" if True in self.calls else "graph-1"


def client(session, *, sleep=None, **kwargs) -> GraphBillingClient:
    return GraphBillingClient(GRAPH, GraphTokens(), session=session, sleep=sleep or NoSleep(),
                              retry=RetryPolicy(max_attempts=4), **kwargs)


def gz_lines(rows, *, newline_at_end=True) -> bytes:
    text = "\n".join(json.dumps(r) for r in rows) + ("\n" if newline_at_end else "")
    return gzip.compress(text.encode())


class ChunkedRaw(io.RawIOBase):
    """A response body read in small pieces; optionally breaks off after ``fail_after`` bytes."""

    def __init__(self, data: bytes, *, piece: int = 64, fail_after: int | None = None):
        self.data, self.pos, self.piece, self.fail_after = data, 0, piece, fail_after
        self.reads = 0

    def read(self, size=-1):
        if self.fail_after is not None and self.pos >= self.fail_after:
            raise requests.exceptions.ChunkedEncodingError("connection broken")
        self.reads += 1
        chunk = self.data[self.pos:self.pos + min(self.piece, size if size and size > 0 else self.piece)]
        self.pos += len(chunk)
        return chunk


def blob_response(data: bytes, **raw_options) -> requests.Response:
    r = response(200)
    r._content = False
    r._content_consumed = False
    r.raw = ChunkedRaw(data, **raw_options)
    return r


def running(retry_after: str | None = "3"):
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return response(200, {"@odata.type": "#microsoft.graph.partners.billing.runningOperation", "id": "op-1",
                          "status": "running"}, headers=headers)


def succeeded(status="succeeded", **extra):
    body = {"id": "op-1", "status": status}
    body.update(extra or {"resourceLocation@odata.navigationLink": MANIFEST_URL})
    return response(200, body)


def manifest_body(*names):
    return {"id": "m-1", "dataFormat": "compressedJSONLines", "rootDirectory": ROOT, "sasToken": SAS,
            "blobCount": len(names), "blobs": [{"name": n, "partitionValue": "default"} for n in names]}


ACCEPTED = response(202, headers={"Location": OPS, "Retry-After": "1"})


def test_export_polls_with_retry_after_then_streams_every_blob_in_order():
    rows_a = [{"id": i, "totalForCustomer": 1.5} for i in range(3)]
    rows_b = [{"id": 10 + i} for i in range(2)]
    sleep = NoSleep()
    session = ScriptedSession(ACCEPTED, running("3"), running("2"), succeeded(),
                              response(200, manifest_body("part-00001-x.json.gz", "part-00000-x.json.gz")),
                              blob_response(gz_lines(rows_a)), blob_response(gz_lines(rows_b)))
    graph = client(session, sleep=sleep)
    manifest = graph.export_billed_reconciliation("G1")
    assert [b.name for b in manifest.blobs] == ["part-00000-x.json.gz", "part-00001-x.json.gz"]
    assert list(graph.iter_rows(manifest)) == rows_a + rows_b
    assert sleep.slept == [1.0, 3.0, 2.0]  # Retry-After of the 202, then of each running poll
    post = session.sent[0]
    assert (post.method, post.path) == ("POST", "/v1.0/reports/partners/billing/reconciliation/billed/export")
    graph_calls, blob_calls = session.sent[:5], session.sent[5:]
    assert all(s.headers["Authorization"] == "Bearer graph-1" for s in graph_calls)
    assert all("Authorization" not in s.headers for s in blob_calls)  # the SAS is the only credential
    assert [s.url for s in blob_calls] == [f"{ROOT}/part-00000-x.json.gz?{SAS}", f"{ROOT}/part-00001-x.json.gz?{SAS}"]
    assert graph.stats.calls == 7


def test_completed_spelling_and_inline_manifest():
    inline = manifest_body("part-0.json.gz")
    session = ScriptedSession(ACCEPTED, succeeded("Completed", resourceLocation=inline),
                              blob_response(gz_lines([{"a": 1}])))
    graph = client(session)
    manifest = graph.export_billed_reconciliation("G1")
    assert manifest.root_directory == ROOT and list(graph.iter_rows(manifest)) == [{"a": 1}]
    assert len(session.sent) == 3  # no manifest GET


def test_failed_5000_is_a_typed_no_data_error():
    failed = response(200, {"id": "op-1", "status": "failed",
                            "error": {"code": "5000", "message": "No reconciliation data available currently"}})
    with pytest.raises(ExportFailed) as info:
        client(ScriptedSession(ACCEPTED, running(), failed)).export_billed_reconciliation("D0001")
    assert info.value.no_data and info.value.code == "5000" and not info.value.retryable


def test_other_failure_codes_are_not_no_data():
    failed = response(200, {"status": "failed", "error": {"code": "9000", "message": "boom"}})
    with pytest.raises(ExportFailed) as info:
        client(ScriptedSession(ACCEPTED, failed)).export_billed_reconciliation("G1")
    assert not info.value.no_data and info.value.retryable  # Graph: restart with a new export


def test_polling_is_bounded_and_retry_after_capped():
    sleep = NoSleep()
    session = ScriptedSession(ACCEPTED, *[running("600") for _ in range(10)])
    graph = client(session, sleep=sleep, poll_timeout=150)
    with pytest.raises(ExportTimedOut) as info:
        graph.export_billed_reconciliation("G1")
    assert info.value.retryable
    assert sleep.slept == [1.0, 60.0, 60.0]  # Retry-After capped at the policy's 60 s; total within 150 s


def test_missing_retry_after_uses_the_default_poll_interval():
    sleep = NoSleep()
    session = ScriptedSession(response(202, headers={"Location": OPS}), running(None), succeeded(),
                              response(200, manifest_body()))
    client(session, sleep=sleep, poll_default=7).export_billed_reconciliation("G1")
    assert sleep.slept == [7, 7]


def test_permission_missing_and_server_errors():
    with pytest.raises(GraphPermissionMissing) as info:
        client(ScriptedSession(response(403, {"error": {"code": "Forbidden", "message": "Missing permission"}})
                               )).export_billed_reconciliation("G1")
    assert "PartnerBilling.Read.All" in str(info.value)
    session = ScriptedSession(response(503), response(429, headers={"Retry-After": "2"}), ACCEPTED, succeeded(),
                              response(200, manifest_body()))
    graph = client(session)
    graph.export_billed_reconciliation("G1")
    assert (graph.stats.retries, graph.stats.throttled) == (2, 1)


def test_401_refreshes_the_graph_token_once():
    tokens = GraphTokens()
    session = ScriptedSession(response(401), ACCEPTED, succeeded(), response(200, manifest_body()))
    graph = GraphBillingClient(GRAPH, tokens, session=session, sleep=NoSleep())
    graph.export_billed_reconciliation("G1")
    assert True in tokens.calls and session.sent[1].headers["Authorization"] == "Bearer graph-2"


def test_token_is_never_sent_to_another_origin():
    session = ScriptedSession(response(202, headers={"Location": "https://evil.example.test/ops/1"}))
    with pytest.raises(GraphBillingError, match="another origin"):
        client(session).export_billed_reconciliation("G1")
    assert len(session.sent) == 1


def test_blob_broken_mid_stream_is_reread_without_duplicates():
    rows = [{"n": i, "pad": "x" * 50} for i in range(200)]
    data = gz_lines(rows)
    session = ScriptedSession(blob_response(data, fail_after=len(data) // 2), blob_response(data))
    graph = client(session)
    manifest = Manifest.from_json(manifest_body("part-0.json.gz"))
    assert [r["n"] for r in graph.iter_rows(manifest)] == list(range(200))
    assert len(session.sent) == 2


def test_blob_rows_are_streamed_not_buffered():
    rng = random.Random(1)
    rows = [{"n": i, "pad": rng.randbytes(100).hex()} for i in range(5000)]
    data = gzip.compress(("\n".join(json.dumps(r) for r in rows)).encode(), compresslevel=1)
    blob = blob_response(data, piece=4096)
    graph = client(ScriptedSession(blob), chunk_bytes=4096)
    first = next(graph.iter_rows(Manifest.from_json(manifest_body("p.json.gz"))))
    assert first["n"] == 0
    assert blob.raw.pos < len(data) // 4  # the first row came out long before the blob was read


@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_gzip_json_lines_parser_handles_any_chunking_members_crlf_and_last_line(piece):
    part1 = gzip.compress(b'{"CustomerId": "c1", "Quantity": "3", "TotalForCustomer": "12.50"}\r\n\n')
    part2 = gzip.compress(b'{"customerId": "c2", "quantity": 2}\n{"customerId": "c3"}')  # no final newline
    data = part1 + part2
    chunks = [data[i:i + piece] for i in range(0, len(data), piece)]
    rows = list(iter_gzip_json_lines(chunks))
    assert rows == [{"CustomerId": "c1", "Quantity": "3", "TotalForCustomer": "12.50"},
                    {"customerId": "c2", "quantity": 2}, {"customerId": "c3"}]


def test_parser_rejects_truncated_gzip_bad_lines_and_runaway_lines():
    data = gz_lines([{"a": 1}] * 100)
    with pytest.raises(TruncatedBody):
        list(iter_gzip_json_lines([data[: len(data) - 10]]))
    with pytest.raises(BlobFormatError, match="line 2"):
        list(iter_gzip_json_lines([gzip.compress(b'{"a": 1}\nnot json\n')]))
    with pytest.raises(BlobFormatError, match="not a JSON object"):
        list(iter_gzip_json_lines([gzip.compress(b'[1, 2]\n')]))
    with pytest.raises(BlobFormatError, match="longer than"):
        list(iter_gzip_json_lines([gzip.compress(b'{"a": "' + b"z" * 5000 + b'"}')], max_line_bytes=1000))


def test_already_decoded_body_passes_through():
    assert list(iter_gzip_json_lines([b'{"a": 1}\n', b'{"a": 2}\n'])) == [{"a": 1}, {"a": 2}]


def test_each_row_keeps_its_line_text_and_a_byte_order_mark_is_dropped():
    text = '{"UnitPrice": 0.1835431430074643112595, "Total": 12.50}'
    rows = list(iter_gzip_json_lines([gzip.compress(b"\xef\xbb\xbf" + text.encode() + b'\r\n{"a":2}\n')],
                                     parse_float=Decimal))
    assert rows == [{"UnitPrice": Decimal("0.1835431430074643112595"), "Total": Decimal("12.50")}, {"a": 2}]
    assert [row.text for row in rows] == [text, '{"a":2}']  # Microsoft's text, digit for digit


def test_a_line_stored_from_json_lines_keeps_microsofts_text_as_raw():
    from sync.invoices.lines import RECON_COLUMNS, build_row

    text = '{"CustomerId":"C1","UnitPrice":0.1835431430074643112595,"Total":12.50}'
    row = next(iter_gzip_json_lines([text.encode()], parse_float=Decimal))
    line = build_row(row, RECON_COLUMNS, provider_id="p", invoice_id="G1", source="recon", index=0, generation="g")
    assert line.entity["raw"] == text and line.entity["unitPrice"] == "0.1835431430074643112595"
    assert line.entity["total"] == "12.5" and line.amount("total") == Decimal("12.50")


def test_manifest_sample_and_beta_names():
    with open(SAMPLES_DIR / "graph-billing-manifest.json", encoding="utf-8") as fh:
        sample = json.load(fh)
    manifest = Manifest.from_json(sample)
    assert manifest.blobs and manifest.blob_url(manifest.blobs[0]).startswith(sample["rootDirectory"] + "/part-")
    assert "?skoid=" in manifest.blob_url(manifest.blobs[0])
    beta = Manifest.from_json({"RootFolder": ROOT + "/", "RootFolderSAS": "?" + SAS, "Blobs": [{"Name": "b.json.gz"}]})
    assert beta.blob_url(beta.blobs[0]) == f"{ROOT}/b.json.gz?{SAS}"
    with pytest.raises(BlobFormatError):
        Manifest.from_json({"blobs": []})


def test_refused_blob_means_an_expired_export_not_a_missing_permission():
    refused = response(403, raw=b"<Error><Code>AuthenticationFailed</Code></Error>")
    refused._content_consumed = True
    graph = client(ScriptedSession(refused))
    with pytest.raises(ExportExpired) as info:
        list(graph.iter_rows(Manifest.from_json(manifest_body("p.json.gz"))))
    assert info.value.retryable and "sig=" not in str(info.value)
