import pytest

from saim.errors import SaimError
from saim.settings import load_settings

REQUIRED = {
    "SAIM_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "SAIM_S3_ENDPOINT": "127.0.0.1:9000",
    "SAIM_S3_ACCESS_KEY": "k",
    "SAIM_S3_SECRET_KEY": "s",
}


def test_settings_come_from_environment(monkeypatch):
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SAIM_BATCH_SIZE", "7")
    s = load_settings()
    assert s.batch_size == 7 and s.kafka_bootstrap == "127.0.0.1:9092" and s.s3().bucket == "saim"


def test_missing_required_variable_is_named(monkeypatch):
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SAIM_S3_ENDPOINT")
    with pytest.raises(SaimError, match="SAIM_S3_ENDPOINT: is required but not set"):
        load_settings()


def test_malformed_variable_is_named(monkeypatch):
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SAIM_EPOCHS", "many")
    with pytest.raises(SaimError, match="SAIM_EPOCHS"):
        load_settings()
