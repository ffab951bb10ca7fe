"""A fork's run from a user's seat, and the score it comes back with: `--repo`, the commit the
fork's ref was pinned to, and the results read from what the fork's own base_train printed."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from speedq import config
from speedq.notify import describe
from speedq.schemas import Attempt, JobRecord, JobSpec, Outcome, RunResults
from speedq.sim.repo import ensure_sim_repo
from tests.conftest import Speedq

FORK_URL = "https://github.com/alice/nanochat"
FORK_MFU = "51.25"  # the fork's change: its base_train prints another bf16_mfu than the sim's


def make_fork(path: Path) -> str:
    """A fork of the sim nanochat with one commit of its own on top; returns that commit."""
    ensure_sim_repo(path)
    script = path / "scripts" / "base_train.py"
    script.write_text(script.read_text().replace("bf16_mfu: 48.12", f"bf16_mfu: {FORK_MFU}"))
    git = ["git", "-C", str(path), "-c", "user.name=alice", "-c", "user.email=alice@example.invalid"]
    subprocess.run([*git, "commit", "--quiet", "-am", "alice's faster base_train"], check=True)
    return subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()


def github_is(path: Path) -> dict[str, str]:
    """git's own url.<base>.insteadOf, in the environment: the fork's https URL is fetched from a
    local repository, so the worker, runner and git run exactly as for GitHub, offline."""
    return {"GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": f"url.{path}.insteadOf", "GIT_CONFIG_VALUE_0": FORK_URL}


def base_train_lines(log: str) -> list[str]:
    """The log's lines from the base_train stage (the runner heads each stage with a line)."""
    section = log.split("---- stage base_train:")[-1]
    return section.split("\n---- stage ")[0].splitlines()


def test_a_forks_run_uses_its_commit_and_reports_its_results(speedq: Speedq, tmp_path: Path) -> None:
    fork = tmp_path / "alice-nanochat"
    commit = make_fork(fork)
    speedq.start_worker(env=github_is(fork))
    job = speedq.submit("--team", "alice", "--repo", FORK_URL, "--model", "d4", "--gpu", "H100:2",
                        "--train-arg", "num-iterations=16", "--save-every", "5")

    record = speedq.wait_state(job, "succeeded", "failed", timeout=120)

    assert record["state"] == "succeeded", record["error"]
    assert record["spec"]["repo"] == FORK_URL and record["spec"]["repo_ref"] == "HEAD"
    assert record["nanochat_commit"] == commit  # the fork's default branch, pinned
    assert record["run_dir"].endswith("runs/alice/alice-nanochat-d4")  # a run of its own, not karpathy's d4
    log = Path(record["log"]["path"]).read_text()
    lines = base_train_lines(log)
    res = record["results"]
    assert res["mfu_pct"] == float(FORK_MFU)  # the fork's code ran
    tok_s = [int(m[2].replace(",", "")) for line in lines
             if (m := re.match(r"step (\d+)/.*tok/sec: ([\d,]+)", line)) and int(m[1]) > 10]
    assert len(tok_s) == 5 and res["tokens_per_s"] == pytest.approx(sum(tok_s) / len(tok_s))
    bpb = [float(line.rsplit(" ", 1)[1]) for line in lines if "| Validation bpb:" in line]
    assert res["val_bpb"] == bpb[-1] and res["min_val_bpb"] == min(bpb)
    core = [float(line.rsplit(" ", 1)[1]) for line in lines if "| CORE metric:" in line]
    assert res["core_metric"] == core[-1]
    assert f"Total number of training tokens: {res['tokens']:,}" in lines
    assert f"Total training FLOPs estimate: {res['total_flops']:e}" in lines
    assert f"Total training time: {res['training_time_s'] / 60:.2f}m" in lines
    assert res["steps"] == 16 and (res["model"], res["gpu_type"], res["gpu_count"]) == ("d4", "H100", 2)
    hours = sum(2 * (a["ended_at"] - a["started_at"]) for a in record["attempts"]) / 3600
    assert res["gpu_hours"] == pytest.approx(hours)
    assert res["cost_usd"] == round(hours * config.DEFAULT_GPU_PRICES["H100"], 2)
    assert res["beats_gpt2"] is False

    shown = speedq.run("status", job, check=True).stdout
    assert f"alice/nanochat@{commit[:7]}" in shown and "results" in shown and f"{FORK_MFU}%" in shown
    assert f"{res['val_bpb']:.4f}" in shown and f"${res['cost_usd']:,.2f}" in shown
    listed = speedq.run("ls", check=True).stdout
    assert f"alice/nanochat@{commit[:7]}" in listed and f"{res['core_metric']:.4f}/{res['val_bpb']:.4f}" in listed
    assert json.loads(speedq.run("ls", "--json", check=True).stdout)[0]["results"] == res

    # Where a speedrunner looks next: the board indexed the run when its worker recorded results.
    board = json.loads(speedq.run("leaderboard", "--model", "d4", "--json", check=True).stdout)
    assert board["time_to_gpt2"] == []  # 2 GPUs: not a time-to-GPT-2 entry, whatever its CORE
    assert [(row["job"], row["source"], row["results"]) for row in board["best_bpb"]] == [
        (job, f"alice/nanochat@{commit[:7]}", res)]


BAD_REPOS = [
    ("http://github.com/alice/nanochat", "https://"),
    ("git@github.com:alice/nanochat.git", "https://"),
    ("ext::sh -c touch% /tmp/pwned", "whitespace"),
    ("ext::sh%20-c%20id", "https://"),
    ("-uhttps://github.com/alice/nanochat", "https://"),
    ("file:///etc", "https://"),
    ("/srv/nanochat", "https://"),
    ("https://alice:hunter2@github.com/alice/nanochat", "credentials"),
    ("https://github.com:8443/alice/nanochat", "port"),
    ("https://github.com/alice", "OWNER/REPO"),
    ("https://github.com/alice/../bob/nanochat", "'..'"),
    ("https://github.com/-alice/nanochat", "'-alice'"),
    ("https://github.com/alice/nanochat?ref=x", "query"),
    ("https://github.com/alice/na nochat", "whitespace"),
    ("https://github.com/alice/$(id)", "'$(id)'"),
    ("https://gitlab.com/alice/nanochat", "SPEEDQ_REPO_HOSTS"),
]


@pytest.mark.parametrize(("url", "rule"), BAD_REPOS, ids=[u[:40] for u, _ in BAD_REPOS])
def test_a_bad_repo_is_refused_at_submit_in_one_line(speedq: Speedq, url: str, rule: str) -> None:
    done = speedq.run("submit", "--team", "alice", "--repo", url)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "repo" in lines[0] and rule in lines[0], done.stderr
    assert speedq.run("ls", "--json", check=True).stdout.strip() == "[]"
    # The dry run checks what the submit checks: it must not say "would be queued"
    dry = speedq.run("submit", "--team", "alice", "--repo", url, "--dry-run")
    assert (dry.returncode, dry.stdout, dry.stderr) == (2, "", done.stderr)


def test_the_operator_allows_other_hosts(speedq: Speedq) -> None:
    speedq.env["SPEEDQ_REPO_HOSTS"] = "gitlab.com, codeberg.org"
    done = json.loads(speedq.run("submit", "--team", "alice", "--repo", "https://gitlab.com/alice/group/nanochat.git",
                                 "--json", check=True).stdout)
    assert done["spec"]["run_name"] == "gitlab-com-alice-group-nanochat-d12"
    refused = speedq.run("submit", "--team", "alice", "--repo", FORK_URL)  # github.com is no longer listed
    assert refused.returncode == 2 and "github.com is not allowed" in refused.stderr
    karpathy = speedq.run("submit", "--team", "alice", "--repo", config.NANOCHAT_REPO_URL, "--json", check=True)
    assert json.loads(karpathy.stdout)["spec"]["run_name"] == "d12"  # karpathy's is always allowed
    speedq.env["SPEEDQ_REPO_HOSTS"] = "https://github.com"
    bad = speedq.run("ls")
    assert bad.returncode == 2 and "SPEEDQ_REPO_HOSTS" in bad.stderr


def test_a_fork_and_karpathys_repo_with_the_same_model_are_different_runs() -> None:
    ours, theirs = JobSpec(team="t"), JobSpec(team="t", repo=FORK_URL, repo_ref="main")
    assert ours.run_key == "t/d12" and theirs.run_key == "t/alice-nanochat-d12"
    assert JobSpec(team="t", repo=FORK_URL, mode="smoke").run_name == "alice-nanochat-d12-smoke"
    long = JobSpec(team="t", repo=f"https://github.com/{'a' * 39}/{'b' * 60}", model="d20", mode="smoke")
    assert len(long.run_name or "") <= 63 and (long.run_name or "").endswith("-d20-smoke")


def test_the_success_notification_carries_the_results() -> None:
    """Synthetic figures of a run that beats GPT-2 (no CPU run gets there)."""
    spec = JobSpec(team="alice", repo=FORK_URL, repo_ref="main", model="d24")
    record = JobRecord(id="sq-9", spec=spec, nanochat_commit="0123456789abcdef" * 2 + "01234567",
                       attempts=[Attempt(number=1, backend="modal", gpu_count=8, started_at=0, ended_at=3 * 3600,
                                         outcome=Outcome.succeeded)])
    record.results = RunResults(training_time_s=10949.0, core_metric=0.2585, val_bpb=0.718, min_val_bpb=0.7178,
                                steps=5568, mfu_pct=52.3, tokens_per_s=1_100_000, model="d24", gpu_type="H100",
                                gpu_count=8, gpu_hours=24.0, cost_usd=94.8)
    text = describe(record, "succeeded")
    assert text.startswith("speedq sq-9 alice/alice-nanochat-d24 (alice/nanochat@0123456 d24 full on H100:8")
    for part in ("training time 182.48m", "CORE 0.2585 (beats GPT-2)", "val bpb 0.7180", "min val bpb 0.7178",
                 "5,568 steps", "MFU 52.30%", "1,100,000 tok/sec", "24.00 GPU-hours, $94.80"):
        assert part in text


def test_every_backend_fetches_the_jobs_repository(tmp_path: Path) -> None:
    """The request each backend hands its runner (the Modal app clones `repo` in its container)."""
    from speedq.backends.local import LocalBackend
    from speedq.backends.modal import ModalBackend

    mirror = str(tmp_path / "karpathy-mirror")
    local = LocalBackend(repo=mirror, runs_root=tmp_path, data_root=tmp_path, cache_root=tmp_path)
    modal = ModalBackend(app_name="a", volume_name="v")
    for backend, karpathys in ((local, mirror), (modal, config.NANOCHAT_REPO_URL)):
        fork = JobRecord(id="sq-1", spec=JobSpec(team="t", repo=FORK_URL, backend=backend.name))
        plain = JobRecord(id="sq-2", spec=JobSpec(team="t", backend=backend.name))
        assert backend.request(fork, 1).repo == FORK_URL and backend.request(fork, 1).commit == "HEAD"
        assert backend.request(plain, 1).repo == karpathys
