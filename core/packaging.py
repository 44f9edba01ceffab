"""Packaging worldflow for a host: its own wheel, and a check that a build imports.

The cloud worlds' ``worldflow package`` commands put worldflow into what they
build (a Lambda zip, a container's context) from worldflow's *wheel*, never by
copying the folder this process imports it from: an editable install's folder
is an import hook or a link tree, not the package, and a copy of it missed
subpackages. :func:`worldflow_wheel` makes that wheel from wherever worldflow
is installed:

- from a source checkout or an editable install (the folder holding
  ``pyproject.toml``): built with setuptools' build backend, in a copy of the
  sources, so the checkout is left as it was;
- from a wheel install (site-packages): the installed files, as listed in the
  distribution's ``RECORD``, packed again into the same wheel.

:func:`check_imports` then imports the build's entry points in a fresh
interpreter (``-I -S``: no site-packages, no user paths, no current folder)
that sees only the build and, from this environment, the distributions the
host provides itself; it fails, saying what was missing or imported from
elsewhere, when the build is incomplete.
"""

from __future__ import annotations

import base64
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["PackagingError", "check_imports", "find_python", "source_root", "worldflow_wheel"]


class PackagingError(Exception):
    """A build could not be made, or does not import."""


def source_root() -> Path | None:
    """The folder with worldflow's ``pyproject.toml`` (a checkout or an editable
    install), or None for an install from a wheel."""
    import worldflow

    here = Path(worldflow.__file__).resolve().parent  # core/ (symlinks followed)
    root = here.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and (root / "core").is_dir() and (root / "worlds").is_dir():
        import tomllib

        try:
            name = tomllib.loads(pyproject.read_text())["project"]["name"]
        except (tomllib.TOMLDecodeError, KeyError, OSError):
            return None
        if name == "worldflow":
            return root
    return None


def worldflow_wheel(out: Path) -> Path:
    """Write worldflow's wheel into ``out`` (made if missing); returns its path."""
    out.mkdir(parents=True, exist_ok=True)
    for old in out.glob("worldflow-*.whl"):
        old.unlink()
    root = source_root()
    return _build_from_source(root, out) if root is not None else _repack_installed(out)


_SOURCES = ("core", "worlds", "pyproject.toml", "README.md", "LICENSE")


def _build_from_source(root: Path, out: Path) -> Path:
    with tempfile.TemporaryDirectory(prefix="worldflow-wheel-") as tmp:
        src = Path(tmp) / "src"
        src.mkdir()
        for name in _SOURCES:
            path = root / name
            if path.is_dir():
                shutil.copytree(path, src / name, ignore=shutil.ignore_patterns("__pycache__"))
            elif path.is_file():
                shutil.copy2(path, src / name)
        if importlib.util.find_spec("setuptools") is not None:  # the backend, here already
            command = [
                sys.executable,
                "-c",
                "import sys; from setuptools import build_meta as b; print(b.build_wheel(sys.argv[1]))",
                str(out.resolve()),
            ]
        else:  # build it as pip does, fetching setuptools
            command = [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--no-deps",
                "--disable-pip-version-check",
                "-w",
                str(out.resolve()),
                str(src),
            ]
        done = subprocess.run(command, cwd=src, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            detail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            raise PackagingError(
                f"building worldflow's wheel from {root} failed: " + " / ".join(detail)
            )
    wheels = sorted(out.glob("worldflow-*.whl"))
    if len(wheels) != 1:
        raise PackagingError(f"building worldflow's wheel left {len(wheels)} wheels in {out}")
    return wheels[0]


def _repack_installed(out: Path) -> Path:
    """The wheel an installed worldflow came from, packed again from its RECORD."""
    try:
        dist = importlib.metadata.distribution("worldflow")
    except importlib.metadata.PackageNotFoundError:
        raise PackagingError(
            "worldflow is neither installed as a distribution nor run from its source "
            "folder: install it (pip install worldflow, or pip install -e <checkout>)"
        ) from None
    files = dist.files or []
    info_dir = f"worldflow-{dist.version}.dist-info"
    skip_info = {"RECORD", "INSTALLER", "REQUESTED", "direct_url.json"}
    chosen = []
    for f in files:
        parts = f.parts
        if "__pycache__" in parts or f.suffix in (".pyc", ".pyo"):
            continue
        if parts[0] == "worldflow" or (
            parts[0].endswith(".dist-info") and parts[-1] not in skip_info
        ):
            chosen.append(f)
    if not any(f.parts[0] == "worldflow" for f in chosen):
        raise PackagingError(
            "the installed worldflow lists no package files in its RECORD "
            "(an editable install whose source folder moved?): reinstall it"
        )
    wheel = out / f"worldflow-{dist.version}-py3-none-any.whl"
    record: list[str] = []
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in sorted(chosen, key=str):
            data = Path(str(f.locate())).read_bytes()
            name = (
                "/".join((info_dir, *f.parts[1:]))
                if f.parts[0].endswith(".dist-info")
                else str(f.as_posix())
            )
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            record.append(f"{name},sha256={digest.decode()},{len(data)}")
            archive.writestr(name, data)
        record.append(f"{info_dir}/RECORD,,")
        archive.writestr(f"{info_dir}/RECORD", "\n".join(record) + "\n")
    return wheel


def find_python(version: str) -> str | None:
    """An interpreter of this Python version ("3.12") that runs, or None: this one,
    ``python3.12`` on the PATH, or one of pyenv's (a pyenv shim that would refuse
    is skipped)."""
    if f"{sys.version_info.major}.{sys.version_info.minor}" == version:
        return sys.executable
    candidates = [shutil.which(f"python{version}")]
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates += [str(p) for p in sorted(pyenv.glob(f"{version}.*/bin/python{version}"))]
    for candidate in candidates:
        if candidate is None:
            continue
        try:
            done = subprocess.run(
                [candidate, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            )
        except OSError:
            continue
        if done.returncode == 0 and done.stdout.strip() == version:
            return candidate
    return None


_PROBE = r"""
import importlib, json, os, sys
spec = json.loads(sys.argv[1])
sys.path[:0] = spec["path"] + spec["provided_path"]
failed = []
for name in spec["modules"]:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failed.append(f"import {name}: {type(exc).__name__}: {exc}")
limit = spec["step_limit"]
if limit is not None and not failed:
    from worldflow.world import step_limit_problems
    failed += step_limit_problems(limit[0], limit[1])
inside = [os.path.realpath(p) + os.sep for p in spec["path"]]
provided = set(spec["provided"])
only = spec["from_build"]
outside = []
for name, module in sorted(sys.modules.items()):
    top = name.partition(".")[0]
    where = getattr(module, "__file__", None)
    if where is None or top in sys.stdlib_module_names or top in provided:
        continue
    if only is not None and top not in only:
        continue
    real = os.path.realpath(where)
    if real.startswith(sys.base_prefix) and "site-packages" not in real:
        continue  # the interpreter's own
    if not any(real.startswith(p) for p in inside):
        outside.append(f"{name} ({where})")
print(json.dumps({"failed": failed, "outside": outside}))
"""


def check_imports(
    path: Sequence[Path],
    modules: Sequence[str],
    *,
    provided: Sequence[str] = (),
    python: str | None = None,
    env: dict[str, str] | None = None,
    step_limit: tuple[float, str] | None = None,
    from_build: Sequence[str] | None = None,
) -> None:
    """Import ``modules`` in a fresh interpreter that sees only ``path`` (folders or
    zips: the build) and, from this environment, the top-level modules named in
    ``provided`` (what the host installs itself). Raises :class:`PackagingError`
    if an import fails or a module (other than the standard library's and the
    provided ones) came from anywhere but the build. With ``step_limit``
    (seconds, what the limit is), a step whose timeout is longer is a problem too
    (:func:`worldflow.world.step_limit_problems`).

    ``from_build`` (top-level names): the interpreter sees this environment's
    site-packages too (the host installs the rest, as a container build does),
    and only these modules must come from the build."""
    provided_path: list[str] = []
    for name in provided:
        try:
            found = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            found = None
        if found is not None and found.origin:
            origin = Path(found.origin)
            folder = origin.parent.parent if origin.name == "__init__.py" else origin.parent
            if str(folder) not in provided_path:
                provided_path.append(str(folder))
    spec = {
        "path": [str(Path(p).resolve()) for p in path],
        "provided_path": provided_path,
        "provided": list(provided),
        "modules": list(modules),
        "step_limit": step_limit,
        "from_build": None if from_build is None else list(from_build),
    }
    with tempfile.TemporaryDirectory() as cwd:  # nothing importable from the current folder
        done = subprocess.run(
            [
                python or sys.executable,
                *(("-I", "-S") if from_build is None else ("-I",)),
                "-B",
                "-c",
                _PROBE,
                json.dumps(spec),
            ],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            env={**os.environ, **(env or {})},
            check=False,
        )
    if done.returncode != 0:
        raise PackagingError(
            f"the build's import check crashed: {done.stderr.strip().splitlines()[-1:]}"
        )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    problems = report["failed"] + [
        f"imported from outside the build: {m}" for m in report["outside"]
    ]
    if problems:
        raise PackagingError("the build does not import on its own: " + "; ".join(problems[:5]))
