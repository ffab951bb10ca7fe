"""The Modal app as deployed: its functions and their options, the image they run in, the old
script's `modal run` command line, and the request a worker sends.

Importing the app needs no token or network.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import modal
import pytest

from speedq import config, settings
from speedq.gpu import modal_app as m

FUNCTIONS = {"run_speedrun", "test_10_steps", "prepare_data", "resolve_ref"}


# -- the app as deployed ------------------------------------------------------------------------


def test_the_app_and_its_functions() -> None:
    assert isinstance(m.app, modal.App)
    assert m.app.name == settings.get().modal_app
    assert {name for name in FUNCTIONS if isinstance(getattr(m, name), modal.Function)} == FUNCTIONS


@pytest.mark.parametrize(
    "name, gpus, timeout",
    [
        ("run_speedrun", [("H100", 8)], 24 * 3600),
        ("test_10_steps", [("H100", 8)], m.SMOKE_TIMEOUT_S),
        ("prepare_data", [], m.PREPARE_TIMEOUT_S),
    ],
)
def test_function_options(name: str, gpus: list, timeout: int) -> None:
    fn = getattr(m, name)
    info = fn.info()  # local: no network for an app defined here
    assert info.gpus == gpus
    assert info.timeout == timeout
    assert info.single_use_containers is True
    mount = info.volumes[config.MODAL_VOLUME_MOUNT]
    assert mount.name == settings.get().modal_volume and not mount.read_only


def build_steps(image: modal.Image) -> list[list[str]]:
    """The Dockerfile commands of each layer, base first, as the installed modal builds them."""
    import typing

    import modal._image

    version = max(v for v in typing.get_args(modal._image.ImageBuilderVersion) if v[0].isdigit())
    inner = modal.Image._sync_synchronizer._translate_in(image)  # private: the layers' loaders
    layers = []
    while inner is not None:
        scope = inspect.getclosurevars(inner._load).nonlocals
        if "mount" in scope:  # add_local_python_source: files, no build step
            inner = scope["base_image"]
            continue
        make = scope["dockerfile_function"]
        layers.append(make(version).commands if make else [])
        inner = scope["base_images"].get("base")
    return layers[::-1]


def test_image_takes_torch_only_from_the_cuda_index_and_the_rest_of_nanochat_from_pypi() -> None:
    import shlex

    import tomllib

    pyproject = tomllib.loads((Path(__file__).parents[1] / "data" / "modal" / "nanochat-pyproject.toml").read_text())
    declared = pyproject["project"]["dependencies"]
    [torch_pin] = [d for d in declared if d.startswith("torch")]
    installs = [shlex.split(c.replace("$(command -v python)", "python"))
                for layer in build_steps(m.image) for c in layer if "uv pip install" in c]
    assert installs, "no uv pip install step"
    packages = [[a for a in argv[argv.index("install") + 1:] if not a.startswith("-") and a != "python"
                 and not a.startswith("https://")] for argv in installs]
    with_torch = [i for i, pkgs in enumerate(packages) if any(p.startswith("torch") for p in pkgs)]
    assert len(with_torch) == 1, packages
    torch_step = installs[with_torch[0]]
    assert packages[with_torch[0]] == [torch_pin]  # alone: nothing else is looked up on that index
    assert torch_step[torch_step.index("--index-url") + 1] == "https://download.pytorch.org/whl/cu128"
    for i, argv in enumerate(installs):
        assert "--extra-index-url" not in argv
        if i != with_torch[0]:
            assert "--index-url" not in argv and "--index-strategy" not in argv  # PyPI
    rest = {p for i, pkgs in enumerate(packages) if i != with_torch[0] for p in pkgs}
    assert {d for d in declared if d != torch_pin} <= rest
    assert any(p.startswith("pydantic") for p in rest)
    assert config.MODAL_VOLUME_MOUNT == "/vol"


@pytest.mark.parametrize("name", ["run_speedrun", "test_10_steps"])
def test_modal_run_options_of_the_old_script(name: str) -> None:
    """`modal run FILE::fn --model d12 --repo-ref master [--force-restart]` maps onto the parameters."""
    from modal.cli.run import _add_click_options, _get_cli_runnable_signature, _get_signature, safe_get_type_hints

    raw = getattr(m, name)._source_info_.raw_f  # what `modal run` reads
    sig = _get_cli_runnable_signature(_get_signature(raw), safe_get_type_hints(raw))
    import click

    @click.command()
    def cmd(**kwargs: object) -> None:
        cmd.seen = kwargs  # type: ignore[attr-defined]

    _add_click_options(cmd, sig.parameters)
    cmd.main(["--model", "d12", "--repo-ref", "master", "--force-restart"], standalone_mode=False)
    seen = cmd.seen  # type: ignore[attr-defined]
    assert seen["model"] == "d12" and seen["repo_ref"] == "master" and seen["force_restart"] is True
    assert seen["request"] == ""  # a worker passes request=<RunRequest JSON> instead
    parameters = ["model", "repo_ref", "force_restart", "team", "run_name", "request"]
    assert list(inspect.signature(raw).parameters) == parameters


def test_request_for_the_command_line(tmp_path: Path) -> None:
    req = m.request_for(
        mode="smoke", model="d12", repo_ref="master", force_restart=True, team=m.CLI_TEAM, run_name="",
        job_id="cli-fc-1", root=str(tmp_path),
    )
    assert req.run_dir == str(tmp_path / "runs" / "default" / "d12-smoke")
    assert req.data_dir == str(tmp_path / "data") and req.cache_dir == str(tmp_path / "cache")
    assert (req.nproc, req.gpu_type, req.commit, req.force_restart) == (8, "H100", "master", True)
    full = m.request_for(
        mode="full", model="d20", repo_ref="v1", force_restart=False, team="alpha", run_name="try-2",
        job_id="x", root="/vol",
    )
    assert full.run_dir == "/vol/runs/alpha/try-2"


def test_the_worker_request_matches_the_backends(tmp_path: Path) -> None:
    from speedq.backends.modal import ModalBackend
    from speedq.schemas import JobRecord, JobSpec

    rec = JobRecord(id="sq-1", spec=JobSpec(team="alpha", mode="smoke"), nanochat_commit="a" * 40)
    req = ModalBackend(timeout_s=1).request(rec, 1)
    assert m.parse_request(req.model_dump_json()) == req
    assert m.parse_request(json.loads(req.model_dump_json())) == req
