"""Speculative decoding with the model's own multi-token-prediction modules (DeepSeek-V3 section 5.4.3).

One round, with N the index of the newest committed token x_N (the main model's latent cache holds positions < N):

- draft: MTP module k (1..D) at position j reads h^{k-1}_j and Emb(x_{j+k}) and predicts x_{j+k+1}, where h^0 is the
  main model's normed output. Chained at j = N-1 the modules propose d_1..d_D for x_{N+1}..x_{N+D}; module k's inputs
  x_{N+1}..x_{N+k-1} there are the drafts d_1..d_{k-1}.
- verify: one forward of the main model over [x_N, d_1, .., d_D] with the cache gives its distributions p_0..p_D for
  x_{N+1}..x_{N+D+1}. Greedy: d_i is accepted while it equals argmax p_{i-1}. Sampling: d_i (drawn from the draft
  distribution q_i) is accepted with probability min(1, p_{i-1}(d_i) / q_i(d_i)), and the first rejected one is
  replaced by a sample of norm(max(0, p_{i-1} - q_i)) (Leviathan et al. 2023; Chen et al. 2023), so every emitted
  token is distributed as p given its prefix. After the accepted drafts comes one token of the main model's own.
- batch: every row keeps the same number a of drafts, the smallest number any unfinished row accepts, plus the token
  after them (for a row that accepted more, that token is its accepted draft, itself distributed as p): the caches stay
  rectangular and every row still gets exactly what plain decoding gives it.
- rollback: the latent caches (main layers and MTP modules, one `DynamicCache`) are cropped to the committed tokens.
  Module k keeps the positions j <= N-k, whose inputs are all committed; its outputs at the last k-1 positions read
  drafts, are dropped and recomputed in the next round (D(D-1)/2 positions of one decoder block per round; none for
  D = 1, DeepSeek-V3's depth). Each round thus runs one main forward over D+1 tokens and module k over the a+k newest
  positions.
"""

from dataclasses import dataclass

import torch
from transformers.cache_utils import DynamicCache


@dataclass
class MTPDecodingOutput:
    """`sequences` (B, P + new): the prompts and the generated tokens, as `generate` returns them (padding after an
    EOS, as long as the longest row needed). `drafted`: draft tokens proposed to unfinished rows; `agreed`: of those,
    the ones each row's own verification accepted; `accepted`: the ones kept in the output (the batch keeps the
    smallest agreement of its rows, so accepted <= agreed <= drafted; all equal at batch size 1 for accepted/agreed).
    """

    sequences: torch.LongTensor
    drafted: int
    agreed: int
    accepted: int
    rounds: int

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / max(self.drafted, 1)


def crop_layers(cache: DynamicCache, layer_indices, length: int) -> None:
    """Drop every position from `length` on in the given layers of the cache (transformers 5.17+ crop by a negative
    count; a plain `cache.crop` would cut the main and MTP layers, which hold different lengths, alike)."""
    for i in layer_indices:
        extra = cache.layers[i].get_seq_length() - length
        if extra > 0:
            cache.layers[i].crop(-extra)


def window_mask(padding: torch.Tensor, T: int) -> torch.Tensor:
    """(B, 1, T, S) boolean: the T newest of S positions see the real positions up to themselves, and themselves (so a
    padded query attends somewhere and stays finite). padding (B, S), 1 for real tokens."""
    S = padding.shape[1]
    query = torch.arange(S - T, S, device=padding.device)[:, None]  # (T, 1)
    key = torch.arange(S, device=padding.device)[None]  # (1, S)
    return (padding.bool()[:, None, None, :] & (key <= query)) | (key == query)


def warp(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """Sampling probabilities (..., V) from logits: divided by `temperature`, then the nucleus `top_p` (the smallest
    set of most likely tokens holding top_p of the mass, as transformers' TopPLogitsWarper keeps it), renormalised."""
    logits = logits.float() / temperature
    if top_p < 1.0:
        sorted_logits, order = logits.sort(-1)  # ascending
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False  # the most likely token always stays
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits.softmax(-1)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per row of probs (..., V) -> (...)."""
    flat = probs.reshape(-1, probs.shape[-1])
    return torch.multinomial(flat, 1, generator=generator).view(probs.shape[:-1])


class MTPDecoder:
    """The state of one speculative generation: committed tokens, their mask and positions, the latent cache of the
    main layers and the MTP modules, and the hidden states each module reads next."""

    def __init__(self, model, input_ids, attention_mask, do_sample, temperature, top_p, generator):
        self.model, self.backbone = model, model.model
        self.mtp_layers = self.backbone.mtp_layers
        self.L = model.config.num_hidden_layers
        self.do_sample, self.temperature, self.top_p, self.generator = do_sample, temperature, top_p, generator
        self.tokens, self.mask = input_ids, attention_mask  # (B, N+1) after the prefill: x_0 .. x_N
        self.positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as generate: position of each real token
        self.cache = DynamicCache()  # layers 0..L-1 the main model's, L+k-1 MTP module k's
        self.mtp_lengths = [0] * len(self.mtp_layers)  # c_k: positions module k has cached
        self.mtp_inputs = [None] * len(self.mtp_layers)  # h^{k-1} at positions c_k .. c_{k-1}-1 (k = 1: up to N-1)
        self.main_h, self.main_cached = None, 0  # the last verification's h (B, D+1, d), and the cache before it

    def main_forward(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The main model over the newest ids (B, T) after the cache -> normed h (B, T, d) and logits (B, T, V)."""
        T = ids.shape[1]
        h = self.backbone(
            input_ids=ids,
            attention_mask=self.mask,
            position_ids=self.positions[:, -T:],
            cache=self.cache,
            use_cache=True,
        ).last_hidden_state
        return h, self.model.lm_head(h).float()

    def choose(self, logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Tokens (...) from logits (..., V): argmax, or a sample with its distribution (..., V)."""
        if not self.do_sample:
            return logits.argmax(-1), None
        probs = warp(logits, self.temperature, self.top_p)
        return sample(probs, self.generator), probs

    def prefill(self) -> None:
        """Main model over the prompts; commits its first token and leaves h_0..h_{N-1} for module 1."""
        h, logits = self.main_forward(self.tokens)
        first, _ = self.choose(logits[:, -1])
        self.commit(first[:, None])
        self.mtp_inputs = [h] + [h[:, :0]] * (len(self.mtp_layers) - 1)  # nothing cached, nothing carried

    def commit(self, new: torch.Tensor) -> None:
        """Append new tokens (B, n): real, at the positions after each row's last."""
        n = new.shape[1]
        steps = torch.arange(1, n + 1, device=new.device)
        self.tokens = torch.cat([self.tokens, new], 1)
        self.mask = torch.cat([self.mask, self.mask.new_ones(new.shape)], 1)
        self.positions = torch.cat([self.positions, self.positions[:, -1:] + steps], 1)

    def draft(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """d_1..d_D (B, D) for x_{N+1}..x_{N+D}, and their distributions q (B, D, V) when sampling."""
        N = self.tokens.shape[1] - 1
        drafts, probs, h, carried = [], [], None, [None] * len(self.mtp_layers)
        for k, layer in enumerate(self.mtp_layers, start=1):
            start = self.mtp_lengths[k - 1]
            h_in = self.mtp_inputs[0] if k == 1 else torch.cat([self.mtp_inputs[k - 1], h], 1)  # (B, n, d): start..N-1
            ids = torch.cat([self.tokens, *drafts], 1)[:, start + k : N + k]  # x_{j+k}, drafts past x_N
            embeds = self.backbone.embed_tokens(ids)  # (B, n, d)
            cos, sin = self.backbone.rotary_emb(embeds, self.positions[:, start:N])
            mask = window_mask(self.mask[:, :N], h_in.shape[1])
            h, _ = layer(h_in, embeds, cos=cos, sin=sin, attention_mask=mask, cache=self.cache)  # h^k at start..N-1
            token, q = self.choose(self.model.lm_head(h[:, -1]).float())
            drafts.append(token[:, None])
            probs.append(q)
            # Keep positions j <= N-k (inputs all committed); module k+1 next starts at N-k and reads h^k there.
            kept = max(N - k + 1, 0)
            crop_layers(self.cache, [self.L + k - 1], kept)
            self.mtp_lengths[k - 1] = kept
            if k < len(self.mtp_layers):
                carried[k] = h[:, max(N - k, 0) - start : kept - start]
        self.mtp_inputs = [None, *carried[1:]]
        return torch.cat(drafts, 1), torch.stack(probs, 1) if self.do_sample else None

    def verify(self, drafts: torch.Tensor, q: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Main model over [x_N, d_1..d_D] -> the tokens this round would emit at x_{N+1}..x_{N+D+1} (B, D+1) (draft
        where accepted, else the main model's choice) and how many leading drafts each row accepts (B,). Leaves the
        main model's h at x_N..x_{N+D} (B, D+1, d)."""
        D = drafts.shape[1]
        main_cached = self.tokens.shape[1] - 1
        self.mask = torch.cat([self.mask, self.mask.new_ones(drafts.shape)], 1)  # the drafts, for this forward only
        self.positions = torch.cat(
            [self.positions, self.positions[:, -1:] + torch.arange(1, D + 1, device=drafts.device)], 1
        )
        h, logits = self.main_forward(torch.cat([self.tokens[:, -1:], drafts], 1))  # (B, D+1, V)
        self.mask, self.positions = self.mask[:, :-D], self.positions[:, :-D]
        self.main_h, self.main_cached = h, main_cached
        if not self.do_sample:
            tokens = logits.argmax(-1)  # (B, D+1)
            ok = drafts == tokens[:, :D]
        else:
            p = warp(logits, self.temperature, self.top_p)  # (B, D+1, V)
            p_draft, q_draft = p[:, :D].gather(-1, drafts[..., None])[..., 0], q.gather(-1, drafts[..., None])[..., 0]
            u = torch.rand(drafts.shape, generator=self.generator, device=drafts.device)
            ok = u * q_draft < p_draft  # accept with probability min(1, p/q)
            residual = (p[:, :D] - q).clamp(min=0)  # (B, D, V)
            residual = torch.where(residual.sum(-1, keepdim=True) > 0, residual, p[:, :D])  # p == q: never rejected
            tokens = torch.cat(
                [torch.where(ok, drafts, sample(residual, self.generator)), sample(p[:, D:], self.generator)], 1
            )
        agreed = ok.long().cumprod(1).sum(1)  # (B,)
        return tokens, agreed

    def accept(self, tokens: torch.Tensor, a: int) -> None:
        """Commit the round's first a+1 tokens and roll the main layers' cache back to the committed ones."""
        self.commit(tokens[:, : a + 1])
        crop_layers(self.cache, range(self.L), self.main_cached + a + 1)
        self.mtp_inputs[0] = self.main_h[:, : a + 1]  # h at x_N..x_{N+a}: module 1's next positions


def finished_rows(generated: torch.Tensor, eos: torch.Tensor) -> torch.Tensor:
    """(B,) whether each row's generated tokens (B, n) hold an EOS."""
    return torch.isin(generated, eos).any(1)


def as_generate_returns(generated: torch.Tensor, eos: torch.Tensor, pad_token_id: int, max_new_tokens: int):
    """The generated tokens (B, n) as `generate` leaves them: at most max_new_tokens, `pad_token_id` after each row's
    first EOS, and cut after the step at which the last row finished when all did."""
    generated = generated[:, :max_new_tokens]
    is_eos = torch.isin(generated, eos)
    after_eos = (is_eos.long().cumsum(1) - is_eos.long()) > 0  # strictly after the first EOS
    generated = generated.masked_fill(after_eos, pad_token_id)
    if is_eos.any(1).all():
        generated = generated[:, : int(is_eos.long().argmax(1).max()) + 1]
    return generated


@torch.no_grad()
def generate_with_mtp(
    model,
    input_ids: torch.LongTensor,
    attention_mask: torch.Tensor | None = None,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos_token_id: int | list[int] | None = None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> MTPDecodingOutput:
    """Speculative decoding: the MTP modules draft, the main model verifies (see the module docstring).

    Greedy output equals `model.generate(input_ids, attention_mask=..., do_sample=False)` token for token; sampled
    output is distributed as `generate(do_sample=True, temperature=..., top_p=..., top_k=0)`. Prompts are left-padded
    (attention_mask 0 on the left). EOS and pad default to the model's generation config.
    """
    mtp_layers = model.model.mtp_layers
    if not mtp_layers:
        raise ValueError(
            "generate_with_mtp drafts with the model's multi-token-prediction modules, and this model has none "
            "(config.num_nextn_predict_layers = 0): use model.generate, or a checkpoint trained with "
            "num_nextn_predict_layers >= 1."
        )
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}.")
    if do_sample and (temperature <= 0 or not 0 < top_p <= 1):
        raise ValueError(f"Sampling needs temperature > 0 and 0 < top_p <= 1, got {temperature} and {top_p}.")
    config = model.generation_config
    eos_token_id = config.eos_token_id if eos_token_id is None else eos_token_id
    pad_token_id = config.pad_token_id if pad_token_id is None else pad_token_id
    eos = torch.tensor([] if eos_token_id is None else eos_token_id, device=input_ids.device).long().flatten()
    if pad_token_id is None:
        pad_token_id = int(eos[0]) if len(eos) else 0
    if attention_mask is None:
        attention_mask = torch.ones_like(input_ids)

    P, D = input_ids.shape[1], len(mtp_layers)
    decoder = MTPDecoder(model, input_ids, attention_mask.long(), do_sample, temperature, top_p, generator)
    decoder.prefill()
    drafted = agreed = accepted = rounds = 0
    while True:
        done = finished_rows(decoder.tokens[:, P:], eos)
        if decoder.tokens.shape[1] - P >= max_new_tokens or done.all():
            break
        drafts, q = decoder.draft()
        tokens, row_agreed = decoder.verify(drafts, q)
        a = int(row_agreed[~done].min())  # finished rows do not bound it: their tokens become padding
        decoder.accept(tokens, a)
        live = int((~done).sum())
        drafted, agreed, accepted, rounds = (
            drafted + D * live,
            agreed + int(row_agreed[~done].sum()),
            accepted + a * live,
            rounds + 1,
        )
    generated = as_generate_returns(decoder.tokens[:, P:], eos, pad_token_id, max_new_tokens)
    return MTPDecodingOutput(torch.cat([input_ids, generated], 1), drafted, agreed, accepted, rounds)
