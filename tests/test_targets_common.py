"""What every integration shares: where secrets come from, redaction, Retry-After, config."""

from __future__ import annotations

import email.utils

import httpx
import pytest
from pydantic import ValidationError
from servers import target_config

from daemon.actions import PermanentError
from daemon.targets._http import read_secret, redact, retry_after, secret_env_name


def test_env_wins_over_file_and_names_are_derived(tmp_path, monkeypatch):
    path = tmp_path / "key"
    path.write_text("from-file\n")
    cfg = target_config(type="x", secret_file=str(path))
    assert secret_env_name("x-main", cfg) == "CRISISD_TARGET_X_MAIN_SECRET"
    monkeypatch.delenv("CRISISD_TARGET_X_MAIN_SECRET", raising=False)
    assert read_secret("x-main", cfg) == "from-file"
    monkeypatch.setenv("CRISISD_TARGET_X_MAIN_SECRET", "from-env")
    assert read_secret("x-main", cfg) == "from-env"
    custom = target_config(type="x", secret_env="MY_X_TOKEN")
    monkeypatch.setenv("MY_X_TOKEN", "custom")
    assert read_secret("x-main", custom) == "custom"


def test_relative_secret_file_is_a_systemd_credential(tmp_path, monkeypatch):
    (tmp_path / "pd-key").write_text("cred")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.delenv("CRISISD_TARGET_PD_SECRET", raising=False)
    assert read_secret("pd", target_config(type="pagerduty", secret_file="pd-key")) == "cred"


def test_missing_or_unreadable_secret_is_permanent(tmp_path, monkeypatch):
    monkeypatch.delenv("CRISISD_TARGET_PD_SECRET", raising=False)
    with pytest.raises(PermanentError, match="no secret configured"):
        read_secret("pd", target_config(type="pagerduty"))
    with pytest.raises(PermanentError, match="cannot read secret_file"):
        read_secret("pd", target_config(type="pagerduty", secret_file=str(tmp_path / "none")))
    assert read_secret("pd", target_config(type="webhook"), required=False) is None


def test_secrets_are_not_config_values():
    for key in ("token", "routing_key", "password", "hmac_secret", "secret"):
        with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
            target_config(type="pagerduty", **{key: "s3cr3t"})


def test_media_default_by_type_and_required_settings():
    assert target_config(type="pagerduty").media == ["page"]
    assert target_config(type="smtp", sender="a@b.org").media == ["email"]
    assert target_config(type="x").media == ["post"]
    assert target_config(type="slack", media=["chat", "post"]).media == ["chat", "post"]
    with pytest.raises(ValidationError, match="sender"):
        target_config(type="smtp")
    with pytest.raises(ValidationError, match="Page id"):
        target_config(type="facebook")


def test_redact_plain_and_url_encoded():
    secret = "a+b/c=d&e"
    text = f"failed for {secret} url=https://h/?t=a%2Bb%2Fc%3Dd%26e"
    assert secret not in redact(text, secret) and "%2B" not in redact(text, secret)
    assert redact("short ab", "ab") == "short ab"  # too short to redact meaningfully


def test_retry_after_forms():
    def resp(**headers):
        return httpx.Response(429, headers={k.replace("_", "-"): v for k, v in headers.items()})

    now = 1_700_000_000.0
    assert retry_after(resp(Retry_After="30"), now) == 30.0
    date = email.utils.formatdate(now + 90, usegmt=True)
    assert retry_after(resp(Retry_After=date), now) == pytest.approx(90, abs=1)
    assert retry_after(resp(x_rate_limit_reset=str(int(now + 45))), now) == 45.0
    assert retry_after(resp(Retry_After="999999"), now) == 3600.0
    assert retry_after(resp(), now) is None
    assert retry_after(resp(Retry_After="soon"), now) is None
