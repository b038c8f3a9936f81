"""pyproject.toml, environment.yml and binder/ must describe the same dependencies, and torch stays pinned."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from importlib.metadata import version
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TORCH_PIN = "torch==2.13.0"


def pyproject_dependencies() -> list[str]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]


def conda_pip_dependencies(path: Path) -> list[str]:
    """The package requirements in an environment file's pip section (pip options such as index URLs left out)."""
    spec = yaml.safe_load(path.read_text())
    pip_sections = [d["pip"] for d in spec["dependencies"] if isinstance(d, dict) and "pip" in d]
    assert len(pip_sections) == 1, f"{path} needs exactly one pip section"
    return [line for line in pip_sections[0] if not line.startswith("-")]


def conda_packages(path: Path) -> list[str]:
    spec = yaml.safe_load(path.read_text())
    return [d for d in spec["dependencies"] if isinstance(d, str)]


@pytest.mark.parametrize("env_file", ["environment.yml", "binder/environment.yml"])
def test_environment_file_matches_pyproject(env_file):
    assert conda_pip_dependencies(ROOT / env_file) == pyproject_dependencies(), (
        f"{env_file} has drifted from pyproject.toml: copy [project].dependencies into its pip section"
    )
    assert set(conda_packages(ROOT / env_file)) == {"python=3.11", "pip"}


def test_binder_installs_stemkit_itself():
    post_build = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install --no-deps -e ." in post_build
    assert os.access(ROOT / "binder" / "postBuild", os.X_OK)


def test_torch_is_pinned_everywhere():
    assert TORCH_PIN in pyproject_dependencies()
    constraints = [line.strip() for line in (ROOT / "constraints.txt").read_text().splitlines()]
    assert TORCH_PIN in constraints
    makefile = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in makefile
    assert version("torch").startswith("2.13.0")


def test_ci_runs_make_test():
    run = (ROOT / ".ci" / "run").read_text()
    assert "make test" in run and "set -euo pipefail" in run


def test_editable_install_never_changes_torch(tmp_path):
    """Resolve `pip install -e .` in this environment and check that pip would leave torch alone."""
    report = tmp_path / "report.json"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", str(report),
         "-c", str(ROOT / "constraints.txt"), "-e", str(ROOT)],
        check=True, cwd=ROOT, timeout=600,
    )
    planned = {item["metadata"]["name"].lower(): item["metadata"]["version"] for item in json.loads(report.read_text())["install"]}
    assert "torch" not in planned, f"pip would install torch {planned.get('torch')}"


def test_readme_binder_badge_opens_the_repository_notebooks():
    """The badge launches Binder on pyproject's repository and opens a notebook that exists."""
    import re

    repository = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["urls"]["Repository"]
    owner_name = repository.removeprefix("https://github.com/")
    badge = re.search(r"\[!\[Binder\]\(https://mybinder\.org/badge_logo\.svg\)\]\((\S+)\)",
                      (ROOT / "README.md").read_text())
    assert badge, "README.md lacks the Binder badge [![Binder](https://mybinder.org/badge_logo.svg)](...)"
    link = badge.group(1)
    assert link.startswith(f"https://mybinder.org/v2/gh/{owner_name}/HEAD?urlpath=lab/tree/"), (
        f"the badge ({link}) does not launch {repository}: make it follow [project.urls] Repository")
    notebook = link.split("urlpath=lab/tree/", 1)[1]
    assert (ROOT / notebook).is_file(), f"the badge opens {notebook}, which does not exist"
