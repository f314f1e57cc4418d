"""Re-execute the notebooks in place and save them with their outputs, so that what is committed is a real run.

    python notebooks/refresh.py                       # every notebook under notebooks/
    python notebooks/refresh.py model_tour.ipynb      # some of them

Each notebook gets its standard cells rewritten from notebooks/conventions.py (the Colab badge, the setup cell), its
old outputs dropped, and is executed top to bottom in a fresh kernel of this interpreter with its own defaults: the
size follows the machine (SIZE=None: "cpu" without a CUDA GPU, "gpu" with one), nothing is injected. A cell error
stops the refresh and leaves that notebook as it was. Run it on the machine whose size the outputs should show (the
committed outputs are the CPU size), with the thread count you want to report: the notebooks print their own run time.
"""

import argparse
import sys
import time

import nbformat
from conventions import NOTEBOOKS_DIR, execute, standardise


def refresh(name: str) -> float:
    path = NOTEBOOKS_DIR / name
    nb = nbformat.read(path, as_version=4)
    standardise(nb, name)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs, cell.execution_count = [], None
    nbformat.write(nb, path.with_suffix(".tmp.ipynb"))  # executed from a temporary copy, so a failure keeps `path`
    try:
        executed, seconds = execute(path.with_suffix(".tmp.ipynb"))
    finally:
        path.with_suffix(".tmp.ipynb").unlink()
    nbformat.write(executed, path)
    return seconds


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("notebooks", nargs="*", help="file names under notebooks/ (default: all)")
    args = parser.parse_args(argv)
    names = args.notebooks or sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb"))
    start = time.perf_counter()
    for name in names:
        print(f"{name}: executing ...", flush=True)
        print(f"{name}: executed in {refresh(name):.1f} s and saved with its outputs", flush=True)
    print(f"refreshed {len(names)} notebook(s) in {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    sys.exit(main())
