"""Child side of `rewards.sandbox`: set the limits and the isolation, then run the program.

The parent starts this file as `python -I -S _sandbox_child.py '<settings json>'` in a new session, with the
program's stdin already attached. It uses the standard library only (it runs with `-S`, outside the project's
environment) and never imports the project.

Two isolation modes (docs/rewards.md has the full table):

- "namespaces": unprivileged user + mount + network + PID + IPC namespaces. The mount table becomes read-only,
  nosuid and nodev except a fresh size-limited tmpfs work dir and /dev/{null,zero,random,urandom}; a fresh /proc
  shows only the sandbox's processes; the network namespace has only a loopback that is down. This process forks
  PID 1 of the new PID namespace, a supervisor that runs the program as its child, counts the namespace's processes
  and exits when there are too many: when PID 1 exits the kernel kills every process in the namespace.
- "audit": no namespaces. The program runs under a Python audit hook (AUDIT_BOOT below) that refuses sockets,
  process creation, signals, ctypes, and writes outside the work dir. A weaker measure: a Python-level check.

In both modes a seccomp filter (x86_64 and aarch64; `DENIED_SYSCALLS`) refuses sockets, io_uring, the keyrings,
ptrace, new namespaces, mounts, kernel modules, bpf, perf and the like, and the program runs with no_new_privs,
rlimits on CPU time, address space, file size, open files and core size, a scrubbed environment, and
cwd = HOME = TMPDIR = the work dir.

Lines written to the status fd tell the parent what happened outside the program's own output:
"layer <name>" for each protection in force, "setup_failed <reason>", "process_limit <count>".
"""

import ctypes
import errno
import json
import os
import platform
import resource
import select
import signal
import sys

LIBC = ctypes.CDLL(None, use_errno=True)
LINUX = sys.platform.startswith("linux")

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_REC, MS_PRIVATE = 2, 4, 8, 4096, 16384, 1 << 18
MOUNT_ATTR_RDONLY, MOUNT_ATTR_NOSUID, MOUNT_ATTR_NODEV = 0x1, 0x2, 0x4
AT_FDCWD, AT_RECURSIVE = -100, 0x8000
SYS_MOUNT_SETATTR = 442  # the same number on every architecture (syscalls >= 424 are shared)

PR_SET_PDEATHSIG, PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP = 1, 4, 38, 22
SECCOMP_MODE_FILTER = 2
DEVICES = ("null", "zero", "random", "urandom")
PID_MAX_MIN = 301  # the kernel's floor for a PID namespace's pid_max (Linux >= 6.14 namespaces pid_max)
SUPERVISOR_TICK_S = 0.005

# Seccomp. The program may not make these calls (EPERM): no network and no io_uring; nothing of the keyrings,
# which the kernel shares between every namespace of one user (a run could leave a key for the next); no ptrace or
# cross-process memory; no new namespaces, mounts or file-handle opens; no kernel modules, bpf, perf events,
# userfaultfd, kexec, swap, reboot, process accounting or quotas: what Docker's and nsjail's default policies refuse
# that an unprivileged process could still try. Numbers from the kernel's syscall tables, (x86_64, aarch64).
DENIED_SYSCALLS = {
    "socket": (41, 198),
    "socketpair": (53, 199),
    "io_uring_setup": (425, 425),
    "io_uring_enter": (426, 426),
    "io_uring_register": (427, 427),
    "add_key": (248, 217),
    "request_key": (249, 218),
    "keyctl": (250, 219),
    "ptrace": (101, 117),
    "process_vm_readv": (310, 270),
    "process_vm_writev": (311, 271),
    "unshare": (272, 97),
    "setns": (308, 268),
    "mount": (165, 40),
    "umount2": (166, 39),
    "pivot_root": (155, 41),
    "open_tree": (428, 428),
    "move_mount": (429, 429),
    "fsopen": (430, 430),
    "fsconfig": (431, 431),
    "fsmount": (432, 432),
    "fspick": (433, 433),
    "mount_setattr": (442, 442),
    "name_to_handle_at": (303, 264),
    "open_by_handle_at": (304, 265),
    "init_module": (175, 105),
    "finit_module": (313, 273),
    "delete_module": (176, 106),
    "bpf": (321, 280),
    "perf_event_open": (298, 241),
    "userfaultfd": (323, 282),
    "kexec_load": (246, 104),
    "kexec_file_load": (320, 294),
    "swapon": (167, 224),
    "swapoff": (168, 225),
    "reboot": (169, 142),
    "acct": (163, 89),
    "quotactl": (179, 60),
}
# clone(2) is how fork, vfork and threads start, so it is refused only with a new-namespace flag in its first
# argument. clone3(2) passes its flags in memory a filter cannot read: it answers ENOSYS, on which the C library
# falls back to clone (Docker's default policy does the same).
CLONE, CLONE3 = (56, 220), 435
NEW_NAMESPACE_FLAGS = (
    CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID | CLONE_NEWNET
)
SECCOMP_ARCHES = {"x86_64": (0xC000003E, 0), "aarch64": (0xC00000B7, 1)}  # AUDIT_ARCH, column of the tables above
X32_SYSCALL_BIT = 0x40000000

# Run by the program's interpreter in "audit" mode: install the hook, then execute main.py as __main__.
AUDIT_BOOT = r"""
import sys

def _install(workdir):
    import os
    import posixpath

    realpath, isdir, getpid = posixpath.realpath, posixpath.isdir, os.getpid
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    refused_events = ("socket.", "ctypes.", "subprocess.", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
                      "os.exec", "os.system", "os.kill", "os.killpg", "signal.pthread_kill", "os.pidfd_open",
                      "pty.", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.setns", "os.unshare")
    refused_imports = ("_posixsubprocess", "_ctypes")
    # event -> (indices of the paths it changes, indices of its dir_fd arguments), as CPython 3.11 raises them
    path_events = {"os.remove": ((0,), (1,)), "os.rmdir": ((0,), (1,)), "os.mkdir": ((0,), (2,)),
                   "os.chmod": ((0,), (2,)), "os.chown": ((0,), (3,)), "os.utime": ((0,), (3,)),
                   "os.truncate": ((0,), ()), "os.rename": ((0, 1), (2, 3)), "os.link": ((1,), (2, 3)),
                   "os.symlink": ((1,), (2,)), "os.setxattr": ((0,), ()), "os.removexattr": ((0,), ()),
                   "os.chflags": ((0,), ()), "os.lchflags": ((0,), ()), "os.lchmod": ((0,), ())}

    def resolve(path, fd_means_none=True):
        if isinstance(path, int):
            if fd_means_none:
                return None
            path = f"/proc/self/fd/{path}"
        path = os.fsdecode(os.fspath(path))
        return realpath(path if path.startswith("/") else os.getcwd() + "/" + path)

    def inside(path):
        return path is None or path == workdir or path.startswith(workdir + "/")

    def other_process(path):
        parts = path.split("/")
        return len(parts) > 2 and parts[1] == "proc" and parts[2].isdigit() and parts[2] != str(getpid())

    def hook(event, args):
        if event.startswith(refused_events):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "import" and args[0] in refused_imports:
            raise PermissionError(f"sandbox: importing {args[0]} is not allowed")
        if event == "open":
            path = resolve(args[0])
            if path is None:
                return
            writes = isinstance(args[2], int) and args[2] & write_flags
            if (writes or isdir(path)) and not inside(path):
                raise PermissionError(f"sandbox: writing {path} is not allowed")
            if other_process(path):
                raise PermissionError(f"sandbox: reading {path} is not allowed")
        elif event in path_events:
            paths, dir_fds = path_events[event]
            if any(i < len(args) and args[i] not in (None, -1) for i in dir_fds):
                raise PermissionError(f"sandbox: {event} with dir_fd is not allowed")
            if not all(inside(resolve(args[i], fd_means_none=False)) for i in paths):
                raise PermissionError(f"sandbox: {event} outside the work dir is not allowed")

    sys.addaudithook(hook)


def _run(path):
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    sys.argv = [path]
    exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})


_install(sys.argv[1])
del _install
_run("main.py")
"""


def main():
    settings = json.loads(sys.argv[1])
    status = os.fdopen(settings["status_fd"], "w", buffering=1)
    os.set_inheritable(status.fileno(), False)  # the program never sees it
    try:
        set_rlimits(settings)
        if settings["isolation"] == "namespaces":
            enter_namespaces(settings, status)
        install_program(settings)
    except OSError as error:
        status.write(f"setup_failed {error}\n")
        os._exit(1)
    if settings["isolation"] == "namespaces":
        os._exit(run_pid_namespace(settings, status))
    exec_program(settings, status, audited=True)


def set_rlimits(settings):
    """Per-process limits, inherited by every process the program starts."""
    cpu = settings["cpu_time_s"]
    for limit, value in (
        (resource.RLIMIT_CPU, (cpu, cpu + 1)),  # SIGXCPU at the soft limit, SIGKILL one second later
        (resource.RLIMIT_AS, (settings["memory_bytes"],) * 2),
        (resource.RLIMIT_FSIZE, (settings["file_size_bytes"],) * 2),
        (resource.RLIMIT_NOFILE, (settings["open_files"],) * 2),
        (resource.RLIMIT_CORE, (0, 0)),
    ):
        resource.setrlimit(limit, value)


def libc_call(name, *args):
    """Call a libc function, raising OSError on failure. Integers go as C longs: prctl and syscall are variadic
    and read every argument as a long, and mount's flags are an unsigned long."""
    function = getattr(LIBC, name, None)
    if function is None:
        raise OSError(errno.ENOSYS, f"{name} is not available on this platform")
    if function(*(ctypes.c_long(a) if isinstance(a, int) else a for a in args)) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"{name}{args[:2]}: {os.strerror(error)}")


class MountAttr(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint64) for name in ("attr_set", "attr_clr", "propagation", "userns_fd")]


def mount_setattr(path, attr_set, attr_clr, flags=0):
    attr = MountAttr(attr_set, attr_clr, 0, 0)
    libc_call("syscall", SYS_MOUNT_SETATTR, AT_FDCWD, path.encode(), flags, ctypes.byref(attr), ctypes.sizeof(attr))


def enter_namespaces(settings, status):
    """New user/mount/net/PID/IPC namespaces; everything read-only except a tmpfs work dir and a few devices."""
    uid, gid = os.geteuid(), os.getegid()
    libc_call("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC)
    for name, text in (("setgroups", "deny"), ("uid_map", f"65534 {uid} 1"), ("gid_map", f"65534 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    workdir = settings["workdir"]
    libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    size = f"size={settings['workdir_bytes']},nr_inodes={settings['workdir_inodes']},mode=0700"
    libc_call("mount", b"tmpfs", workdir.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, size.encode())
    devices = [f"/dev/{name}" for name in DEVICES if os.path.exists(f"/dev/{name}")]
    for device in devices:
        libc_call("mount", device.encode(), device.encode(), None, MS_BIND, None)
    mount_setattr("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, AT_RECURSIVE)
    mount_setattr(workdir, 0, MOUNT_ATTR_RDONLY)
    for device in devices:
        mount_setattr(device, 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV)
    status.write("layer namespaces\n")


def install_program(settings):
    """Copy the program into the work dir (in "namespaces" mode the work dir is the fresh tmpfs)."""
    with open(settings["program"], "rb") as src, open(os.path.join(settings["workdir"], "main.py"), "wb") as dst:
        dst.write(src.read())


def run_pid_namespace(settings, status):
    """Fork PID 1 of the new PID namespace and return its exit status as ours."""
    pid1 = os.fork()
    if pid1 == 0:
        try:
            os._exit(supervise(settings, status))
        except BaseException as error:  # noqa: BLE001  (PID 1 must never unwind into the launcher's code)
            status.write(f"setup_failed supervisor: {error!r}\n")
            os._exit(1)
    _, wait_status = os.waitpid(pid1, 0)
    return exit_code(wait_status)


def supervise(settings, status):
    """PID 1: mount /proc, start the program, reap orphans, enforce the process count; the namespace dies with us."""
    # The kernel drops a signal sent to a namespace's init from inside unless init handles it. Python handles
    # SIGINT (KeyboardInterrupt): back to the default, so `os.kill(1, SIGINT)` cannot turn a run into a failure of
    # the sandbox.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    libc_call("mount", b"proc", b"/proc", b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    try:
        with open("/proc/sys/kernel/pid_max", "w") as f:
            f.write(str(PID_MAX_MIN))
        status.write("layer pid_max\n")
    except OSError:
        pass  # kernels before 6.14 have one global pid_max
    mount_setattr("/proc", MOUNT_ATTR_RDONLY, 0)
    libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)  # nothing in the sandbox may ptrace PID 1

    program = os.fork()
    if program == 0:
        exec_program(settings, status, audited=False)
    program_fd = os.pidfd_open(program)
    max_processes = settings["max_processes"]
    while True:
        select.select([program_fd], [], [], SUPERVISOR_TICK_S)
        while True:  # reap the program and any orphan that was re-parented to us
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == program:
                return exit_code(wait_status)
        count = sum(name.isdigit() for name in os.listdir("/proc")) - 1  # not counting PID 1
        if count > max_processes:
            status.write(f"process_limit {count}\n")
            return 1


def exec_program(settings, status, audited):
    """Replace this process by the program's interpreter. Never returns."""
    try:
        if LINUX:  # execve can never grant privileges again (setuid binaries, file capabilities)
            libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if install_seccomp():
            status.write("layer seccomp\n")
        os.chdir(settings["workdir"])
        python = settings["python"]
        argv = (
            [python, "-I", "-S", "-c", AUDIT_BOOT, settings["workdir"]] if audited else [python, "-I", "-S", "main.py"]
        )
        if audited:
            status.write("layer audit_hook\n")
        status.flush()
        os.execve(python, argv, settings["env"])
    except BaseException as error:  # noqa: BLE001  (never run the launcher's code past a failed exec)
        status.write(f"setup_failed exec: {error!r}\n")
        os._exit(1)


# Classic BPF as seccomp reads it: load a word of `struct seccomp_data`, compare, return a verdict.
BPF_LD_ABS, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
DATA_NR, DATA_ARCH, DATA_ARG0 = 0, 4, 16  # offsets in seccomp_data (arg0's low 32 bits on a little-endian CPU)
ALLOW, KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def seccomp_program(machine: str) -> list[tuple[int, int, int, int]]:
    """The filter for `machine`, as (code, jump if true, jump if false, k) rows.

    Another syscall ABI kills the process (x32 on x86_64 is refused: its numbers carry X32_SYSCALL_BIT); a denied
    call, or clone with a new-namespace flag, gets EPERM; clone3 gets ENOSYS; everything else runs.
    """
    audit_arch, column = SECCOMP_ARCHES[machine]
    rows = [
        (BPF_LD_ABS, DATA_ARCH, None, None),
        (BPF_JEQ, audit_arch, None, "kill"),
        (BPF_LD_ABS, DATA_NR, None, None),
        (BPF_JGE, X32_SYSCALL_BIT, "refuse", None),
        *((BPF_JEQ, numbers[column], "refuse", None) for numbers in DENIED_SYSCALLS.values()),
        (BPF_JEQ, CLONE3, "no_such_call", None),
        (BPF_JEQ, CLONE[column], "clone", None),
        (BPF_RET, ALLOW, None, None),
        "clone",
        (BPF_LD_ABS, DATA_ARG0, None, None),
        (BPF_JSET, NEW_NAMESPACE_FLAGS, "refuse", None),
        (BPF_RET, ALLOW, None, None),
        "refuse",
        (BPF_RET, RET_ERRNO | errno.EPERM, None, None),
        "no_such_call",
        (BPF_RET, RET_ERRNO | errno.ENOSYS, None, None),
        "kill",
        (BPF_RET, KILL_PROCESS, None, None),
    ]
    return assemble(rows)


def assemble(rows) -> list[tuple[int, int, int, int]]:
    """Resolve the labels (strings between the rows) into BPF's relative jumps; None falls through."""
    labels, code = {}, []
    for row in rows:
        if isinstance(row, str):
            labels[row] = len(code)
        else:
            code.append(row)

    def offset(label, at):
        return 0 if label is None else labels[label] - at - 1

    return [(op, offset(jt, at), offset(jf, at), k) for at, (op, k, jt, jf) in enumerate(code)]


class SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8), ("k", ctypes.c_uint32)]


class SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_uint16), ("filter", ctypes.POINTER(SockFilter))]


def install_seccomp():
    """Install `seccomp_program` for this machine. False if unsupported (not Linux, another CPU, 32 bits)."""
    if not LINUX or platform.machine() not in SECCOMP_ARCHES or sys.maxsize < 2**32:  # a 64-bit interpreter
        return False
    program = seccomp_program(platform.machine())
    filters = (SockFilter * len(program))(*(SockFilter(*row) for row in program))
    prog = SockFprog(len(program), filters)
    try:
        libc_call("prctl", PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0)
    except OSError:
        return False
    return True


def exit_code(wait_status):
    """Shell convention: the exit code, or 128 + the signal number."""
    if os.WIFSIGNALED(wait_status):
        return 128 + os.WTERMSIG(wait_status)
    return os.WEXITSTATUS(wait_status)


if __name__ == "__main__":
    main()
