"""What a user submits: a speedrun's options, as the CLI, the API and the Client take them."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import (
    ConfigDict,
    Field,
    ValidationInfo,
    model_validator,
)

from speedq import config
from speedq.errors import InvalidInput
from speedq.gpu import nanochat
from speedq.schemas import repo as repos
from speedq.schemas.repo import RepoUrl
from speedq.schemas.rules import (
    BackendName,
    GitRef,
    Gpu,
    Mode,
    ModelName,
    Priority,
    Seconds,
    Slug,
    TrainArgs,
    UserInput,
    depth_of,
    fresh,
    train_args_mapping,
)


class JobOptions(UserInput):
    """Everything about a speedrun job but whose it is (the API takes the team from the token)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelName = config.DEFAULT_MODEL
    # The nanochat repository (karpathy's, or a fork's https URL); repo_ref is a ref in it.
    repo: RepoUrl = config.NANOCHAT_REPO_URL
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
    # A full run on more than one GPU first runs config.PREFLIGHT_STEPS steps of the same commit and
    # options on one GPU, and launches only if that passes; False skips it (`--no-preflight`).
    preflight: bool = True

    @model_validator(mode="before")
    @classmethod
    def _typed_train_args(cls, data: object, info: ValidationInfo) -> object:
        """Each train arg typed as base_train declares it (the mode decides what is reserved)."""
        if isinstance(data, dict) and isinstance(data.get("train_args"), (dict, list, tuple)):
            raw = train_args_mapping(data["train_args"])
            mode = data.get("mode", "full")
            typed = {}
            for key, val in raw.items():
                try:
                    typed[key] = nanochat.train_arg(str(key), val, str(mode), bounded=fresh(info))
                except ValueError as exc:
                    raise ValueError(f"train arg {key}: {exc}") from None
            data = {**data, "train_args": typed}
        return data

    @model_validator(mode="after")
    def _runs_on_nanochat(self, info: ValidationInfo) -> JobOptions:
        """Refuse at submit what nanochat would refuse on every attempt."""
        if self.gpu.type == config.CPU_GPU_TYPE:
            if self.backend not in config.CPU_BACKENDS:
                raise ValueError(f"GPU type CPU runs only on the {' or '.join(config.CPU_BACKENDS)} backend")
            if self.gpu.count != 1:
                raise ValueError("GPU type CPU runs one process: use CPU:1")
            if self.train_args.get("fp8"):
                raise ValueError("fp8 needs an H100-class GPU, not CPU")
        try:
            sizing = self.sizing()
            if fresh(info):
                nanochat.check_horizon(self.depth, sizing, self.train_args)
        except nanochat.SizingError as exc:
            raise ValueError(str(exc)) from None
        return self

    def sizing(self) -> nanochat.Sizing:
        """Batch, device batch and step count nanochat will use for this job."""
        return nanochat.size_run(depth_of(self.model), self.mode, self.gpu.type, self.gpu.count, self.train_args)

    def model_post_init(self, _context: object) -> None:
        if "repo_ref" not in self.model_fields_set and not repos.is_default(self.repo):
            # karpathy's known-good commit is in no fork's history: a fork runs its default branch
            # (pinned to a commit at the first attempt, like any ref).
            object.__setattr__(self, "repo_ref", config.FORK_DEFAULT_REF)
        if self.run_name is None:
            # The old script kept one run per model; a smoke test must not share its files, nor
            # a fork karpathy's (the run name is the run's identity: its directory and claim).
            default = self.model if self.mode == "full" else f"{self.model}-smoke"
            if not repos.is_default(self.repo):
                default = f"{repos.run_name_part(self.repo)[:62 - len(default)].rstrip('-._')}-{default}"
            object.__setattr__(self, "run_name", default)

    @property
    def depth(self) -> int:
        return depth_of(self.model)

    @property
    def wants_preflight(self) -> bool:
        """A full run on more than one GPU, preflight not turned off (a smoke test or a one-GPU
        run is already as cheap as its preflight would be)."""
        return self.preflight and self.mode == "full" and self.gpu.count > 1

    def check_repo_host(self, hosts: Sequence[str]) -> None:
        """Refuse a repository host the operator has not allowed (submit only, see schemas.repo)."""
        try:
            repos.check_host(self.repo, hosts)
        except ValueError as exc:
            raise InvalidInput(f"invalid repo {self.repo!r}: {exc}") from None


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


