"""Settings: one place, PPS_ prefix, secrets hidden, placeholders refused outside development."""

from __future__ import annotations

from pathlib import Path

import pytest

from pps.errors import ConfigurationError
from pps.infra.settings import PLACEHOLDER_SECRET, Settings, get_settings


def test_defaults_are_embedded_sqlite_under_the_working_directory() -> None:
    s = Settings()
    assert s.resolved_database_url == "sqlite:///.pps/pps.db"
    assert s.resolved_key_dir == Path(".pps/keys")
    assert s.executor == "local"


def test_environment_variables_use_the_pps_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PPS_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("PPS_MAX_BODY_BYTES", "4096")
    s = get_settings()
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db"
    assert s.max_body_bytes == 4096


def test_secrets_do_not_show_in_repr() -> None:
    s = Settings(secret_key="a-very-secret-value-that-nobody-should-see-0123")
    assert "a-very-secret" not in repr(s)
    assert "a-very-secret" not in str(s.model_dump())


@pytest.mark.parametrize("environment", ["production", "test"])
def test_placeholder_secret_is_refused_outside_development(environment: str) -> None:
    with pytest.raises(ConfigurationError, match="PPS_SECRET_KEY"):
        Settings(environment=environment)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="at least 32"):
        Settings(environment=environment, secret_key="short")  # type: ignore[arg-type]


def test_placeholder_secret_is_allowed_in_development() -> None:
    assert Settings(environment="development").secret_key.get_secret_value() == PLACEHOLDER_SECRET
