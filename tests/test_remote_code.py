"""A checkpoint saved by the project loads with `trust_remote_code=True` where the project cannot be imported."""

import json
import os
import subprocess
import sys
import textwrap

import torch

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

    import torch
    from transformers import AutoModelForCausalLM

    checkpoint, inputs, out = sys.argv[1:4]
    model = AutoModelForCausalLM.from_pretrained(checkpoint, trust_remote_code=True).eval()
    assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
    batch = torch.load(inputs)
    with torch.no_grad():
        logits = model(**batch).logits
    generated = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=0)
    bias = model.model.layers[1].mlp.gate.e_score_correction_bias
    torch.save({"logits": logits, "generated": generated, "bias": bias}, out)
    """
)


def test_saved_checkpoint_loads_with_trust_remote_code_without_the_project(tiny_model, left_padded_batch, tmp_path):
    model = tiny_model(pad_token_id=0)
    checkpoint = tmp_path / "checkpoint"
    model.save_pretrained(checkpoint)
    config = json.loads((checkpoint / "config.json").read_text())
    assert config["auto_map"]["AutoModelForCausalLM"] == "modeling_deepseek_mini.DeepseekMiniForCausalLM"
    assert (checkpoint / "modeling_deepseek_mini.py").exists() and (
        checkpoint / "configuration_deepseek_mini.py"
    ).exists()

    input_ids, attention_mask, _ = left_padded_batch
    batch = dict(input_ids=input_ids, attention_mask=attention_mask)
    torch.save(batch, tmp_path / "inputs.pt")
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HF_MODULES_CACHE"] = str(tmp_path / "hf_modules")  # a fresh copy of the checkpoint's code
    env["HF_HUB_OFFLINE"] = "1"
    command = [
        sys.executable,
        "-I",
        "-c",
        CHILD,
        str(checkpoint),
        str(tmp_path / "inputs.pt"),
        str(tmp_path / "out.pt"),
    ]
    result = subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]

    child = torch.load(tmp_path / "out.pt")
    with torch.no_grad():
        logits = model(**batch).logits
    real = attention_mask.bool()
    assert (child["logits"] - logits)[real].abs().max() < 1e-6
    generated = model.generate(**batch, max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert torch.equal(child["generated"], generated)
    assert torch.equal(child["bias"], model.model.layers[1].mlp.gate.e_score_correction_bias)
