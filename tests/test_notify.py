"""Team webhooks, received by a real HTTP server, from real workers running sim jobs."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from pydantic import ValidationError
from rq import Queue

from speedq.notify import deliver, DeliveryFailed
from speedq.schemas import TeamLimits
from speedq.teams import add_team
from speedq.store import NOTIFY_QUEUE, Store
from tests.conftest import RedisServer, Speedq, wait_for


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
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
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


def test_success_notifies_the_team_with_a_webhook_only(speedq: Speedq, redis_server: RedisServer, webhook: Webhook) -> None:
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
    assert notify_queue(redis_server).finished_job_registry.count == 1


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
        "http://127.0.0.1:8080/hook",
        "http://webhook-receiver/notify?team=alpha",
    ],
)
def test_webhook_urls_accepted(url: str) -> None:
    assert TeamLimits(webhook_url=url).webhook_url == url


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
