"""Queue triggers through `pcsync serve` against a real Azurite: host.json's rules as the host
applies them (maxDequeueCount, then <queue>-poison; base64 bodies; a completed message is gone)."""
from __future__ import annotations

import base64
import json
import re
import time

import pytest

from devhost.testing import start_serve
from tests.devhost.support import wait_for
from shared.providers import ConsentStatus
from sync.names import SYNC_CUSTOMER_QUEUE
from tests.conftest import started

TENANT = "cd613e30-d8f1-4adf-91b7-584a2265b1f5"
CUSTOMER = "2f0c3b4e-6a1d-4e5f-9b8a-7c6d5e4f3a2b"
MAX_DEQUEUE = 3
# host.json as app settings override it (AzureFunctionsJobHost__...): quick retries for the test
HOST_OVERRIDES = {
    "AzureFunctionsJobHost__extensions__queues__maxDequeueCount": str(MAX_DEQUEUE),
    "AzureFunctionsJobHost__extensions__queues__visibilityTimeout": "00:00:00",
    "AzureFunctionsJobHost__extensions__queues__maxPollingInterval": "00:00:01",
}


def _queue(connection: str, name: str):
    from azure.storage.queue import QueueClient

    client = QueueClient.from_connection_string(connection, name, retry_total=0)
    try:
        client.create_queue()
    except Exception:  # noqa: BLE001 - it exists
        pass
    return client


def _send_base64(connection: str, queue: str, text: str) -> None:
    _queue(connection, queue).send_message(base64.b64encode(text.encode()).decode())


def _contents(connection: str, queue: str) -> list[str]:
    return [m.content for m in _queue(connection, queue).peek_messages(max_messages=32)]


@pytest.fixture(scope="module")
def azurite():
    """An Azurite of this module's own: the host listens on its queues, which must not take the
    messages other tests put on the session's Azurite."""
    from devservices import running_azurite

    yield from started(running_azurite())


@pytest.fixture(scope="module")
def serve(tmp_path_factory, azurite):
    """`pcsync serve` without the simulator: storage only, so the sync's Key Vault is not
    configured and every sync-customer message for a consented provider fails (a retryable error)."""
    from bootstrap import Services
    from shared.settings import Settings

    services = Services(Settings.from_environment({"PCSYNC_STORAGE": azurite}))
    services.providers.put_provider("qp", {"name": "Queue test", "countryCode": "US", "currencyCode": "USD",
                                           "tenantId": TENANT})
    services.providers.update_status("qp", consent_status=ConsentStatus.ACTIVE)
    settings = {"PCSYNC_STORAGE": azurite, "AzureWebJobsStorage": azurite, "FUNCTIONS_WORKER_RUNTIME": "python"}
    with start_serve(tmp_path_factory.mktemp("serve-queues"), simulator=False, settings=settings,
                     env=HOST_OVERRIDES, extra_args=["--no-timers"]) as process:
        yield process


def test_a_failing_message_moves_to_poison_after_max_dequeue_count(serve, azurite):
    body = json.dumps({"provider": "qp", "customer": CUSTOMER, "correlationId": "poison-test"})
    encoded = base64.b64encode(body.encode()).decode()
    _queue(azurite, SYNC_CUSTOMER_QUEUE).send_message(encoded)

    poisoned = wait_for(lambda: encoded in _contents(azurite, SYNC_CUSTOMER_QUEUE + "-poison"),
                         what="the message in the poison queue")
    assert poisoned
    assert encoded not in _contents(azurite, SYNC_CUSTOMER_QUEUE)   # moved, not copied
    log = serve.stderr_path.read_text()
    assert "moved to sync-customer-poison" in log
    failures = re.findall(r"function sync_customer_queue failed on message \S+ \(dequeue count (\d+)\)", log)
    # one run per delivery, and the function saw the host's dequeue count each time
    assert sorted(map(int, failures)) == list(range(1, MAX_DEQUEUE + 1)), log[-2000:]


def test_a_message_that_is_not_base64_goes_to_poison_without_a_run(serve, azurite):
    _queue(azurite, SYNC_CUSTOMER_QUEUE).send_message("{not base64}")
    wait_for(lambda: "{not base64}" in _contents(azurite, SYNC_CUSTOMER_QUEUE + "-poison"),
              what="the undecodable message in the poison queue")
    assert "{not base64}" not in _contents(azurite, SYNC_CUSTOMER_QUEUE)


def test_a_message_the_app_rejects_is_completed_not_poisoned(serve, azurite):
    # a malformed body is dropped by the app (retrying cannot fix it): the host deletes it
    _send_base64(azurite, SYNC_CUSTOMER_QUEUE, json.dumps({"provider": "qp", "customer": "not-a-guid"}))
    encoded = base64.b64encode(json.dumps({"provider": "qp", "customer": "not-a-guid"}).encode()).decode()
    wait_for(lambda: encoded not in _contents(azurite, SYNC_CUSTOMER_QUEUE), what="the message completed")
    time.sleep(1)
    assert encoded not in _contents(azurite, SYNC_CUSTOMER_QUEUE + "-poison")
