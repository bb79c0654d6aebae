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


def test_secrets_never_print(monkeypatch):
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SAIM_S3_SECRET_KEY", "s3-very-secret")
    monkeypatch.setenv("SAIM_ADMIN_TOKEN", "saim_admin-very-secret")
    s = load_settings()
    shown = repr(s) + str(s) + s.model_dump_json()
    assert "very-secret" not in shown and "**********" in shown
    assert s.secret("admin_token") == "saim_admin-very-secret" and s.s3().secret_key == "s3-very-secret"


def test_secrets_come_from_files_in_the_secrets_dir(monkeypatch, tmp_path):
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SAIM_S3_SECRET_KEY")
    (tmp_path / "saim_s3_secret_key").write_text("from-file")
    (tmp_path / "saim_service_token").write_text("svc-from-file")
    monkeypatch.setenv("SAIM_SECRETS_DIR", str(tmp_path))
    s = load_settings()
    assert s.s3().secret_key == "from-file" and s.secret("service_token") == "svc-from-file"
    monkeypatch.setenv("SAIM_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SaimError, match="SAIM_SECRETS_DIR"):
        load_settings()


def test_half_configured_tls_is_an_error(monkeypatch, tmp_path):
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("SAIM_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    with pytest.raises(SaimError, match="SAIM_TLS_KEY_FILE"):
        load_settings().tls_server_credentials()
    monkeypatch.setenv("SAIM_TLS_KEY_FILE", str(tmp_path / "key.pem"))
    with pytest.raises(SaimError, match="cannot read"):
        load_settings().tls_server_credentials()
