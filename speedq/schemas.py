"""Every shape speedq stores or accepts, as pydantic models; all user input is validated here.

The GPU side imports this module too (progress, run requests and results cross from the runner
to the worker through files), so it depends on pydantic and the standard library only.
"""

from __future__ import annotations

import re
import time
from enum import Enum
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    computed_field,
    field_validator,
    model_validator,
)

from speedq import config
from speedq.gpu import nanochat

# ---------------------------------------------------------------------------------------------
# Field rules. Each raises ValueError with the rule in words, so one line can tell the user.

SLUG_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,62}")
MODEL_RE = re.compile(r"d(\d+)")
MIN_DEPTH, MAX_DEPTH = 2, 64
MAX_REF_LEN = 200
_REF_FORBIDDEN = set("~^:?*[\\")


def _slug(value: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value):
        raise ValueError(
            "must be a slug: lowercase letters, digits, '.', '_' or '-', "
            "starting with a letter or digit, at most 63 characters"
        )
    if ".." in value:
        raise ValueError("must not contain '..'")
    return value


def _model(value: str) -> str:
    match = MODEL_RE.fullmatch(value) if isinstance(value, str) else None
    if not match or not MIN_DEPTH <= int(match.group(1)) <= MAX_DEPTH:
        raise ValueError(f"must be d<depth> with depth {MIN_DEPTH} to {MAX_DEPTH}, e.g. d12")
    return f"d{int(match.group(1))}"


def _git_ref(value: str) -> str:
    """git's own ref-name rules (git check-ref-format), for a branch, tag or commit."""
    problems = []
    if not value:
        problems.append("must not be empty")
    if len(value) > MAX_REF_LEN:
        problems.append(f"must be at most {MAX_REF_LEN} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        problems.append("must not contain whitespace or control characters")
    if ".." in value:
        problems.append("must not contain '..'")
    if value.startswith("-"):
        problems.append("must not start with '-'")
    if _REF_FORBIDDEN & set(value):
        problems.append("must not contain any of ~ ^ : ? * [ \\")
    if "@{" in value or value == "@":
        problems.append("must not be '@' or contain '@{'")
    if value.endswith((".", "/", ".lock")) or value.startswith("/") or "//" in value:
        problems.append("must not start or end with '/', end with '.' or '.lock', or hold '//'")
    if any(part.startswith(".") for part in value.split("/")):
        problems.append("no path component may start with '.'")
    if problems:
        raise ValueError(f"not a valid git ref: {problems[0]}")
    return value


def _has_surrogate(value: object) -> bool:
    """A lone surrogate is how Python carries a byte that is not UTF-8 (argv, `\\udcff` in JSON);
    it cannot be stored or printed as text, so input holding one is refused at the door."""
    if isinstance(value, str):
        return any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in value.items())
    if isinstance(value, (list, tuple, set, frozenset)):
        return any(_has_surrogate(v) for v in value)
    return False


class UserInput(BaseModel):
    """Base of every model a user fills in (CLI options, API bodies and queries): each field's
    text, at any depth, must be valid Unicode before any other rule looks at it."""

    @field_validator("*", mode="before")
    @classmethod
    def _valid_text(cls, value: object) -> object:
        if _has_surrogate(value):
            raise ValueError("must be valid UTF-8 text (it holds an undecodable byte)")
        return value


class GpuSpec(BaseModel):
    """`TYPE[:COUNT]`, e.g. H100:8."""

    model_config = ConfigDict(frozen=True)
    type: str
    count: int

    def __str__(self) -> str:
        return f"{self.type}:{self.count}"


def _gpu(value: object) -> object:
    """`TYPE[:COUNT]` as text, or the same as an object (the API's JSON): one rule for both, so
    an object cannot carry a count or type the text form refuses."""
    if isinstance(value, GpuSpec):
        return value
    if isinstance(value, dict):
        if set(value) - {"type", "count"} or not isinstance(value.get("type"), str):
            raise ValueError("must be TYPE[:COUNT] or {\"type\": TYPE, \"count\": COUNT}")
        count = value.get("count", 1)
        if isinstance(count, bool) or not isinstance(count, int):
            raise ValueError(f"GPU count must be a whole number from 1 to {config.MAX_GPU_COUNT}")
        value = f"{value['type']}:{count}"
    if not isinstance(value, str):
        raise ValueError("must be TYPE[:COUNT]")
    kind, _, count = value.partition(":")
    known = {t.upper(): t for t in config.GPU_TYPES}
    if kind.upper() not in known:
        raise ValueError(f"must be TYPE[:COUNT] with TYPE one of {', '.join(config.GPU_TYPES)}")
    if count and not (count.isascii() and count.isdigit()) or count and not 1 <= int(count) <= config.MAX_GPU_COUNT:
        raise ValueError(f"GPU count must be a whole number from 1 to {config.MAX_GPU_COUNT}")
    return {"type": known[kind.upper()], "count": int(count or 1)}


_DURATION_RE = re.compile(r"(\d+)\s*([smhd]?)")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: object) -> object:
    """Seconds, or a number with s/m/h/d (`90m`, `24h`)."""
    if isinstance(value, str):
        match = _DURATION_RE.fullmatch(value.strip().lower())
        if not match:
            raise ValueError("must be a duration like 3600, 90m or 24h")
        return int(match.group(1)) * _UNIT_S[match.group(2)]
    return value


Slug = Annotated[str, AfterValidator(_slug)]
ModelName = Annotated[str, AfterValidator(_model)]
GitRef = Annotated[str, AfterValidator(_git_ref)]
Gpu = Annotated[GpuSpec, BeforeValidator(_gpu)]
Priority = Literal["high", "normal", "low"]
BackendName = Literal["modal", "local", "sim"]
Mode = Literal["smoke", "full"]
Seconds = Annotated[
    int, BeforeValidator(_duration), Field(ge=1, le=config.MAX_ATTEMPT_TIMEOUT_S)
]


def depth_of(model: str) -> int:
    return int(model[1:])


TrainArgValue = int | float | bool | str
MAX_TRAIN_ARGS = 64


def _train_args(value: object) -> object:
    """base_train options as a mapping; `KEY=VALUE` strings (the CLI's) are split here."""
    if isinstance(value, (list, tuple)):
        pairs: dict[str, object] = {}
        for item in value:
            if not isinstance(item, str) or not item.strip():
                raise ValueError("give each train arg as KEY=VALUE (or a bare flag like fp8)")
            key, sep, val = item.strip().partition("=")
            pairs[key.strip()] = val if sep else True
        value = pairs
    if not isinstance(value, dict):
        raise ValueError("must be a mapping of base_train option to value")
    if len(value) > MAX_TRAIN_ARGS:
        raise ValueError(f"at most {MAX_TRAIN_ARGS} train args")
    return value


TrainArgs = Annotated[dict[str, TrainArgValue], BeforeValidator(_train_args)]


# ---------------------------------------------------------------------------------------------
# What a user submits.


class JobOptions(UserInput):
    """Everything about a speedrun job but whose it is (the API takes the team from the token)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName = config.DEFAULT_MODEL
    repo_ref: GitRef = config.DEFAULT_REPO_REF
    mode: Mode = "full"
    force_restart: bool = False
    gpu: Gpu = Field(default=config.DEFAULT_GPU, validate_default=True)
    run_name: Slug | None = None
    priority: Priority = config.DEFAULT_PRIORITY
    backend: BackendName = config.DEFAULT_BACKEND
    max_attempts: int = Field(default=config.DEFAULT_MAX_ATTEMPTS, ge=1, le=10)
    attempt_timeout_s: Seconds = config.DEFAULT_ATTEMPT_TIMEOUT_S
    # Base-training checkpoint interval in steps; None lets the runner pick one.
    save_every: int | None = Field(default=None, ge=1, le=1_000_000)
    # base_train options (`max-seq-len`: 128), checked against its argparse; passed as argv.
    train_args: TrainArgs = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _typed_train_args(cls, data: object) -> object:
        """Each train arg typed as base_train declares it (the mode decides what is reserved)."""
        if isinstance(data, dict) and isinstance(data.get("train_args"), (dict, list, tuple)):
            raw = _train_args(data["train_args"])
            mode = data.get("mode", "full")
            typed = {}
            for key, val in raw.items():  # type: ignore[union-attr]
                try:
                    typed[key] = nanochat.train_arg(str(key), val, str(mode))
                except ValueError as exc:
                    raise ValueError(f"train arg {key}: {exc}") from None
            data = {**data, "train_args": typed}
        return data

    @model_validator(mode="after")
    def _runs_on_nanochat(self) -> "JobOptions":
        """Refuse at submit what nanochat would refuse on every attempt."""
        if self.gpu.type == config.CPU_GPU_TYPE:
            if self.backend not in config.CPU_BACKENDS:
                raise ValueError(f"GPU type CPU runs only on the {' or '.join(config.CPU_BACKENDS)} backend")
            if self.gpu.count != 1:
                raise ValueError("GPU type CPU runs one process: use CPU:1")
            if self.train_args.get("fp8"):
                raise ValueError("fp8 needs an H100-class GPU, not CPU")
        try:
            self.sizing()
        except nanochat.SizingError as exc:
            raise ValueError(str(exc)) from None
        return self

    def sizing(self) -> nanochat.Sizing:
        """Batch, device batch and step count nanochat will use for this job."""
        return nanochat.size_run(depth_of(self.model), self.mode, self.gpu.type, self.gpu.count, self.train_args)

    def model_post_init(self, _context: object) -> None:
        if self.run_name is None:
            # The old script kept one run per model; a smoke test must not share its files.
            default = self.model if self.mode == "full" else f"{self.model}-smoke"
            object.__setattr__(self, "run_name", default)

    @property
    def depth(self) -> int:
        return depth_of(self.model)


class JobSpec(JobOptions):
    """A speedrun job as submitted. Immutable once stored."""

    team: Slug

    @property
    def run_key(self) -> str:
        """Where this run lives under a runs root: `<team>/<run-name>`."""
        return f"{self.team}/{self.run_name}"


class SubmitRequest(JobOptions):
    """An API submit: the team is the token's; a body that names another team is refused."""

    team: Slug | None = None

    def spec_for(self, team: str) -> JobSpec:
        return JobSpec(**self.model_dump(exclude={"team"}, exclude_unset=True), team=team)


# ---------------------------------------------------------------------------------------------
# What the runner writes into the run directory and the worker reads back.


class Progress(BaseModel):
    """The runner's `progress.json`: where the run is now. `step` counts steps done (nanochat
    prints 0-based indexes: `step 00004/00010` is the fifth step done)."""

    stage: str | None = None
    step: int | None = None
    total: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    checkpoint_step: int | None = None  # newest complete checkpoint
    resumed_from_step: int | None = None
    reached_before_resume: int | None = None  # the last step the attempt before this one printed
    val_bpb: float | None = None  # the latest `Validation bpb`
    min_val_bpb: float | None = None  # `Minimum validation bpb` at the end of base training
    core_metric: float | None = None  # the latest `CORE metric`
    training_time_s: float | None = None  # `Total training time` (the speedrun metric)
    # Modal only (speedq/gpu/offload.py): checkpoints saved locally, copied to the Volume behind
    save_blocked_s: list[float] = Field(default_factory=list)  # training time each save took
    offloaded_step: int | None = None  # newest checkpoint on the Volume
    commit_failures: int = 0
    reload_failures: int = 0
    last_commit_error: str | None = None
    last_reload_error: str | None = None
    updated_at: float = Field(default_factory=time.time)


class Outcome(str, Enum):
    """How one attempt ended."""

    succeeded = "succeeded"
    crashed = "crashed"  # the run's own code failed (non-zero exit, remote error)
    preempted = "preempted"  # the container or process went away before the run finished
    timed_out = "timed_out"
    stalled = "stalled"  # no progress for too long
    cancelled = "cancelled"
    lost = "lost"  # the backend no longer knows the call (expired result, unknown id)
    launch_failed = "launch_failed"  # never started: credentials, deployment, network
    fenced = "fenced"  # a newer attempt claimed the run directory; this one stopped without writing

    @property
    def retryable(self) -> bool:
        return self in (Outcome.crashed, Outcome.preempted, Outcome.timed_out, Outcome.stalled, Outcome.lost)


class RunRequest(BaseModel):
    """Everything the runner needs for one attempt; crosses to it as JSON."""

    job_id: str
    attempt: int = Field(ge=1)
    model: ModelName
    mode: Mode
    nproc: int = Field(ge=1, le=config.MAX_GPU_COUNT)
    gpu_type: str
    commit: str
    repo: str  # URL or path of the nanochat git repository
    run_dir: str
    data_dir: str
    cache_dir: str
    # torchrun: the real thing; python: one process; sim: one process that plays nproc ranks
    launcher: Literal["torchrun", "python", "sim"] = "torchrun"
    save_every: int | None = None
    force_restart: bool = False
    env: dict[str, str] = Field(default_factory=dict)
    train_args: dict[str, TrainArgValue] = Field(default_factory=dict)  # validated on the JobSpec
    offline: bool = False  # skip the stages that need the internet (SPEEDQ_OFFLINE=1 on a local worker)


class RunResult(BaseModel):
    """The runner's last word on an attempt, written when it ends by itself."""

    job_id: str
    attempt: int
    outcome: Outcome
    exit_code: int | None = None
    error: str | None = None
    resumed_from_step: int | None = None
    final_step: int | None = None
    finished_at: float = Field(default_factory=time.time)


# ---------------------------------------------------------------------------------------------
# The job record in Redis.


class JobState(str, Enum):
    queued = "queued"
    starting = "starting"
    running = "running"
    retrying = "retrying"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.succeeded, JobState.failed, JobState.cancelled)


ACTIVE_STATES = tuple(s for s in JobState if not s.terminal)


class LogPointer(BaseModel):
    """Where the run's log is, and the command a person would use to read it."""

    location: Literal["local", "modal-volume"]
    path: str
    volume: str | None = None
    command: str


class AttemptStatus(BaseModel):
    """What anyone may see of an attempt (the dashboard shows it without a token): when and how
    it ended and which steps it ran; not its call id, worker or error text."""

    number: int
    started_at: float = Field(default_factory=time.time)
    ended_at: float | None = None
    outcome: Outcome | None = None
    resumed_from_step: int | None = None
    final_step: int | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def steps_run(self) -> int:
        if self.final_step is None:
            return 0
        return max(0, self.final_step - (self.resumed_from_step or 0))

    @classmethod
    def of(cls, attempt: "AttemptStatus") -> "AttemptStatus":
        return cls.model_validate(attempt.model_dump(include=set(cls.model_fields)))


class Attempt(AttemptStatus):
    backend: BackendName
    call_id: str | None = None
    worker: str | None = None
    error: str | None = None
    gpu_count: int = 1

    @property
    def gpu_seconds(self) -> float:
        end = self.ended_at if self.ended_at is not None else time.time()
        return max(0.0, end - self.started_at) * self.gpu_count


class JobRecord(BaseModel):
    id: str
    spec: JobSpec
    state: JobState = JobState.queued
    created_at: float = Field(default_factory=time.time)
    updated_at: float = Field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None
    attempts: list[Attempt] = Field(default_factory=list)
    progress: Progress | None = None
    nanochat_commit: str | None = None
    run_dir: str | None = None
    log: LogPointer | None = None
    error: str | None = None
    worker: str | None = None
    heartbeat_at: float | None = None
    cancel_requested: bool = False
    rq_job_id: str | None = None  # the RQ job now carrying this speedq job
    round_start: int = 0  # attempts before this index belong to runs before the last `retry`
    queued_at: float | None = None  # when the last `retry` queued it again (None: created_at)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def gpu_seconds(self) -> float:
        return sum(a.gpu_seconds for a in self.attempts)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def steps_recomputed(self) -> int:
        """Base-training steps run again because a fault lost them (0 for a clean run)."""
        total, furthest = 0, 0
        for attempt in self.attempts:
            if attempt.final_step is None:
                continue
            resumed = attempt.resumed_from_step or 0
            total += max(0, min(furthest, attempt.final_step) - resumed)
            furthest = max(furthest, attempt.final_step)
        return total

    @property
    def current_attempt(self) -> Attempt | None:
        return self.attempts[-1] if self.attempts else None

    @property
    def attempts_this_round(self) -> int:
        return len(self.attempts) - self.round_start


# ---------------------------------------------------------------------------------------------
# Listing filters (CLI and API share them).


class ListQuery(UserInput):
    model_config = ConfigDict(extra="forbid")
    team: Slug | None = None
    state: JobState | None = None
    limit: int = Field(default=20, ge=1, le=1000)


class LogQuery(UserInput):
    tail: int | None = Field(default=None, ge=1, le=1_000_000)


class ApiOptions(UserInput):
    host: str = Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9.:-]+$")
    port: int = Field(ge=1, le=65535)


class WorkerOptions(UserInput):
    backends: list[BackendName] = Field(default_factory=list)
    notify_only: bool = False  # a worker that only delivers webhooks, so none waits behind a run

    @model_validator(mode="after")
    def _serves_something(self) -> "WorkerOptions":
        if self.notify_only and self.backends:
            raise ValueError("--notify-only takes no --backend")
        if not self.notify_only and not self.backends:
            raise ValueError("give at least one --backend")
        return self


JOB_ID_RE = re.compile(r"sq-[0-9]{1,18}")


def _job_id(value: str) -> str:
    if not JOB_ID_RE.fullmatch(value):
        raise ValueError("job ids look like sq-42")
    return value


# The pattern is published in the JSON schema too, so API clients (and the fuzzer) see the rule.
JobId = Annotated[str, AfterValidator(_job_id), WithJsonSchema({"type": "string", "pattern": f"^{JOB_ID_RE.pattern}$"})]


class JobRef(UserInput):
    """A job id as typed by a user."""

    id: JobId


# ---------------------------------------------------------------------------------------------
# Teams: limits an operator sets, and the record kept for each added team.


def _limit(value: object) -> object:
    """`none` or `unlimited` clears a limit (the CLI's way to say null)."""
    if isinstance(value, str) and value.strip().lower() in ("none", "unlimited"):
        return None
    return value


MaxQueued = Annotated[Annotated[int, Field(ge=0, le=1_000_000)] | None, BeforeValidator(_limit)]
MaxRunning = Annotated[Annotated[int, Field(ge=1, le=10_000)] | None, BeforeValidator(_limit)]
GpuHours = Annotated[Annotated[float, Field(ge=0, le=1e9, allow_inf_nan=False)] | None, BeforeValidator(_limit)]


# A team's notification target (Slack-compatible JSON is posted to it).

MAX_URL_LEN = 2000


def _webhook_url(value: str) -> str:
    """An http(s) URL with a host and no credentials: a `user:pass@` part would be stored and
    shown wherever the team's settings are, so a secret belongs in the path (as Slack's does)."""
    from urllib.parse import urlsplit

    if not isinstance(value, str) or len(value) > MAX_URL_LEN:
        raise ValueError(f"must be a URL of at most {MAX_URL_LEN} characters")
    if any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain whitespace or control characters")
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise ValueError("must be a valid URL") from None
    if parts.scheme not in ("http", "https"):
        raise ValueError("must start with http:// or https://")
    if not parts.hostname:
        raise ValueError("must name a host")
    if "@" in parts.netloc:
        raise ValueError("must not hold credentials (user:password@); put a token in the path")
    from speedq.webhook_target import check_host

    check_host(parts.hostname)  # PrivateTarget is a ValueError: one line, like any rule here
    return value


WebhookUrl = Annotated[str, AfterValidator(_webhook_url)]


class TeamLimits(UserInput):
    """What `team add` and `team set` accept. None means unlimited."""

    model_config = ConfigDict(extra="forbid")

    max_queued: MaxQueued = None
    max_running: MaxRunning = None
    gpu_hours_budget: GpuHours = None
    webhook_url: Annotated[WebhookUrl | None, BeforeValidator(_limit)] = None


class TeamSettings(TeamLimits):
    """A team's stored record. Extra fields are ignored on read, so a newer speedq can add some
    without older workers failing to parse the record."""

    model_config = ConfigDict(extra="ignore")
    # A stored webhook was checked when it was set; reading it back must not fail if the
    # operator's SPEEDQ_WEBHOOK_ALLOW_PRIVATE changed since (delivery checks again anyway).
    webhook_url: Annotated[str | None, BeforeValidator(_limit)] = None

    name: Slug
    token_hash: str | None = None  # sha256 hex of the team's API token; the token itself is never stored
    created_at: float = Field(default_factory=time.time)
    added: bool = True  # False: a team seen only through submits, running with no limits

    @classmethod
    def open(cls, name: str) -> "TeamSettings":
        """The settings of a team nobody added: no limits and no token."""
        return cls(name=name, added=False, created_at=0.0)


class TeamRef(UserInput):
    team: Slug


# ---------------------------------------------------------------------------------------------
# Accounting.


def _known_gpu_type(value: str) -> str:
    known = {t.upper(): t for t in config.GPU_TYPES}
    if value.upper() not in known:
        raise ValueError(f"GPU type must be one of {', '.join(config.GPU_TYPES)}")
    return known[value.upper()]


GpuTypeName = Annotated[str, AfterValidator(_known_gpu_type)]


class PriceTable(BaseModel):
    """USD per GPU-hour by GPU type; `SPEEDQ_PRICES` (a JSON object) overrides some or all."""

    usd_per_gpu_hour: dict[GpuTypeName, Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]]

    @classmethod
    def load(cls, overrides: dict[str, float] | None) -> "PriceTable":
        return cls.model_validate({"usd_per_gpu_hour": {**config.DEFAULT_GPU_PRICES, **(overrides or {})}})


class WaitTimes(BaseModel):
    samples: int
    median_s: float | None = None
    p95_s: float | None = None


class TeamStats(BaseModel):
    team: str
    jobs: dict[JobState, int]
    gpu_seconds: dict[str, float]  # by GPU type; sums every ended attempt's GPU count x duration
    gpu_hours: float
    estimated_cost_usd: float
    queue_wait: WaitTimes
    max_queued: int | None = None
    max_running: int | None = None
    gpu_hours_budget: float | None = None
    running: int = 0


class StatsQuery(UserInput):
    model_config = ConfigDict(extra="forbid")
    team: Slug | None = None


class Submitted(BaseModel):
    """What a submit did: `created` False means an active job already held this run, and `job`
    is that one (nothing new was queued)."""

    created: bool
    job: JobRecord


class JobStatus(BaseModel):
    """What any team may see of another team's job."""

    id: str
    team: str
    state: JobState
    created_at: float
    updated_at: float
    started_at: float | None = None
    finished_at: float | None = None

    @classmethod
    def of(cls, record: JobRecord) -> "JobStatus":
        return cls(
            id=record.id, team=record.spec.team, state=record.state, created_at=record.created_at,
            updated_at=record.updated_at, started_at=record.started_at, finished_at=record.finished_at,
        )


class LossPoint(BaseModel):
    """One point of a run's base-training loss curve (the store keeps a thinned history)."""

    step: int
    loss: float


class JobOverview(JobStatus):
    """The dashboard's view of any team's job: status, progress (not sensitive) and attempts."""

    progress: Progress | None = None
    attempts: list[AttemptStatus] = Field(default_factory=list)
    max_attempts: int = 1
    round_start: int = 0

    @classmethod
    def of(cls, record: JobRecord) -> "JobOverview":
        return cls(
            **JobStatus.of(record).model_dump(),
            progress=record.progress,
            attempts=[AttemptStatus.of(a) for a in record.attempts],
            max_attempts=record.spec.max_attempts,
            round_start=record.round_start,
        )


class JobPage(JobOverview):
    """One job's dashboard page: its overview and the loss curve so far."""

    loss: list[LossPoint] = Field(default_factory=list)


class TeamJobs(BaseModel):
    team: str
    jobs: dict[JobState, int]


class Board(BaseModel):
    """The dashboard's front page: counts by team and state, and the newest jobs."""

    teams: list[TeamJobs]
    jobs: list[JobOverview]


# ---------------------------------------------------------------------------------------------


# Where a web framework says the value came from; the user named only the field.
_TRANSPORT_LOCS = {"body", "query", "path", "header"}


def _shown(value: object) -> str:
    """The refused value as the line quotes it: short, and never a number too long to print."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return ""
    if isinstance(value, int) and value.bit_length() > 64:
        return f" (a number of about {int(value.bit_length() * 0.30103) + 1} digits)"
    text = repr(value)
    return f" {text[:77]}..." if len(text) > 80 else f" {text}"


def describe(exc: ValidationError | list) -> str:  # type: ignore[type-arg]
    """One line for the user: the first invalid field, the value and the rule.

    Takes pydantic's exception or its list of errors (FastAPI hands the API the list)."""
    errors = exc.errors() if isinstance(exc, ValidationError) else list(exc)
    err = errors[0]
    loc = [p for p in err["loc"] if not isinstance(p, int)]
    if loc and loc[0] in _TRANSPORT_LOCS:
        loc = loc[1:]
    field = "-".join(str(p) for p in loc).replace("_", "-") or "value"
    field = field.split("-function-")[0].replace("-[key]", "")
    msg = err["msg"].removeprefix("Value error, ")
    shown = _shown(err.get("input"))
    extra = len(errors) - 1
    more = f" (and {extra} more problem{'s' if extra > 1 else ''})" if extra else ""
    line = f"invalid {field}{shown}: {msg}{more}"
    # A field name or message may echo an undecodable byte: escape it so the line can be printed
    # and sent as JSON.
    return line.encode("utf-8", "backslashreplace").decode("utf-8")
