"""Building the Lambda zip (``worldflow package aws MODULE...``, see :mod:`._cli`).

The zip holds the project's top-level packages or modules that the named
workflow modules live in, worldflow itself (without what Lambda never runs:
the test helpers, the other clouds' worlds, the CLI), and the dependencies,
installed for Lambda's platform (manylinux, the function's Python) with
``pip install --target``. What the Lambda Python runtime already provides
(boto3, botocore and theirs) is left out, which keeps the zip small. Next to
it goes the SAM template; ``sam deploy`` uploads the zip and creates the stack.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

__all__ = ["build"]

#: Distributions the Lambda Python runtime ships: never put them in the zip.
PROVIDED = (
    "boto3",
    "botocore",
    "s3transfer",
    "jmespath",
    "dateutil",
    "python_dateutil",
    "six",
    "urllib3",
)
#: worldflow's dependencies on Lambda (rich is only for the CLI, which Lambda never runs).
DEPENDENCIES = ("aws-lambda-powertools[tracer]",)
#: Parts of worldflow a Lambda function never imports.
_SKIP = ("testing", "cli", "web", "worlds/gcp", "worlds/aws/testing.py")


def _ignore(directory: str, names: list[str]) -> set[str]:
    return {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}


def _copy_project(modules: list[str], source: Path, target: Path) -> list[str]:
    copied: list[str] = []
    for module in modules:
        top = module.split(".")[0]
        if top in copied:
            continue
        if (source / top).is_dir():
            shutil.copytree(source / top, target / top, ignore=_ignore)
        elif (source / f"{top}.py").is_file():
            shutil.copy2(source / f"{top}.py", target / f"{top}.py")
        else:
            raise FileNotFoundError(
                f"module {module!r}: neither {top}/ nor {top}.py is in {source} "
                "(run `worldflow package aws` from your project's root)"
            )
        copied.append(top)
    return copied


def _copy_worldflow(target: Path) -> None:
    import worldflow

    package = Path(worldflow.__file__).resolve().parent
    if not (package / "worlds").exists():  # an editable install's link tree: follow it
        package = Path(worldflow.__file__).parent
    shutil.copytree(package, target / "worldflow", ignore=_ignore, symlinks=False)
    for skip in _SKIP:
        path = target / "worldflow" / skip
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _install_dependencies(target: Path, python: str, requirements: str | None) -> None:
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "--target",
        str(target),
        "--platform",
        "manylinux2014_x86_64",
        "--implementation",
        "cp",
        "--python-version",
        python,
        "--only-binary=:all:",
        *DEPENDENCIES,
    ]
    if requirements:
        command += ["-r", requirements]
    subprocess.run(command, check=True)
    for entry in list(target.iterdir()):
        name = entry.name.split("-")[0].removesuffix(".py").lower()
        if name in PROVIDED or entry.name in ("bin", "__pycache__"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()


def _zip(folder: Path, archive: Path) -> None:
    """A reproducible zip: sorted entries, fixed times (an unchanged build uploads nothing)."""
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED, compresslevel=9) as out:
        for path in sorted(folder.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                info = zipfile.ZipInfo(str(path.relative_to(folder)), (1980, 1, 1, 0, 0, 0))
                info.external_attr = 0o644 << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                out.writestr(info, path.read_bytes())


def build(
    modules: list[str],
    out: Path,
    *,
    source: Path | None = None,
    requirements: str | None = None,
    python: str = "3.12",
    deps: bool = True,
) -> Path:
    """Build ``out/function.zip`` and ``out/template.yaml``; returns the zip's path."""
    from importlib import resources

    source = source or Path.cwd()
    staging = out / "package"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _copy_project(modules, source, staging)
    _copy_worldflow(staging)
    if deps:
        _install_dependencies(staging, python, requirements)
    archive = out / "function.zip"
    _zip(staging, archive)
    template = resources.files("worldflow.worlds.aws").joinpath("template.yaml").read_text()
    (out / "template.yaml").write_text(template.replace("python3.12", f"python{python}"))
    return archive
