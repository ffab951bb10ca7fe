"""The leaderboard's indexes, kept by the store's own writes: what qualifies, in what order, with
which filters, and that a record that stops qualifying leaves them in the same write."""

from __future__ import annotations

import random

import pytest

from speedq.keys import Keys
from speedq.leaderboard import comparison, leaderboard
from speedq.schemas import CompareQuery, JobState, LeaderboardQuery
from speedq.store import Store
from speedq.store_board import board_entries
from tests.board_scene import Run, seed, store_run
from tests.conftest import RedisServer


@pytest.fixture
def store(redis_server: RedisServer) -> Store:
    conn = redis_server.client()
    conn.flushall()
    return Store(conn)


def board(store: Store, **query: object) -> tuple[list[str], list[str]]:
    """(time-to-GPT-2 job ids in order, best-bpb job ids in order)."""
    b = leaderboard(store, LeaderboardQuery.model_validate(query))
    return [r.job for r in b.time_to_gpt2], [r.job for r in b.best_bpb]


def test_time_to_gpt2_holds_qualifying_full_runs_on_8_h100s_fastest_first(store: Store) -> None:
    ids = seed(store)
    fastest, best = board(store)

    # weak (CORE below GPT-2's), half (4 GPUs), small, smoke and live do not qualify, however fast
    assert fastest == [ids["fast"], ids["deep"], ids["slow"]]
    # best val bpb per depth, over every succeeded full run: d12's only full run, d24's 4-GPU
    # run (lowest bpb though not on the board), d26's one
    assert best == [ids["small"], ids["half"], ids["deep"]]

    row = leaderboard(store, LeaderboardQuery()).time_to_gpt2[0]
    assert (row.rank, row.team, row.model, row.gpu) == (1, "alpha", "d24", "H100:8")
    assert row.train_args == {"fp8": True, "matrix-lr": 0.025}
    assert row.source == f"karpathy/nanochat@{store.get(ids['fast']).nanochat_commit[:7]}"
    assert row.results.training_time_s == 9_800.0 and row.results.min_val_bpb == 0.7421
    assert row.results.cost_usd == pytest.approx(9_800 / 3600 * 8 * 3.95)


def test_team_and_model_filters(store: Store) -> None:
    ids = seed(store)
    assert board(store, team="beta") == ([ids["deep"], ids["slow"]], [ids["slow"], ids["deep"]])
    assert board(store, model="d24") == ([ids["fast"], ids["slow"]], [ids["half"]])
    assert board(store, model="d24", team="beta") == ([ids["slow"]], [ids["slow"]])
    assert board(store, team="gamma") == ([], [])
    assert board(store, model="d32") == ([], [])
    assert board(store, limit=2)[0] == [ids["fast"], ids["deep"]]


def test_a_retried_job_leaves_the_board_and_a_rewritten_result_moves(store: Store) -> None:
    ids = seed(store, ("fast", "slow", "deep"))

    def requeue(r) -> None:  # type: ignore[no-untyped-def]
        r.state = JobState.queued

    store.update(ids["fast"], requeue)
    assert board(store) == ([ids["deep"], ids["slow"]], [ids["slow"], ids["deep"]])
    assert all(store.conn.zscore(key, ids["fast"]) is None for key in _every_board_key(store))

    def faster(r) -> None:  # type: ignore[no-untyped-def]
        r.results = r.results.model_copy(update={"training_time_s": 9_000.0, "min_val_bpb": 0.7500})

    store.update(ids["slow"], faster)
    assert board(store, model="d24") == ([ids["slow"]], [ids["slow"]])
    assert board(store)[0] == [ids["slow"], ids["deep"]]

    def below(r) -> None:  # type: ignore[no-untyped-def]
        r.results = r.results.model_copy(update={"core_metric": 0.2})

    store.update(ids["slow"], below)  # still the best d24 bpb, no longer on time-to-GPT-2
    assert board(store, model="d24") == ([], [ids["slow"]])


def _every_board_key(store: Store) -> list[bytes]:
    return list(store.conn.scan_iter(match="speedq:board:*"))


def test_indexes_equal_a_scan_of_every_record_after_random_changes(store: Store) -> None:
    """Whatever sequence of writes, each board set holds exactly the records a full scan puts
    there, with their scores: the indexes never drift from the records."""
    rng = random.Random(12)
    ids = seed(store)
    for _ in range(60):
        job = rng.choice(list(ids.values()))
        state = rng.choice([JobState.succeeded, JobState.succeeded, JobState.queued, JobState.failed])
        core = rng.choice([0.25, 0.26, 0.27])
        time_s = rng.choice([9_000.0, 9_500.0, 10_000.0, float("nan")])

        def change(r, state=state, core=core, time_s=time_s) -> None:  # type: ignore[no-untyped-def]
            r.state = state
            if r.results is not None:
                r.results = r.results.model_copy(update={"core_metric": core, "training_time_s": time_s})

        store.update(job, change)
        expected: dict[str, dict[str, float]] = {}
        for record in store.get_many(list(ids.values())):
            for key, score in board_entries(record).items():
                expected.setdefault(key, {})[record.id] = score
        actual = {
            key.decode(): {m.decode(): s for m, s in store.conn.zrange(key, 0, -1, withscores=True)}
            for key in _every_board_key(store) if key != Keys.board_models.encode()
        }
        assert {k: v for k, v in actual.items() if v} == expected


def test_a_board_read_costs_its_rows_not_the_jobs_stored(store: Store) -> None:
    """Thousands of records that do not qualify change nothing of what a board read fetches:
    the records it reads are the rows it shows."""
    ids = seed(store, ("fast", "deep"))
    for i in range(300):
        store_run(store, f"also-{i}", Run("gamma", "d24", time_s=9_000.0, core=0.2, bpb=0.8 + i / 1e4))
    reads: list[int] = []
    original = store.get_many

    def counting(job_ids):  # type: ignore[no-untyped-def]
        job_ids = list(job_ids)
        reads.append(len(job_ids))
        return original(job_ids)

    store.get_many = counting  # type: ignore[method-assign]
    fastest, best = board(store)
    assert fastest == [ids["fast"], ids["deep"]] and len(best) == 2
    assert sum(reads) == 4  # two time-to-GPT-2 rows, two depths' best


def test_compare_keeps_the_order_asked_and_names_an_unknown_job(store: Store) -> None:
    ids = seed(store, ("fast", "slow", "live"))
    runs = comparison(store, CompareQuery(jobs=[ids["slow"], ids["fast"], ids["slow"], ids["live"]])).runs
    assert [r.job for r in runs] == [ids["slow"], ids["fast"], ids["live"]]  # a repeat is shown once
    assert runs[2].results is None and runs[2].state == JobState.running

    # The dashboard's view: a run without results shows its status, not its code or options.
    public = comparison(store, CompareQuery(jobs=[ids["fast"], ids["live"]]), status_only=True).runs
    assert public[0].train_args == {"fp8": True, "matrix-lr": 0.025} and public[1].train_args is None
    assert public[1].source == "-"

    from speedq.errors import JobNotFound

    with pytest.raises(JobNotFound, match="no job sq-999"):
        comparison(store, CompareQuery(jobs=[ids["fast"], "sq-999"]))


def test_loss_points_keep_when_the_run_reported_them(store: Store) -> None:
    from speedq.schemas import Progress

    job = seed(store, ("live",))["live"]
    store.append_loss(job, Progress(step=1, total=100, loss=4.0, updated_at=1000.5))
    store.append_loss(job, Progress(step=2, total=100, loss=3.5, updated_at=1003.25))
    store.conn.rpush(Keys.loss_history(job), "3:3.25")  # a point stored before times were kept
    points = store.loss_history(job)
    assert [(p.step, p.loss, p.t) for p in points] == [(1, 4.0, 1000.5), (2, 3.5, 1003.25), (3, 3.25, None)]
    assert store.loss_histories([job, "sq-404"]) == [points, []]


def test_a_record_without_results_writes_no_board_key(store: Store) -> None:
    seed(store, ("live",))
    assert _every_board_key(store) == []
