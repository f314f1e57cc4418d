"""A checkpoint saved by the project loads with `trust_remote_code=True` where the project cannot be imported: in this
environment with the project blocked, and in bare environments (torch, transformers, safetensors only) holding the
oldest transformers release the model code supports and the newest release the project allows."""

import json
import os
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from bare_env import bare_env, package_version
from packaging.requirements import Requirement

from modeling_deepseek_mini import code_files
from modeling_deepseek_mini.configuration_deepseek_mini import MIN_TRANSFORMERS_VERSION, check_transformers_version

pytestmark = pytest.mark.canary  # also run against the newest allowed releases (.ci/run)


def newest_allowed() -> str:
    """The oldest release the model code supports up to the upper bound pyproject.toml puts on transformers."""
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    [declared] = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "transformers"]
    upper = ",".join(str(s) for s in declared.specifier if s.operator in ("<", "<="))
    return f"transformers>={MIN_TRANSFORMERS_VERSION},{upper}"


NEWEST_ALLOWED = newest_allowed()
# More releases to load the checkpoint under, e.g. DEEPSEEK_MINI_TRANSFORMERS="5.23.0 5.24.0" (not set in CI).
EXTRA_RELEASES = [f"transformers=={v}" for v in os.environ.get("DEEPSEEK_MINI_TRANSFORMERS", "").split()]

CHILD = textwrap.dedent(
    """
    import importlib.abc, sys

    class BlockProject(importlib.abc.MetaPathFinder):
        # The project may be pip-installed (editable or not): refuse it, so only the checkpoint's code can load.
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("modeling_deepseek_mini", "recipes", "rewards"):
                raise ModuleNotFoundError(f"{name} is blocked in this test")

    sys.meta_path.insert(0, BlockProject())
    try:
        import modeling_deepseek_mini
    except ModuleNotFoundError:
        pass
    else:
        raise SystemExit("the project is importable in the child process")

    import warnings
    for category in (FutureWarning, DeprecationWarning):  # the checkpoint's code uses no deprecated transformers API
        warnings.filterwarnings("error", category=category, module="transformers_modules")

    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    checkpoint, inputs, out = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    batch = torch.load(inputs)
    with torch.no_grad():
        logits = model(**batch).logits
    greedy = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=0)
    torch.manual_seed(7)
    sampled = model.generate(**batch, max_new_tokens=8, do_sample=True, top_k=0, pad_token_id=0)
    bias = model.model.layers[1].mlp.gate.e_score_correction_bias
    torch.save(
        {"logits": logits, "greedy": greedy, "sampled": sampled, "bias": bias, "version": transformers.__version__},
        out,
    )
    """
)


@pytest.fixture
def saved_checkpoint(tiny_model, left_padded_batch, tmp_path):
    """(the model, the folder it saved itself to, the path of a saved left-padded batch)."""
    model = tiny_model(pad_token_id=0)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    input_ids, attention_mask, _ = left_padded_batch
    torch.save(dict(input_ids=input_ids, attention_mask=attention_mask), tmp_path / "inputs.pt")
    return model, checkpoint, tmp_path / "inputs.pt"


def load_in_child(python, checkpoint, inputs, tmp_path) -> dict:
    """Run CHILD with `python` in an isolated interpreter, elsewhere, offline, with a fresh module cache."""
    workdir = tmp_path / "elsewhere"
    workdir.mkdir(exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")
    env["HF_HUB_OFFLINE"] = "1"
    out = tmp_path / "out.pt"
    command = [str(python), "-I", "-c", CHILD, str(checkpoint), str(inputs), str(out)]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def assert_same_outputs(child: dict, model, inputs) -> None:
    """Logits on the real tokens, cached greedy decoding and seeded sampling of the left-padded batch all match."""
    batch = torch.load(inputs)
    with torch.no_grad():
        logits = model(**batch).logits
    real = batch["attention_mask"].bool()
    assert (child["logits"] - logits)[real].abs().max() < 1e-6
    assert torch.equal(child["greedy"], model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=0))
    torch.manual_seed(7)
    sampled = model.generate(**batch, max_new_tokens=8, do_sample=True, top_k=0, pad_token_id=0)
    assert torch.equal(child["sampled"], sampled)
    assert torch.equal(child["bias"], model.model.layers[1].mlp.gate.e_score_correction_bias)


def test_saved_checkpoint_loads_with_trust_remote_code_without_the_project(saved_checkpoint, tmp_path):
    model, checkpoint, inputs = saved_checkpoint
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_deepseek_mini.DeepseekMiniForCausalLM"
    assert (checkpoint / "modeling_deepseek_mini.py").exists()
    assert (checkpoint / "configuration_deepseek_mini.py").exists()
    for file in code_files():  # the siblings the modeling file imports relatively travel with it
        assert (checkpoint / file.name).read_bytes() == file.read_bytes(), file.name
    assert_same_outputs(load_in_child(sys.executable, checkpoint, inputs, tmp_path), model, inputs)


@pytest.mark.parametrize("spec", [f"transformers=={MIN_TRANSFORMERS_VERSION}", NEWEST_ALLOWED, *EXTRA_RELEASES])
def test_checkpoint_loads_in_a_bare_environment_across_the_supported_range(spec, saved_checkpoint, tmp_path):
    """The remote code runs under whatever transformers the user has: the oldest supported and the newest allowed."""
    model, checkpoint, inputs = saved_checkpoint
    python = bare_env(spec)
    for absent in ("trl", "accelerate", "datasets", "modeling_deepseek_mini"):
        probe = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({absent!r}) is not None)"
        assert subprocess.run([str(python), "-I", "-c", probe], check=False).returncode == 0, f"{absent} is installed"
    child = load_in_child(python, checkpoint, inputs, tmp_path)
    assert child["version"] == package_version(python, "transformers")
    if spec.startswith("transformers=="):
        assert child["version"] == spec.removeprefix("transformers==")
    assert_same_outputs(child, model, inputs)


def test_an_older_transformers_is_refused_with_the_fix():
    check_transformers_version(MIN_TRANSFORMERS_VERSION)
    with pytest.raises(ImportError, match=r"needs transformers >= 5\.17\.0, but 5\.16\.1 is installed: pip install"):
        check_transformers_version("5.16.1")
