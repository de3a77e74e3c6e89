#!/usr/bin/env bash
# System packages HessGPT's sandbox and browser tests need (Debian/Ubuntu):
#   bubblewrap      the sandbox's namespace jail (hessgpt sandbox doctor shows the layers)
#   python3-seccomp seccomp bindings for the system Python (the venv uses PyPI pyseccomp; both work)
#   chromium        headless browser for the web page tests (playwright drives /usr/bin/chromium)
# Usage: scripts/install-system-deps.sh [--check]   (--check only reports what is missing)
set -euo pipefail
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
[ -e /usr/lib/python3/dist-packages/seccomp.cpython-311-x86_64-linux-gnu.so ] || dpkg -s python3-seccomp >/dev/null 2>&1 || need+=(python3-seccomp)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
if [ ${#need[@]} -eq 0 ]; then
  echo "system deps: all present (bubblewrap, python3-seccomp, chromium)"
  exit 0
fi
if [ "${1:-}" = "--check" ]; then
  echo "system deps missing: ${need[*]} (run: sudo scripts/install-system-deps.sh)"
  exit 1
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "system deps missing: ${need[*]}; run this script as root" >&2; exit 1; fi
fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "system deps missing: ${need[*]}; install them with your package manager (no apt-get here)" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
$SUDO apt-get update -q
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q "${need[@]}"
