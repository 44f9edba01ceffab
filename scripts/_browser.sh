# shellcheck shell=bash
# Sourced by scripts/test: make sure Debian's chromium is there for the web UI's
# browser tests (tests/web/test_web_browser.py), which drive it with Playwright.
#
# Playwright's own browser download (`playwright install`) is never used: it
# needs a CDN that CI and this project's machines cannot reach. Debian's package
# comes from the Debian mirror, which they can.
#
#   ensure_chromium   # installs `chromium` with apt-get when /usr/bin/chromium is missing
#
# It needs root (CI runs as root). Elsewhere it says what to run and goes on:
# the browser test then skips, except on CI (CI=true), where it fails.

ensure_chromium() {
    local chromium="${WORLDFLOW_CHROMIUM:-/usr/bin/chromium}"
    [[ -x "$chromium" ]] && return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        say "$chromium is missing: the browser tests will skip (install it: sudo apt-get install -y chromium)"
        return 0
    fi
    say "installing chromium with apt-get (for the web UI's browser tests)"
    # About 110 MB of packages on Debian 12 (with its recommended fonts).
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null ||
        die "apt-get update failed (needed to install chromium)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null ||
        die "apt-get install chromium failed"
    [[ -x "$chromium" ]] || die "apt-get installed chromium, but $chromium is still missing"
}
