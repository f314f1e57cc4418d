"""Speculative decoding with the MTP modules (modeling_deepseek_mini/mtp_decoding.py): greedy output equal to plain
`generate` token for token (random tiny models and the shipped tiny base, batch 1 and 8, left padding, EOS), drafts
equal to an uncached recomputation, sampled output distributed as the main model's, and a clear error without MTP."""

import pytest
import torch
from transformers import AutoTokenizer
from transformers.generation.logits_process import TemperatureLogitsWarper, TopPLogitsWarper

import modeling_deepseek_mini.mtp_decoding as mtp_decoding
from modeling_deepseek_mini import DeepseekMiniForCausalLM
from recipes.lib.assets import shipped_checkpoints
from recipes.lib.task import make_splits

TINY_BASE = next(folder for folder in shipped_checkpoints() if folder.name == "tiny-base")


def left_padded(batch: int, length: int = 12, vocab: int = 500, seed: int = 1):
    """(input_ids, attention_mask) of `batch` rows with different amounts of left padding (pad id 0)."""
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(3, vocab, (batch, length), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    for row, pad in enumerate([0, 3, 5, 0, 11, 1, 7, 2][:batch]):
        attention_mask[row, :pad] = 0
    return input_ids.masked_fill(attention_mask == 0, 0), attention_mask


def check_stats(out) -> None:
    assert 0 <= out.accepted <= out.agreed <= out.drafted
    assert out.acceptance_rate == out.accepted / max(out.drafted, 1)


@pytest.mark.parametrize("depth", [1, 2])
def test_greedy_equals_generate_on_a_random_model_with_padding_and_eos(tiny_model, depth):
    model = tiny_model(num_nextn_predict_layers=depth, pad_token_id=0)
    input_ids, attention_mask = left_padded(8)
    kwargs = dict(max_new_tokens=16, pad_token_id=0)
    free = model.generate(input_ids, attention_mask=attention_mask, do_sample=False, eos_token_id=None, **kwargs)
    eos = int(free[0, input_ids.shape[1] + 4])  # row 0 stops at its 5th token; other rows at theirs, or never
    for batch in (1, 8):
        ids, mask = input_ids[:batch], attention_mask[:batch]
        plain = model.generate(ids, attention_mask=mask, do_sample=False, eos_token_id=eos, **kwargs)
        out = model.generate_with_mtp(ids, mask, eos_token_id=eos, **kwargs)
        assert torch.equal(out.sequences, plain), batch
        check_stats(out)
    assert (out.sequences[0, input_ids.shape[1] + 5 :] == 0).all()  # a finished row is padded


def recorded_drafts(monkeypatch) -> list:
    """Patch the decoder to record (committed tokens, mask, drafts) at every round."""
    rounds, draft = [], mtp_decoding.MTPDecoder.draft

    def spy(self):
        drafts, q = draft(self)
        rounds.append((self.tokens.clone(), self.mask.clone(), drafts))
        return drafts, q

    monkeypatch.setattr(mtp_decoding.MTPDecoder, "draft", spy)
    return rounds


@torch.no_grad()
def uncached_drafts(model, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The greedy drafts for x_{N+1}..x_{N+D} recomputed from scratch: the main model over x_0..x_{N-1}, then each MTP
    module over every position (no cache), chained through its own drafts."""
    N = tokens.shape[1] - 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, :N]
    h = model.model(input_ids=tokens[:, :N], attention_mask=mask[:, :N], position_ids=positions).last_hidden_state
    for k, layer in enumerate(model.model.mtp_layers, start=1):
        embeds = model.model.embed_tokens(tokens[:, k : N + k])
        cos, sin = model.model.rotary_emb(embeds, positions)
        h, _ = layer(h, embeds, cos=cos, sin=sin, attention_mask=mtp_decoding.window_mask(mask[:, :N], N))
        tokens = torch.cat([tokens, model.lm_head(h[:, -1:]).argmax(-1)], 1)
    return tokens[:, N + 1 :]


@pytest.fixture(scope="module")
def tiny_base_prompts():
    tokenizer = AutoTokenizer.from_pretrained(TINY_BASE)
    prompts = list(make_splits(seed=0, n_train=0, n_test=8, n_validation=0, n_ood=0)["test"]["prompt"])
    batch = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return batch["input_ids"], batch["attention_mask"]


@pytest.mark.parametrize("depth", [1, 2])  # depth 2: the shipped module, and a second one initialised fresh
def test_greedy_equals_generate_on_the_tiny_base_and_drafts_match_an_uncached_recomputation(
    tiny_base_prompts, monkeypatch, depth
):
    model = DeepseekMiniForCausalLM.from_pretrained(TINY_BASE, num_nextn_predict_layers=depth).eval()
    input_ids, attention_mask = tiny_base_prompts
    for batch in (1, 8):
        ids, mask = input_ids[:batch], attention_mask[:batch]
        plain = model.generate(ids, attention_mask=mask, max_new_tokens=48, do_sample=False)
        rounds = recorded_drafts(monkeypatch)
        out = model.generate_with_mtp(ids, mask, max_new_tokens=48)
        assert torch.equal(out.sequences, plain), batch
        check_stats(out)
        assert out.accepted > 0.5 * out.rounds  # the trained module drafts well: this exercises the rollback
        for tokens, mask_then, drafts in rounds[:: max(len(rounds) // 4, 1)]:
            live = (tokens[:, ids.shape[1] :] != model.generation_config.eos_token_id).all(1)  # finished rows: junk
            assert torch.equal(drafts[live], uncached_drafts(model, tokens, mask_then)[live])


def test_warp_matches_transformers_temperature_and_top_p():
    logits = torch.randn(4, 50, generator=torch.Generator().manual_seed(0)) * 3
    for temperature, top_p in [(1.0, 1.0), (0.7, 0.9), (1.3, 0.5)]:
        scores = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(temperature)(None, logits.clone()))
        assert torch.allclose(mtp_decoding.warp(logits, temperature, top_p), scores.softmax(-1), atol=1e-6)


@torch.no_grad()
def test_sampled_tokens_follow_the_main_model_distribution(tiny_model):
    """Chi-square of the (x_2, x_3) frequencies over 2000 samples against their exact probability under the main
    model, with a 5-token vocabulary where drafts are often accepted (and often rejected)."""
    V, samples, chunk = 5, 2000, 4
    model = tiny_model(vocab_size=V, initializer_range=0.1, pad_token_id=0)
    prompt = torch.tensor([[1, 2, 3, 4]])
    warp = dict(temperature=0.9, top_p=0.95)
    generator = torch.Generator().manual_seed(0)
    counts, drafted, accepted = torch.zeros(V, V), 0, 0
    for _ in range(samples // chunk):
        out = model.generate_with_mtp(
            prompt.expand(chunk, -1), max_new_tokens=3, do_sample=True, eos_token_id=[], generator=generator, **warp
        )
        for x2, x3 in out.sequences[:, -2:].tolist():
            counts[x2, x3] += 1
        drafted, accepted = drafted + out.drafted, accepted + out.accepted
    assert 0.1 < accepted / drafted < 0.9  # rounds where the whole chunk kept its draft happen, and others

    def probs(ids):  # p(next | ids) under the main model, warped as sampled: (n, V)
        return mtp_decoding.warp(model(input_ids=ids).logits[:, -1], **warp)

    x1 = torch.arange(V)[:, None]
    p1 = probs(prompt)[0]  # (V,)
    p2 = probs(torch.cat([prompt.expand(V, -1), x1], 1))  # (V, V): [x1, x2]
    pairs = torch.cartesian_prod(torch.arange(V), torch.arange(V))  # (V*V, 2): x1, x2
    p3 = probs(torch.cat([prompt.expand(V * V, -1), pairs], 1)).view(V, V, V)  # [x1, x2, x3]
    exact = (p1[:, None, None] * p2[:, :, None] * p3).sum(0)  # (V, V): [x2, x3]
    expected = exact * samples
    cells = expected > 5
    chi2 = ((counts - expected)[cells] ** 2 / expected[cells]).sum()
    dof = int(cells.sum()) - 1
    assert chi2 < dof + 4 * (2 * dof) ** 0.5, (chi2, dof)  # ~ the 99.99th percentile


def test_a_model_without_mtp_modules_is_refused_with_the_setting(tiny_model):
    model = tiny_model(num_nextn_predict_layers=0)
    with pytest.raises(ValueError, match="num_nextn_predict_layers"):
        model.generate_with_mtp(torch.tensor([[5, 6, 7]]), max_new_tokens=4)
