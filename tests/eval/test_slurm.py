"""scripts/slurm: submit_grid.sh's sbatch call against stubs, and the default grid on a real Slurm cluster."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SLURM = Path(__file__).resolve().parents[2] / "scripts" / "slurm"
SUBMIT = SLURM / "submit_grid.sh"
# The one-node test cluster has no GPUs and may have a single core: override the sbatch script's defaults.
LOCAL_RESOURCES = ["--gres=none", "--cpus-per-task=1"]


def stub(directory: Path, name: str, body: str) -> None:
    path = directory / name
    path.write_text(f"#!/usr/bin/env bash\n{body}\n")
    path.chmod(0o755)


def path_with(directory: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{directory}{os.pathsep}{os.environ['PATH']}"}


@pytest.mark.parametrize("script", ["eval_grid.sbatch", "submit_grid.sh", "local_cluster.sh"])
def test_script_parses(script: str) -> None:
    subprocess.run(["bash", "-n", str(SLURM / script)], check=True)


def test_submit_grid_asks_one_array_task_per_cell(tmp_path: Path) -> None:
    tmp_path = tmp_path.resolve()  # submit_grid.sh passes OUT on as a real path
    stub(tmp_path, "fastervlm", '[[ "$*" == "eval cells default --count" ]] && echo 7')
    stub(tmp_path, "sbatch", f'printf "%s\\n" "$@" > {tmp_path}/sbatch.args; echo 42')
    done = subprocess.run(
        ["bash", str(SUBMIT), "--throttle", "2", "default", "out", "-p", "gpu"],
        cwd=tmp_path,
        env=path_with(tmp_path),
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout == "42\n"
    out = tmp_path / "out"
    assert (tmp_path / "sbatch.args").read_text().splitlines() == [
        "--parsable",
        "--array=0-6%2",
        f"--output={out}/logs/%A_%a.out",
        "-p",
        "gpu",
        str(SLURM / "eval_grid.sbatch"),
        "default",
        str(out),
    ]
    assert (out / "logs").is_dir()


def test_submit_grid_refuses_an_empty_grid(tmp_path: Path) -> None:
    stub(tmp_path, "fastervlm", "echo 0")
    stub(tmp_path, "sbatch", "exit 1")
    done = subprocess.run(
        ["bash", str(SUBMIT), "default", str(tmp_path / "out")], env=path_with(tmp_path), capture_output=True, text=True
    )
    assert done.returncode == 1
    assert "expected a number of cells > 0" in done.stderr


@pytest.fixture
def slurm_cluster() -> None:
    """Skip without a cluster, unless FASTERVLM_REQUIRE_SLURM=1 (CI), where a missing cluster is a failure."""
    answers = shutil.which("sbatch") and subprocess.run(["sinfo", "-h"], capture_output=True).returncode == 0
    if not answers:
        message = (
            "no Slurm cluster answers sinfo; start the local one with "
            "`bash scripts/slurm/local_cluster.sh install && bash scripts/slurm/local_cluster.sh start`"
        )
        if os.environ.get("FASTERVLM_REQUIRE_SLURM") == "1":
            pytest.fail(f"FASTERVLM_REQUIRE_SLURM=1 but {message}")
        pytest.skip(message)


def this_fastervlm() -> dict[str, str]:
    """The environment with the fastervlm installed next to this interpreter first on PATH.

    Slurm tasks inherit the submitting environment (sbatch's default --export=ALL), PATH included, so they run
    this fastervlm too, even from a venv that was not activated.
    """
    return path_with(Path(sys.executable).parent)


def submit_default_grid(out: Path) -> str:
    """Submit with --wait; return the array job's id once every task has ended."""
    done = subprocess.run(
        ["bash", str(SUBMIT), "--wait", "default", str(out), *LOCAL_RESOURCES],
        env=this_fastervlm(),
        capture_output=True,
        text=True,
        timeout=900,
    )
    logs = "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in sorted(out.glob("logs/*.out")))
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{logs}"
    return done.stdout.splitlines()[0]


def task_states(job: str) -> dict[int, tuple[str, str]]:
    """Array task -> (JobState, ExitCode) from slurmctld: there is no accounting database for sacct to ask."""
    shown = subprocess.run(["scontrol", "-o", "show", "job", job], capture_output=True, text=True, check=True).stdout
    fields = [dict(re.findall(r"(\w+)=(\S*)", line)) for line in shown.splitlines()]
    return {int(task["ArrayTaskId"]): (task["JobState"], task["ExitCode"]) for task in fields}


@pytest.mark.slurm
def test_default_grid_on_slurm(slurm_cluster: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    cells = subprocess.run(
        ["fastervlm", "eval", "cells", "default"], env=this_fastervlm(), capture_output=True, text=True, check=True
    ).stdout
    names = [line.split("\t")[1] for line in cells.splitlines()]
    results = [out / "cells" / name / "result.json" for name in names]

    job = submit_default_grid(out)
    assert task_states(job) == {index: ("COMPLETED", "0:0") for index in range(len(names))}
    assert [path for path in results if not path.is_file()] == []

    # Every cell is done: a second array's tasks all succeed and rewrite nothing.
    written = {path: path.stat().st_mtime_ns for path in results}
    again = submit_default_grid(out)
    assert task_states(again) == {index: ("COMPLETED", "0:0") for index in range(len(names))}
    assert {path: path.stat().st_mtime_ns for path in results} == written
