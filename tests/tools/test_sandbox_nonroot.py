"""The sandbox as a normal (non-root) user: bubblewrap's user-namespace path, no cgroup.

As root (CI) the tests drop to uid/gid 65534 with `setpriv` and run the sandbox there, in a fresh Python
process; as a normal user they run it directly. That process must be able to execute an interpreter and
import hessgpt, numpy, sympy and pyseccomp: the host's own interpreter when uid 65534 can read it, otherwise
the system /usr/bin/python3 with the venv's site-packages on PYTHONPATH (a pyenv Python under /root, mode
0700, is closed to that uid). Skipped, with the reason, when neither works.

- test_nonroot_sandbox_works: where the kernel allows unprivileged user namespaces, the sandbox runs code as a
  normal user with bubblewrap, the uid drop (in a user namespace), rlimits, Landlock and seccomp active, the
  cgroup reported missing (root only), and the OS layers still block attacks with the policy off.
- test_nonroot_refusal_names_the_layer: a kernel that forbids them, made real for one process tree: a user
  namespace whose user.max_user_namespaces is 0 (as root only), where the sandbox refuses in one line naming
  bubblewrap's user namespace, the setting and the fix.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from importlib.util import find_spec

import pytest

from hessgpt.tools.sandbox.supervisor import userns_blockers

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
NOBODY = 65534
ROOT = os.geteuid() == 0

pytestmark = pytest.mark.skipif(shutil.which("bwrap") is None,
                                reason="bubblewrap is not installed (scripts/install-system-deps.sh)")

# what the non-root process runs: the sandbox API, printing one JSON line
PROBE = textwrap.dedent("""
    import json, os, sys
    from hessgpt.errors import HessGPTError
    from hessgpt.tools.sandbox import Limits, Sandbox
    host_dir = sys.argv[1]
    out = {"uid": os.getuid()}
    try:
        with Sandbox(Limits(wall_s=3.0)) as sb:
            out["layers"] = {k: list(v) for k, v in sb.layers().items()}
            out["run"] = sb.run("print(6 * 7)").stdout
        attacks = {
            "uid": "import os; print(os.getuid(), os.getgid())",
            "read_secret": f"print(open({host_dir + '/secret.txt'!r}).read())",
            "write_host": f"open({host_dir + '/pwned'!r}, 'w').write('x'); print('ESCAPED')",
            "socket": "import socket; socket.socket(); print('ESCAPED')",
            "exec": "import os; print('ESCAPED' if os.system('true') == 0 else 'blocked')",
        }
        with Sandbox(Limits(wall_s=3.0), _python_policy=False) as raw:
            out["attacks"] = {k: [r.status, r.stdout, r.stderr[-200:]] for k, r in
                              ((k, raw.run(c)) for k, c in attacks.items())}
    except HessGPTError as e:
        out["refused"] = str(e)
    print(json.dumps(out))
""")


def _site_dirs() -> list[str]:
    dirs = []
    for name in ("numpy", "sympy", "mpmath", "pyseccomp"):
        spec = find_spec(name)
        if spec is None or not spec.origin:
            continue
        path = os.path.realpath(spec.origin)
        d = os.path.dirname(os.path.dirname(path)) if spec.submodule_search_locations else os.path.dirname(path)
        if d not in dirs:
            dirs.append(d)
    return dirs


def _drop() -> list[str]:
    """argv prefix that runs a command as a normal user: setpriv to 65534 as root, nothing otherwise."""
    if not ROOT:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): cannot drop to a normal user")
    return [setpriv, f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--reset-env"]


def _env() -> dict:
    return {"PATH": "/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
            "PYTHONPATH": os.pathsep.join([REPO, *_site_dirs()])}


@pytest.fixture(scope="module")
def python_for_user() -> str:
    """An interpreter the normal user can run that imports hessgpt and the sandbox's modules."""
    tried = []
    for exe in dict.fromkeys([os.path.realpath(sys.executable), "/usr/bin/python3"]):
        if not os.path.exists(exe):
            continue
        p = subprocess.run([*_drop(), "/usr/bin/env", *(f"{k}={v}" for k, v in _env().items()), exe, "-c",
                            "import hessgpt.tools.sandbox, numpy, sympy, pyseccomp"],
                           capture_output=True, text=True, timeout=120)
        if p.returncode == 0:
            return exe
        tried.append(f"{exe}: {(p.stderr.strip().splitlines() or ['exit %d' % p.returncode])[-1]}")
    pytest.skip("no interpreter a normal user can run with hessgpt importable: " + "; ".join(tried))


@pytest.fixture
def host_dir():
    """A directory the normal user owns on the host, with a secret in it: only the sandbox keeps it out."""
    d = tempfile.mkdtemp(prefix="hessgpt-nonroot-", dir="/tmp")
    with open(os.path.join(d, "secret.txt"), "w") as fh:
        fh.write("TOPSECRET")
    os.chmod(os.path.join(d, "secret.txt"), 0o600)
    os.chmod(d, 0o755)
    if ROOT:
        for p in (d, os.path.join(d, "secret.txt")):
            os.chown(p, NOBODY, NOBODY)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def _probe(prefix: list[str], exe: str, host_dir: str) -> dict:
    argv = [*prefix, *_drop(), "/usr/bin/env", *(f"{k}={v}" for k, v in _env().items()), exe, "-c", PROBE, host_dir]
    p = subprocess.run(argv, capture_output=True, text=True, timeout=240, cwd="/tmp")
    assert p.returncode == 0 and p.stdout.strip(), (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    return json.loads(p.stdout.strip().splitlines()[-1])


def test_nonroot_sandbox_works(python_for_user, host_dir):
    out = _probe([], python_for_user, host_dir)
    assert out["uid"] != 0
    blockers = userns_blockers()
    if blockers:  # this kernel forbids them: the one-line refusal is what a normal user gets
        assert "layer 'bubblewrap' cannot create its user namespace" in out.get("refused", ""), out
        assert blockers[0][0] in out["refused"], out
        return
    assert "refused" not in out, out["refused"]
    layers = out["layers"]
    for name in ("bubblewrap", "unprivileged_uid", "rlimits", "landlock", "seccomp", "wall_clock"):
        assert layers[name][0], (name, layers[name])
    assert "user namespace" in layers["unprivileged_uid"][1], layers["unprivileged_uid"]
    assert layers["cgroup"] == [False, "needs root (run as root, or accept the RLIMIT_AS memory cap alone)"]
    assert out["run"] == "42\n"
    attacks = out["attacks"]
    assert attacks["uid"][:2] == ["ok", f"{NOBODY} {NOBODY}\n"], attacks["uid"]
    for name in ("read_secret", "write_host", "socket", "exec"):
        status, stdout, stderr = attacks[name]
        assert "ESCAPED" not in stdout and "TOPSECRET" not in stdout + stderr, (name, attacks[name])
    assert attacks["read_secret"][0] == "error" and "FileNotFoundError" in attacks["read_secret"][2]
    assert attacks["socket"][0] == "error" and "PermissionError" in attacks["socket"][2]
    assert sorted(os.listdir(host_dir)) == ["secret.txt"]


NO_USERNS = textwrap.dedent("""
    # runs the command in a new user namespace (uids 0-65535 mapped to themselves) whose
    # user.max_user_namespaces is 0: inside it, no process can create a user namespace
    import ctypes, os, sys
    libc = ctypes.CDLL(None, use_errno=True)
    r, w = os.pipe()
    r2, w2 = os.pipe()
    pid = os.fork()
    if pid == 0:
        if libc.unshare(0x10000000) != 0:  # CLONE_NEWUSER
            os._exit(90)
        os.write(w, b"x")
        os.read(r2, 1)
        with open("/proc/sys/user/max_user_namespaces", "w") as fh:
            fh.write("0")
        os.execv(sys.argv[1], sys.argv[1:])
    os.read(r, 1)
    for name in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{name}", "w") as fh:
            fh.write("0 0 65536\\n")
    os.write(w2, b"x")
    _, status = os.waitpid(pid, 0)
    sys.exit(os.waitstatus_to_exitcode(status))
""")


@pytest.mark.skipif(not ROOT, reason="simulating a kernel without unprivileged user namespaces needs root")
def test_nonroot_refusal_names_the_layer(python_for_user, host_dir):
    out = _probe([sys.executable, "-c", NO_USERNS], python_for_user, host_dir)
    msg = out.get("refused", "")
    assert msg.startswith("sandbox refuses to run: layer 'bubblewrap' cannot create its user namespace as uid 65534 "
                          "(user.max_user_namespaces=0; bwrap said: bwrap: "), out
    assert "fix: sudo sysctl -w user.max_user_namespaces=" in msg and "or run as root" in msg, msg
    assert "\n" not in msg
