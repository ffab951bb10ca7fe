"""The leaderboard and comparisons of runs, read from the store's board indexes and records."""

from __future__ import annotations

from speedq.errors import JobNotFound
from speedq.gpu import nanochat
from speedq.schemas import BoardRow, ComparedRun, CompareQuery, Comparison, JobRecord, Leaderboard, LeaderboardQuery
from speedq.store import Store


def leaderboard(store: Store, query: LeaderboardQuery) -> Leaderboard:
    fastest = store.fastest_to_gpt2(query.team, query.model, query.limit)
    best = store.best_bpb(query.team, query.model)
    return Leaderboard(
        team=query.team, model=query.model, gpt2_core=nanochat.GPT2_CORE,
        time_to_gpt2=[BoardRow.of(rank, r) for rank, r in enumerate(fastest, 1)],
        best_bpb=[BoardRow.of(1, r) for r in best],
    )


def compared(store: Store, query: CompareQuery) -> list[JobRecord]:
    """The records, in the order asked; `JobNotFound` naming the first id with none."""
    records = {r.id: r for r in store.get_many(query.jobs)}
    missing = [i for i in query.jobs if i not in records]
    if missing:
        raise JobNotFound(f"no job {missing[0]}")
    return [records[i] for i in query.jobs]


def comparison(
    store: Store, query: CompareQuery, *, viewer: str | None = None, status_only: bool = False, loss: bool = False
) -> Comparison:
    """The runs side by side. `viewer` (a team) sees the options of its own runs without results
    too; `status_only` hides them for every run without results (the dashboard's view)."""
    records = compared(store, query)
    curves = store.loss_histories(query.jobs) if loss else [None] * len(records)
    return Comparison(runs=[
        ComparedRun.of(r, status_only=status_only or (viewer is not None and r.spec.team != viewer), loss=curve)
        for r, curve in zip(records, curves, strict=True)
    ])
