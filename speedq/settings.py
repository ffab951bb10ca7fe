"""speedq's settings: every `SPEEDQ_*` variable, validated once and read once per process.

Nothing else in speedq reads the environment for its own settings; modules call `get()`. The
README's settings table is generated from this model (`markdown_table`), and a test checks it.
Constants that are not settings (defaults of a job, GPU types, prices) stay in `speedq.config`.

`Settings` is a plain pydantic model that `from_environment` feeds, the way pydantic-settings did
(prefix, names in any case, JSON for the price table) without importing it: pydantic-settings
pulls in asyncio, argparse, dotenv, zipfile and its cloud sources, about a fifth of every
`speedq status` (issue 11).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from speedq import config
from speedq.errors import SettingsInvalid

PREFIX = "SPEEDQ_"

Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def doc(text: str) -> Any:
    """A field's README line (its description)."""
    return Field(description=text)


class Settings(BaseModel):
    """Each field is `SPEEDQ_<NAME>`; its description is the README's "meaning" column."""

    model_config = ConfigDict(extra="ignore", frozen=True, validate_default=True)

    redis_url: Annotated[str | None, doc(
        "the shared Redis; unset: an embedded redis-server, started once and reused"
        " (unix socket and append-only file under `$SPEEDQ_HOME/redis/`)")] = None
    home: Annotated[Path | None, doc(
        "state directory; unset: `~/.local/state/speedq` (or under `$XDG_STATE_HOME`)")] = None
    runs_dir: Annotated[Path | None, doc(
        "run directories of the local and sim backends; unset: `$SPEEDQ_HOME/runs`")] = None
    data_dir: Annotated[Path | None, doc(
        "shared data (dataset shards, tokenizer) of local and sim runs; unset: `$SPEEDQ_HOME/data`")] = None
    cache_dir: Annotated[Path | None, doc(
        "per-commit nanochat checkouts of local and sim runs; unset: `$SPEEDQ_HOME/cache`")] = None
    nanochat_repo: Annotated[str | None, doc(
        "the nanochat repository the local backend clones; unset: GitHub's")] = None
    repo_hosts: Annotated[list[str], doc(
        "hosts a job's `--repo` (an https URL) may name, comma-separated; karpathy's repository is always"
        " allowed")] = list(config.REPO_HOSTS)
    offline: Annotated[bool, doc("`1`: local runs skip the nanochat stages that need the internet")] = False
    backend: Annotated[config.BackendName, doc("default backend for `submit` and `worker`")] = config.DEFAULT_BACKEND
    poll_interval: Annotated[Seconds, doc("seconds between a worker's polls of a run")] = 1.0
    heartbeat_ttl: Annotated[Seconds, doc("a job whose worker is silent this long is taken over")] = 30.0
    reap_interval: Annotated[Seconds, doc("seconds between a worker's passes over dead workers' jobs")] = 20.0
    retry_backoff: Annotated[float, Field(ge=0, allow_inf_nan=False), doc(
        "first retry delay in seconds (doubles, at most 300)")] = 10.0
    stall_timeout: Annotated[Seconds, doc("no progress this long ends an attempt as stalled")] = 45 * 60.0
    poll_failure_bound: Annotated[Seconds, doc(
        "seconds of failing polls in a row (an API outage) before a call is treated as lost,"
        " cancelled and retried")] = 900.0
    stop_confirm_timeout: Annotated[Seconds, doc(
        "seconds a worker polls a cancelled call for its end before launching anyway"
        " (the run-dir fence stops the old runner)")] = 300.0
    announce_timeout: Annotated[Seconds, doc(
        "seconds an attempt whose launch was never confirmed may go without its runner announcing itself"
        " before it is fenced off")] = 900.0
    open_teams: Annotated[bool, doc("`0`: only added teams may submit")] = True
    prices: Annotated[dict[str, float] | None, doc(
        "JSON object of USD per GPU-hour by GPU type, over the defaults in `config.py`")] = None
    dequeue_block: Annotated[int, Field(ge=1, le=3600), doc(
        "seconds an idle worker waits for a new job's doorbell before looking again for new teams and freed slots")] = 2
    notify_timeout: Annotated[Seconds, doc("seconds a webhook has to answer one delivery")] = config.NOTIFY_TIMEOUT_S
    notify_retry_intervals: Annotated[list[Annotated[int, Field(ge=0)]], doc(
        "seconds before each retry of a refused delivery, comma-separated")] = list(config.NOTIFY_RETRY_INTERVALS_S)
    webhook_allow_private: Annotated[bool, doc(
        "`1`: webhooks may point at loopback, private and link-local addresses")] = False
    modal_app: Annotated[str, Field(min_length=1), doc(
        "the deployed Modal app's name (set it the same for `modal deploy` and the workers)")] = "speedq"
    modal_volume: Annotated[str, Field(min_length=1), doc(
        "the Modal volume, mounted at `/vol`")] = "nanochat-persistent-storage"
    modal_call_timeout: Annotated[Seconds, doc("seconds any one call to Modal's API may take")] = 15.0
    log_level: Annotated[LogLevel, doc("the worker's log level")] = "INFO"
    test_kill_after_launch: Annotated[bool, doc("tests only: a worker SIGKILLs itself right after a launch")] = False

    @field_validator("notify_retry_intervals", "repo_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("repo_hosts")
    @classmethod
    def _host_names(cls, value: list[str]) -> list[str]:
        from speedq.schemas.repo import HOST_RE

        hosts = [host.lower() for host in value]
        for host in hosts:
            if not HOST_RE.fullmatch(host):
                raise ValueError(f"{host!r} is not a host name (give names like github.com, no scheme or port)")
        return hosts

    @field_validator("prices", mode="before")
    @classmethod
    def _json_object(cls, value: object) -> object:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value  # refused below as "a valid dictionary", naming the variable
        return value

    @field_validator("prices")
    @classmethod
    def _known_gpus(cls, value: dict[str, float] | None) -> dict[str, float] | None:
        for gpu, usd in (value or {}).items():
            if gpu not in config.GPU_TYPES:
                raise ValueError(f"{gpu!r} is not a GPU type ({', '.join(config.GPU_TYPES)})")
            if not 0 <= usd <= 1000:
                raise ValueError(f"{gpu}: {usd} USD per GPU-hour is not between 0 and 1000")
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value

    # Derived paths: one rule each, from the fields above.
    def state_home(self) -> Path:
        if self.home:
            return self.home
        # XDG_STATE_HOME is the desktop's, not speedq's; read here so this stays the one place.
        state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
        return Path(state) / "speedq"

    def redis_dir(self) -> Path:
        """The embedded redis-server's directory (its socket, append-only file and log)."""
        return self.state_home() / "redis"

    def embedded_redis_socket(self) -> Path:
        return self.redis_dir() / "redis.sock"

    def embedded_redis_url(self) -> str:
        return f"unix://{self.embedded_redis_socket()}"

    def runs_root(self) -> Path:
        return self.runs_dir or self.state_home() / "runs"

    def data_root(self) -> Path:
        return self.data_dir or self.state_home() / "data"

    def cache_root(self) -> Path:
        return self.cache_dir or self.state_home() / "cache"


def env_name(field: str) -> str:
    return PREFIX + field.upper()


def from_environment(environ: Mapping[str, str] = os.environ) -> Settings:
    """Settings from `SPEEDQ_<FIELD>` variables, their names in any case; others are ignored."""
    given = {name[len(PREFIX):].lower(): value for name, value in environ.items() if name.upper().startswith(PREFIX)}
    return Settings.model_validate({field: given[field] for field in Settings.model_fields if field in given})


@cache
def get() -> Settings:
    """The process's settings, read and validated on first use. A bad value raises
    SettingsInvalid: one line naming the variable (the CLI exits 2)."""
    try:
        return from_environment()
    except ValidationError as exc:
        first = exc.errors()[0]
        name = env_name(str(first["loc"][0])) if first["loc"] else PREFIX + "*"
        raise SettingsInvalid(f"{name}: {first['msg']}") from None


def reload() -> Settings:
    """Forget the cached settings (tests that change the environment)."""
    get.cache_clear()
    return get()


def _default_text(field: str) -> str:
    info = Settings.model_fields[field]
    value = info.default
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`1`" if value else "`0`"
    if isinstance(value, list):
        return "`" + ",".join(str(v) for v in value) + "`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{value}`"


def markdown_table() -> str:
    """The README's settings table, one row per field."""
    rows = ["| variable | meaning | default |", "| --- | --- | --- |"]
    for field, info in Settings.model_fields.items():
        meaning, _, unset = (info.description or "").partition("; unset: ")
        default = f"unset: {unset}" if unset else _default_text(field)
        rows.append(f"| `{env_name(field)}` | {meaning} | {default} |")
    return "\n".join(rows) + "\n"
