"""`speedq status` reads its one key over a plain socket (speedq.resp), not redis-py: that is
where its start-up time went (issue 11). These check the reader against a real redis-server:
what it reads is what redis-py reads, it honours the URL's user, password and database, and
wherever it cannot serve (TLS or options it does not know, a wrong password, Redis down) the
ordinary path answers, with its own one line."""

from __future__ import annotations

import enum
import subprocess
import sys
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer
from redis.exceptions import DataError

from speedq import resp
from speedq.connection import connect
from tests.conftest import RedisServer, Speedq

# Prints which Redis client the command loaded, after the command's own output.
PROBE = ("import sys, atexit;"
         "atexit.register(lambda: print('redis-py:', 'redis' in sys.modules, file=sys.stderr));"
         "from speedq.entry import main; main(sys.argv[1:])")


def _status(speedq: Speedq, url: str, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    env = {**speedq.env, "SPEEDQ_REDIS_URL": url}
    done = subprocess.run([sys.executable, "-c", PROBE, "status", *args], env=env, capture_output=True, text=True,
                          timeout=60)
    return done, done.stderr.strip().splitlines()[-1] == "redis-py: True"


@pytest.fixture
def reader_url(redis_server: RedisServer) -> str:
    """A user of its own with a password (URL-quoted characters in it), on database 3."""
    user, password = f"reader-{uuid.uuid4().hex[:8]}", "p@ss:w/rd"
    redis_server.client().acl_setuser(user, enabled=True, passwords=[f"+{password}"], keys=["*"], commands=["+@all"])
    return f"redis://{user}:p%40ss%3Aw%2Frd@127.0.0.1:{redis_server.port}/3"


def test_status_reads_with_the_urls_user_password_and_database(speedq: Speedq, reader_url: str) -> None:
    env = {**speedq.env, "SPEEDQ_REDIS_URL": reader_url}
    job = subprocess.run([sys.executable, "-m", "speedq", "submit", "--team", "alpha", "--backend", "modal"],
                         env=env, capture_output=True, text=True, check=True).stdout.split()[-1]

    shown, used_redis_py = _status(speedq, reader_url, job, "--json")
    assert shown.returncode == 0, shown.stderr
    assert f'"id":"{job}"' in shown.stdout and '"team":"alpha"' in shown.stdout
    assert not used_redis_py

    # Database 0 does not hold it: the database in the URL was selected.
    other_db = reader_url.rsplit("/", 1)[0] + "/0"
    missing, _ = _status(speedq, other_db, job)
    assert missing.returncode == 2
    assert missing.stderr.splitlines()[0].endswith(f"no job {job}")


@pytest.mark.parametrize("url_change", ["?socket_timeout=5", "rediss"])
def test_a_url_the_reader_does_not_know_goes_the_ordinary_way(speedq: Speedq, url_change: str) -> None:
    job = speedq.submit("--team", "alpha")
    url = speedq.env["SPEEDQ_REDIS_URL"]
    if url_change == "rediss":  # TLS: the reader steps aside and redis-py's error is the one line
        done, used_redis_py = _status(speedq, url.replace("redis://", "rediss://"), job)
        assert done.returncode == 1 and used_redis_py
        assert done.stderr.startswith("error: cannot reach Redis")
        return
    done, used_redis_py = _status(speedq, url + url_change, job)
    assert done.returncode == 0, done.stderr
    assert job in done.stdout and used_redis_py


def test_a_wrong_password_or_no_redis_is_the_ordinary_one_line_error(speedq: Speedq, redis_server: RedisServer,
                                                                     reader_url: str) -> None:
    wrong = reader_url.replace("p%40ss", "nope")
    done, _ = _status(speedq, wrong, "sq-1")
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach Redis") and "Traceback" not in done.stderr

    nobody = RedisServer(redis_server.directory.parent / "never-started")  # a free port nobody listens on
    done, _ = _status(speedq, nobody.url, "sq-1")
    assert done.returncode == 1
    assert done.stderr.startswith("error: cannot reach Redis") and "Traceback" not in done.stderr


def test_replies_read_like_redis_py(redis_server: RedisServer) -> None:
    conn = redis_server.client()
    key = f"resp-test-{uuid.uuid4().hex}"
    conn.rpush(key, b"a\r\nb", b"", b"\x00\xff")
    reader = resp.open_reader(redis_server.url)
    assert reader is not None
    try:
        assert reader.call("LRANGE", key, "0", "-1") == conn.lrange(key, 0, -1)
        assert reader.call("LLEN", key) == 3
        assert reader.call("GET", key + "-none") is None
        with pytest.raises(resp.Unusable, match="WRONGTYPE"):
            reader.call("GET", key)
    finally:
        reader.close()
        conn.delete(key)
    assert resp.get(redis_server.url, key) == (True, None)


@pytest.mark.parametrize("tail", ["/1?db=2", "/?db=1&db=2", "/0?ssl_cert_reqs=none"])
def test_a_database_named_twice_or_an_option_is_left_to_redis_py(redis_server: RedisServer, tail: str) -> None:
    """Where redis-py and this reader could read the URL differently, this one declines."""
    assert resp.open_reader(f"redis://127.0.0.1:{redis_server.port}{tail}") is None


def test_a_user_without_a_password_or_a_broken_url_is_left_to_redis_py(redis_server: RedisServer) -> None:
    assert resp.open_reader(f"redis://someone@127.0.0.1:{redis_server.port}/0") is None
    assert resp.open_reader("redis://[::1:6379") is None


class Colour(str, enum.Enum):  # as RQ's JobStatus: a str enum, written as its value
    red = "red"


WORDS = st.one_of(st.binary(max_size=50), st.text(max_size=50), st.integers(), st.floats(allow_nan=True),
                  st.sampled_from([Colour.red]))


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(["SET", b"GET", "HSET"]), words=st.lists(WORDS, max_size=30))
def test_commands_are_packed_byte_for_byte_as_redis_py_packs_them(name: str | bytes, words: list[object]) -> None:
    """speedq's clients pack with resp.command (one join), redis-py's packer word by word: the
    bytes on the wire must be the same, text, numbers (of any size, floats' repr) and enums."""
    redis_py = PythonRespSerializer(6000, Encoder("utf-8", "strict", False).encode)
    args = (name, *words)
    assert resp.command(args) == b"".join(redis_py.pack(*args))


def test_speedq_clients_leave_other_words_and_spaced_names_to_redis_py(redis_server: RedisServer) -> None:
    conn = connect(redis_server.url)
    with pytest.raises(DataError, match="bool"):
        conn.set("k", True)  # type: ignore[arg-type]
    assert conn.set("k", bytearray(b"v")) and conn.get("k") == b"v"
    assert conn.execute_command("CONFIG GET", "appendonly")  # a name holding its own argument


def test_a_url_naming_its_own_encoding_is_packed_by_redis_py(redis_server: RedisServer) -> None:
    conn = connect(redis_server.url + "?encoding=latin-1")
    conn.set("k", "é")
    assert redis_server.client().get("k") == b"\xe9"  # latin-1, as redis-py writes it
