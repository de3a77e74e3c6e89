#!/usr/bin/env bash
# System packages HessGPT needs (Debian/Ubuntu names):
#   bubblewrap      the sandbox's namespace jail (`hessgpt sandbox doctor` shows the layers)     demo, test
#   libseccomp2     the seccomp library PyPI pyseccomp loads (present on almost every system)    demo, test
#   python3-seccomp seccomp bindings for the system Python (the venv uses PyPI pyseccomp)        test
#   chromium        headless browser for the web page tests (playwright drives /usr/bin/chromium) test
# Usage: scripts/install-system-deps.sh [--check] [--for demo|test]   (default: test)
#   As root it installs what is missing with apt-get. As a normal user (or with --check) it installs nothing:
#   it prints one line per missing piece and how to get it, and exits 1.
#   As a normal user it also checks that bubblewrap can create a user namespace (its way in without root).
set -euo pipefail
check=0
target=test
while [ $# -gt 0 ]; do
  case "$1" in
    --check) check=1 ;;
    --for) target="${2:-}"; shift ;;
    *) echo "usage: $0 [--check] [--for demo|test]" >&2; exit 2 ;;
  esac
  shift
done
case "$target" in demo|test) ;; *) echo "$0: --for must be demo or test, got '$target'" >&2; exit 2 ;; esac

declare -A why=(
  [bubblewrap]="the sandbox's namespace jail: model-written code runs in it"
  [libseccomp2]="the seccomp library the sandbox loads through PyPI pyseccomp"
  [python3-seccomp]="seccomp bindings for the system Python (a worker running /usr/bin/python3 uses them)"
  [chromium]="headless browser for the web page tests"
)
need=()
command -v bwrap >/dev/null 2>&1 || need+=(bubblewrap)
have_libseccomp=0
for f in /usr/lib/*/libseccomp.so.2 /usr/lib64/libseccomp.so.2 /usr/lib/libseccomp.so.2 /lib/*/libseccomp.so.2; do
  [ -e "$f" ] && have_libseccomp=1
done
[ "$have_libseccomp" -eq 1 ] || need+=(libseccomp2)
if [ "$target" = test ]; then
  [ -e /usr/lib/python3/dist-packages/seccomp.cpython-311-x86_64-linux-gnu.so ] || dpkg -s python3-seccomp >/dev/null 2>&1 \
    || need+=(python3-seccomp)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
fi

userns_ok() {  # a normal user's sandbox enters through a user namespace
  [ "$(id -u)" -eq 0 ] && return 0
  command -v bwrap >/dev/null 2>&1 || return 0  # reported as missing above
  bwrap --unshare-user --unshare-net --ro-bind / / /bin/true 2>/dev/null
}

if [ ${#need[@]} -eq 0 ]; then
  if ! userns_ok; then
    fix=""
    [ "$(cat /proc/sys/kernel/unprivileged_userns_clone 2>/dev/null)" = 0 ] \
      && fix+="kernel.unprivileged_userns_clone=0: sudo sysctl -w kernel.unprivileged_userns_clone=1; "
    [ "$(cat /proc/sys/user/max_user_namespaces 2>/dev/null)" = 0 ] \
      && fix+="user.max_user_namespaces=0: sudo sysctl -w user.max_user_namespaces=15000; "
    [ "$(cat /proc/sys/kernel/apparmor_restrict_unprivileged_userns 2>/dev/null)" = 1 ] \
      && fix+="kernel.apparmor_restrict_unprivileged_userns=1: an AppArmor profile for bwrap or sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0; "
    echo "system deps: bubblewrap cannot create a user namespace as $(id -un), the sandbox's way in without root" \
         "(${fix:-the kernel refused it; allow unprivileged user namespaces; }or run as root)" >&2
    exit 1
  fi
  echo "system deps for $target: all present (bubblewrap, libseccomp2$([ "$target" = test ] && echo ", python3-seccomp, chromium"))"
  exit 0
fi

if [ "$check" -eq 1 ] || [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then how="sudo apt-get install"; else how="install with your package manager:"; fi
  for p in "${need[@]}"; do
    echo "system deps: missing $p (${why[$p]}): get it with: $how $p" >&2
  done
  echo "system deps: or all at once: sudo scripts/install-system-deps.sh --for $target" >&2
  exit 1
fi
echo "installing system packages: ${need[*]}"
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${need[@]}"
