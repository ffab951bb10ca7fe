"""The leaderboard and the comparison of runs as a person sees them: headless Chromium renders
the dashboard from a real `speedq api`, on runs stored as the worker stores them."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from speedq.store import Store
from tests.api_server import start_api
from tests.board_scene import seed, store_curve
from tests.browser import LivePage, Node, rendered, screenshot
from tests.conftest import RedisServer, make_speedq

STEPS = 5_000


@dataclass(frozen=True)
class Shown:
    base_url: str
    ids: dict[str, str]
    commits: dict[str, str]
    points: dict[str, int]  # loss points stored per run


@pytest.fixture(scope="module")
def shown(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Shown]:
    conn = redis_server.client()
    conn.flushall()
    store = Store(conn)
    ids = seed(store)
    # fast trains each step in 1.9 s, slow in 2.2 s: by wall time fast's curve ends first.
    pace = {"fast": (2.55, 1.9), "slow": (2.50, 2.2), "deep": (2.45, 2.0), "live": (2.7, 2.1)}
    points = {name: store_curve(store, ids[name], STEPS, floor, s) for name, (floor, s) in pace.items()}
    commits = {name: store.get(job).nanochat_commit or "" for name, job in ids.items()}
    speedq = make_speedq(redis_server, tmp_path_factory.mktemp("board"))
    try:
        yield Shown(start_api(speedq), ids, commits, points)
    finally:
        speedq.stop_all()


def test_the_leaderboard_lists_qualifying_runs_fastest_first_each_linked_to_its_job(shown: Shown) -> None:
    url = f"{shown.base_url}/#/leaderboard"
    page = rendered(url)
    screenshot(url, "leaderboard.png")

    ids = shown.ids
    rows = page.one("table", id="time-to-gpt2").rows()
    assert [r[0] for r in rows] == ["1", "2", "3"]
    assert [r[-1] for r in rows] == [ids["fast"], ids["deep"], ids["slow"]]
    assert rows[0][1:9] == ["2h43m20s", "alpha", "d24", f"karpathy/nanochat@{shown.commits['fast'][:7]}",
                            "fp8 matrix-lr=0.025", "0.2601", "0.7421", "$86.02"]
    table = page.one("table", id="time-to-gpt2")
    for tr, job in zip(table.one("tbody").all("tr"), [ids["fast"], ids["deep"], ids["slow"]], strict=True):
        assert [a.attrs["href"] for a in tr.all("a")] == [f"#/jobs/{job}"]  # the row links to its job
        assert tr.one("input", class_="pick").attrs["data-job"] == job  # and can be picked to compare

    best = page.one("table", id="best-bpb").rows()
    assert [(r[0], r[1], r[-1]) for r in best] == [
        ("d12", "0.8800", ids["small"]), ("d24", "0.7350", ids["half"]), ("d26", "0.7302", ids["deep"]),
    ]
    assert page.one("nav").one("a", class_="here").text == "Leaderboard"


def test_the_leaderboard_filters_by_model_and_team_and_shows_a_bad_filter_in_one_line(shown: Shown) -> None:
    page = rendered(f"{shown.base_url}/#/leaderboard?model=d24&team=beta")
    assert [r[-1] for r in page.one("table", id="time-to-gpt2").rows()] == [shown.ids["slow"]]
    assert page.one("section", id="leaderboard").one("h2").text == "Time to GPT-2 (d24, team beta)"

    refused = rendered(f"{shown.base_url}/#/leaderboard?model=d1")
    assert refused.one("span", id="error").text == (
        "Could not refresh: 422: invalid model 'd1': must be d<depth> with depth 2 to 64, e.g. d12"
    )
    assert not refused.all("table", id="time-to-gpt2")


def _curves(page: Node) -> dict[str, list[tuple[float, float]]]:
    plot = page.one("svg", id="compare-plot")
    return {
        path.attrs["data-job"]: [(float(x), float(y)) for x, y in re.findall(r"[ML]([\d.]+),([\d.]+)", path.attrs["d"])]
        for path in plot.all("path", class_="curve")
    }


def test_compare_overlays_each_picked_runs_loss_curve_by_step_and_by_wall_time(shown: Shown) -> None:
    ids = shown.ids
    picked = [ids["fast"], ids["slow"], ids["deep"]]
    by_step_url = f"{shown.base_url}/#/compare?jobs={','.join(picked)}"
    by_time_url = by_step_url + "&x=time"

    by_step = rendered(by_step_url)
    screenshot(by_step_url, "compare-by-step.png")
    by_time = rendered(by_time_url)
    screenshot(by_time_url, "compare-by-wall-time.png")

    for page in (by_step, by_time):
        curves = _curves(page)
        assert list(curves) == picked  # one curve per picked run, in the order picked
        assert [len(c) for c in curves.values()] == [shown.points[n] for n in ("fast", "slow", "deep")]
        legend = page.one("p", id="compare-legend")
        assert [s.attrs["data-job"] for s in legend.all("span", data_job=picked[0])] == [picked[0]]
        assert [a.text for a in legend.all("a")] == picked
    # By step every run ends at the same step; by wall time the faster-stepping run ends first.
    step_ends = [c[-1][0] for c in _curves(by_step).values()]
    time_ends = {job: c[-1][0] for job, c in _curves(by_time).items()}
    assert len(set(step_ends)) == 1
    assert time_ends[ids["fast"]] < time_ends[ids["deep"]] < time_ends[ids["slow"]]
    assert by_step.one("a", id="x-step").attrs["class"] == "on" and by_time.one("a", id="x-time").attrs["class"] == "on"
    # The loss falls: each curve ends lower (further down the SVG) than it starts.
    assert all(c[-1][1] > c[0][1] for c in _curves(by_step).values())

    table = by_step.one("table", id="compare-table")
    assert [th.text for th in table.one("thead").all("th")] == ["", *picked]
    rows = {tr.one("th").text: [td.text for td in tr.all("td")] for tr in table.one("tbody").all("tr")}
    assert rows["Training time"] == ["2h43m20s", "3h01m40s", "2h51m40s"]
    assert rows["Min val bpb"] == ["0.7421", "0.7398", "0.7302"]
    assert rows["Options"] == ["fp8 matrix-lr=0.025", "-", "window-pattern=SSL"]


def test_compare_shows_a_run_in_flight_and_names_an_unknown_job(shown: Shown) -> None:
    ids = shown.ids
    page = rendered(f"{shown.base_url}/#/compare?jobs={ids['fast']},{ids['live']}")
    assert list(_curves(page)) == [ids["fast"], ids["live"]]
    table = page.one("table", id="compare-table")
    rows = {tr.one("th").text: [td.text for td in tr.all("td")] for tr in table.all("tr") if tr.all("td")}
    assert rows["State"] == ["succeeded", "running"] and rows["Training time"] == ["2h43m20s", "-"]
    assert rows["Options"] == ["fp8 matrix-lr=0.025", "(hidden)"]  # no token: a run without results shows status

    unknown = rendered(f"{shown.base_url}/#/compare?jobs={ids['fast']},sq-999")
    assert unknown.one("span", id="error").text == "Could not refresh: 404: no job sq-999"


def test_every_job_on_the_jobs_list_can_be_picked_for_compare(shown: Shown) -> None:
    page = rendered(f"{shown.base_url}/")
    tables = page.all("table", class_="jobs")
    listed = [a.text for table in tables for a in table.all("a")]
    boxes = [box.attrs["data-job"] for table in tables for box in table.all("input", class_="pick")]
    assert sorted(listed) == sorted(shown.ids.values()) and boxes == listed
    assert page.one("a", id="compare-link").text == "Compare (0)"


def test_a_person_ticks_runs_on_the_jobs_list_and_the_leaderboard_then_compares_them(shown: Shown) -> None:
    ids = shown.ids
    link = "document.getElementById('compare-link')"
    with LivePage(f"{shown.base_url}/#/") as page:
        page.wait(f"document.querySelectorAll('input.pick').length === {len(ids)}", what="a box by every job")
        page.click(f"input.pick[data-job='{ids['fast']}']")
        page.click(f"input.pick[data-job='{ids['deep']}']")
        assert page.evaluate(f"{link}.textContent") == "Compare (2)"

        # The page redraws itself every 2 s: the ticks stay.
        shown_at = page.evaluate("document.getElementById('updated').textContent")
        page.wait(f"document.getElementById('updated').textContent !== {json.dumps(shown_at)}", what="a refresh")
        assert page.evaluate("[...document.querySelectorAll('input.pick:checked')].map(b => b.dataset.job)") == [
            ids["fast"], ids["deep"]]

        page.click("#nav-board")  # the leaderboard shows the same runs ticked, and ticks more
        page.wait("!!document.querySelector('#time-to-gpt2 input.pick')", what="the leaderboard")
        ticked = "[...document.querySelectorAll('#time-to-gpt2 input.pick:checked')].map(b => b.dataset.job)"
        assert page.evaluate(ticked) == [ids["fast"], ids["deep"]]
        page.click(f"#time-to-gpt2 input.pick[data-job='{ids['slow']}']")
        assert page.evaluate(f"{link}.textContent") == "Compare (3)"

        page.click("#compare-link")
        curves = "[...document.querySelectorAll('#compare-plot path.curve')].map(p => p.dataset.job)"
        assert page.wait(f"{curves}.length === 3 && {curves}") == [ids["fast"], ids["deep"], ids["slow"]]
        page.click("#x-time")
        heading = "document.querySelector('#compare h2').textContent"
        page.wait(f"{heading}.endsWith('by wall time')", what="the wall-time plot")
        assert page.evaluate(curves) == [ids["fast"], ids["deep"], ids["slow"]]
        page.screenshot("compare-picked.png")
