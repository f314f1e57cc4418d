"""What every notebook under notebooks/ shares, in one place: the repository address, the two standard cells (the
"Open in Colab" badge and the setup cell), the parameter cell, and how a notebook is executed.

    [badge]       markdown, the notebook's first cell; its Colab URL is built from REPOSITORY and BRANCH below
    ...           the title and introduction (markdown)
    [parameters]  a code cell tagged `parameters`: SIZE, RESULTS_PATH and the notebook's own knobs, with defaults
    [injected]    (only when a test runs it) a cell tagged `injected-parameters` that overrides them, papermill-style
    [setup]       the setup cell: uses the clone it runs in, or clones REPOSITORY and installs it (Colab); then picks
                  the size: "cpu" (the tiny world, minutes) or "gpu" (bigger), from torch.cuda.is_available()
    ...           the notebook
    [results]     the last code cell collects the key numbers in a dict `results`, prints them and writes them as
                  JSON to RESULTS_PATH when that is set: tests/test_notebooks.py checks the claims on those numbers

`python notebooks/refresh.py` rewrites the badge and setup cells from this file, executes every notebook top to
bottom and saves it with its outputs; tests/test_notebooks.py fails when a notebook's standard cells differ from what
this file writes. Change the address here, then refresh.
"""

import re
import time
from pathlib import Path

import nbformat

NOTEBOOKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = NOTEBOOKS_DIR.parent

# The repository the notebooks clone on Colab and the badges open. No address was recorded anywhere in the project when
# the notebooks were added, so this is a placeholder: replace it with the real one and run notebooks/refresh.py.
REPOSITORY = "https://github.com/deepseek-mini/deepseek-mini"
BRANCH = "main"

CELL_TIMEOUT_S = 3600  # per cell, when a notebook is executed by the tests or by refresh.py (r1_pipeline.ipynb
# runs the whole pipeline in one cell, the library's call: tens of minutes on 2 cores)
PARAMETERS_TAG = "parameters"
INJECTED_TAG = "injected-parameters"
SETUP_TAG = "setup"
BADGE_TAG = "colab-badge"


def colab_url(notebook: str) -> str:
    """The "Open in Colab" address of notebooks/`notebook` on BRANCH of REPOSITORY."""
    owner_and_name = re.sub(r"^https://github\.com/|\.git$", "", REPOSITORY)
    return f"https://colab.research.google.com/github/{owner_and_name}/blob/{BRANCH}/notebooks/{notebook}"


def badge_source(notebook: str) -> str:
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(notebook)})"


SETUP_SOURCE = """\
# Setup, the same in every notebook (written by notebooks/refresh.py from notebooks/conventions.py). Inside a clone
# of the repository it uses that checkout; elsewhere (Colab) it clones the repository and installs it with the tested
# stack, as the README's quickstart does: torch 2.13.0 first, then the project under constraints.txt.
import importlib.util
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm in a kernel without ipywidgets
REPOSITORY, BRANCH = "{repository}", "{branch}"
START = time.perf_counter()
ROOT = next((p for p in (Path.cwd(), *Path.cwd().parents) if (p / "modeling_deepseek_mini").is_dir()), None)
if ROOT is None:  # not inside a clone
    ROOT = Path.cwd() / "deepseek-mini"
    if not ROOT.exists():
        subprocess.run(["git", "clone", "--depth", "1", "--branch", BRANCH, REPOSITORY, str(ROOT)], check=True)
if importlib.util.find_spec("modeling_deepseek_mini") is None:  # the project is not installed in this kernel
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "torch==2.13.0"], check=True)  # on a GPU machine PyPI's build is the CUDA one
    subprocess.run([*pip, "-c", str(ROOT / "constraints.txt"), "-e", str(ROOT)], check=True)
os.chdir(ROOT)
sys.path.insert(0, str(ROOT))  # this checkout's code, even where another copy is installed

import torch  # noqa: E402  (installed above when it was missing)

if SIZE is None:
    SIZE = "gpu" if torch.cuda.is_available() else "cpu"
if SIZE not in ("cpu", "gpu") or (SIZE == "gpu" and not torch.cuda.is_available()):
    raise ValueError(f"SIZE={{SIZE!r}}: use 'cpu', or 'gpu' on a machine with a CUDA GPU (or None to choose).")
DEVICE = torch.device("cuda" if SIZE == "gpu" else "cpu")
print(f"deepseek-mini from {{ROOT}}, torch {{torch.__version__}}: size {{SIZE!r}} on {{DEVICE}}")"""


def setup_source() -> str:
    return SETUP_SOURCE.format(repository=REPOSITORY, branch=BRANCH)


def tagged(nb, tag: str) -> list[int]:
    """Indices of the cells carrying `tag`."""
    return [i for i, cell in enumerate(nb.cells) if tag in cell.get("metadata", {}).get("tags", [])]


def standardise(nb, notebook: str) -> None:
    """Write the badge cell (first) and the setup cell (after the parameters cell) from this file, in place."""
    badges = tagged(nb, BADGE_TAG)
    if badges != [0]:
        raise ValueError(f"{notebook}: the first cell, and only it, must be tagged {BADGE_TAG!r}.")
    nb.cells[0].source = badge_source(notebook)
    (parameters,) = tagged(nb, PARAMETERS_TAG)
    (setup,) = tagged(nb, SETUP_TAG)
    if setup != parameters + 1:
        raise ValueError(f"{notebook}: the setup cell must follow the parameters cell.")
    nb.cells[setup].source = setup_source()


def inject_parameters(nb, parameters: dict) -> None:
    """Insert a cell tagged `injected-parameters` after the `parameters` cell that assigns `parameters` (papermill's
    convention: the notebook's defaults stay visible, the overrides follow them)."""
    if not parameters:
        return
    (index,) = tagged(nb, PARAMETERS_TAG)
    lines = ["# Parameters injected by the caller"] + [f"{name} = {value!r}" for name, value in parameters.items()]
    cell = nbformat.v4.new_code_cell("\n".join(lines), metadata={"tags": [INJECTED_TAG]})
    nb.cells.insert(index + 1, cell)


def execute(path: Path, parameters: dict | None = None, timeout: int = CELL_TIMEOUT_S):
    """Run the notebook at `path` top to bottom in a fresh kernel of the current interpreter (cwd: notebooks/), with
    `parameters` injected; returns the executed notebook and its wall time in seconds. A cell error raises
    nbclient's CellExecutionError, naming the cell."""
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    inject_parameters(nb, parameters or {})
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",  # jupyter_client runs "python" kernels with sys.executable: this interpreter
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # no per-cell timestamps in the committed notebooks
    )
    start = time.perf_counter()
    client.execute()
    return nb, time.perf_counter() - start
