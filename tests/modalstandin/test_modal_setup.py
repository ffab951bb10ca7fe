"""What the Modal backend needs before any call: a deployment, credentials (from the environment
or modal.toml), the bound on every call, and the pinned `modal` client, imported only when used.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import modal
import modal.config
import pytest

from speedq.backends import modal as mb
from speedq.backends.base import BackendError


def test_check_passes_with_a_token_and_a_deployment(standin, backend) -> None:
    backend.check()


def test_check_without_a_deployment_says_deploy(standin) -> None:
    with pytest.raises(BackendError, match=re.escape("modal deploy speedq/gpu/modal_app.py")):
        mb.ModalBackend(app_name="not-deployed", timeout_s=3).check()


def test_check_without_credentials_fails_at_once(backend, monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr(modal.config, "_user_config", {})
    started = time.monotonic()
    with pytest.raises(BackendError, match="MODAL_TOKEN_ID") as info:
        backend.check()
    assert time.monotonic() - started < 1
    assert "\n" not in str(info.value)


def test_credentials_from_the_modal_toml_profile_count(monkeypatch) -> None:
    monkeypatch.delenv("MODAL_TOKEN_ID", raising=False)
    monkeypatch.delenv("MODAL_TOKEN_SECRET", raising=False)
    monkeypatch.setattr(modal.config, "_profile", "default")
    monkeypatch.setattr(modal.config, "_user_config", {"default": {"token_id": "ak-1", "token_secret": "as-1"}})
    assert mb.has_credentials()


def test_the_bound_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("SPEEDQ_MODAL_CALL_TIMEOUT", "4.5")
    assert mb.ModalBackend().timeout_s == 4.5


def test_importing_the_backend_does_not_import_modal() -> None:
    code = "import sys, speedq.backends.modal; assert 'modal' not in sys.modules, 'modal imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_installed_modal_is_the_pinned_client() -> None:
    assert modal.__version__ == "1.6.4"
