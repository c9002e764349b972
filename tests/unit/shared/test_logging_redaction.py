import logging

from shared.logging import get_logger, register_secret

JWT = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJlLXZhbHVl"


def test_every_record_is_redacted_whatever_the_handler(caplog):
    log = get_logger("pcsync.test")
    register_secret("rt-0.AAA-very-secret-refresh-token")
    with caplog.at_level(logging.DEBUG):
        log.info("header Authorization: Bearer %s", JWT)
        log.warning("posted refresh_token=%s&client_secret=%s", "rt-0.AAA-very-secret-refresh-token", "s3cr3t-value")
        log.error('body {"access_token": "%s", "refresh_token": "abc123456"}', JWT)
        logging.getLogger("some.library").info("raw jwt %s", JWT)
        try:
            raise RuntimeError("token endpoint said refresh_token=rt-0.AAA-very-secret-refresh-token")
        except RuntimeError:
            log.exception("failed")
    text = caplog.text + "".join(r.getMessage() + (r.exc_text or "") for r in caplog.records)
    for secret in (JWT, "rt-0.AAA-very-secret-refresh-token", "s3cr3t-value", "abc123456"):
        assert secret not in text
    assert "***" in text
    assert "failed" in text


def test_harmless_text_is_left_alone(caplog):
    log = get_logger("pcsync.test")
    with caplog.at_level(logging.INFO):
        log.info("synced 12 customers for provider contoso-us, error code 2055")
    assert "synced 12 customers for provider contoso-us, error code 2055" in caplog.text
