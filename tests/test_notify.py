"""Team webhooks, received by a real HTTP server, from real workers running sim jobs."""

from __future__ import annotations

import ipaddress
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError
from rq import Queue

from speedq import webhook_target
from speedq.notify import DeliveryFailed, deliver
from speedq.schemas import TeamLimits
from speedq.store import NOTIFY_QUEUE, Store
from speedq.teams import add_team
from speedq.webhook_target import ALLOW_PRIVATE_ENV
from tests.conftest import RedisServer, Speedq, wait_for


@pytest.fixture(autouse=True)
def private_webhooks_allowed(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests post to a receiver on loopback, which only an operator's setting allows."""
    if "public_only" in request.fixturenames:
        return
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    if "speedq" in request.fixturenames:
        request.getfixturevalue("speedq").env[ALLOW_PRIVATE_ENV] = "1"


@pytest.fixture
def public_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """The default: no operator setting, so only public targets."""
    monkeypatch.delenv(ALLOW_PRIVATE_ENV, raising=False)


@dataclass
class Webhook:
    """A webhook receiver: answers with `statuses` in turn (then 200), or holds every request
    until `release` is set when `hang` is."""

    statuses: list[int] = field(default_factory=list)
    hang: bool = False
    received: list[dict] = field(default_factory=list)
    answered: list[int] = field(default_factory=list)
    holding: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    url: str = ""

    def texts(self) -> list[str]:
        with self.lock:
            return [body["text"] for body in self.received]


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    hook = Webhook()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with hook.lock:
                hook.received.append(body)
                status = hook.statuses.pop(0) if hook.statuses else 200
                hook.holding += hook.hang
            if hook.hang:
                hook.release.wait()
                with hook.lock:
                    hook.holding -= 1
            self.send_response(status)
            self.end_headers()
            with hook.lock:
                hook.answered.append(status)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    hook.url = f"http://127.0.0.1:{server.server_port}/hooks/team-token"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield hook
    hook.release.set()
    server.shutdown()
    server.server_close()


def set_webhook(redis_server: RedisServer, team: str, url: str) -> None:
    add_team(Store(redis_server.client()), team, TeamLimits(webhook_url=url))


def notify_queue(redis_server: RedisServer) -> Queue:
    return Queue(NOTIFY_QUEUE, connection=redis_server.client())


def test_success_notifies_the_team_with_a_webhook_only(
    speedq: Speedq, redis_server: RedisServer, webhook: Webhook
) -> None:
    set_webhook(redis_server, "alpha", webhook.url)
    speedq.start_worker()
    quiet = speedq.submit("--team", "beta", "--smoke")
    job = speedq.submit("--team", "alpha", "--smoke")

    assert speedq.wait_state(quiet, "succeeded", "failed")["state"] == "succeeded"
    assert speedq.wait_state(job, "succeeded", "failed")["state"] == "succeeded"
    wait_for(webhook.texts, what="the webhook to be called")

    # One worker runs jobs in order: beta's end was written before alpha's began.
    [text] = webhook.texts()
    assert text.startswith(f"speedq {job} alpha/d12-smoke ") and "succeeded after 1 attempt" in text
    # RQ marks the delivery finished after its function returns, so after the webhook has answered
    wait_for(lambda: notify_queue(redis_server).finished_job_registry.count == 1, what="the delivery marked finished")


def test_failure_and_retry_are_notified(speedq: Speedq, redis_server: RedisServer, webhook: Webhook) -> None:
    set_webhook(redis_server, "alpha", webhook.url)
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.03"  # each step reported before the fault, as in test_faults
    speedq.start_worker(env={"SPEEDQ_SIM_FAULTS": "crash@3"})
    retried = speedq.submit("--team", "alpha", "--smoke", "--run-name", "retried", "--max-attempts", "2")
    failed = speedq.submit("--team", "alpha", "--smoke", "--run-name", "failed", "--max-attempts", "1")

    assert speedq.wait_state(retried, "succeeded", "failed")["state"] == "succeeded"
    assert speedq.wait_state(failed, "succeeded", "failed")["state"] == "failed"
    wait_for(lambda: len(webhook.texts()) == 3, what="three notifications")

    texts = webhook.texts()
    assert f"speedq {retried} alpha/retried " in texts[0] and "retrying: attempt 1 of 2 crashed" in texts[0]
    assert f"speedq {retried} alpha/retried " in texts[1] and "succeeded after 2 attempts" in texts[1]
    assert f"speedq {failed} alpha/failed " in texts[2] and " failed: " in texts[2]


def test_a_failing_webhook_is_retried_until_it_takes_the_notification(
    speedq: Speedq, redis_server: RedisServer, webhook: Webhook
) -> None:
    webhook.statuses = [500, 500]
    set_webhook(redis_server, "alpha", webhook.url)
    speedq.start_worker(env={"SPEEDQ_NOTIFY_RETRY_INTERVALS": "1"})
    job = speedq.submit("--team", "alpha", "--smoke")

    speedq.wait_state(job, "succeeded")
    wait_for(lambda: webhook.answered == [500, 500, 200], what="two refusals, then delivery")

    assert len(set(webhook.texts())) == 1  # the same notification three times
    queue = notify_queue(redis_server)
    wait_for(lambda: queue.finished_job_registry.count == 1, what="the delivery marked finished")
    [delivered] = queue.finished_job_registry.get_job_ids()
    assert queue.fetch_job(delivered).retries_left == 5 - 2
    assert queue.failed_job_registry.count == 0


def test_a_webhook_that_never_answers_does_not_hold_up_the_job(
    speedq: Speedq, redis_server: RedisServer, webhook: Webhook
) -> None:
    webhook.hang = True
    set_webhook(redis_server, "alpha", webhook.url)
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.03"
    # Long enough that the delivery is still waiting when the job ends.
    env = {"SPEEDQ_SIM_FAULTS": "crash@3", "SPEEDQ_NOTIFY_TIMEOUT": "300"}
    speedq.start_worker(env=env)
    speedq.start_worker(env=env)
    job = speedq.submit("--team", "alpha", "--smoke", "--max-attempts", "2")

    record = speedq.wait_state(job, "succeeded", "failed")

    assert record["state"] == "succeeded"
    # The retry notice went to the idle worker and is still unanswered: the job went on without it.
    with webhook.lock:
        assert webhook.holding >= 1 and "retrying" in webhook.received[0]["text"]
    webhook.release.set()
    wait_for(lambda: len(webhook.answered) == 2, what="both notifications once the webhook answers")


def test_deliver_raises_on_refusal_and_on_no_answer(webhook: Webhook) -> None:
    webhook.statuses = [404]
    with pytest.raises(DeliveryFailed, match="answered 404") as refused:
        deliver(webhook.url, {"text": "x"})
    assert "team-token" not in str(refused.value)  # the URL's secret stays out of RQ's records
    assert deliver(webhook.url, {"text": "y"}) == 200
    assert webhook.texts() == ["x", "y"]


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.slack.com/services/T000/B000/XXXX",
        "http://8.8.8.8:8080/hook",
        "http://[2001:4860:4860::8888]/hook",
        "http://webhook-receiver/notify?team=alpha",
    ],
)
def test_webhook_urls_accepted(url: str, public_only: None) -> None:
    assert TeamLimits(webhook_url=url).webhook_url == url


PRIVATE_TARGETS = [
    "http://127.0.0.1:6379/",
    "http://0x7f000001/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://127.1/",
    "http://0/",
    "http://localhost:8080/",
    "http://api.localhost/",
    "http://169.254.169.254/latest/meta-data/",
    "http://metadata.google.internal/computeMetadata/v1/",
    "http://100.100.100.200/",
    "http://10.1.2.3/",
    "http://192.168.0.1/",
    "http://172.16.5.4/",
    "http://[::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[::ffff:a9fe:a9fe]/",
    "http://[fe80::1%25eth0]/",
    "http://[fd00:ec2::254]/",
    "http://[64:ff9b::a9fe:a9fe]/",
    "http://[2002:7f00:1::]/",
    "http://224.0.0.1/",
]


@pytest.mark.parametrize("url", PRIVATE_TARGETS)
def test_webhooks_to_private_addresses_are_refused_in_one_line(
    url: str, public_only: None, speedq: Speedq, redis_server: RedisServer
) -> None:
    with pytest.raises(ValidationError, match=r"public address|local or metadata host"):
        TeamLimits(webhook_url=url)
    before = {key: redis_server.client().dump(key) for key in redis_server.client().keys("*")}
    done = speedq.run("team", "add", "alpha", "--webhook", url)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "webhook" in done.stderr and "Traceback" not in done.stderr
    assert {key: redis_server.client().dump(key) for key in redis_server.client().keys("*")} == before


def test_the_operator_setting_allows_private_targets() -> None:
    assert TeamLimits(webhook_url="http://127.0.0.1:6379/").webhook_url == "http://127.0.0.1:6379/"


def test_delivery_checks_the_resolved_address(
    webhook: Webhook, public_only: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name that passed validation but resolves to a private address (DNS rebinding, or a name
    in /etc/hosts) is refused at delivery, before any byte is sent."""
    import socket

    name = socket.gethostname()
    if all(webhook_target.is_public(ipaddress.ip_address(i[4][0])) for i in socket.getaddrinfo(name, 80)):
        pytest.skip(f"{name} resolves to a public address here")
    port = webhook.url.split(":")[2].split("/")[0]
    url = f"http://{name}:{port}/hooks/team-token"
    assert TeamLimits(webhook_url=url).webhook_url == url  # a name: only delivery can tell
    with pytest.raises(DeliveryFailed, match="not a public address"):
        deliver(url, {"text": "x"})
    assert webhook.received == []
    monkeypatch.setenv(ALLOW_PRIVATE_ENV, "1")
    assert deliver(url, {"text": "y"}) == 200  # the same receiver, allowed by the operator


@pytest.mark.parametrize(
    ("url", "rule"),
    [
        ("ftp://example.com/hook", "http:// or https://"),
        ("hooks.slack.com/services/x", "http:// or https://"),
        ("https://user:secret@example.com/hook", "credentials"),
        ("https://token@example.com/hook", "credentials"),
        ("https:///hook", "host"),
        ("https://example.com:port/", "valid URL"),
        ("https://example.com/a b", "whitespace"),
        ("https://example.com/" + "a" * 2000, "at most"),
    ],
)
def test_webhook_urls_refused(url: str, rule: str) -> None:
    with pytest.raises(ValidationError, match=rule):
        TeamLimits(webhook_url=url)


def test_a_notify_only_worker_delivers_while_every_job_worker_is_busy(
    speedq: Speedq, redis_server: RedisServer, webhook: Webhook
) -> None:
    set_webhook(redis_server, "alpha", webhook.url)
    speedq.env["SPEEDQ_SIM_STEP_S"] = "0.03"
    speedq.start_worker(env={"SPEEDQ_SIM_FAULTS": "crash@3"})  # the only job worker
    speedq.start_worker("--notify-only", backend=None)
    job = speedq.submit("--team", "alpha", "--model", "d4", "--max-attempts", "2")

    wait_for(lambda: any("retrying" in t for t in webhook.texts()), what="the retry notice")

    # The notice arrived while the job worker was still busy with the job's second attempt.
    assert speedq.status(job)["state"] in ("retrying", "starting", "running")
    assert speedq.wait_state(job, "succeeded", "failed")["state"] == "succeeded"


def test_notify_only_worker_takes_no_backend(speedq: Speedq) -> None:
    done = speedq.run("worker", "--notify-only", "--backend", "sim")
    assert done.returncode == 2 and "--notify-only takes no --backend" in done.stderr
