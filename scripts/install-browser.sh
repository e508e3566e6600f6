#!/usr/bin/env bash
# Install what the browser tests (tests/browser) need, when it is missing.
# Chromium comes from Debian's package, at /usr/bin/chromium. The Python
# package playwright goes into the interpreter given as $1 (default
# .venv/bin/python). That step is skipped while the venv does not exist yet,
# because `make` then installs playwright from the dev extra.
# playwright drives that Chromium and downloads no browser of its own.
# Running it again changes nothing. Progress goes to stderr, the Chromium path to stdout.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${1:-$repo_root/.venv/bin/python}"
chromium=/usr/bin/chromium

if [[ ! -x "$chromium" ]]; then
    if ! command -v apt-get >/dev/null; then
        echo "install-browser.sh: $chromium is missing and apt-get is not available;" \
            "install Chromium and link it to $chromium" >&2
        exit 1
    fi
    sudo=()
    if [[ "$(id -u)" != 0 ]]; then
        if ! command -v sudo >/dev/null; then
            echo "install-browser.sh: installing chromium needs root: run apt-get install -y chromium as root" >&2
            exit 1
        fi
        sudo=(sudo)
    fi
    echo "install-browser.sh: installing chromium with apt-get" >&2
    "${sudo[@]}" apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq chromium >&2
fi

if [[ -x "$python" ]] && ! "$python" -c "import playwright" 2>/dev/null; then
    echo "install-browser.sh: installing playwright into $python" >&2
    "$python" -m pip install --quiet "playwright>=1.50" >&2
fi

echo "$chromium"
