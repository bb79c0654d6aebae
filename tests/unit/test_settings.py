import pytest

from saim.errors import SaimError
from saim.model.config import ModelConfig
from saim.settings import load_client_settings, load_settings
from saim.training.config import TrainConfig

REQUIRED = {
    "SAIM_KAFKA_BOOTSTRAP": "127.0.0.1:9092",
    "SAIM_S3_ENDPOINT": "127.0.0.1:9000",
    "SAIM_S3_ACCESS_KEY": "k",
    "SAIM_S3_SECRET_KEY": "s",
}


@pytest.fixture
def env(monkeypatch):
    """The required variables set; the test sets or removes the rest."""
    for k, v in REQUIRED.items():
        monkeypatch.setenv(k, v)
    return monkeypatch


def test_settings_come_from_environment(env):
    env.setenv("SAIM_BATCH_SIZE", "7")
    s = load_settings()
    assert s.batch_size == 7 and s.kafka_bootstrap == "127.0.0.1:9092" and s.s3().bucket == "saim"


def test_missing_required_variable_is_named(env):
    env.delenv("SAIM_S3_ENDPOINT")
    with pytest.raises(SaimError, match="SAIM_S3_ENDPOINT: is required but not set"):
        load_settings()


def test_malformed_variable_is_named(env):
    env.setenv("SAIM_TRAIN__EPOCHS", "many")
    with pytest.raises(SaimError, match="SAIM_TRAIN__EPOCHS: Input should be a valid integer"):
        load_settings()
    env.setenv("SAIM_TRAIN__EPOCHS", "3")
    env.setenv("SAIM_TRAIN__MODE", "sometimes")
    with pytest.raises(SaimError, match="SAIM_TRAIN__MODE: Input should be 'retrain' or 'finetune'"):
        load_settings()


def test_model_and_training_settings_are_the_core_dataclasses_nested(env):
    s = load_settings()
    assert s.model == ModelConfig() and s.train == TrainConfig()  # one set of defaults
    env.setenv("SAIM_TRAIN__EPOCHS", "3")
    env.setenv("SAIM_TRAIN__BATCH_SIZE", "4")
    env.setenv("SAIM_MODEL__IMAGE_SIZE", "256")
    env.setenv("SAIM_DEVICE", "cpu")
    s = load_settings()
    tc = s.train_config(seed=7)
    assert (tc.epochs, tc.batch_size, tc.seed, tc.device, tc.lr) == (3, 4, 7, "cpu", TrainConfig().lr)
    mc = s.predictor_config(("liver", "spleen"))
    assert mc.classes == ("liver", "spleen") and mc.image_size == 256 and mc.encoder == ModelConfig().encoder


def test_a_flat_name_of_a_nested_setting_names_its_new_name(env):
    env.setenv("SAIM_EPOCHS", "12")
    with pytest.raises(SaimError, match="SAIM_EPOCHS is now SAIM_TRAIN__EPOCHS"):
        load_settings()


def test_client_settings_read_the_admin_token_and_ca_from_files(monkeypatch, tmp_path):
    for name in ("ADMIN_TOKEN", "ADMIN_TOKEN_FILE", "TLS_CA_FILE", "TLS_CERT_FILE", "SECRETS_DIR"):
        monkeypatch.delenv(f"SAIM_{name}", raising=False)
    assert load_client_settings().token() is None and load_client_settings().tls_ca() is None
    (tmp_path / "token").write_text("saim_from-file\n")
    (tmp_path / "cert.pem").write_bytes(b"PEM")
    monkeypatch.setenv("SAIM_ADMIN_TOKEN_FILE", str(tmp_path / "token"))
    monkeypatch.setenv("SAIM_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    client = load_client_settings()
    assert client.token() == "saim_from-file" and client.tls_ca() is None
    assert client.tls_ca(fall_back_to_cert=True) == b"PEM"  # the health check beside a self-signed server
    monkeypatch.setenv("SAIM_ADMIN_TOKEN", "saim_from-env")
    monkeypatch.setenv("SAIM_TLS_CA_FILE", str(tmp_path / "missing.pem"))
    client = load_client_settings()
    assert client.token() == "saim_from-env"
    with pytest.raises(SaimError, match="SAIM_TLS_CA_FILE: cannot read"):
        client.tls_ca()


def test_secrets_never_print(env):
    env.setenv("SAIM_S3_SECRET_KEY", "s3-very-secret")
    env.setenv("SAIM_ADMIN_TOKEN", "saim_admin-very-secret")
    s = load_settings()
    shown = repr(s) + str(s) + s.model_dump_json()
    assert "very-secret" not in shown and "**********" in shown
    assert s.secret("admin_token") == "saim_admin-very-secret" and s.s3().secret_key == "s3-very-secret"


def test_secrets_come_from_files_in_the_secrets_dir(env, tmp_path):
    env.delenv("SAIM_S3_SECRET_KEY")
    (tmp_path / "saim_s3_secret_key").write_text("from-file")
    (tmp_path / "saim_service_token").write_text("svc-from-file")
    env.setenv("SAIM_SECRETS_DIR", str(tmp_path))
    s = load_settings()
    assert s.s3().secret_key == "from-file" and s.secret("service_token") == "svc-from-file"
    env.setenv("SAIM_SECRETS_DIR", str(tmp_path / "missing"))
    with pytest.raises(SaimError, match="SAIM_SECRETS_DIR"):
        load_settings()


def test_half_configured_tls_is_an_error(env, tmp_path):
    env.setenv("SAIM_TLS_CERT_FILE", str(tmp_path / "cert.pem"))
    with pytest.raises(SaimError, match="SAIM_TLS_KEY_FILE"):
        load_settings().tls_server_credentials()
    env.setenv("SAIM_TLS_KEY_FILE", str(tmp_path / "key.pem"))
    with pytest.raises(SaimError, match="cannot read"):
        load_settings().tls_server_credentials()


def test_device_is_resolved_once_at_load(env):
    import torch

    assert load_settings().device == ("cuda" if torch.cuda.is_available() else "cpu")  # default: auto
    env.setenv("SAIM_DEVICE", "tpu")
    with pytest.raises(SaimError, match="SAIM_DEVICE: .*device must be auto, cpu or cuda"):
        load_settings()
    if not torch.cuda.is_available():
        env.setenv("SAIM_DEVICE", "cuda")
        with pytest.raises(SaimError, match="SAIM_DEVICE: .*no CUDA device is available"):
            load_settings()
