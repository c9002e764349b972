"""Queue helpers: JSON messages in the base64 encoding the Functions queue trigger expects."""
from __future__ import annotations

import json
from typing import Any, Mapping

from azure.core.exceptions import ResourceExistsError
from azure.storage.queue import QueueServiceClient, TextBase64EncodePolicy

from .errors import MessageTooLarge
from .storage import StorageAdapter

# Storage Queues accept at most 64 KiB per message, measured on the encoded body.
MAX_MESSAGE_BYTES = 64 * 1024


def encode_message(message: Mapping[str, Any]) -> str:
    """JSON text for a message; raises MessageTooLarge when the base64 body would exceed 64 KiB."""
    text = json.dumps(message, separators=(",", ":"), sort_keys=True, default=str)
    encoded_size = 4 * ((len(text.encode("utf-8")) + 2) // 3)
    if encoded_size > MAX_MESSAGE_BYTES:
        raise MessageTooLarge(
            f"queue message is {encoded_size} bytes once base64-encoded; the limit is {MAX_MESSAGE_BYTES}. "
            "Send a reference to the data (e.g. a table row key) instead of the data itself."
        )
    return text


class QueuePublisher(StorageAdapter):
    service_client = QueueServiceClient

    def __init__(self, service: QueueServiceClient):
        super().__init__(service)
        self._ready: set[str] = set()

    def _queue(self, name: str):
        client = self._service.get_queue_client(name, message_encode_policy=TextBase64EncodePolicy())
        if name not in self._ready:
            try:
                client.create_queue()
            except ResourceExistsError:
                pass
            self._ready.add(name)
        return client

    def queue_client(self, name: str):
        """One queue's SDK client (the queue created on first use), for what the app itself never
        does: `pcsync doctor` receives and deletes its probe message and deletes its scratch queue."""
        return self._queue(name)

    def send_json(self, queue_name: str, message: Mapping[str, Any], *, delay_seconds: int | None = None) -> None:
        text = encode_message(message)
        self._queue(queue_name).send_message(text, visibility_timeout=delay_seconds)
