"""Bare Python environments for the remote-code tests: torch, one transformers release and what it requires, nothing
of the project (no trl, no datasets, no accelerate).

transformers and its requirements come from the package index (pip); torch is not installed again (a CUDA build costs
gigabytes): the distributions of the running interpreter's torch, and what torch requires, are linked in read-only
after pip has finished, so no later pip run can uninstall through the links. Environments are cached by spec under
`$DEEPSEEK_MINI_BARE_ENVS` (default `~/.cache/deepseek-mini/bare-envs`); a half-built one is rebuilt.
"""

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

CACHE = Path(os.environ.get("DEEPSEEK_MINI_BARE_ENVS", Path.home() / ".cache" / "deepseek-mini" / "bare-envs"))
COMPLETE = "bare-env-complete"


def installed_closure(name: str) -> list[importlib.metadata.Distribution]:
    """The installed distribution `name` and every installed distribution it requires (extras left out)."""
    found, todo = {}, [name]
    while todo:
        key = canonicalize_name(todo.pop())
        if key in found:
            continue
        try:
            dist = importlib.metadata.distribution(key)
        except importlib.metadata.PackageNotFoundError:
            continue
        found[key] = dist
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return list(found.values())


def top_level_entries(dist: importlib.metadata.Distribution) -> set[str]:
    """The names a distribution puts directly into site-packages (packages, modules, its .dist-info)."""
    return {Path(file).parts[0] for file in dist.files or [] if not str(file).startswith("..")}


def site_packages(env: Path) -> Path:
    """The purelib folder of the venv at `env`."""
    relative = Path(sysconfig.get_path("purelib")).relative_to(sys.prefix)
    return env / relative


def link_torch(env: Path) -> None:
    """Link the running interpreter's torch, and what torch requires, into `env` where pip did not put that name."""
    target = site_packages(env)
    for dist in installed_closure("torch"):
        source_root = Path(dist.locate_file(""))
        for entry in top_level_entries(dist):
            if not (target / entry).exists() and (source_root / entry).exists():
                (target / entry).symlink_to(source_root / entry)


def exact(spec: str) -> str:
    """`spec` as one exact requirement: a range becomes the newest release the package index serves today."""
    if "==" in spec:
        return spec
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--ignore-installed", "--no-deps"]
    result = subprocess.run([*command, "--report", "-", spec], check=True, capture_output=True, text=True)
    metadata = json.loads(result.stdout)["install"][0]["metadata"]
    return f"{metadata['name']}=={metadata['version']}"


def bare_env(transformers_spec: str) -> Path:
    """The python executable of a bare environment with `transformers_spec` (e.g. "transformers==5.17.0", or a range,
    which takes the newest release in it)."""
    transformers_spec = exact(transformers_spec)
    slug = re.sub(r"[^A-Za-z0-9.]+", "_", transformers_spec)
    env = CACHE / f"py{sys.version_info.major}.{sys.version_info.minor}-torch{torch_version()}-{slug}"
    python = env / "bin" / "python"
    if (env / COMPLETE).exists():
        return python
    shutil.rmtree(env, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, transformers_spec, "safetensors"], check=True, timeout=600)
    link_torch(env)
    (env / COMPLETE).write_text(transformers_spec + "\n")
    return python


def torch_version() -> str:
    return importlib.metadata.version("torch")


def package_version(python: Path, name: str) -> str:
    """The version of `name` installed in the environment of `python`."""
    code = f"import importlib.metadata as m; print(m.version({name!r}))"
    return subprocess.run([str(python), "-I", "-c", code], check=True, capture_output=True, text=True).stdout.strip()
