"""What a worker writes for a job it popped, in the one script it takes it with: the running slot
under the team's max_running, the team's turn and the job's lease; and nothing at all when the
team is full (the job goes back to its queue and another team gets the turn)."""

from __future__ import annotations

from speedq.keys import Keys
from speedq.schemas import TeamSettings
from speedq.store import Store
from tests.conftest import RedisServer


def test_a_popped_job_gets_its_slot_turn_and_lease_in_one_step(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    assert store.take_popped("alpha", "sq-1", "w1", 30, turn=True)
    assert store.slot_holders("alpha") == ["sq-1"]
    assert conn.get(Keys.supervisor("sq-1")) == b"w1" and conn.zscore(Keys.held, "sq-1") is not None
    assert conn.zscore(Keys.turns, "alpha") == 1.0


def test_a_full_teams_pop_writes_nothing(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    store.add_team(TeamSettings(name="alpha", max_running=1))
    assert store.take_popped("alpha", "sq-1", "w1", 30, turn=True)
    before = {key: conn.dump(key) for key in conn.keys("*")}
    assert not store.take_popped("alpha", "sq-2", "w2", 30, turn=True)
    assert {key: conn.dump(key) for key in conn.keys("*")} == before
    assert store.take_popped("alpha", "sq-1", "w1", 30, turn=False)  # a re-delivered job keeps its slot
