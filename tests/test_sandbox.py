"""The code sandbox: ordinary programs work; hostile ones score 0 and leave the test process and its files alone.

Each hostile program prints its success marker only if its attack worked, so a score of 0 means the attack failed;
the side effects (canary file, listening socket, this process) are checked directly as well, and so is what stopped
each attack. Every test runs in each backend this machine has (bubblewrap, namespaces, audit); the wider battery of
attacks, the same in every backend, is tests/test_hostile.py.
"""

import os
import signal
import socket
import subprocess
import tempfile
import time
import uuid

import pytest
from sandbox_backends import KERNEL, backend_params

from rewards import SandboxConfig, get_reward_func
from rewards.sandbox import Sandbox

TIMEOUT_S = 3.0
MEMORY_MB = 128  # small enough that the memory bomb hits RLIMIT_AS within a fraction of the timeout
MODES = backend_params()
KERNEL_MODES = backend_params(KERNEL)


@pytest.fixture(scope="module", params=MODES)
def sandbox(request):
    with Sandbox(SandboxConfig(timeout_s=TIMEOUT_S, cpu_time_s=2, isolation=request.param), max_workers=2) as box:
        yield box


@pytest.fixture(scope="module")
def code_reward(sandbox):
    reward = get_reward_func(
        "code", timeout_s=TIMEOUT_S, memory_mb=MEMORY_MB, isolation=sandbox.config.isolation, max_workers=2
    )
    runs = []
    run = reward.sandbox.run

    def recording_run(code, stdin="", **limits):  # keep each SandboxResult so tests can say what stopped the program
        result = run(code, stdin, **limits)
        runs.append(result)
        return result

    reward.sandbox.run = recording_run
    reward.runs = runs
    yield reward
    reward.sandbox.close()


def score_one(reward, program: str, expected: str, stdin: str = ""):
    """Score `program` against one test case; return (reward, the SandboxResult of the run)."""
    reward.runs.clear()
    completion = f"<think>attack</think><answer>\n```python\n{program}\n```\n</answer>"
    cases = [{"input": stdin, "output": expected}]
    [score] = reward(completions=[completion], test_cases=[cases])
    [result] = reward.runs
    return score, result


def test_ordinary_programs(sandbox):
    result = sandbox.run("import sys\nprint(sum(map(int, sys.stdin.read().split())))", "1 2 3\n")
    assert (result.status, result.stdout) == ("ok", "6\n")
    result = sandbox.run("import sys\nprint('oops', file=sys.stderr)\nsys.exit(3)")
    assert (result.status, result.returncode, result.stderr) == ("error", 3, "oops\n")
    result = sandbox.run(
        "open('notes.txt', 'w').write('hi')\nimport tempfile, os\n"
        "with tempfile.TemporaryFile() as f: f.write(b'x')\n"
        "print(open('notes.txt').read(), os.environ['HOME'] == os.getcwd())"
    )
    assert (result.status, result.stdout) == ("ok", "hi True\n")


def test_parallel_runs_keep_order(sandbox):
    jobs = [(f"print(int(input()) * {i})", "7\n") for i in range(6)]
    results = sandbox.run_many(jobs)
    assert [r.stdout for r in results] == [f"{7 * i}\n" for i in range(6)]


def test_run_directory_is_removed(sandbox, tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    sandbox.run("open('left_behind.txt', 'w').write('x' * 1000)")
    assert list(tmp_path.iterdir()) == []


def test_infinite_loop_is_stopped_in_time(code_reward):
    """The wall clock or the CPU-time limit, whichever comes first (the code reward sets both to its timeout)."""
    start = time.monotonic()
    score, result = score_one(code_reward, "while True:\n    pass\nprint('done')", "done")
    assert score == 0.0 and result.status == "timeout"
    assert time.monotonic() - start < TIMEOUT_S + 3


@pytest.mark.parametrize("isolation", MODES)
def test_cpu_bound_loop_is_stopped_by_the_cpu_time_limit(isolation):
    with Sandbox(SandboxConfig(timeout_s=20, cpu_time_s=1, isolation=isolation)) as box:
        result = box.run("while True:\n    pass\n")
    assert result.status == "timeout" and "RLIMIT_CPU" in result.detail and result.wall_s < 10


def test_fork_bomb(code_reward):
    # Doubling eleven times: up to 2048 sleeping processes, far above max_processes, but bounded, so that where the
    # supervisor is late (a loaded machine, no kernel ceiling on the run's tasks) this test cannot take every PID of
    # a shared machine (an unbounded bomb did: pid_max 32768, and the next run's own fork failed).
    program = "import os, time\nfor _ in range(11):\n    os.fork()\ntime.sleep(10)\nprint('done')"
    score, result = score_one(code_reward, program, "done")
    assert score == 0.0
    if code_reward.sandbox.isolation in KERNEL:
        assert result.status == "process_limit"  # PID 1 counted too many processes; the namespace died with it
    else:
        assert "os.fork is not allowed" in result.stderr  # the audit hook refuses process creation
    assert result.wall_s < TIMEOUT_S + 3


def test_memory_bomb(code_reward):
    program = "blocks = []\nwhile True:\n    blocks.append(bytearray(1 << 24))\nprint('done')"
    score, result = score_one(code_reward, program, "done")
    assert score == 0.0 and "MemoryError" in result.stderr  # RLIMIT_AS


def test_huge_output_is_capped(code_reward):
    program = "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)"
    score, result = score_one(code_reward, program, "x" * (4 << 20))
    assert score == 0.0 and result.status == "output_limit"
    assert len(result.stdout) == SandboxConfig().max_output_bytes


def test_files_outside_the_work_dir_survive(code_reward, tmp_path):
    canary = tmp_path / "canary.txt"
    canary.write_text("intact")
    attacks = {
        "write": f"open({str(canary)!r}, 'w').write('pwned')",
        "append": f"open({str(canary)!r}, 'a').write('pwned')",
        "delete": f"import os\nos.remove({str(canary)!r})",
        "rename": f"import os\nos.rename({str(canary)!r}, {str(tmp_path / 'moved')!r})",
        "dir_fd": f"import os\nd = os.open({str(tmp_path)!r}, os.O_RDONLY)\nos.unlink('canary.txt', dir_fd=d)",
        "symlink": f"import os\nos.symlink({str(canary)!r}, 'link')\nopen('link', 'w').write('pwned')",
        "new_file": f"open({str(tmp_path / 'planted.txt')!r}, 'w').write('pwned')",
    }
    for name, attack in attacks.items():
        score, result = score_one(code_reward, attack + "\nprint('done')", "done")
        assert score == 0.0, name
        assert result.status == "error", (name, result)
        # In bubblewrap and namespaces the host's files are not in the program's view at all: they do not exist.
        stopped_by = "No such file or directory" if code_reward.sandbox.isolation in KERNEL else "sandbox:"
        assert stopped_by in result.stderr, (name, result.stderr)
    assert canary.read_text() == "intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["canary.txt"]


def test_parent_environment_is_invisible(code_reward, monkeypatch):
    monkeypatch.setenv("SANDBOX_TEST_SECRET", "s3cr3t-value")
    program = (
        "import os\n"
        "leaks = [os.environ.get('SANDBOX_TEST_SECRET', '')]\n"
        f"for pid in (os.getppid(), {os.getpid()}):\n"
        "    try:\n"
        "        leaks.append(open(f'/proc/{pid}/environ', 'rb').read().decode(errors='replace'))\n"
        "    except OSError:\n"
        "        pass\n"
        "print('s3cr3t-value' if any('s3cr3t-value' in leak for leak in leaks) else 'nothing')"
    )
    score, result = score_one(code_reward, program, "s3cr3t-value")
    assert score == 0.0 and "s3cr3t-value" not in result.stdout


def test_network_connection_never_arrives(code_reward):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        program = (
            f"import socket\ns = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
            "s.sendall(b'hello')\nprint('connected')"
        )
        score, result = score_one(code_reward, program, "connected")
        assert score == 0.0 and result.status == "error"
        assert "Operation not permitted" in result.stderr or "sandbox:" in result.stderr  # seccomp / audit hook
        listener.settimeout(0.5)
        with pytest.raises(socket.timeout):
            listener.accept()


@pytest.mark.parametrize("isolation", KERNEL_MODES)
def test_network_namespace_has_only_a_loopback(isolation):
    with Sandbox(SandboxConfig(timeout_s=TIMEOUT_S, isolation=isolation)) as sandbox:
        result = sandbox.run("print(sorted(l.split(':')[0].strip() for l in open('/proc/net/dev').readlines()[2:]))")
    assert result.stdout == "['lo']\n"
    assert {"namespaces", "private_root"} <= set(result.layers)


@pytest.mark.parametrize("target", ["parent", "test process"])
def test_signals_do_not_reach_the_caller(code_reward, target):
    pid = "os.getppid()" if target == "parent" else str(os.getpid())
    program = (
        "import os, signal, time\n"
        f"target = {pid}\n"
        "os.kill(target, signal.SIGKILL)\n"
        "time.sleep(0.2)\n"
        "try:\n"
        "    os.kill(target, 0)\n"
        "except ProcessLookupError:\n"
        "    print('killed')\n"
    )
    score, result = score_one(code_reward, program, "killed")
    assert score == 0.0 and "killed" not in result.stdout
    os.kill(os.getpid(), 0)  # still here


def test_detached_processes_die_with_the_run(sandbox):
    marker = f"sandbox-test-{uuid.uuid4().hex}"
    program = (
        "import os, sys\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        f"    os.execv(sys.executable, [sys.executable, '-c', 'import time; time.sleep(60)', {marker!r}])\n"
        "print('parent done')\n"
    )
    result = sandbox.run(program)
    if sandbox.isolation in KERNEL:
        assert result.stdout == "parent done\n"  # the child started, detached, and must die with the namespace
    else:
        assert "os.fork is not allowed" in result.stderr
    time.sleep(0.2)
    survivors = subprocess.run(["pgrep", "-f", marker], capture_output=True, text=True, check=False).stdout.split()
    for pid in survivors:  # never leave one behind, even when the assertion below fails
        os.kill(int(pid), signal.SIGKILL)
    assert survivors == []


SYSCALL_PROBE = """
import ctypes, json, sys
libc = ctypes.CDLL(None, use_errno=True)
calls = json.loads(sys.stdin.read())
for name, number, first_argument in calls:
    ctypes.set_errno(0)
    result = libc.syscall(ctypes.c_long(number), ctypes.c_long(first_argument), *[ctypes.c_long(0)] * 4)
    print(name, result, ctypes.get_errno())
"""


@pytest.mark.parametrize("isolation", KERNEL_MODES)  # the audit hook refuses ctypes: no raw syscall is reachable there
def test_the_seccomp_filter_refuses_what_a_sandboxed_program_should_never_call(isolation):
    """Every call in DENIED_SYSCALLS, with arguments that would otherwise succeed or fail some other way, and clone
    with a new-user-namespace flag, fail with EPERM; clone3 says ENOSYS (the C library then uses clone)."""
    import json
    import platform

    from rewards._sandbox_child import CLONE, CLONE3, CLONE_NEWUSER, DENIED_SYSCALLS, SECCOMP_ARCHES

    column = SECCOMP_ARCHES[platform.machine()][1]
    calls = [(name, numbers[column], 0) for name, numbers in DENIED_SYSCALLS.items()]
    calls += [("clone_newuser", CLONE[column], CLONE_NEWUSER | signal.SIGCHLD), ("clone3", CLONE3, 0)]
    with Sandbox(SandboxConfig(timeout_s=TIMEOUT_S, isolation=isolation)) as sandbox:
        result = sandbox.run(SYSCALL_PROBE, stdin=json.dumps(calls))
    assert result.ok and "seccomp" in result.layers, result.stderr
    outcomes = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert outcomes.pop("clone3") == ["-1", "38"]  # ENOSYS
    assert outcomes == {name: ["-1", "1"] for name, _, _ in calls if name != "clone3"}  # EPERM


def test_threads_and_processes_still_start_under_the_filter(sandbox):
    program = "import threading\nt = threading.Thread(target=print, args=('thread',))\nt.start()\nt.join()\n"
    if sandbox.isolation in KERNEL:
        program += "import os\npid = os.fork()\nif pid == 0:\n    os._exit(3)\nprint(os.waitpid(pid, 0)[1] >> 8)\n"
    result = sandbox.run(program)
    assert result.ok, result.stderr
    assert result.stdout == ("thread\n3\n" if sandbox.isolation in KERNEL else "thread\n")


@pytest.mark.parametrize("isolation", KERNEL_MODES)  # in audit mode the hook refuses os.kill
@pytest.mark.parametrize("signal_name", ["SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGQUIT", "SIGSTOP", "SIGKILL"])
def test_the_program_cannot_signal_the_namespace_init_into_a_sandbox_failure(isolation, signal_name):
    """PID 1 is the sandbox's supervisor: a signal from the program must not make the run a set-up failure (which
    the code reward scores None, dropping the sample from the mean)."""
    program = f"import os, signal\nos.kill(1, signal.{signal_name})\nprint('still here')\n"
    with Sandbox(SandboxConfig(timeout_s=TIMEOUT_S, isolation=isolation)) as sandbox:
        result = sandbox.run(program)
    assert (result.status, result.stdout) == ("ok", "still here\n"), (result.status, result.detail, result.stderr)


@pytest.mark.parametrize("isolation", MODES)
def test_the_time_bound_is_per_completion_across_its_cases(isolation):
    """Five cases of a 0.5 s sleep, each well under the 3 s case limit: per case, all five would pass (about 3 s in
    all); the 1.5 s completion budget cuts the run short, whatever the machine's load does to process start-up."""
    reward = get_reward_func("code", timeout_s=3.0, completion_timeout_s=1.5, isolation=isolation, max_workers=1)
    completion = "<think>slow</think><answer>\n```python\nimport time\ntime.sleep(0.5)\nprint(input())\n```\n</answer>"
    cases = [{"input": f"{i}\n", "output": f"{i}\n"} for i in range(5)]
    start = time.monotonic()
    [score] = reward(completions=[completion], test_cases=[cases])
    elapsed = time.monotonic() - start
    reward.sandbox.close()
    assert score <= 3 / 5, score  # the cases after the budget fail
    assert elapsed < 1.5 + 1.0, elapsed  # the budget, plus one process start-up
