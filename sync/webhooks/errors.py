"""Why a webhook callback is refused: one type per HTTP answer, each message safe to return."""
from __future__ import annotations

from shared.errors import InvalidInput


class WebhookRejected(InvalidInput):
    """The callback is refused; ``status`` is the HTTP answer, the message is safe to return."""

    status = 400


class MalformedEvent(WebhookRejected):
    status = 400


class PayloadTooLarge(WebhookRejected):
    status = 413


class SignatureRejected(WebhookRejected):
    """Any failed authentication step (headers, certificate, chain, organization, signature)."""

    status = 401


class UnknownProvider(WebhookRejected):
    status = 404


class CertificateUnavailable(SignatureRejected):
    """The certificate could not be downloaded or parsed."""


class ForeignCustomer(WebhookRejected):
    """The event names a customer that is not the URL's provider's: signed for another partner."""

    status = 404
