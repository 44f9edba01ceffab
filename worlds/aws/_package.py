"""Building the Lambda zip (``worldflow package aws MODULE...``, see :mod:`._cli`).

The zip holds the project's top-level packages or modules that the named
workflow modules live in, worldflow from its own wheel (built from the
checkout or an editable install, or packed again from a wheel install: see
:mod:`worldflow.packaging`), and the dependencies, installed for Lambda's
platform (manylinux, the function's Python) with ``pip install --target``.
What the Lambda Python runtime already provides (boto3, botocore and
theirs) is left out, which keeps the zip small. The zip is then checked: a
fresh interpreter that sees only the zip (and the runtime's own boto3)
imports the handler and the workflow modules, and no step may have a
timeout longer than the function's. Next to it goes the SAM template;
``sam deploy`` uploads the zip and creates the stack.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

from worldflow.packaging import PackagingError, check_imports, find_python, worldflow_wheel

__all__ = ["HANDLER_MODULE", "Build", "build"]

#: The module of the template's Handler (``worldflow.worlds.aws.lambda_handler``).
HANDLER_MODULE = "worldflow.worlds.aws"

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


def _unpack_wheel(wheel: Path, target: Path) -> None:
    """Put the wheel's files in ``target``, as ``pip install --target`` would."""
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(target)


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


class Build:
    """What :func:`build` made: the zip, the template, and how the zip was checked."""

    def __init__(self, archive: Path, template: Path, checked_with: str) -> None:
        self.archive = archive
        self.template = template
        self.checked_with = checked_with


def build(
    modules: list[str],
    out: Path,
    *,
    source: Path | None = None,
    requirements: str | None = None,
    python: str = "3.12",
    deps: bool = True,
    function_timeout: float = 300.0,
    check: bool = True,
) -> Build:
    """Build ``out/function.zip`` and ``out/template.yaml``, and check the zip imports.

    Raises :class:`~worldflow.packaging.PackagingError` if the zip does not import
    on its own, or a step's timeout is longer than ``function_timeout``.
    """
    from importlib import resources

    source = source or Path.cwd()
    staging = out / "package"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    _copy_project(modules, source, staging)
    _unpack_wheel(worldflow_wheel(out / "wheel"), staging)
    if deps:
        _install_dependencies(staging, python, requirements)
    archive = out / "function.zip"
    _zip(staging, archive)
    checked_with = "not checked"
    if check:
        interpreter = find_python(python)
        if interpreter is None and deps:
            raise PackagingError(
                f"no python{python} here to check the zip with (its dependencies are built "
                f"for Python {python}): install it, pass --python with this Python's "
                "version, or --no-check"
            )
        interpreter = interpreter or sys.executable
        check_imports(
            [staging],
            [HANDLER_MODULE, *modules, *(["aws_lambda_powertools.tracing"] if deps else [])],
            provided=PROVIDED,
            python=interpreter,
            step_limit=(function_timeout, "the function's timeout (FunctionTimeout)"),
        )
        checked_with = interpreter
    template = resources.files("worldflow.worlds.aws").joinpath("template.yaml").read_text()
    template_path = out / "template.yaml"
    template_path.write_text(template.replace("python3.12", f"python{python}"))
    return Build(archive, template_path, checked_with)
