"""Child side of `rewards.sandbox`: set the limits and the isolation, then run the program.

The parent starts this file as `python -I -S _sandbox_child.py '<settings json>'` in a new session, with the
program's stdin already attached. It uses the standard library only (it runs with `-S`, outside the project's
environment) and never imports the project.

Three backends (docs/rewards.md has the full table):

- "bubblewrap": this launcher execs `bwrap` (new user, mount, network, PID, IPC, UTS namespaces); bwrap builds the
  program's filesystem view (below) and starts this same file's `supervise` as PID 1 of the new PID namespace.
- "namespaces": the same isolation built here: unshare, then a new root on a tmpfs holding only the view, entered
  with pivot_root; this process forks the supervisor as PID 1 of the new PID namespace.
- "audit": no namespaces. The program runs under a Python audit hook (AUDIT_BOOT below) that refuses sockets,
  process creation, signals, ctypes, subinterpreters, frame access, writes outside the work dir and reads outside
  the view. A weaker measure (a Python-level check), used only when asked for by name.

The view: `/sandbox` (the work dir: a size-limited tmpfs; cwd, HOME, TMPDIR), a private `/tmp` of the same size,
the interpreter, its standard library (site-packages hidden) and the directories of the shared libraries it maps,
read-only; `/dev/{null,zero,random,urandom}`; a fresh read-only `/proc`. Nothing else of the host exists there.

The supervisor (PID 1) starts the program, reaps orphans, and stops the run when the namespace holds more than
`max_processes` processes or its processes and tmpfs files hold more than `run_memory_bytes` (checked every
SUPERVISOR_TICK_S). It handles no signal, so nothing inside the namespace can signal it.

In every backend a seccomp filter (x86_64 and aarch64; `DENIED_SYSCALLS`) refuses sockets, io_uring, the keyrings,
ptrace, new namespaces, mounts, kernel modules, bpf, perf and the like, and the program runs with no_new_privs,
rlimits on CPU time, address space, file size, open files and core size, and a scrubbed environment.

Lines written to the status fd tell the parent what happened outside the program's own output: "layer <name>" for
each protection in force, "exec" just before the program starts, "setup_failed <reason>", "process_limit <count>",
"memory_limit <bytes>".
"""

import ctypes
import errno
import itertools
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
WORKDIR = "/sandbox"  # the work dir's path inside the namespaces (in "audit" mode the host dir is used)
HARNESS = "/.sandbox/child.py"  # this file, inside bwrap's view (read-only)
# Since Linux 5.14 RLIMIT_NPROC counts tasks (processes and threads) per user *namespace*: in a run's own user
# namespace it is a kernel ceiling on the run's tasks alone (before, it counted the host user's tasks everywhere).
# The kernel exempts tasks whose host uid is root, so for a trainer running as root the supervisor's count of
# threads is the bound.
NPROC_PER_NAMESPACE = LINUX and tuple(int(p) for p in platform.release().split(".")[:2] if p.isdigit()) >= (5, 14)
USAGE_EVERY_TICKS = 4  # the supervisor sums the run's memory and threads every 4th tick (20 ms)
MNT_DETACH = 2

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
    # memory a run could hold outside its processes' resident pages and its tmpfs (which the supervisor sums)
    "memfd_create": (319, 279),
    "shmget": (29, 194),
    "msgget": (68, 186),
    "mq_open": (240, 180),
    # other processes by pidfd (Python raises no audit event for them)
    "pidfd_open": (434, 434),
    "pidfd_send_signal": (424, 424),
    "pidfd_getfd": (438, 438),
}
# Only in "audit" mode, where the program shares the host's filesystem: device nodes and FIFOs raise no audit event,
# and openat2 resolves paths its own way.
AUDIT_DENIED_SYSCALLS = {"mknod": (133, None), "mknodat": (259, 33), "openat2": (437, 437)}
# Calls allowed only on the program itself, or refused with one argument value: (numbers, argument, rule, value).
# "only" refuses any other value; "not" refuses that value. Arguments are compared on their low 32 bits (every one
# here is a C int or unsigned int).
AT_FDCWD_LOW = 0xFFFFFF9C  # AT_FDCWD (-100) as an unsigned 32-bit word
FS_IOC_SETFLAGS = 0x40086602  # chattr: an immutable file the harness could not remove
ARGUMENT_RULES = {
    "prlimit64": ((302, 261), 0, "only", 0),  # pid 0: this process
    "setpriority": ((141, 140), 1, "only", 0),
    "sched_setaffinity": ((203, 122), 0, "only", 0),
    "sched_setscheduler": ((144, 119), 0, "only", 0),
    "sched_setparam": ((142, 118), 0, "only", 0),
    "ioctl": ((16, 29), 1, "not", FS_IOC_SETFLAGS),
}
# Only in "audit" mode: an open relative to a directory fd (the hook sees the path but not the fd).
AUDIT_ARGUMENT_RULES = {"openat": ((257, 56), 0, "only", AT_FDCWD_LOW)}
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
# The hook trusts nothing the program can change: every function and builtin it calls is bound as a default argument
# when it is installed (no closure cells, no global lookups), paths are resolved by its own `resolve` from
# `os.lstat`/`os.readlink` captured then, and it only looks at arguments of the exact built-in types, so no program
# object's method runs inside it. Frame access that could reach it (tracebacks, generators, tracing, profiling) and
# the modules that run code outside it (subinterpreters, CPython's test modules, ctypes) are refused.
AUDIT_BOOT = r"""
import sys

def _install(workdir, readable, hidden, max_created):
    import itertools
    import os
    import stat

    refused_events = ("socket.", "ctypes.", "subprocess.", "os.fork", "os.forkpty", "os.posix_spawn", "os.spawn",
                      "os.exec", "os.system", "os.kill", "os.killpg", "signal.pthread_kill", "os.pidfd_open",
                      "pty.", "gc.get_objects", "gc.get_referrers", "gc.get_referents", "os.setns", "os.unshare",
                      "sys.settrace", "sys.setprofile", "sys._current_frames", "sys._current_exceptions",
                      "sys.monitoring", "os.symlink")  # a symlink could be swapped between the check and the open
    refused_imports = ("_posixsubprocess", "_ctypes", "_xx", "_interp", "_test", "_lsprof", "_tracemalloc")
    frame_attributes = ("tb_frame", "gi_frame", "cr_frame", "ag_frame")  # the audited reads that give a frame
    function_attributes = ("__code__", "__defaults__", "__kwdefaults__")  # the audited writes to a function
    write_flags = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC
    # (event, indices of the paths it changes, indices of its dir_fd arguments), as CPython 3.11 raises them.
    # Tuples, like everything the hook holds: a signal handler or finalizer that runs inside it sees its frame.
    path_events = (("os.remove", (0,), (1,)), ("os.rmdir", (0,), (1,)), ("os.mkdir", (0,), (2,)),
                   ("os.chmod", (0,), (2,)), ("os.chown", (0,), (3,)), ("os.utime", (0,), (3,)),
                   ("os.truncate", (0,), ()), ("os.rename", (0, 1), (2, 3)), ("os.link", (0, 1), (2, 3)),
                   ("os.symlink", (1,), (2,)), ("os.setxattr", (0,), ()), ("os.removexattr", (0,), ()),
                   ("os.chflags", (0,), ()), ("os.lchflags", (0,), ()), ("os.lchmod", (0,), ()))
    read_events = ("os.listdir", "os.scandir", "os.listxattr", "os.getxattr", "os.chdir", "os.fwalk")

    def resolve(path, type=type, str=str, bytes=bytes, getcwd=os.getcwd, lstat=os.lstat, readlink=os.readlink,
                is_link=stat.S_ISLNK, error=PermissionError):
        # The absolute path with every symbolic link followed, like os.path.realpath.
        if type(path) is bytes:
            path = path.decode("utf-8", "surrogateescape")
        if type(path) is not str:
            raise error("sandbox: paths must be str or bytes")
        if not path.startswith("/"):
            path = getcwd() + "/" + path
        pending, parts, links = path.split("/")[::-1], [], 0
        while pending:
            part = pending.pop()
            if part in ("", "."):
                continue
            if part == "..":
                parts = parts[:-1]
                continue
            here = "/" + "/".join(parts + [part])
            try:
                mode = lstat(here).st_mode
            except OSError:
                parts = parts + [part]
                continue
            if not is_link(mode):
                parts = parts + [part]
                continue
            links += 1
            if links > 40:
                raise error("sandbox: too many symbolic links")
            target = readlink(here)
            if target.startswith("/"):
                parts = []
            pending.extend(target.split("/")[::-1])
        return "/" + "/".join(parts)

    def within(path, roots):
        for root in roots:
            if path == root or path.startswith(root + "/"):
                return True
        return False

    def hook(event, args, type=type, str=str, int=int, len=len, resolve=resolve, within=within,
             workdir=(workdir,), readable=tuple(readable), hidden=tuple(hidden), error=PermissionError,
             refused_events=refused_events, refused_imports=refused_imports, frame_attributes=frame_attributes,
             function_attributes=function_attributes, write_flags=write_flags, path_events=path_events,
             read_events=read_events, created=itertools.count(1), max_created=max_created, create=os.O_CREAT):
        if event.startswith(refused_events):
            raise error(f"sandbox: {event} is not allowed")
        if event == "import":
            if type(args[0]) is not str or args[0].startswith(refused_imports):
                raise error("sandbox: importing this module is not allowed")
        elif event == "object.__getattr__":
            if type(args[1]) is not str or args[1] in frame_attributes:
                raise error("sandbox: reading a frame attribute is not allowed")
        elif event == "object.__setattr__" or event == "object.__delattr__":
            if type(args[1]) is not str or args[1] in function_attributes:
                raise error("sandbox: changing a function's code or defaults is not allowed")
        elif event == "open":
            if type(args[0]) is int:
                return
            path = resolve(args[0])
            writes = type(args[2]) is not int or args[2] & write_flags
            if not within(path, workdir) and (writes or not within(path, readable) or within(path, hidden)):
                raise error(f"sandbox: opening {path} is not allowed")
            # The work dir's size: at most max_created files opened with O_CREAT, each within RLIMIT_FSIZE. A
            # count that only goes up: whoever reaches it from inside the hook cannot lower it.
            if type(args[2]) is int and args[2] & create and next(created) > max_created:
                raise error("sandbox: too many files created in the work dir")
        elif event in read_events:
            if len(args) and type(args[0]) is not int and args[0] is not None:
                path = resolve(args[0])
                if not within(path, workdir) and (not within(path, readable) or within(path, hidden)):
                    raise error(f"sandbox: {event} outside the sandbox is not allowed")
        else:
            for name, paths, dir_fds in path_events:
                if name == event:
                    break
            else:
                return
            for i in dir_fds:
                if i < len(args) and args[i] is not None and not (type(args[i]) is int and args[i] == -1):
                    raise error(f"sandbox: {event} with dir_fd is not allowed")
            for i in paths:
                if type(args[i]) is int or not within(resolve(args[i]), workdir):
                    raise error(f"sandbox: {event} outside the work dir is not allowed")

    sys.addaudithook(hook)


def _run(path):
    with open(path, "rb") as f:
        code = compile(f.read(), path, "exec")
    sys.argv = [path]
    exec(code, {"__name__": "__main__", "__file__": path, "__builtins__": __builtins__})


import json
_install(sys.argv[1], *json.loads(sys.argv[2]))
del _install, json
_run("main.py")
"""


def main():
    if sys.argv[1] == "supervise":  # inside bwrap, as PID 1 of the new PID namespace
        settings = json.loads(sys.argv[2])
        status = open_status(settings)
        os._exit(guarded_supervise(settings, status))
    settings = json.loads(sys.argv[1])
    status = open_status(settings)
    try:
        set_rlimits(settings)
        if settings["backend"] == "bubblewrap":
            exec_bubblewrap(settings, status)
        if settings["backend"] == "namespaces":
            enter_namespaces(settings, status)
            os._exit(run_pid_namespace(settings, status))
        install_program(settings["program"], settings["workdir"])
    except OSError as error:
        status.write(f"setup_failed {error}\n")
        os._exit(1)
    exec_program(settings, status, audited=True)


def open_status(settings):
    status = os.fdopen(settings["status_fd"], "w", buffering=1)
    os.set_inheritable(status.fileno(), settings["backend"] == "bubblewrap")  # bwrap hands it to the supervisor
    return status


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


def bind(source, target, flags=0):
    libc_call("mount", source.encode(), target.encode(), None, MS_BIND | MS_REC | flags, None)


def tmpfs(target, size_bytes, mode="0755"):
    options = f"size={size_bytes},nr_inodes=4096,mode={mode}"
    libc_call("mount", b"tmpfs", target.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, options.encode())


def enter_namespaces(settings, status):
    """New user/mount/net/PID/IPC namespaces, and the view built on a tmpfs (entered later by the supervisor)."""
    uid, gid = os.geteuid(), os.getegid()
    libc_call("unshare", CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWNET | CLONE_NEWPID | CLONE_NEWIPC)
    for name, text in (("setgroups", "deny"), ("uid_map", f"65534 {uid} 1"), ("gid_map", f"65534 {gid} 1")):
        with open(f"/proc/self/{name}", "w") as f:
            f.write(text)
    libc_call("mount", None, b"/", None, MS_REC | MS_PRIVATE, None)
    root = settings["root"]
    tmpfs(root, 1 << 20)
    build_view(root, settings)
    install_program(settings["program"], root + WORKDIR)
    status.write("layer namespaces\n")


def enter_root(root):
    """Make the view the root (the host's tree is detached), read-only except the work dir, /tmp and devices.
    Run in the new PID namespace, once its /proc is mounted: the kernel mounts a new proc only where the mount
    namespace still shows a full one."""
    os.chdir(root)
    pivot_root = DENIED_SYSCALLS["pivot_root"][SECCOMP_ARCHES[platform.machine()][1]]
    libc_call("syscall", pivot_root, b".", b".")  # the old root now sits on top of the new one: detach it
    libc_call("umount2", b".", MNT_DETACH)
    os.chdir("/")
    mount_setattr("/", MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, AT_RECURSIVE)
    for writable in (WORKDIR, "/tmp"):
        mount_setattr(writable, 0, MOUNT_ATTR_RDONLY)
    for device in DEVICES:
        mount_setattr(f"/dev/{device}", 0, MOUNT_ATTR_RDONLY | MOUNT_ATTR_NODEV)


def build_view(root, settings):
    """Populate the new root: read-only binds of the interpreter's files, hidden site-packages, symlinks, devices,
    the work dir and /tmp as size-limited tmpfs, an empty /proc for the supervisor to mount."""
    view = settings["view"]
    for path in view["read_only"]:
        target = root + path
        if os.path.isdir(path):
            os.makedirs(target, exist_ok=True)
        else:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            open(target, "w").close()
        bind(path, target)
    for path in view["hidden"]:
        tmpfs(root + path, 4096, mode="0555")
    for path, target in view["symlinks"]:
        os.makedirs(os.path.dirname(root + path), exist_ok=True)
        if not os.path.lexists(root + path):
            os.symlink(target, root + path)
    os.makedirs(root + "/dev")
    for device in DEVICES:
        open(f"{root}/dev/{device}", "w").close()
        bind(f"/dev/{device}", f"{root}/dev/{device}")
    for writable in (WORKDIR, "/tmp"):
        os.makedirs(root + writable)
        tmpfs(root + writable, settings["workdir_bytes"], mode="0777")
    os.makedirs(root + "/proc")


def bubblewrap_args(settings, program_fd):
    """The same view, built by bwrap: PID 1 of its PID namespace is this file's `supervise`."""
    view, size = settings["view"], str(settings["workdir_bytes"])
    args = [settings["bwrap"], "--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1"]
    args += ["--uid", "65534", "--gid", "65534", "--cap-drop", "ALL"]
    for path in view["read_only"]:
        args += ["--ro-bind", path, path]
    for path in view["hidden"]:
        args += ["--perms", "0555", "--size", "4096", "--tmpfs", path, "--remount-ro", path]
    for path, target in view["symlinks"]:
        args += ["--symlink", target, path]
    for device in DEVICES:
        args += ["--dev-bind", f"/dev/{device}", f"/dev/{device}"]
    args += ["--proc", "/proc"]
    for writable in (WORKDIR, "/tmp"):
        args += ["--perms", "0777", "--size", size, "--tmpfs", writable]
    args += ["--file", str(program_fd), WORKDIR + "/main.py", "--ro-bind", os.path.abspath(__file__), HARNESS]
    args += ["--remount-ro", "/", "--chdir", WORKDIR, "--clearenv"]
    for name, value in settings["env"].items():
        args += ["--setenv", name, value]
    return [*args, "--", settings["python"], "-I", "-S", HARNESS, "supervise", json.dumps(settings)]


def exec_bubblewrap(settings, status):
    program_fd = os.open(settings["program"], os.O_RDONLY)
    os.set_inheritable(program_fd, True)
    status.write("layer bubblewrap\nlayer namespaces\nlayer private_root\n")
    os.execv(settings["bwrap"], bubblewrap_args(settings, program_fd))


def install_program(program, workdir):
    """Copy the program into the work dir (the fresh tmpfs, or the host dir in "audit" mode)."""
    with open(program, "rb") as src, open(os.path.join(workdir, "main.py"), "wb") as dst:
        dst.write(src.read())


def run_pid_namespace(settings, status):
    """Fork PID 1 of the new PID namespace and return its exit status as ours."""
    pid1 = os.fork()
    if pid1 == 0:
        os._exit(guarded_supervise(settings, status))
    _, wait_status = os.waitpid(pid1, 0)
    return exit_code(wait_status)


def guarded_supervise(settings, status):
    try:
        return supervise(settings, status)
    except BaseException as error:  # noqa: BLE001  (PID 1 must never unwind into the launcher's code)
        status.write(f"setup_failed supervisor: {error!r}\n")
        return 1


def supervise(settings, status):
    """PID 1: start the program, reap orphans, enforce the process count and the run's memory; the namespace dies
    with us."""
    # The kernel drops a signal sent to a namespace's init from inside unless init handles it. Python handles
    # SIGINT (KeyboardInterrupt): back to the default, so `os.kill(1, SIGINT)` cannot turn a run into a failure of
    # the sandbox.
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    libc_call("prctl", PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getsid(0) != os.getpid():
        os.setsid()  # the program's process group holds no process outside the namespace (killpg(0, ...))
    if settings["backend"] == "namespaces":  # bwrap builds its own
        proc = settings["root"] + "/proc"
        libc_call("mount", b"proc", proc.encode(), b"proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
        set_pid_max(proc, status)
        enter_root(settings["root"])
        status.write("layer private_root\n")
    libc_call("prctl", PR_SET_DUMPABLE, 0, 0, 0, 0)  # nothing in the sandbox may ptrace PID 1

    program = os.fork()
    if program == 0:
        exec_program(settings, status, audited=False)
    program_fd = os.pidfd_open(program)
    program_exit = None
    for tick in itertools.count():
        select.select([program_fd], [], [], SUPERVISOR_TICK_S)
        while True:  # reap the program and any orphan that was re-parented to us
            try:
                pid, wait_status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            if pid == program:
                program_exit = exit_code(wait_status)
        # Counted before the program's exit is reported: a program that died of a kernel ceiling (its fork refused)
        # with more processes alive than allowed hit the process limit, whichever enforcement acted first.
        others = [name for name in os.listdir("/proc") if name.isdigit() and name != "1"]
        if len(others) > settings["max_processes"]:
            status.write(f"process_limit {len(others)}\n")
            return 1
        if program_exit is not None:
            return program_exit
        if tick % USAGE_EVERY_TICKS == 0:
            used, tasks = usage(others)
            if tasks > settings["max_tasks"]:
                status.write(f"process_limit {tasks} tasks\n")
                return 1
            if used > settings["run_memory_bytes"]:
                status.write(f"memory_limit {used}\n")
                return 1


def set_pid_max(proc, status):
    """A kernel ceiling on the namespace's PIDs (Linux >= 6.14 namespaces pid_max), set while /proc is writable."""
    try:
        with open(f"{proc}/sys/kernel/pid_max", "w") as f:
            f.write(str(PID_MAX_MIN))
        status.write("layer pid_max\n")
    except OSError:
        pass  # one global pid_max before 6.14; RLIMIT_NPROC (max_tasks) bounds the run's tasks anyway


def usage(pids):
    """(bytes, tasks) the run holds: each process's anonymous and shared-memory resident pages (RssAnon +
    RssShmem) plus the files in its tmpfs mounts, and its threads (all processes together)."""
    kib, tasks = 0, 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/status") as f:
                for line in f:
                    if line.startswith(("RssAnon:", "RssShmem:")):
                        kib += int(line.split()[1])
                    elif line.startswith("Threads:"):
                        tasks += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue  # exited since the listing
    files = 0
    for path in (WORKDIR, "/tmp"):
        stats = os.statvfs(path)
        files += (stats.f_blocks - stats.f_bfree) * stats.f_frsize
    return (kib << 10) + files, tasks


def exec_program(settings, status, audited):
    """Replace this process by the program's interpreter. Never returns."""
    try:
        os.set_inheritable(status.fileno(), False)  # the program never sees it
        if LINUX:  # execve can never grant privileges again (setuid binaries, file capabilities)
            libc_call("prctl", PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
        if not audited and NPROC_PER_NAMESPACE:  # counted in the run's own user namespace: a kernel ceiling
            resource.setrlimit(resource.RLIMIT_NPROC, (settings["max_tasks"],) * 2)
            status.write("layer max_tasks\n")
        if install_seccomp(audited):
            status.write("layer seccomp\n")
        workdir = settings["workdir"]
        os.chdir(workdir)
        python = settings["python"]
        if audited:
            view = settings["view"]
            readable = [*view["read_only"], *(f"/dev/{device}" for device in DEVICES)]
            max_created = max(1, settings["workdir_bytes"] // settings["file_size_bytes"])
            limits = json.dumps([readable, view["hidden"], max_created])
            argv = [python, "-I", "-S", "-c", AUDIT_BOOT, workdir, limits]
            status.write("layer audit_hook\n")
        else:
            argv = [python, "-I", "-S", "main.py"]
        status.write("exec\n")
        status.flush()
        os.execve(python, argv, settings["env"])
    except BaseException as error:  # noqa: BLE001  (never run the launcher's code past a failed exec)
        status.write(f"setup_failed exec: {error!r}\n")
        os._exit(1)


# Classic BPF as seccomp reads it: load a word of `struct seccomp_data`, compare, return a verdict.
BPF_LD_ABS, BPF_JEQ, BPF_JGE, BPF_JSET, BPF_RET = 0x20, 0x15, 0x35, 0x45, 0x06
DATA_NR, DATA_ARCH, DATA_ARG0 = 0, 4, 16  # offsets in seccomp_data (arg0's low 32 bits on a little-endian CPU)
ALLOW, KILL_PROCESS, RET_ERRNO = 0x7FFF0000, 0x80000000, 0x00050000


def seccomp_program(machine: str, audited: bool) -> list[tuple[int, int, int, int]]:
    """The filter for `machine`, as (code, jump if true, jump if false, k) rows.

    Another syscall ABI kills the process (x32 on x86_64 is refused: its numbers carry X32_SYSCALL_BIT); a denied
    call, clone with a new-namespace flag, or a call against its `ARGUMENT_RULES` gets EPERM; clone3 gets ENOSYS;
    everything else runs. `audited` adds the "audit" mode's denials and rules.
    """
    audit_arch, column = SECCOMP_ARCHES[machine]
    denied = {**DENIED_SYSCALLS, **(AUDIT_DENIED_SYSCALLS if audited else {})}
    rules = {**ARGUMENT_RULES, **(AUDIT_ARGUMENT_RULES if audited else {})}
    rows = [
        (BPF_LD_ABS, DATA_ARCH, None, None),
        (BPF_JEQ, audit_arch, None, "kill"),
        (BPF_LD_ABS, DATA_NR, None, None),
        (BPF_JGE, X32_SYSCALL_BIT, "refuse", None),
        *((BPF_JEQ, numbers[column], "refuse", None) for numbers in denied.values() if numbers[column] is not None),
        *((BPF_JEQ, rule[0][column], name, None) for name, rule in rules.items()),
        (BPF_JEQ, CLONE3, "no_such_call", None),
        (BPF_JEQ, CLONE[column], "clone", None),
        (BPF_RET, ALLOW, None, None),
        "clone",
        (BPF_LD_ABS, DATA_ARG0, None, None),
        (BPF_JSET, NEW_NAMESPACE_FLAGS, "refuse", None),
        (BPF_RET, ALLOW, None, None),
    ]
    for name, (_, argument, kind, value) in rules.items():
        allowed, refused = ("allow", "refuse") if kind == "only" else ("refuse", "allow")
        rows += [name, (BPF_LD_ABS, DATA_ARG0 + 8 * argument, None, None), (BPF_JEQ, value, allowed, refused)]
    rows += [
        "allow",
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


def install_seccomp(audited):
    """Install `seccomp_program` for this machine. False if unsupported (not Linux, another CPU, 32 bits)."""
    if not LINUX or platform.machine() not in SECCOMP_ARCHES or sys.maxsize < 2**32:  # a 64-bit interpreter
        return False
    program = seccomp_program(platform.machine(), audited)
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
