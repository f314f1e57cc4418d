"""A local sandbox for model-written Python: limits, isolation, a bounded pool.

Every run is a fresh process tree in its own session, started from `_sandbox_child.py`, which sets the limits and
the isolation before the program's interpreter starts (`python -I -S main.py`). The parent reads stdout and stderr
up to a size cap, kills the whole process group at the wall-time limit, and removes the run's temporary directory.
Nothing the program does can block the caller for longer than `SandboxConfig.timeout_s` (plus process start-up).

Backends, strongest first: "bubblewrap" (the `bwrap` tool), "namespaces" (the same isolation built by this
project), "audit" (a Python audit hook; used only when asked for by name). "auto" takes the first real backend that
works here and refuses to run programs when there is none (`SandboxUnavailableError`). What each enforces:
docs/rewards.md, "The code sandbox". `python -m rewards` prints what this machine gives.
"""

import dataclasses
import functools
import json
import logging
import os
import selectors
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CHILD_SCRIPT = Path(__file__).with_name("_sandbox_child.py")
BACKENDS = ("bubblewrap", "namespaces")  # real isolation, in the order "auto" tries them
ISOLATIONS = ("auto", *BACKENDS, "audit")
WORKDIR = "/sandbox"  # the program's work dir inside the namespaces
MIN_MEMORY_MB = 64  # a bare CPython interpreter needs about 20 MB of address space
ENABLE_ISOLATION = (
    "Install bubblewrap (Debian/Ubuntu: `apt install bubblewrap`; Fedora: `dnf install bubblewrap`), or allow "
    "unprivileged user namespaces (`sysctl kernel.unprivileged_userns_clone=1`; on Ubuntu 24.04 also "
    "`sysctl kernel.apparmor_restrict_unprivileged_userns=0`), or run in a container that permits them. "
    "isolation='audit' runs programs under a Python audit hook instead: it does not stop a program that "
    "escapes the interpreter, so use it only for code you would run yourself."
)


class SandboxUnavailableError(RuntimeError):
    """The requested isolation does not work on this machine: no model-written code runs."""


class SandboxHarnessError(RuntimeError):
    """Too many runs failed in the sandbox's harness (not in the program): the rewards would be mostly missing."""


# The interpreter's own files, as a probe run of it sees them: its executable, sys.path (the standard library), the
# files it maps after importing every extension module of the standard library (the shared libraries it needs),
# and its site-packages directories (hidden in the sandbox).
VIEW_PROBE = r"""
import importlib, json, os, site, sys
for entry in sys.path:
    if os.path.isdir(entry):
        for name in os.listdir(entry):
            if name.endswith(".so") and not name.startswith(("_test", "xx")):
                try:
                    importlib.import_module(name.split(".")[0])
                except BaseException:
                    pass
mapped = []
if os.path.exists("/proc/self/maps"):
    with open("/proc/self/maps") as f:
        mapped = sorted({line.split(None, 5)[5].strip() for line in f if len(line.split(None, 5)) == 6})
print(json.dumps({"executable": os.path.realpath(sys.executable), "path": sys.path, "mapped": mapped,
                  "site": site.getsitepackages() + [site.getusersitepackages()]}))
"""


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandboxed run. The defaults suit a competitive-programming test case."""

    timeout_s: float = field(default=5.0, metadata={"help": "Wall-clock limit of one run, in seconds."})
    cpu_time_s: int = field(default=5, metadata={"help": "CPU-time limit of each process (RLIMIT_CPU), seconds."})
    memory_mb: int = field(
        default=512,
        metadata={
            "help": "Memory of one run, MiB: each process's address space (RLIMIT_AS), and in 'bubblewrap' and "
            "'namespaces' also the resident memory of all its processes plus its tmpfs files together."
        },
    )
    max_processes: int = field(
        default=16, metadata={"help": "Processes the program may have alive at once, itself included."}
    )
    max_tasks: int = field(
        default=256,
        metadata={
            "help": "Threads of all the run's processes together ('bubblewrap' and 'namespaces': counted by the "
            "supervisor, and RLIMIT_NPROC in the run's own user namespace where the kernel applies it)."
        },
    )
    max_file_size_mb: int = field(default=16, metadata={"help": "Largest file the program may write (RLIMIT_FSIZE)."})
    max_open_files: int = field(default=64, metadata={"help": "Open file descriptors per process (RLIMIT_NOFILE)."})
    max_output_bytes: int = field(
        default=1 << 20, metadata={"help": "Bytes kept of stdout and of stderr; more output stops the run."}
    )
    workdir_mb: int = field(
        default=64, metadata={"help": "Size of the work dir's tmpfs, and of /tmp's, in 'bubblewrap' and 'namespaces'."}
    )
    isolation: str = field(
        default="auto",
        metadata={
            "help": "'bubblewrap' (the bwrap tool), 'namespaces' (the project's own user/mount/net/PID "
            "namespaces), 'auto' (the first of those that works here; none: SandboxUnavailableError), or "
            "'audit' (a Python audit hook: weaker, only by name)."
        },
    )
    python: str = field(
        default=sys.executable, metadata={"help": "Interpreter that runs the program (with -I -S: stdlib only)."}
    )

    def __post_init__(self):
        integers = (
            "cpu_time_s",
            "memory_mb",
            "max_processes",
            "max_tasks",
            "max_file_size_mb",
            "max_open_files",
            "max_output_bytes",
            "workdir_mb",
        )
        for name in integers:
            if not isinstance(getattr(self, name), int):
                raise TypeError(f"SandboxConfig.{name} must be an integer, got {getattr(self, name)!r}.")
        for name in ("timeout_s", *integers):
            if getattr(self, name) <= 0:
                raise ValueError(f"SandboxConfig.{name} must be positive, got {getattr(self, name)}.")
        if self.memory_mb < MIN_MEMORY_MB:
            raise ValueError(
                f"SandboxConfig.memory_mb must be at least {MIN_MEMORY_MB} (Python cannot start in "
                f"less), got {self.memory_mb}."
            )
        if self.max_open_files < 16:
            raise ValueError(f"SandboxConfig.max_open_files must be at least 16, got {self.max_open_files}.")
        if self.isolation not in ISOLATIONS:
            raise ValueError(f"SandboxConfig.isolation must be one of {ISOLATIONS}, got {self.isolation!r}.")
        if not os.access(self.python, os.X_OK):
            raise ValueError(f"SandboxConfig.python={self.python!r} is not an executable interpreter.")


@dataclass
class SandboxResult:
    """What one run did. `status` is one of "ok", "error" (non-zero exit), "timeout" (wall clock or CPU time),
    "output_limit", "process_limit", "memory_limit", "setup_failed" (the harness failed: the program never ran)."""

    status: str
    returncode: int | None
    stdout: str
    stderr: str
    wall_s: float
    layers: tuple[str, ...] = ()
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.status == "ok"


def minimal_env(workdir: str) -> dict[str, str]:
    """The only environment a sandboxed program gets."""
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


class Sandbox:
    """Runs untrusted Python programs, each in a fresh isolated process tree, at most `max_workers` at once and at
    most `pool_memory_mb` of memory across them (default: half of this machine's memory).

    >>> with Sandbox(SandboxConfig(timeout_s=2)) as sandbox:
    ...     sandbox.run("print(input()[::-1])", stdin="abc\\n").stdout
    'cba\\n'
    """

    def __init__(
        self, config: SandboxConfig | None = None, max_workers: int | None = None, pool_memory_mb: int | None = None
    ):
        self.config = config or SandboxConfig()
        self.max_workers = max_workers or os.cpu_count() or 1
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}.")
        self.pool_memory_mb = pool_memory_mb or physical_memory_mb() // 2
        if self.pool_memory_mb < self.config.memory_mb:
            raise ValueError(
                f"pool_memory_mb={self.pool_memory_mb} is less than one run's memory_mb={self.config.memory_mb}."
            )
        # Each run holds at most memory_mb, so this many at once keep the pool within pool_memory_mb.
        self.concurrent_runs = min(self.max_workers, self.pool_memory_mb // self.config.memory_mb)
        self._slots = threading.BoundedSemaphore(self.concurrent_runs)
        self._pool: ThreadPoolExecutor | None = None

    @functools.cached_property
    def isolation(self) -> str:
        """The backend runs use ('auto' resolved once). Raises SandboxUnavailableError when the requested
        isolation does not work here."""
        requested = self.config.isolation
        if requested == "audit":
            logger.warning(
                "Sandbox: isolation='audit' is a Python audit hook, not an isolation: a program that escapes the "
                "interpreter reads and writes what this process can. Use it only for code you would run yourself."
            )
            return "audit"
        reasons = {}
        for backend in BACKENDS if requested == "auto" else (requested,):
            reasons[backend] = backend_unavailable(backend, self.config.python)
            if reasons[backend] is None:
                return backend
        why = "; ".join(f"{backend}: {reason}" for backend, reason in reasons.items())
        raise SandboxUnavailableError(
            f"No isolation for model-written code on this machine (isolation={requested!r}; {why}). " + ENABLE_ISOLATION
        )

    def run(self, code: str, stdin: str = "", timeout_s: float | None = None) -> SandboxResult:
        """Run `code` as a Python program with `stdin` as its standard input, within `timeout_s` seconds of wall
        time when given (at most the config's `timeout_s`). Safe to call from any thread."""
        config = self.config
        if timeout_s is not None and timeout_s < config.timeout_s:
            config = dataclasses.replace(config, timeout_s=timeout_s)
        isolation = self.isolation
        with self._slots:
            return run_program(code, stdin, config, isolation)

    def run_many(self, jobs: Sequence[tuple[str, str]]) -> list[SandboxResult]:
        """Run (code, stdin) jobs on the bounded pool; results in job order."""
        return self.map(lambda job: self.run(*job), jobs)

    def map(self, fn: Callable, items: Iterable) -> list:
        """`[fn(item) for item in items]` on the sandbox's pool of `max_workers` threads (fn calls `self.run`)."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix="sandbox")
        return list(self._pool.map(fn, items))

    def close(self):
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):  # picklable: the pool and the semaphore are rebuilt
        state = self.__dict__.copy()
        state["_pool"] = None
        del state["_slots"]
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._slots = threading.BoundedSemaphore(self.concurrent_runs)


def physical_memory_mb() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") >> 20


def run_program(code: str, stdin: str, config: SandboxConfig, isolation: str) -> SandboxResult:
    """One sandboxed run (see `Sandbox.run`); `isolation` is 'bubblewrap', 'namespaces' or 'audit'."""
    start = time.monotonic()
    staging = Path(tempfile.mkdtemp(prefix="sandbox-"))
    try:
        (staging / "work").mkdir(mode=0o700)
        (staging / "root").mkdir(mode=0o700)
        (staging / "main.py").write_text(code, encoding="utf-8", errors="surrogatepass")
        (staging / "stdin").write_text(stdin, encoding="utf-8", errors="surrogatepass")
        (staging / "stdin").chmod(0o400)  # fd 0 cannot be reopened for writing through /proc/self/fd/0
        workdir = str(staging / "work") if isolation == "audit" else WORKDIR
        view = interpreter_view(config.python)
        status_read, status_write = os.pipe()
        settings = {
            "backend": isolation,
            "python": view["executable"],
            "view": view,
            "bwrap": shutil.which("bwrap") or "",
            "program": str(staging / "main.py"),
            "root": str(staging / "root"),
            "workdir": workdir,
            "env": minimal_env(workdir),
            "status_fd": status_write,
            "cpu_time_s": config.cpu_time_s,
            "memory_bytes": config.memory_mb << 20,
            "run_memory_bytes": config.memory_mb << 20,
            "file_size_bytes": config.max_file_size_mb << 20,
            "open_files": config.max_open_files,
            "max_processes": config.max_processes,
            "max_tasks": config.max_tasks,
            "workdir_bytes": config.workdir_mb << 20,
        }
        with os.fdopen(status_read, "rb") as status_pipe:
            try:
                with open(staging / "stdin", "rb") as stdin_file:
                    process = subprocess.Popen(
                        [config.python, "-I", "-S", str(CHILD_SCRIPT), json.dumps(settings)],
                        stdin=stdin_file,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        cwd=staging / "work",
                        env=minimal_env(str(staging / "work")),
                        start_new_session=True,
                        pass_fds=(status_write,),
                    )
            finally:
                os.close(status_write)  # the child holds the only write end now: EOF once the run is over
            try:
                stdout, stderr, limit_hit = read_capped(process, start + config.timeout_s, config.max_output_bytes)
            finally:
                kill_group(process)
            status_lines = status_pipe.read(1 << 16).decode("utf-8", "replace").splitlines()
    finally:
        remove_staging(staging)
    return make_result(process.returncode, stdout, stderr, limit_hit, status_lines, time.monotonic() - start)


def remove_staging(staging: Path):
    """Remove a run's files; what cannot be removed is logged, never raised into the trainer."""
    shutil.rmtree(staging, onerror=lambda *failure: logger.warning("Sandbox: could not remove %s", failure[1]))


def read_capped(process: subprocess.Popen, deadline: float, cap: int) -> tuple[bytes, bytes, str | None]:
    """Read stdout and stderr until the process ends, the deadline passes, or one stream exceeds `cap` bytes.

    Returns (stdout, stderr, limit) where limit is None, "timeout" or "output_limit".
    """
    buffers = {process.stdout: bytearray(), process.stderr: bytearray()}
    with selectors.DefaultSelector() as selector:
        for stream in buffers:
            selector.register(stream, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return bytes(buffers[process.stdout]), bytes(buffers[process.stderr]), "timeout"
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, 1 << 16)
                if not chunk:
                    selector.unregister(key.fileobj)
                    continue
                buffer = buffers[key.fileobj]
                buffer += chunk[: cap - len(buffer)]
                if len(buffer) >= cap:
                    return bytes(buffers[process.stdout]), bytes(buffers[process.stderr]), "output_limit"
    try:
        process.wait(timeout=max(0.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        return bytes(buffers[process.stdout]), bytes(buffers[process.stderr]), "timeout"
    return bytes(buffers[process.stdout]), bytes(buffers[process.stderr]), None


def kill_group(process: subprocess.Popen):
    """SIGKILL the run's whole process group (the session the launcher leads), then reap the launcher. Whatever
    runs in the namespaces dies with them: their PID 1 has the launcher (or bwrap) as parent and a death signal."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    process.wait()
    process.stdout.close()
    process.stderr.close()


def make_result(returncode, stdout: bytes, stderr: bytes, limit_hit, status_lines, wall_s) -> SandboxResult:
    layers = tuple(line.split(" ", 1)[1] for line in status_lines if line.startswith("layer "))
    failures = [line for line in status_lines if line.startswith(("setup_failed", "process_limit", "memory_limit"))]
    if failures:
        status, _, detail = failures[0].partition(" ")
    elif limit_hit:
        status, detail = limit_hit, ""
    elif "exec" not in status_lines:  # the harness stopped before the program started (bwrap could not set up)
        tail = stderr.decode("utf-8", "replace").strip()[-500:]
        status, detail = "setup_failed", f"exit status {returncode} before the program started: {tail}"
    elif returncode in (-signal.SIGXCPU, 128 + signal.SIGXCPU):
        # RLIMIT_CPU, a time limit like the wall clock (128 + signal is how the namespace's init reports it)
        status, detail = "timeout", "CPU-time limit (RLIMIT_CPU)"
    else:
        status, detail = ("ok" if returncode == 0 else "error"), ""
    return SandboxResult(
        status=status,
        returncode=returncode,
        stdout=stdout.decode("utf-8", "replace"),
        stderr=stderr.decode("utf-8", "replace"),
        wall_s=wall_s,
        layers=layers,
        detail=detail,
    )


@functools.cache
def interpreter_view(python: str) -> dict:
    """What of the host a sandboxed program sees, read-only: the interpreter, its standard library and the
    directories of the shared libraries it maps, with the symbolic links that lead to them; its site-packages
    directories are hidden (`hidden`)."""
    probe = subprocess.run(
        [python, "-I", "-S", "-c", VIEW_PROBE], capture_output=True, text=True, timeout=120, env=minimal_env("/")
    )
    if probe.returncode != 0:
        raise SandboxUnavailableError(f"Could not inspect the interpreter {python}: {probe.stderr.strip()[-500:]}")
    seen = json.loads(probe.stdout)
    files = [seen["executable"], *(p for p in seen["mapped"] if p.startswith("/") and os.path.isfile(p))]
    paths = {os.path.realpath(p) for p in seen["path"] if os.path.isdir(p)}
    paths |= {os.path.dirname(os.path.realpath(p)) for p in files[1:] if p != seen["executable"]}
    paths |= {seen["executable"]} | ({"/etc/ld.so.cache"} if os.path.isfile("/etc/ld.so.cache") else set())
    read_only = sorted(p for p in paths if not any(p.startswith(q + "/") for q in paths))  # outermost only
    hidden = sorted(
        real
        for real in {os.path.realpath(p) for p in seen["site"] if os.path.isdir(p)}
        if any(real.startswith(q + "/") for q in read_only)
    )
    symlinks = {f"/{name}": os.readlink(f"/{name}") for name in sorted(os.listdir("/")) if os.path.islink(f"/{name}")}
    symlinks.update(links_along(elf_interpreter(seen["executable"]) or ""))
    return {
        "executable": seen["executable"],
        "read_only": read_only,
        "hidden": hidden,
        "symlinks": sorted(symlinks.items()),
    }


def links_along(path: str) -> dict[str, str]:
    """The symbolic links met while resolving `path`, {link: target}, so that the path resolves in the view too."""
    links, pending, parts = {}, path.split("/")[::-1], []
    while pending and len(links) < 40:
        part = pending.pop()
        if part in ("", "."):
            continue
        here = "/" + "/".join([*parts, part])
        if part == "..":
            parts = parts[:-1]
        elif os.path.islink(here):
            links[here] = target = os.readlink(here)
            parts = [] if target.startswith("/") else parts
            pending.extend(target.split("/")[::-1])
        else:
            parts.append(part)
    return links


def elf_interpreter(executable: str) -> str | None:
    """The dynamic loader an ELF executable names (its PT_INTERP), or None (a static or non-ELF file)."""
    with open(executable, "rb") as f:
        header = f.read(64)
        if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit ELF only
            return None
        endian = "<" if header[5] == 1 else ">"
        (phoff,) = struct.unpack_from(endian + "Q", header, 32)
        phentsize, phnum = struct.unpack_from(endian + "HH", header, 54)
        for i in range(phnum):
            f.seek(phoff + i * phentsize)
            kind, _, offset, _, _, size = struct.unpack(endian + "IIQQQQ", f.read(40))
            if kind == 3:  # PT_INTERP
                f.seek(offset)
                return f.read(size).rstrip(b"\0").decode()
    return None


@functools.cache
def backend_unavailable(backend: str, python: str) -> str | None:
    """Why `backend` does not work here (a probe run), or None when it does."""
    if backend == "bubblewrap" and not shutil.which("bwrap"):
        return "bwrap is not installed"
    config = SandboxConfig(timeout_s=30, python=python, isolation=backend)
    result = run_program("print('ok')", "", config, backend)
    if result.ok and result.stdout == "ok\n":
        return None
    return result.detail or result.stderr.strip()[-300:] or result.status


def available_isolations(python: str = sys.executable) -> dict[str, str | None]:
    """Each backend, with None where it works on this machine and the reason where it does not."""
    return {**{backend: backend_unavailable(backend, python) for backend in BACKENDS}, "audit": None}


def isolation_report(config: SandboxConfig | None = None) -> dict:
    """Which protections a run gets on this machine: the backends, the one 'auto' picks, the layers in force."""
    config = config or SandboxConfig()
    backends = available_isolations(config.python)
    report = {"backends": backends, "config": dataclasses.asdict(config)}
    try:
        sandbox = Sandbox(config)
        result = sandbox.run("print('ok')")
    except SandboxUnavailableError as error:
        return {**report, "isolation": None, "error": str(error)}
    return {**report, "isolation": sandbox.isolation, "layers": list(result.layers), "probe": result.status}
