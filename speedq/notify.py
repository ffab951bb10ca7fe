"""Webhook notifications: a team hears when its job succeeds, fails or is retried.

The supervisor only enqueues (one Redis write), so a slow or dead webhook never holds up a
run. Delivery is an RQ job on its own queue, which every worker takes from before any job
queue, and which RQ retries with backoff; retries with an interval need the worker's
scheduler (`work(with_scheduler=True)`), which moves due retries back onto the queue.
"""

from __future__ import annotations

import http.client
import json
import logging
import urllib.error
import urllib.request
from typing import IO, Any, Literal, get_args
from urllib.parse import urlsplit

import redis
from pydantic import BaseModel
from rq import Queue, Retry
from rq.job import Job

from speedq import config, settings, webhook_target
from speedq.keys import NOTIFY_QUEUE
from speedq.producer import ring
from speedq.schemas import JobRecord, JobState
from speedq.store import Store

log = logging.getLogger("speedq.notify")

Event = Literal["succeeded", "failed", "retrying"]
# A job state's name -> the event it is, for the states a team hears about.
EVENTS: dict[str, Event] = {name: name for name in get_args(Event)}
# The RQ job function, named by path so enqueuing never imports anything heavy.
DELIVER = "speedq.notify.deliver"


class Notification(BaseModel):
    job_id: str
    team: str
    event: Event
    text: str

    def payload(self) -> dict[str, str]:
        """What the webhook receives: Slack's incoming-webhook shape, which most chat tools take."""
        return {"text": self.text}


class DeliveryFailed(Exception):
    """The webhook did not take the notification; raised so RQ retries it."""


def webhook_for(conn: redis.Redis, team: str) -> str | None:
    """The team's webhook URL, or None. The one place that knows where it is kept: when the
    team settings record (issue 5) holds `webhook_url`, only this reads it from there."""
    return Store(conn).team(team).webhook_url


def notify(conn: redis.Redis, record: JobRecord, event: JobState | str) -> Job | None:
    """Enqueue the team's webhook call for `event`; returns the RQ job, or None when there is
    nothing to send. Never raises: a lost notification must not fail the job it is about."""
    name = EVENTS.get(JobState(event).value)
    if name is None:
        return None
    try:
        url = webhook_for(conn, record.spec.team)
        if url is None:
            return None
        note = Notification(job_id=record.id, team=record.spec.team, event=name, text=describe(record, name))
        job = Queue(NOTIFY_QUEUE, connection=conn).enqueue(
            DELIVER,
            url,
            note.payload(),
            retry=Retry(max=config.NOTIFY_MAX_RETRIES, interval=settings.get().notify_retry_intervals),
            job_timeout=int(settings.get().notify_timeout) + 10,
            result_ttl=config.NOTIFY_KEEP_S,
            failure_ttl=config.NOTIFY_KEEP_S,
            # RQ logs the description; without one it would print the URL, which is a secret.
            description=f"notify team {note.team}: {note.job_id} {note.event}",
        )
        ring(conn)  # an idle worker delivers it now, not at its next look
        return job
    except Exception:
        log.exception("could not enqueue the %s notification for %s", event, record.id)
        return None


def describe(record: JobRecord, event: str) -> str:
    spec = record.spec
    head = f"speedq {record.id} {spec.run_key} ({record.source} {spec.model} {spec.mode} on {spec.gpu}, {spec.backend})"
    attempts = record.attempts_this_round
    if event == "succeeded":
        plural = "s" * (attempts != 1)
        figures = record.results.summary() if record.results else f"{record.gpu_seconds / 3600:.2f} GPU-hours"
        return f"{head} succeeded after {attempts} attempt{plural}: {figures}"
    if event == "failed":
        return f"{head} failed: {record.error or 'no reason recorded'}"
    last = record.current_attempt
    ended = last.outcome.value if last and last.outcome else "ended"
    why = f" ({last.error})" if last and last.error else ""
    checkpoint = record.progress.checkpoint_step if record.progress else None
    resume = f"; resuming from step {checkpoint}" if checkpoint else ""
    return f"{head} retrying: attempt {attempts} of {spec.max_attempts} {ended}{why}{resume}"


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    # urllib would turn a redirected POST into a GET without the body and call that delivered;
    # a 3xx is a misconfigured webhook, so it fails (and is retried) instead.
    def redirect_request(
        self, req: urllib.request.Request, fp: IO[bytes], code: int, msg: str,
        headers: http.client.HTTPMessage, newurl: str,
    ) -> urllib.request.Request | None:
        return None


class _PublicHTTP(http.client.HTTPConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # http.client's own arguments, passed on
        super().__init__(*args, **kwargs)
        self._create_connection = webhook_target.connect_public  # http.client's hook for the socket


class _PublicHTTPS(http.client.HTTPSConnection):
    def __init__(self, *args: Any, **kwargs: Any) -> None:  # http.client's own arguments, passed on
        super().__init__(*args, **kwargs)
        self._create_connection = webhook_target.connect_public


class _PublicHandler(urllib.request.HTTPHandler, urllib.request.HTTPSHandler):
    """Connects only to public addresses, checked on the DNS answer the socket uses (see
    webhook_target). No proxy: a proxy would resolve the name itself, past the check."""

    def http_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        return self.do_open(_PublicHTTP, req)

    def https_open(self, req: urllib.request.Request) -> http.client.HTTPResponse:
        # HTTPSHandler.__init__ sets _context (its TLS settings); typeshed leaves private attributes out
        return self.do_open(_PublicHTTPS, req, context=self._context)  # type: ignore[attr-defined]


_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}), _PublicHandler, _NoRedirect)


def deliver(url: str, payload: dict[str, str]) -> int:
    """POST the payload as JSON; returns the status. Anything but a 2xx raises (RQ retries)."""
    host = urlsplit(url).hostname  # errors name the host only: the full URL is a secret
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", "User-Agent": "speedq"},
        method="POST",
    )
    try:
        with _opener.open(request, timeout=settings.get().notify_timeout) as response:
            status: int = response.status  # urllib's opener returns an HTTPResponse for http(s)
    except urllib.error.HTTPError as exc:
        raise DeliveryFailed(f"webhook at {host} answered {exc.code}") from None
    except webhook_target.PrivateTarget as exc:
        raise DeliveryFailed(f"webhook at {host} refused: {exc}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DeliveryFailed(f"webhook at {host} unreachable: {reason}") from None
    if not 200 <= status < 300:
        raise DeliveryFailed(f"webhook at {host} answered {status}")
    return status
