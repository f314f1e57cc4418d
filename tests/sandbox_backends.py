"""The sandbox's backends as pytest parameters, shared by the sandbox's tests.

`bubblewrap` needs the bwrap tool, `namespaces` unprivileged user namespaces, which some kernels and container
runtimes switch off (sysctl kernel.unprivileged_userns_clone=0, AppArmor, seccomp profiles). A backend that does not
work on this machine is skipped, with the probe's reason: nothing about it can be tested here, and `isolation="auto"`
then fails closed rather than falling back. `audit` always works; it runs only when named.
"""

import pytest

from rewards.sandbox import BACKENDS, available_isolations

AVAILABLE = available_isolations()  # {backend: None if it works here, else why not}
KERNEL = BACKENDS  # the backends with a private root, a PID namespace and a supervisor
ALL = (*KERNEL, "audit")


def backend_params(names=ALL) -> list:
    """One pytest parameter per backend name, skipped with the probe's reason where the backend does not work."""
    return [
        pytest.param(
            name,
            marks=pytest.mark.skipif(
                AVAILABLE[name] is not None, reason=f"isolation {name!r} is unavailable here: {AVAILABLE[name]}"
            ),
        )
        for name in names
    ]
