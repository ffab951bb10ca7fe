"""The web dashboard as a person sees it: headless Chromium renders `/` and a job page from a
real `speedq api`, with jobs a real worker ran."""

from __future__ import annotations

import re

import httpx

from speedq.store import Store
from speedq.views import RESULT_FIGURES, duration
from tests.browser import rendered, screenshot
from tests.conftest import RedisServer
from tests.two_teams import Scene, scene  # noqa: F401 - the fixture


def test_the_board_shows_each_teams_jobs_by_state(scene: Scene) -> None:  # noqa: F811
    page = rendered(f"{scene.base_url}/")
    screenshot(f"{scene.base_url}/", "dashboard-board.png")

    assert [h.text for h in page.all("h2")] == ["Team alpha", "Team beta"]
    alpha, beta = page.one("table", data_team="alpha"), page.one("table", data_team="beta")
    # rows: job, state, stage, step, loss, eta, tries, source, time, CORE/bpb, updated; grouped running >
    # queued > ... > succeeded
    assert [r[:4] for r in alpha.rows()] == [
        [scene.cancelled, "cancelled", "-", "-"],
        [scene.preempted, "succeeded", "done", "352/352 (100%)"],
    ]
    assert [r[:4] for r in beta.rows()] == [
        [scene.waiting_low, "queued", "-", "-"],
        [scene.waiting_high, "queued", "-", "-"],
        [scene.smoke, "succeeded", "done", "10/10 (100%)"],
    ]
    assert [r[6] for r in alpha.rows()] == ["0/3", "2/3"]  # tries: the preempted run took two
    groups = [th.text for th in beta.all("tr", class_="group")]
    assert groups == ["queued (2)", "succeeded (1)"]
    done, res = scene.speedq.status(scene.preempted), scene.speedq.status(scene.preempted)["results"]
    assert alpha.rows()[1][7:10] == [f"karpathy/nanochat@{done['nanochat_commit'][:7]}",
                                     duration(res["training_time_s"]), f"{res['core_metric']:.4f}/{res['val_bpb']:.4f}"]
    never_pinned = scene.speedq.status(scene.cancelled)["spec"]["repo_ref"]  # the known-good commit
    assert alpha.rows()[0][7:10] == [f"karpathy/nanochat@{never_pinned[:7]}", "-", "-"]


def test_a_job_page_shows_progress_loss_curve_and_attempts_but_no_log_without_a_token(
    scene: Scene, redis_server: RedisServer  # noqa: F811
) -> None:
    url = f"{scene.base_url}/#/jobs/{scene.preempted}"

    page = rendered(url)
    screenshot(url, "dashboard-job.png")

    facts = page.one("dl", id="facts")
    shown = dict(zip((dt.text for dt in facts.all("dt")), (dd.text for dd in facts.all("dd"))))
    assert shown["State"] == "succeeded" and shown["Team"] == "alpha"
    assert shown["Step"] == "352/352 (100%)" and shown["Tries"] == "2/3"

    # The plot draws every point the store kept, and the loss goes down (up the SVG's y axis).
    stored = Store(redis_server.client()).loss_history(scene.preempted)
    path = page.one("svg", id="loss-plot").one("path").attrs["d"]
    points = [(float(x), float(y)) for x, y in re.findall(r"[ML]([\d.]+),([\d.]+)", path)]
    assert len(points) == len(stored) >= 3
    assert [p.step for p in stored] == sorted({p.step for p in stored})  # each step once, in order
    # Each point keeps when the runner reported it (the comparison's wall-time axis), in order.
    times = [p.t for p in stored]
    assert None not in times and times == sorted(times)  # type: ignore[type-var]
    assert points[0][1] < points[-1][1] and stored[0].loss > stored[-1].loss

    done = Store(redis_server.client()).get(scene.preempted)
    assert shown["Source"] == done.source and shown["Repository"] == "https://github.com/karpathy/nanochat.git"
    assert shown["Commit"] == f"{done.spec.repo_ref} -> {done.nanochat_commit}"
    results = page.one("dl", id="results")
    got = dict(zip((dt.text for dt in results.all("dt")), (dd.text for dd in results.all("dd"))))
    res = done.results
    assert res is not None and res.val_bpb is not None and res.min_val_bpb is not None and res.mfu_pct is not None
    assert got["Val bpb"] == f"{res.val_bpb:.4f}" and got["Min val bpb"] == f"{res.min_val_bpb:.4f}"
    assert got["Steps"] == "352" and got["MFU"] == f"{res.mfu_pct:.2f}%" and got["Cost"] == f"${res.cost_usd:.2f}"
    # Figure by figure, the page reads as `speedq status` prints them (one list on each side).
    assert list(got.values()) == [shown(res) for _, shown in RESULT_FIGURES]

    attempts = page.one("table", id="attempts").rows()
    assert [(r[0], r[3], r[4]) for r in attempts] == [("1", "preempted", "-"), ("2", "succeeded", "20")]

    # No token: no log tail, no spec, and nothing of the log's text on the page.
    assert not page.all("pre", id="log-tail") and not page.all("pre", id="spec")
    assert "enter its token" in page.text
    log = httpx.get(f"{scene.base_url}/v1/jobs/{scene.preempted}/logs",
                    headers={"Authorization": f"Bearer {scene.tokens['alpha']}"}, params={"tail": 5}).text
    assert log.strip() and log.strip().splitlines()[-1] not in page.text
