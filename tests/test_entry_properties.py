"""Every way in, fed anything (hypothesis): any text (undecodable bytes, as Python carries them,
included), numbers of any size and sign, nested objects. A refusal is one line with exit 2 or 3
(CLI) or a status the OpenAPI document lists for that operation (API), and leaves Redis byte
for byte as it was, the job sequence included. Never a traceback, never a 500.

The CLI runs in this process (`speedq.cli.main`, the console script's entry) so hundreds of
examples take seconds; `test_undecodable_argv_bytes` runs real processes with real bytes.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from urllib.parse import quote

import pytest
import redis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from speedq.api import create_app
from speedq.cli import main
from speedq.gpu.nanochat import BASE_TRAIN_OPTIONS, RESERVED_IN_SMOKE, RESERVED_TRAIN_ARGS
from speedq.keys import Keys
from speedq.producer import submit
from speedq.schemas import JobSpec, RunSample, TeamLimits
from speedq.store import Store
from speedq.teams import add_team
from tests.conftest import RedisServer

EXAMPLES = 150
SETTINGS = settings(
    max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
)

SURROGATES = ["\udcff", "\udc80", "\ud800", "\udfff"]
text = st.lists(st.one_of(st.characters(), st.sampled_from(SURROGATES)), max_size=30).map("".join)
number = st.one_of(
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(min_value=20, max_value=6000).map(lambda n: "-" * (n % 2) + "9" * n),  # too long to be an int
)
near_valid = st.sampled_from(
    ["alpha", "sq-1", "sq-2", "sq-99999999999999999999", "H100:8", "H100:-1", "H100:999", "TPUv9", "d12", "d0", "24h",
     "0", "-1", "none", "master", "http://127.0.0.1/", "http://0x7f000001/", "https://example.com/hook", ""]
)
value = st.one_of(text, number, near_valid)
# base_train's options by name, numbers of any size above all: the sizing and the estimate do
# arithmetic on them.
TRAIN_ARG_NAMES = [*BASE_TRAIN_OPTIONS, "x"]
EXTREMES = [10**400, -(10**400), 10**15, 2**63, 1e308, 1e300, 1e-300, 5e-324, -1e308]
train_arg = st.tuples(st.sampled_from(TRAIN_ARG_NAMES),
                      st.one_of(st.sampled_from(EXTREMES).map(str), number, value)).map("=".join)


def snapshot(conn: redis.Redis) -> dict[bytes, bytes | None]:
    return {key: conn.dump(key) for key in conn.keys("*")}


@pytest.fixture
def seeded(redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> tuple[redis.Redis, str]:
    """Two teams, one added with a token; three jobs (sq-1 .. sq-3), so generated ids sometimes
    name real ones."""
    conn = redis_server.client()
    conn.flushall()
    monkeypatch.setenv("SPEEDQ_REDIS_URL", redis_server.url)
    monkeypatch.delenv("SPEEDQ_BACKEND", raising=False)
    _, token = add_team(Store(conn), "alpha", TeamLimits(max_queued=100))
    for team, run in [("alpha", "a"), ("beta", "b"), ("alpha", "c")]:
        submit(conn, JobSpec(team=team, run_name=run, backend="sim"))
    return conn, token


def run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            main(argv)
            code = 0
        except SystemExit as exc:
            code = int(exc.code or 0)
    return code, out.getvalue(), err.getvalue()


def options(names: list[str], flags: list[str] = []) -> st.SearchStrategy[list[str]]:
    pair = st.tuples(st.sampled_from([*names, "--x"]), value).map(list)
    flag = st.sampled_from(flags).map(lambda f: [f]) if flags else st.nothing()
    return st.lists(st.one_of(pair, flag), max_size=6).map(lambda parts: [w for p in parts for w in p])


SUBMIT = ["--team", "--model", "--repo-ref", "--gpu", "--run-name", "--priority", "--backend", "--max-attempts",
          "--timeout", "--save-every"]
TEAM = ["--max-queued", "--max-running", "--gpu-hours-budget", "--webhook"]
commands = st.one_of(
    options(SUBMIT, ["--smoke", "--force-restart", "--no-preflight", "--json"]).map(lambda o: ["submit", *o]),
    # A submit valid but for its train args, so they are what gets checked
    st.tuples(st.sampled_from([[], ["--smoke"]]), st.lists(train_arg, min_size=1, max_size=2))
    .map(lambda t: ["submit", "--team", "alpha", *t[0], *[w for arg in t[1] for w in ("--train-arg", arg)]]),
    st.tuples(value, options([], ["--json"])).map(lambda t: ["status", t[0], *t[1]]),
    st.tuples(value, value).map(lambda t: ["cancel", t[0], "--team", t[1]]),
    st.tuples(value, value).map(lambda t: ["retry", t[0], "--team", t[1]]),
    st.tuples(value, options(["--tail"])).map(lambda t: ["logs", t[0], *t[1]]),
    options(["--team", "--state", "--limit"], ["--json"]).map(lambda o: ["ls", *o]),
    st.tuples(value, options(TEAM, ["--json"])).map(lambda t: ["team", "add", t[0], *t[1]]),
    st.tuples(value, options(TEAM, ["--rotate-token"])).map(lambda t: ["team", "set", t[0], *t[1]]),
    options(["--team"], ["--json"]).map(lambda o: ["stats", *o]),
    options(["--team", "--model", "--limit"], ["--json"]).map(lambda o: ["leaderboard", *o]),
    st.tuples(st.lists(value, max_size=14), options([], ["--json"])).map(lambda t: ["compare", *t[0], *t[1]]),
    st.lists(value, max_size=4),  # anything at all, unknown commands too
)


def test_every_cli_command_refuses_in_one_line_and_writes_nothing(seeded: tuple[redis.Redis, str]) -> None:
    conn, _ = seeded

    @SETTINGS
    @given(argv=commands)
    def check(argv: list[str]) -> None:
        before = snapshot(conn)
        code, _, err = run_cli(argv)
        if code == 0:
            return  # a valid command did what it says
        lines = err.strip().splitlines()
        assert code in (2, 3), (argv, code, err)
        assert len(lines) == 1 and lines[0].startswith("error:"), (argv, err)
        assert snapshot(conn) == before, argv

    check()


def test_gpu_and_text_rules_hold_for_the_cli(seeded: tuple[redis.Redis, str]) -> None:
    conn, _ = seeded
    seq = conn.get("speedq:seq")
    for argv in (
        ["submit", "--team", "alpha", "--gpu", "H100:-1000"],
        ["submit", "--team", "alpha", "--gpu", "H100:999"],
        ["submit", "--team", "alpha", "--gpu", "TPUv9"],
        ["submit", "--team", "alpha", "--repo-ref", "ma\udcffster"],
        ["submit", "--team", "al\udcffpha"],
        ["team", "set", "alpha", "--webhook", "https://example.com/\udcff"],
    ):
        code, _, err = run_cli(argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    assert conn.get("speedq:seq") == seq


@pytest.mark.parametrize(
    "argv",
    [
        [b"submit", b"--backend", b"sim", b"--team", b"alpha", b"--repo-ref", b"ma\xffster"],
        [b"submit", b"--backend", b"sim", b"--team", b"alpha", b"--run-name", b"r\xc3"],
        [b"submit", b"--team", b"\xff"],
        [b"team", b"add", b"gamma", b"--webhook", b"https://example.com/\xfe"],
        [b"status", b"sq-\xff"],
        [b"cancel", b"sq-1", b"--team", b"\xff"],
        [b"logs", b"sq-1", b"--tail", b"\xff"],
        [b"ls", b"--state", b"\xff"],
        [b"--\xff"],
    ],
)
def test_undecodable_argv_bytes(seeded: tuple[redis.Redis, str], redis_server: RedisServer, argv: list[bytes]) -> None:
    conn, _ = seeded
    before = snapshot(conn)
    done = subprocess.run([sys.executable.encode(), b"-m", b"speedq.cli", *argv], capture_output=True,
                          env={"SPEEDQ_REDIS_URL": redis_server.url, "PATH": "/usr/bin:/bin"}, timeout=60)
    stderr = done.stderr.decode(errors="replace")
    assert done.returncode == 2, stderr
    assert len(stderr.strip().splitlines()) == 1 and stderr.startswith("error:"), stderr
    assert snapshot(conn) == before


# -- the API --------------------------------------------------------------------------------------

json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**300), max_value=10**300),
              st.floats(allow_nan=False, allow_infinity=False), text, near_valid),
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(text, near_valid), inner, max_size=4)),
    max_leaves=12,
)
FIELDS = ["team", "model", "repo_ref", "mode", "force_restart", "gpu", "run_name", "priority", "backend",
          "max_attempts", "attempt_timeout_s", "save_every", "train_args"]
gpu_object = st.fixed_dictionaries({"type": st.one_of(text, near_valid, st.sampled_from(["H100", "h100", "A10G"]))},
                                   optional={"count": st.one_of(st.integers(), json_value)})
big_number = st.one_of(st.sampled_from(EXTREMES), st.integers(min_value=-(10**400), max_value=10**400),
                       st.floats(allow_nan=False, allow_infinity=False))
train_args_object = st.dictionaries(st.sampled_from(TRAIN_ARG_NAMES), st.one_of(big_number, json_value), max_size=3)
submit_body = st.dictionaries(st.one_of(st.sampled_from(FIELDS), text),
                              st.one_of(json_value, gpu_object, train_args_object), max_size=6)
raw_body = st.one_of(
    submit_body.map(lambda b: json.dumps(b).encode()),  # surrogates travel as \udcff escapes
    # valid but for its train args, so they are what gets checked
    st.tuples(st.sampled_from(["full", "smoke"]), train_args_object)
    .map(lambda t: json.dumps({"team": "alpha", "mode": t[0], "train_args": t[1]}).encode()),
    json_value.map(lambda b: json.dumps(b).encode()),
    st.binary(max_size=40),
    st.sampled_from([b'{"repo_ref": "ma\xffster"}', b'{"gpu":' + b"[" * 3000 + b"]" * 3000 + b"}",
                     b'{"max_attempts": 1' + b"0" * 5000 + b"}", b""]),
)
query = st.dictionaries(st.sampled_from(["team", "state", "limit", "tail", "model", "jobs", "x"]),
                        st.one_of(text, number, near_valid), max_size=3)
requests = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/jobs"), st.just({}), raw_body),
    st.tuples(st.just("GET"), st.just("/v1/jobs"), query, st.just(b"")),
    st.tuples(st.just("GET"), st.just("/v1/stats"), query, st.just(b"")),
    st.tuples(st.just("GET"), st.sampled_from(["/v1/leaderboard", "/dashboard/api/leaderboard"]), query, st.just(b"")),
    st.tuples(st.just("GET"), st.sampled_from(["/v1/compare", "/dashboard/api/compare"]), query, st.just(b"")),
    st.tuples(st.just("GET"), value.map(lambda i: f"/v1/jobs/{i}"), query, st.just(b"")),
    st.tuples(st.just("GET"), value.map(lambda i: f"/v1/jobs/{i}/logs"), query, st.just(b"")),
    st.tuples(st.just("POST"),
              st.tuples(value, st.sampled_from(["cancel", "retry"])).map(lambda t: f"/v1/jobs/{t[0]}/{t[1]}"),
              query, st.just(b"")),
    st.tuples(st.sampled_from(["PUT", "DELETE", "PATCH"]), st.sampled_from(["/v1/jobs", "/v1/jobs/sq-1", "/v1/stats"]),
              st.just({}), st.just(b"")),
)


def raw(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def documented(app, path: str, method: str) -> set[int]:  # type: ignore[no-untyped-def]
    """The statuses the OpenAPI document lists for the operation serving this request."""
    paths = app.openapi()["paths"]
    parts = path.split("?")[0].strip("/").split("/")
    for template, operations in paths.items():
        tparts = template.strip("/").split("/")
        if len(tparts) == len(parts) and all(t.startswith("{") or t == p for t, p in zip(tparts, parts)):
            if method.lower() in operations:
                return {int(code) for code in operations[method.lower()]["responses"]}
            return {int(code) for op in operations.values() for code in op["responses"]}  # a 405 here
    return {404}  # no such path at all


def test_every_api_request_gets_a_documented_status_and_a_refusal_writes_nothing(
    seeded: tuple[redis.Redis, str],
) -> None:
    conn, token = seeded
    app = create_app(conn)
    client = TestClient(app, raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}

    @SETTINGS
    @given(request=requests)
    def check(request: tuple[str, str, dict, bytes]) -> None:
        method, path, params, body = request
        before = snapshot(conn)
        # Text goes out as a client's bytes would: a lone surrogate as the invalid UTF-8 it stands for.
        query_string = "&".join(f"{quote(raw(k))}={quote(raw(v))}" for k, v in params.items())
        url = quote(raw(path), safe="/") + ("?" + query_string if params else "")
        response = client.request(method, url, content=body or None, headers=headers)
        assert response.status_code < 500, (method, path, params, body[:200], response.text)
        assert response.status_code in documented(app, path, method), (
            method, path, response.status_code, response.text)
        if response.status_code >= 400:
            detail = response.json()["detail"]
            assert isinstance(detail, str) and "\n" not in detail, detail
            assert snapshot(conn) == before, (method, path, body[:200])

    check()


def test_gpu_objects_take_the_text_rule_in_the_api(seeded: tuple[redis.Redis, str]) -> None:
    conn, token = seeded
    client = TestClient(create_app(conn), raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {token}"}
    before = snapshot(conn)
    for gpu in ({"type": "H100", "count": -1000}, {"type": "H100", "count": 999}, {"type": "TPUv9"},
                {"type": "H100", "count": True}, {"type": "H100", "count": "8"}, {"type": "H100", "count": 1, "x": 1}):
        response = client.post("/v1/jobs", json={"gpu": gpu, "backend": "sim"}, headers=headers)
        assert response.status_code == 422 and response.json()["detail"].startswith("invalid gpu"), (gpu, response.text)
    assert snapshot(conn) == before
    body = {"gpu": {"type": "h100", "count": 2}, "backend": "sim", "run_name": "g"}
    ok = client.post("/v1/jobs", json=body, headers=headers)
    assert ok.status_code == 201 and ok.json()["job"]["spec"]["gpu"] == {"type": "H100", "count": 2}


NUMERIC_TRAIN_ARGS = [name for name, option in BASE_TRAIN_OPTIONS.items()
                      if option.kind in ("int", "float") and name not in RESERVED_TRAIN_ARGS]


def test_every_numeric_train_arg_at_any_size_is_taken_or_refused_in_one_line(seeded: tuple[redis.Redis, str]) -> None:
    """base_train's numbers drive the sizing and the cost estimate's arithmetic: at any size, in
    the CLI and the API, a submit either goes in or is refused in one line, writing nothing."""
    conn, token = seeded
    client = TestClient(create_app(conn), raise_server_exceptions=False)
    headers = {"Authorization": f"Bearer {token}"}
    refused = 0
    for name in NUMERIC_TRAIN_ARGS:
        for number in (10**400, 10**15, 1e308, 1e-300, 5e-324):  # past a float, an int's limit, a float's ends
            for mode in ("full", "smoke"):
                if mode == "smoke" and name in RESERVED_IN_SMOKE:
                    continue
                before = snapshot(conn)
                smoke = ["--smoke"] if mode == "smoke" else []
                code, _, err = run_cli(["submit", "--team", "alpha", *smoke, "--run-name",
                                        f"cli-{name}-{mode}-{refused}", "--train-arg", f"{name}={number}"])
                if code != 0:
                    refused += 1
                    assert code == 2 and len(err.strip().splitlines()) == 1 and err.startswith("error:"), (name, err)
                    assert snapshot(conn) == before, (name, number, mode)
                body = {"team": "alpha", "mode": mode, "run_name": f"api-{name}-{mode}-{refused}",
                        "train_args": {name: number}}
                before = snapshot(conn)
                response = client.post("/v1/jobs", content=json.dumps(body), headers=headers)
                assert response.status_code in (201, 422), (name, number, mode, response.text)
                if response.status_code == 422:
                    assert "\n" not in response.json()["detail"]
                    assert snapshot(conn) == before, (name, number, mode)
    assert refused > 0  # 10**400 is refused everywhere: the loop reached the rules


def test_an_estimate_from_history_past_any_job_is_refused_in_one_line(seeded: tuple[redis.Redis, str]) -> None:
    """A team's history estimate is its past runs' rate times this run's tokens, which no train-arg
    limit bounds alone: one 1-token run of 6 GPU-hours makes a d12 run of 10^9 steps 10^19
    GPU-seconds, past the 64-bit reservation the submit's script would write last."""
    conn, token = seeded
    past = RunSample(job="sq-0", gpu_seconds=21600.0, tokens=1)
    conn.lpush(Keys.run_history(JobSpec(team="alpha", model="d12")), past.model_dump_json())
    before = snapshot(conn)
    code, _, err = run_cli(["submit", "--team", "alpha", "--model", "d12", "--train-arg", "num-iterations=1000000000"])
    assert code == 2 and len(err.strip().splitlines()) == 1 and "more than speedq takes as one job" in err, err
    response = TestClient(create_app(conn), raise_server_exceptions=False).post(
        "/v1/jobs", headers={"Authorization": f"Bearer {token}"},
        json={"team": "alpha", "model": "d12", "train_args": {"num-iterations": 10**9}})
    assert response.status_code == 422
    assert "more than speedq takes as one job" in response.json()["detail"]
    assert snapshot(conn) == before


def test_a_record_stored_before_a_limit_was_added_stays_readable(seeded: tuple[redis.Redis, str]) -> None:
    """A limit on new input (15-digit whole numbers, the training horizon) must not make a job
    stored before it unreadable: status, ls and cancel still work on it."""
    conn, _ = seeded
    stored = json.loads(conn.get(Keys.job("sq-1")))
    stored["spec"]["train_args"] = {"eval-every": 10**20, "num-iterations": 10**14}
    conn.set(Keys.job("sq-1"), json.dumps(stored))
    code, out, err = run_cli(["status", "sq-1", "--json"])
    assert code == 0 and json.loads(out)["spec"]["train_args"]["eval-every"] == 10**20, err
    code, out, err = run_cli(["ls", "--team", "alpha", "--json"])
    assert code == 0 and "sq-1" in out, err
    code, _, err = run_cli(["cancel", "sq-1", "--team", "alpha"])
    assert code == 0, err
    assert Store(conn).get("sq-1").state.value == "cancelled"
