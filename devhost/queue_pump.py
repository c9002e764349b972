"""Queue triggers fed from the storage account's queues, with the host's rules from host.json:

- up to ``batchSize`` messages run at once per function; a new batch is fetched when no more than
  ``newBatchThreshold`` are still running;
- message bodies are base64 (``messageEncoding``), decoded before the function sees them;
- a failed message becomes visible again after ``visibilityTimeout``; once it has been dequeued
  ``maxDequeueCount`` times and failed, it moves to ``<queue>-poison`` (the same text as queued);
- an empty queue is polled less and less often, up to ``maxPollingInterval``.
"""
from __future__ import annotations

import base64
import binascii
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping

from azure.functions.queue import QueueMessage

from devhost.index import QueueFunction, QueueOptions, invoke
from devhost.listener import Listener

log = logging.getLogger("devhost.queues")
POISON_SUFFIX = "-poison"
# how long a received message stays hidden while its function runs (the host renews its lease;
# a local run is shorter than this, or it is a hang)
PROCESSING_LEASE_SECONDS = 10 * 60
FIRST_POLL_SECONDS = 0.1


def queue_client(connection: str, queue_name: str):
    from azure.storage.queue import QueueClient

    # a dead Azurite should fail a poll quickly; the pump polls again anyway
    return QueueClient.from_connection_string(connection, queue_name, retry_total=1, connection_timeout=5)


def connection_string(setting: str, environ: Mapping[str, str]) -> str:
    """The binding's ``connection`` app setting (a connection string; identity-based connections
    are for the cloud host)."""
    value = environ.get(setting, "").strip() or environ.get(f"{setting}__connectionString", "").strip()
    if not value:
        raise KeyError(setting)
    return value


def _ensure_queue(client) -> None:
    from azure.core.exceptions import ResourceExistsError

    try:
        client.create_queue()
    except ResourceExistsError:
        pass


def decode_body(content: str, options: QueueOptions) -> bytes | None:
    """The message body the function sees; None when a base64 queue holds a message that is not base64."""
    if not options.base64:
        return content.encode("utf-8")
    try:
        return base64.b64decode(content, validate=True)
    except (binascii.Error, ValueError):
        return None


def function_message(message: Any, body: bytes) -> QueueMessage:
    return QueueMessage(id=message.id, body=body, dequeue_count=message.dequeue_count,
                        expiration_time=message.expires_on, insertion_time=message.inserted_on,
                        time_next_visible=message.next_visible_on, pop_receipt=message.pop_receipt)


class QueuePump(Listener):
    """One function's listener: a polling thread and a pool of ``batchSize`` workers."""

    def __init__(self, function: QueueFunction, connection: str, options: QueueOptions):
        super().__init__(f"poll-{function.name}")
        self.function, self.options = function, options
        self.queue = queue_client(connection, function.queue_name)
        self.poison = queue_client(connection, function.queue_name + POISON_SUFFIX)
        self._pool = ThreadPoolExecutor(options.batch_size, thread_name_prefix=f"queue-{function.name}")
        self._in_flight = 0
        self._lock = threading.Lock()

    def start(self) -> "QueuePump":
        _ensure_queue(self.queue)
        super().start()
        return self

    def stop(self) -> None:
        super().stop()
        self._pool.shutdown(wait=True, cancel_futures=True)

    # -- polling --------------------------------------------------------------------------

    def _run(self) -> None:
        delay = FIRST_POLL_SECONDS
        ceiling = max(self.options.max_polling_interval.total_seconds(), FIRST_POLL_SECONDS)
        while not self._stop.is_set():
            try:
                received = self._receive_batch()
            except Exception as exc:  # noqa: BLE001 - storage away: say so and poll again later
                log.warning("queue %s: receive failed (%s)", self.function.queue_name, type(exc).__name__)
                received = -1
            delay = FIRST_POLL_SECONDS if received > 0 else min(delay * 2, ceiling)
            self._stop.wait(0 if received > 0 else delay)

    def _receive_batch(self) -> int:
        with self._lock:
            if self._in_flight > self.options.new_batch_threshold:
                return 1    # busy: look again soon
            room = self.options.batch_size - self._in_flight
        messages = list(self.queue.receive_messages(messages_per_page=room, max_messages=room,
                                                    visibility_timeout=PROCESSING_LEASE_SECONDS))
        for message in messages:
            with self._lock:
                self._in_flight += 1
            self._pool.submit(self._process, message)
        return len(messages)

    # -- one message ----------------------------------------------------------------------

    def _process(self, message: Any) -> None:
        try:
            self._handle(message)
        except Exception as exc:  # noqa: BLE001 - a storage error while settling: the lease lapses, it comes back
            log.warning("queue %s: message %s could not be settled (%s)", self.function.queue_name, message.id,
                        type(exc).__name__)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _handle(self, message: Any) -> None:
        name, queue = self.function.name, self.function.queue_name
        if message.dequeue_count > self.options.max_dequeue_count:
            self._to_poison(message, "dequeued more often than maxDequeueCount")   # a host crashed while it ran
            return
        body = decode_body(message.content, self.options)
        if body is None:
            self._to_poison(message, "not base64 (host.json messageEncoding is base64)")
            return
        try:
            invoke(self.function.function, {self.function.argument: function_message(message, body)})
        except Exception:  # noqa: BLE001 - the host's rule: retry, then poison
            log.exception("function %s failed on message %s (dequeue count %d)", name, message.id,
                          message.dequeue_count)
            self._failed(message)
            return
        self.queue.delete_message(message.id, message.pop_receipt)
        log.info("function %s completed message %s from %s", name, message.id, queue)

    def _failed(self, message: Any) -> None:
        if message.dequeue_count >= self.options.max_dequeue_count:
            self._to_poison(message, f"failed {message.dequeue_count} times (maxDequeueCount)")
        else:
            self.queue.update_message(message.id, message.pop_receipt,
                                      visibility_timeout=int(self.options.visibility_timeout.total_seconds()))

    def _to_poison(self, message: Any, why: str) -> None:
        _ensure_queue(self.poison)
        self.poison.send_message(message.content)
        self.queue.delete_message(message.id, message.pop_receipt)
        log.error("message %s moved to %s%s: %s", message.id, self.function.queue_name, POISON_SUFFIX, why)
