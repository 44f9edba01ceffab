# shellcheck shell=bash
# Sourced by scripts/test, scripts/lint, scripts/demo and scripts/bench (not an
# entry point itself): cd to the repo root and make .venv hold an up-to-date
# install of worldflow, then put .venv/bin first on PATH.
#
#   ensure_venv dev   # the project with its [dev] extras (test, lint, bench)
#   ensure_venv       # the project alone (demo); a dev install also satisfies it
#
# The install is an editable one in setuptools' *strict* mode; scripts/test says
# why. Strict mode links every module file into build/__editable__.*/worldflow/,
# so a module that is added or removed needs a reinstall to show up. The stamp
# in .venv records what the last install saw, and the install is redone when:
#   - pyproject.toml changed (or the wanted extras did): full `pip install`;
#   - only the set of files under core/ and worlds/ changed: a quick relink
#     (`--no-deps --no-build-isolation`, about 1 s);
#   - the link tree is missing (build/ removed) or .venv is broken.
# Editing an existing module needs nothing: the link tree holds symlinks.

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO_ROOT"

VENV="$REPO_ROOT/.venv"
PYTHON="${PYTHON:-python3}"
STAMP="$VENV/.worldflow-install-stamp"

say() { printf '==> %s\n' "$*"; }
die() {
    printf '\nFAILED: %s\n' "$*" >&2
    exit 1
}

_sha() { sha256sum | cut -d' ' -f1; }

_project_hash() { _sha <pyproject.toml; }

# Every file that the install links: adding, removing or renaming one needs a
# relink. (Subpackages themselves are listed in pyproject.toml, so a new one is a
# pyproject change.)
_files_hash() {
    find core worlds -type f ! -path '*/__pycache__/*' ! -name '*.py[co]' -print |
        LC_ALL=C sort | _sha
}

_editable_install() { # args: extra pip options and the requirement
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off \
        --config-settings editable_mode=strict "$@"
}

ensure_venv() {
    local extras="${1:-}" want_spec="." project_hash files_hash
    [[ -n "$extras" ]] && want_spec=".[$extras]"

    if [[ -e "$VENV" ]] && ! "$VENV/bin/python" -c '' 2>/dev/null; then
        say "removing broken $VENV"
        rm -rf "$VENV"
    fi
    if [[ ! -e "$VENV" ]]; then
        "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
            die "worldflow needs Python >= 3.11; $PYTHON is $("$PYTHON" -V 2>&1) (set PYTHON=...)"
        say "creating $VENV with $("$PYTHON" -V 2>&1)"
        "$PYTHON" -m venv "$VENV" || die "could not create $VENV"
    fi

    project_hash="$(_project_hash)"
    files_hash="$(_files_hash)"

    # Stamp: one line "<project hash> <files hash> <extras>" (extras "-" for none).
    local old_project="" old_files="" old_extras=""
    if [[ -f "$STAMP" ]]; then
        read -r old_project old_files old_extras <"$STAMP" || true
    fi
    [[ "$old_extras" == "-" ]] && old_extras=""

    local extras_ok=0
    if [[ "$old_extras" == "$extras" || ( -z "$extras" && -n "$old_extras" ) ]]; then
        extras_ok=1 # same extras, or a superset of none
    fi
    local link_tree_ok=0
    compgen -G "build/__editable__.worldflow-*/worldflow/__init__.py" >/dev/null && link_tree_ok=1

    if [[ "$old_project" == "$project_hash" && $extras_ok == 1 && $link_tree_ok == 1 ]]; then
        if [[ "$old_files" == "$files_hash" ]]; then
            : # up to date
        elif "$VENV/bin/python" -c 'import setuptools, sys
sys.exit(int(setuptools.__version__.split(".")[0]) < 68)' 2>/dev/null; then
            say "module files added or removed: relinking worldflow into $VENV"
            _editable_install --no-deps --no-build-isolation -e . ||
                die "pip could not relink worldflow (try: rm -rf .venv build)"
        else # no recent setuptools in the venv (a demo-only install): build isolated
            say "module files added or removed: reinstalling worldflow into $VENV"
            _editable_install --no-deps -e . || die "pip install -e . failed"
        fi
        extras="$old_extras"
    else
        say "installing worldflow${extras:+[$extras]} into $VENV (pyproject.toml changed or first run)"
        _editable_install -e "$want_spec" ||
            die "pip install -e '$want_spec' failed"
    fi
    printf '%s %s %s\n' "$project_hash" "$files_hash" "${extras:--}" >"$STAMP"

    export VIRTUAL_ENV="$VENV"
    export PATH="$VENV/bin:$PATH"
    hash -r
}

# Run one named step; on failure say which and exit with its code (at least 1).
run_step() {
    local name="$1" rc=0
    shift
    say "$name"
    "$@" || rc=$?
    if ((rc != 0)); then
        printf '\nFAILED: %s (exit code %d)\n' "$name" "$rc" >&2
        exit "$rc"
    fi
}

# mypy on the package. It sees worldflow through the strict-mode link tree, so
# it names files build/__editable__.worldflow-*/worldflow/...; map those names
# back to core/ and worlds/ so that they can be clicked and grepped.
run_mypy() {
    local rc=0
    mypy "$@" 2>&1 | sed -E \
        -e 's#(^|[^[:alnum:]_./-])(/[^[:space:]:]*/)?build/__editable__\.worldflow-[^/]*/worldflow/worlds/#\1worlds/#g' \
        -e 's#(^|[^[:alnum:]_./-])(/[^[:space:]:]*/)?build/__editable__\.worldflow-[^/]*/worldflow/#\1core/#g' ||
        rc=$?
    return "$rc"
}

# The folder of the strict editable install's link tree (holds worldflow/).
link_tree() {
    local tree
    tree="$(compgen -G "$REPO_ROOT/build/__editable__.worldflow-*" | head -n 1)"
    [[ -n "$tree" ]] || die "no editable link tree under build/"
    printf '%s\n' "$tree"
}

# find_python 3.12: an interpreter of that version on PATH or under pyenv.
find_python() {
    local version="$1" candidate
    for candidate in "python$version" "$HOME"/.pyenv/versions/"$version".*/bin/python3; do
        if command -v "$candidate" >/dev/null 2>&1 &&
            "$candidate" -c "import sys; sys.exit(sys.version_info[:2] != tuple(map(int, '$version'.split('.'))))" 2>/dev/null; then
            command -v "$candidate"
            return 0
        fi
    done
    return 1
}
