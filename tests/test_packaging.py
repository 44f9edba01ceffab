"""The distribution: what the wheel holds and that it imports once installed.

The dev venv imports worldflow through an editable install; these tests check
the other path, a real wheel in a fresh venv. They build offline
(``--no-build-isolation``, with the setuptools and wheel of the dev extras) and
install with ``--no-deps --no-index``, so they need no network.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Builds wheels and installs them with pip: minutes, not seconds, on a loaded machine.
pytestmark = pytest.mark.timeout(300)

REPO = Path(__file__).resolve().parents[1]

# What a build needs from the repo; the rest (tests/, examples/, .git, .venv,
# build/ ...) is left out of the scratch copy, which also keeps stale files in
# the repo's own build/ out of the wheel.
_COPY_IGNORE = shutil.ignore_patterns(
    ".git",
    ".venv",
    ".venv-*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    ".mypy_cache",
    ".ruff_cache",
    ".pytest_cache",
    ".worldflow",
)


def _pyproject() -> dict[str, Any]:
    with (REPO / "pyproject.toml").open("rb") as f:
        return tomllib.load(f)


def _package_dirs() -> dict[str, Path]:
    """Each package listed in pyproject.toml, mapped to its folder in the repo."""
    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    package_dir: dict[str, str] = setuptools_cfg["package-dir"]
    result: dict[str, Path] = {}
    for package in setuptools_cfg["packages"]:
        # The longest mapped prefix wins: worldflow.worlds.local -> worlds/local.
        for prefix in sorted(package_dir, key=len, reverse=True):
            if package == prefix or package.startswith(prefix + "."):
                rest = package[len(prefix) :].lstrip(".").split(".")
                result[package] = REPO.joinpath(package_dir[prefix], *filter(None, rest))
                break
        else:
            raise AssertionError(f"{package} is under no package-dir mapping")
    return result


def test_every_package_folder_is_listed_in_pyproject() -> None:
    """A folder with an __init__.py under core/ or worlds/ that pyproject.toml
    does not list would be importable in dev but missing from the wheel."""
    listed = _package_dirs()
    for package, folder in listed.items():
        assert (folder / "__init__.py").is_file(), f"{package}: no {folder}/__init__.py"
    on_disk = {
        init.parent
        for top in ("core", "worlds")
        for init in (REPO / top).rglob("__init__.py")
        if "__pycache__" not in init.parts
    }
    missing = sorted(str(d.relative_to(REPO)) for d in on_disk - set(listed.values()))
    assert not missing, f"add these to [tool.setuptools] packages: {missing}"


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    for backend in ("setuptools", "wheel"):
        try:
            __import__(backend)
        except ImportError:  # pragma: no cover - the dev extras bring both
            pytest.fail(f"{backend} is not installed: install the project with [dev]")
    src = tmp_path_factory.mktemp("src") / "worldflow"
    shutil.copytree(REPO, src, ignore=_COPY_IGNORE, symlinks=True)
    out = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-index",
            "--no-build-isolation",
            "--wheel-dir",
            str(out),
            str(src),
        ],
        check=True,
        timeout=120,
    )
    (built,) = out.glob("worldflow-*.whl")
    yield built


@pytest.mark.slow
def test_wheel_contents(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        dist_info = next(n.split("/")[0] for n in names if n.endswith(".dist-info/METADATA"))
        entry_points = zf.read(f"{dist_info}/entry_points.txt").decode()

    # Only the package and its metadata: no tests/, examples/, bench/, core/ ...
    assert {n.split("/")[0] for n in names} == {"worldflow", dist_info}
    assert "worldflow/py.typed" in names
    assert "worldflow/__init__.py" in names
    # The web UI's page assets are package data (pyproject.toml [tool.setuptools.package-data]).
    assert {"worldflow/web/static/app.js", "worldflow/web/static/style.css"} <= set(names)
    for package in _package_dirs():
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    assert "worldflow = worldflow.cli:main" in entry_points


@pytest.mark.slow
def test_wheel_installs_and_imports_in_a_fresh_venv(wheel: Path, tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    # No pip in the new venv: the dev venv's pip installs into it (--python).
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    _pip_install(python, str(wheel))

    # Without its dependencies (rich), importing the core and the local world
    # must still work. -I: no cwd, PYTHONPATH or user site on sys.path.
    probe = (
        "import importlib.metadata, json, sysconfig\n"
        "import worldflow, worldflow.worlds.local\n"
        "print(json.dumps({\n"
        "    'file': worldflow.__file__,\n"
        "    'local': worldflow.worlds.local.__file__,\n"
        "    'purelib': sysconfig.get_path('purelib'),\n"
        "    'version': getattr(worldflow, '__version__', None),\n"
        "    'dist_version': importlib.metadata.version('worldflow'),\n"
        "}))\n"
    )
    proc = _run_python(python, probe, tmp_path)
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)

    purelib = Path(info["purelib"]).resolve()
    assert purelib.is_relative_to(venv.resolve())
    assert Path(info["file"]).resolve() == purelib / "worldflow" / "__init__.py"
    assert Path(info["local"]).resolve() == purelib / "worldflow/worlds/local/__init__.py"
    assert (purelib / "worldflow" / "py.typed").is_file()
    if info["version"] is not None:
        assert info["version"] == info["dist_version"], (
            "worldflow.__version__ and the version in pyproject.toml differ"
        )


def _isolated_env() -> dict[str, str]:
    """The environment without what would point Python or worldflow at the dev set-up."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "WORLDFLOW_"))}
    env.pop("VIRTUAL_ENV", None)
    return env


def _run_python(python: Path, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(python), "-I", "-c", code],
        cwd=cwd,
        env=_isolated_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )


def _fresh_venv(path: Path) -> Path:
    """A venv without pip that can import the dev venv's third-party packages (rich)."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(path)], check=True)
    python = path / "bin" / "python"
    purelib = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    deps = Path(__import__("rich").__file__).resolve().parents[1]
    # Appended after the venv's own site-packages, so worldflow itself comes from the install.
    Path(purelib, "zz_dev_dependencies.pth").write_text(f"{deps}\n")
    return python


def _pip_install(python: Path, *args: str) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(python),
            "install",
            "--quiet",
            "--no-deps",
            "--no-index",
            *args,
        ],
        check=True,
        timeout=180,
    )


def _command_works(venv: Path, cwd: Path) -> None:
    env = _isolated_env()
    done = subprocess.run(
        [str(venv / "bin" / "worldflow"), "--version"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stdout.strip()) == (0, "worldflow 0.1.0"), done.stderr
    listed = subprocess.run(
        [
            str(venv / "bin" / "worldflow"),
            "runs",
            "list",
            "--json",
            "--data-dir",
            str(cwd / "data"),
        ],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout) == {"runs": [], "cursor": None}


@pytest.mark.slow
def test_the_worldflow_command_of_an_installed_wheel(wheel: Path, tmp_path: Path) -> None:
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, str(wheel))
    _command_works(tmp_path / "venv", tmp_path)
    _package_commands_work(tmp_path / "venv", tmp_path / "project")


FLOWS = """\
import worldflow as wf


@wf.step
async def double(x: int) -> int:
    return 2 * x


@wf.workflow
async def twice(x: int) -> int:
    return await double(x)
"""


def _package_commands_work(venv: Path, project: Path) -> None:
    """`worldflow package aws|gcp` from this install: worldflow's whole wheel goes into
    the zip and the container's context, and each is checked to import on its own."""
    (project / "shop").mkdir(parents=True)
    (project / "shop" / "__init__.py").write_text("")
    (project / "shop" / "flows.py").write_text(FLOWS)
    env = {**_isolated_env(), "WORLDFLOW_GCP_PROJECT": "acme", "WORLDFLOW_GCP_LOCATION": "eu"}

    def worldflow(*args: str) -> Any:
        done = subprocess.run(
            [str(venv / "bin" / "worldflow"), *args, "--json"],
            cwd=project,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    aws = worldflow("package", "aws", "shop.flows", "--no-deps", "--out", "build-aws")
    names = set(zipfile.ZipFile(project / aws["zip"]).namelist())
    gcp = worldflow("package", "gcp", "--modules", "shop.flows")
    in_wheel = set(zipfile.ZipFile(project / gcp["wheel"]).namelist())
    for package in _package_dirs():
        init = package.replace(".", "/") + "/__init__.py"
        assert init in names, f"{init} is not in the Lambda zip"
        assert init in in_wheel, f"{init} is not in the wheel of the container's context"
    assert "shop/flows.py" in names


@pytest.mark.slow
def test_a_plain_editable_install(tmp_path: Path) -> None:
    """`pip install -e .` in its default mode (an import hook maps worlds/ under worldflow)."""
    src = tmp_path / "src"
    shutil.copytree(REPO, src, ignore=_COPY_IGNORE, symlinks=True)
    python = _fresh_venv(tmp_path / "venv")
    _pip_install(python, "--no-build-isolation", "-e", str(src))
    probe = "import worldflow, worldflow.worlds.local, worldflow.testing; print(worldflow.worlds.local.__file__)"
    done = _run_python(python, probe, tmp_path)
    assert done.returncode == 0, done.stderr
    assert (
        Path(done.stdout.strip()).resolve() == (src / "worlds" / "local" / "__init__.py").resolve()
    )
    _command_works(tmp_path / "venv", tmp_path)
    _package_commands_work(tmp_path / "venv", tmp_path / "project")
