import json

import pytest

from shared.errors import MessageTooLarge
from shared.queues import MAX_MESSAGE_BYTES, encode_message


def test_small_message_is_compact_json():
    assert json.loads(encode_message({"provider": "p", "customer": "c"})) == {"provider": "p", "customer": "c"}


def test_message_whose_base64_body_exceeds_64_kib_is_refused_with_a_clear_error():
    fits = {"data": "x" * (MAX_MESSAGE_BYTES * 3 // 4 - 20)}
    encode_message(fits)
    with pytest.raises(MessageTooLarge, match="64|65536"):
        encode_message({"data": "x" * (MAX_MESSAGE_BYTES * 3 // 4)})
