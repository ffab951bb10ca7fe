"""What the leaderboard and a comparison of runs show: one row per run, its source and score.

A run on the leaderboard is published whole, as nanochat's dev/LEADERBOARD.md publishes its
entries: team, repository, commit, options and results, to anyone (the dashboard needs no token).
A run without results shows no more than its status to another team (see `ComparedRun.of`).
"""

from __future__ import annotations

from pydantic import Field, computed_field

from speedq.schemas import repo as repos
from speedq.schemas.record import JobRecord, JobState
from speedq.schemas.results import RunResults
from speedq.schemas.rules import Schema, TrainArgValue
from speedq.schemas.views import LossPoint


class RunSource(Schema):
    """A run's code and options: repository, pinned commit and base_train's options."""

    repo: str | None = None
    commit: str | None = None
    train_args: dict[str, TrainArgValue] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def source(self) -> str:
        return "-" if self.repo is None else repos.source_text(self.repo, self.commit)


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
            repo=record.spec.repo, commit=record.nanochat_commit, train_args=dict(record.spec.train_args),
            results=record.results, finished_at=record.finished_at,
        )


class Leaderboard(Schema):
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
            repo=record.spec.repo if shown else None, commit=record.nanochat_commit if shown else None,
            train_args=dict(record.spec.train_args) if shown else None,
        )


class Comparison(Schema):
    runs: list[ComparedRun]
