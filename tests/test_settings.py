"""Settings: one model, validated once, read once per process, documented in one README table;
errors: one tree whose exit codes and HTTP statuses the README's table shows."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from speedq import errors, settings

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_settings_table_is_the_models() -> None:
    block = re.search(
        r"<!-- settings:begin[^>]*-->\n(.*?)<!-- settings:end -->", README, re.S
    )
    assert block, "README has no generated settings table"
    assert block.group(1) == settings.markdown_table(), "README settings table is stale: regenerate it"


def test_readme_exit_codes_are_the_error_trees() -> None:
    assert errors.exit_code_table() in README


def test_every_error_a_user_meets_is_in_the_tree() -> None:
    for kind in errors.ALL:
        assert issubclass(kind, errors.SpeedqError)
        assert kind.exit_code in (1, 2, 3) and 400 <= kind.http_status < 600 and kind.http_status != 500


def test_read_once_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPEEDQ_POLL_INTERVAL", "0.25")
    first = settings.get()
    assert first.poll_interval == 0.25
    assert settings.get() is first  # cached, not parsed on every call


def test_names_in_any_case_a_json_price_table_and_strangers_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("speedq_backend", "sim")
    monkeypatch.setenv("SPEEDQ_PRICES", '{"H100": 2.5}')
    monkeypatch.setenv("SPEEDQ_NOTIFY_RETRY_INTERVALS", "5, 60")
    monkeypatch.setenv("SPEEDQ_NOT_A_SETTING", "whatever")
    got = settings.get()
    assert (got.backend, got.prices, got.notify_retry_intervals) == ("sim", {"H100": 2.5}, [5, 60])


@pytest.mark.parametrize(
    ("name", "value"),
    [("SPEEDQ_POLL_INTERVAL", "fast"), ("SPEEDQ_OPEN_TEAMS", "maybe"), ("SPEEDQ_PRICES", '{"TPUv9": 1}'),
     ("SPEEDQ_PRICES", "{not json"),
     ("SPEEDQ_NOTIFY_RETRY_INTERVALS", "1,x"), ("SPEEDQ_DEQUEUE_BLOCK", "0"), ("SPEEDQ_BACKEND", "gpu-cloud")],
)
def test_a_bad_value_is_one_line_naming_it(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(errors.SettingsInvalid) as caught:
        settings.get()
    assert str(caught.value).startswith(f"{name}: ") and "\n" not in str(caught.value)


def test_cli_exits_2_on_a_bad_setting_without_traceback(speedq) -> None:  # type: ignore[no-untyped-def]
    speedq.env["SPEEDQ_HEARTBEAT_TTL"] = "-1"
    done = speedq.run("status", "sq-1")
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert "SPEEDQ_HEARTBEAT_TTL" in done.stderr


def test_nothing_else_reads_speedqs_settings_from_the_environment() -> None:
    """SPEEDQ_* settings are read in speedq/settings.py only. (The sim nanochat reads its own
    SPEEDQ_SIM_* variables, which the runner passes to nanochat's processes, not speedq's.)"""
    package = ROOT / "speedq"
    reads = re.compile(r"(os\.environ|getenv)[^\n]*['\"]SPEEDQ_|['\"]SPEEDQ_\w+['\"]")
    offenders = []
    for path in package.rglob("*.py"):
        rel = path.relative_to(package).as_posix()
        if rel == "settings.py" or rel.startswith("sim/"):
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if reads.search(line) and "_ENV =" not in line:
                offenders.append(f"{rel}:{number}: {line.strip()}")
    assert offenders == []
