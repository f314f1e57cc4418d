"""A local sandbox for model-written Python: limits, isolation, a bounded pool.

Every run is a fresh process tree in its own session, started from `_sandbox_child.py`, which sets the limits and
the isolation before the program's interpreter starts (`python -I -S main.py`). The parent reads stdout and stderr
up to a size cap, kills the whole process group at the wall-time limit, and removes the run's temporary directory.
Nothing the program does can block the caller for longer than `SandboxConfig.timeout_s` (plus process start-up).

What is enforced, and how, on each platform: docs/rewards.md, "The code sandbox". `python -m rewards` prints which
isolation this machine gives.
"""

import dataclasses
import functools
import json
import logging
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

CHILD_SCRIPT = Path(__file__).with_name("_sandbox_child.py")
ISOLATIONS = ("auto", "namespaces", "audit")
MIN_MEMORY_MB = 64  # a bare CPython interpreter needs about 20 MB of address space


@dataclass(frozen=True)
class SandboxConfig:
    """Limits of one sandboxed run. The defaults suit a competitive-programming test case."""

    timeout_s: float = field(default=5.0, metadata={"help": "Wall-clock limit of one run, in seconds."})
    cpu_time_s: int = field(default=5, metadata={"help": "CPU-time limit of each process (RLIMIT_CPU), seconds."})
    memory_mb: int = field(default=512, metadata={"help": "Address-space limit of each process (RLIMIT_AS), MiB."})
    max_processes: int = field(
        default=16, metadata={"help": "Processes the program may have alive at once, itself included."}
    )
    max_file_size_mb: int = field(default=16, metadata={"help": "Largest file the program may write (RLIMIT_FSIZE)."})
    max_open_files: int = field(default=64, metadata={"help": "Open file descriptors per process (RLIMIT_NOFILE)."})
    max_output_bytes: int = field(
        default=1 << 20, metadata={"help": "Bytes kept of stdout and of stderr; more output stops the run."}
    )
    workdir_mb: int = field(
        default=64, metadata={"help": "Size of the work dir's tmpfs in 'namespaces' mode (all files together)."}
    )
    isolation: str = field(
        default="auto",
        metadata={
            "help": "'namespaces' (user/mount/net/PID namespaces; needs unprivileged user namespaces), 'audit' "
            "(a Python audit hook: weaker), or 'auto' (namespaces where this machine allows them, else audit)."
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
    "output_limit", "process_limit", "setup_failed" (the sandbox could not be built: the program never ran)."""

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
    return {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": workdir, "TMPDIR": workdir}


class Sandbox:
    """Runs untrusted Python programs, each in a fresh isolated process tree, at most `max_workers` at once.

    >>> with Sandbox(SandboxConfig(timeout_s=2)) as sandbox:
    ...     sandbox.run("print(input()[::-1])", stdin="abc\\n").stdout
    'cba\\n'
    """

    def __init__(self, config: SandboxConfig | None = None, max_workers: int | None = None):
        self.config = config or SandboxConfig()
        self.max_workers = max_workers or os.cpu_count() or 1
        if self.max_workers < 1:
            raise ValueError(f"max_workers must be at least 1, got {max_workers}.")
        self._pool: ThreadPoolExecutor | None = None

    @functools.cached_property
    def isolation(self) -> str:
        """The isolation mode runs use: 'namespaces' or 'audit' ('auto' resolved by a probe run, once)."""
        if self.config.isolation != "auto":
            return self.config.isolation
        available, reason = namespaces_available(self.config.python)
        if not available:
            logger.warning("Sandbox: user namespaces are unavailable (%s); using the weaker 'audit' isolation.", reason)
        return "namespaces" if available else "audit"

    def run(self, code: str, stdin: str = "", timeout_s: float | None = None) -> SandboxResult:
        """Run `code` as a Python program with `stdin` as its standard input, within `timeout_s` seconds of wall
        time when given (at most the config's `timeout_s`). Safe to call from any thread."""
        config = self.config
        if timeout_s is not None and timeout_s < config.timeout_s:
            config = dataclasses.replace(config, timeout_s=timeout_s)
        return run_program(code, stdin, config, self.isolation)

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

    def __getstate__(self):  # picklable: the pool is rebuilt on first use
        state = self.__dict__.copy()
        state["_pool"] = None
        return state


def run_program(code: str, stdin: str, config: SandboxConfig, isolation: str) -> SandboxResult:
    """One sandboxed run (see `Sandbox.run`); `isolation` is 'namespaces' or 'audit'."""
    start = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sandbox-", ignore_cleanup_errors=True) as staging:
        staging = Path(staging)
        workdir = staging / "work"
        workdir.mkdir()
        (staging / "main.py").write_text(code, encoding="utf-8", errors="surrogatepass")
        (staging / "stdin").write_text(stdin, encoding="utf-8", errors="surrogatepass")
        status_read, status_write = os.pipe()
        settings = {
            "isolation": isolation,
            "python": config.python,
            "program": str(staging / "main.py"),
            "workdir": str(workdir),
            "env": minimal_env(str(workdir)),
            "status_fd": status_write,
            "cpu_time_s": config.cpu_time_s,
            "memory_bytes": config.memory_mb << 20,
            "file_size_bytes": config.max_file_size_mb << 20,
            "open_files": config.max_open_files,
            "max_processes": config.max_processes,
            "workdir_bytes": config.workdir_mb << 20,
            "workdir_inodes": 4096,
        }
        with os.fdopen(status_read, "rb") as status_pipe:
            try:
                with open(staging / "stdin", "rb") as stdin_file:
                    process = subprocess.Popen(
                        [config.python, "-I", "-S", str(CHILD_SCRIPT), json.dumps(settings)],
                        stdin=stdin_file,
                        stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE,
                        cwd=workdir,
                        env=minimal_env(str(workdir)),
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
    return make_result(process.returncode, stdout, stderr, limit_hit, status_lines, time.monotonic() - start)


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
    """SIGKILL the run's whole process group (the session the launcher leads), then reap the launcher."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass  # the group is already gone
    process.wait()
    process.stdout.close()
    process.stderr.close()


def make_result(returncode, stdout: bytes, stderr: bytes, limit_hit, status_lines, wall_s) -> SandboxResult:
    layers = tuple(line.split(" ", 1)[1] for line in status_lines if line.startswith("layer "))
    failures = [line for line in status_lines if line.startswith(("setup_failed", "process_limit"))]
    if failures:
        status, _, detail = failures[0].partition(" ")
    elif limit_hit:
        status, detail = limit_hit, ""
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
def namespaces_available(python: str) -> tuple[bool, str]:
    """Probe once per interpreter whether a 'namespaces' run works here; (available, reason if not)."""
    config = SandboxConfig(timeout_s=30, python=python, isolation="namespaces")
    result = run_program("print('ok')", "", config, "namespaces")
    if result.ok and result.stdout == "ok\n":
        return True, ""
    return False, result.detail or result.stderr.strip() or result.status


def isolation_report(config: SandboxConfig | None = None) -> dict:
    """Which protections a run gets on this machine: the resolved mode and the layers the child reported."""
    sandbox = Sandbox(config)
    result = sandbox.run("print('ok')")
    return {
        "isolation": sandbox.isolation,
        "layers": list(result.layers),
        "probe": result.status,
        "namespaces_unavailable_because": namespaces_available(sandbox.config.python)[1] or None,
        "config": dataclasses.asdict(sandbox.config),
    }
