"""What the leaderboard and a comparison of runs show: one row per run, its source and score.

A run on the leaderboard is published whole, as nanochat's dev/LEADERBOARD.md publishes its
entries: team, repository, commit, options and results, to anyone (the dashboard needs no token).
A run without results shows no more than its status to another team (see `ComparedRun.of`).
"""

from __future__ import annotations

from pydantic import BaseModel, Field, computed_field

from speedq import config
from speedq.schemas.record import JobRecord, JobState
from speedq.schemas.results import RunResults
from speedq.schemas.rules import TrainArgValue
from speedq.schemas.views import LossPoint

SHORT_COMMIT = 7


def repo_of(record: JobRecord) -> str:
    """The repository the job runs: its own (a fork) if the spec names one, else nanochat's."""
    # getattr: a spec gains `repo` with forks (issue 12); until then every job runs nanochat's.
    repo: str | None = getattr(record.spec, "repo", None)
    return repo or config.NANOCHAT_REPO_URL


def short_repo(url: str) -> str:
    """`https://github.com/karpathy/nanochat.git` as `karpathy/nanochat`; another host keeps its name."""
    bare = url.split("://", 1)[-1].removesuffix("/").removesuffix(".git")
    return bare.removeprefix("github.com/")


def source_text(repo: str | None, commit: str | None) -> str:
    """`owner/name@abcdef1`: where a run's code came from, as every table shows it."""
    if repo is None:
        return "-"
    return f"{short_repo(repo)}@{commit[:SHORT_COMMIT] if commit else '?'}"


class RunSource(BaseModel):
    """A run's code and options: repository, pinned commit and base_train's options."""

    repo: str | None = None
    commit: str | None = None
    train_args: dict[str, TrainArgValue] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def source(self) -> str:
        return source_text(self.repo, self.commit)


class BoardRow(RunSource):
    """One leaderboard entry: a succeeded run and its score."""

    rank: int
    job: str
    team: str
    model: str
    gpu: str
    results: RunResults
    finished_at: float | None = None

    @classmethod
    def of(cls, rank: int, record: JobRecord) -> BoardRow:
        assert record.results is not None  # the board indexes only records with results
        return cls(
            rank=rank, job=record.id, team=record.spec.team, model=record.spec.model, gpu=str(record.spec.gpu),
            repo=repo_of(record), commit=record.nanochat_commit, train_args=dict(record.spec.train_args),
            results=record.results, finished_at=record.finished_at,
        )


class Leaderboard(BaseModel):
    """Time-to-GPT-2 (qualifying runs, fastest first) and, beside it, the best val bpb per depth."""

    team: str | None = None
    model: str | None = None
    gpt2_core: float
    time_to_gpt2: list[BoardRow] = Field(default_factory=list)
    best_bpb: list[BoardRow] = Field(default_factory=list)  # one per model, by depth


class ComparedRun(RunSource):
    """One column of a comparison. `source`, `repo`, `commit` and `train_args` are None when the
    viewer may see the run's status only (another team's run without results)."""

    job: str
    team: str
    state: JobState
    model: str
    gpu: str
    results: RunResults | None = None
    started_at: float | None = None
    loss: list[LossPoint] | None = None  # the loss curve, when asked for (the dashboard's overlay)

    @classmethod
    def of(cls, record: JobRecord, *, status_only: bool, loss: list[LossPoint] | None = None) -> ComparedRun:
        shown = not status_only or record.results is not None
        return cls(
            job=record.id, team=record.spec.team, state=record.state, model=record.spec.model,
            gpu=str(record.spec.gpu), results=record.results, started_at=record.started_at, loss=loss,
            repo=repo_of(record) if shown else None, commit=record.nanochat_commit if shown else None,
            train_args=dict(record.spec.train_args) if shown else None,
        )


class Comparison(BaseModel):
    runs: list[ComparedRun]
