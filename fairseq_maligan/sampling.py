"""Sampling from fairseq generators inside a training step.

One sampler serves every criterion: the first ``prefix_len`` (N) tokens of each row are
clamped from ``sample["target"]``, then ``num_samples`` (m) continuations per row are drawn
with fairseq's incremental decoding, without gradient, until EOS or the length limit
(the criteria pass the task's maximum target length, the limit real rows have, never the
batch's width). Continuations are rescored with gradients by :func:`token_log_probs` in
one teacher-forced forward. Every distribution comes from the model's own normalised
output, so adaptive-softmax models (whose decoder returns features, not logits) sample
and train like any other.

Rows are laid out group-major: continuation ``j`` of row ``i`` is row ``i * m + j``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor


@contextmanager
def training_mode(module: torch.nn.Module, training: bool) -> Iterator[torch.nn.Module]:
    """``module`` in train or eval mode for a block, then back in the mode it was in."""
    was_training = module.training
    module.train(training)
    try:
        yield module
    finally:
        module.train(was_training)


def is_encoder_decoder(model: torch.nn.Module) -> bool:
    """True for encoder-decoder generators (translation), False for language models."""
    return getattr(model, "encoder", None) is not None


def first_decoder_input(model: torch.nn.Module, sample: dict) -> Tensor:
    """The token the decoder reads before the first target token, one per row (B, 1).

    For a language model this is the first input token (``</s>`` with
    ``--sample-break-mode eos``); for translation the first ``prev_output_tokens``.
    """
    net_input = sample["net_input"]
    if is_encoder_decoder(model):
        return net_input["prev_output_tokens"][:, :1]
    return net_input["src_tokens"][:, :1]


def draw_tokens(
    logits: Tensor,
    uniform: Tensor,
    temperature: float = 1.0,
    banned: tuple[int, ...] = (),
) -> Tensor:
    """Draw one token per row from ``softmax(logits / temperature)`` by inverse CDF.

    ``uniform`` holds one U[0, 1) draw per row, so that a fixed set of draws gives a
    fixed sample (tests compare samplers that way). ``banned`` tokens (padding, BOS)
    get probability zero. ``cumsum`` + ``searchsorted`` is much faster on CPU than
    ``torch.multinomial``; the CDF is left unnormalised and built in place, in one
    buffer (a softmax, then a cumsum into a new tensor, took three times as long).
    """
    logits = logits.float() / temperature
    if banned:
        logits[:, list(banned)] = float("-inf")
    logits -= logits.max(dim=1, keepdim=True).values
    cdf = logits.exp_().cumsum_(dim=1)
    threshold = uniform.unsqueeze(1).to(cdf) * cdf[:, -1:]
    tokens = torch.searchsorted(cdf, threshold, right=True).squeeze(1)
    return tokens.clamp_(max=logits.size(1) - 1)


class DecoderState:
    """A generator's decoder with its incremental state, for step-wise decoding.

    Encoder-decoder models run their encoder once; expanding or forking the state
    reorders the cached encoder output and decoder state instead of recomputing them.
    """

    def __init__(self, model: torch.nn.Module, sample: dict | None = None) -> None:
        self.model = model
        self.incremental_state: dict[str, dict[str, Any]] = {}
        self.encoder_out = None
        if sample is not None and is_encoder_decoder(model):
            net_input = sample["net_input"]
            self.encoder_out = model.encoder(
                net_input["src_tokens"], src_lengths=net_input["src_lengths"]
            )

    def next_logits(self, inputs: Tensor) -> Tensor:
        """Logits for the token after ``inputs`` (rows, V); feeds only the last input."""
        out = self.model.decoder(
            inputs, encoder_out=self.encoder_out, incremental_state=self.incremental_state
        )
        return last_step_scores(self.model, out)

    def reorder(self, order: Tensor) -> None:
        """Keep rows ``order`` of the state (repeats allowed), in place."""
        decoder = self.model.decoder
        decoder.reorder_incremental_state_scripting(self.incremental_state, order)
        if self.encoder_out is not None:
            self.encoder_out = self.model.encoder.reorder_encoder_out(self.encoder_out, order)

    def fork(self, order: Tensor) -> DecoderState:
        """A new state holding rows ``order`` of this one; this one is left unchanged."""
        forked = DecoderState(self.model)
        forked.incremental_state = {k: dict(v) for k, v in self.incremental_state.items()}
        forked.encoder_out = self.encoder_out
        forked.reorder(order)
        return forked


class RecomputeState:
    """:class:`DecoderState`'s interface without any cache: each step reruns the model
    on the whole sequence. The reference that the tests and ``scripts/bench.py`` hold
    the incremental decoder to (same random draws, same samples)."""

    def __init__(self, model: torch.nn.Module, sample: dict, order: Tensor | None = None) -> None:
        self.model, self.sample = model, sample
        self.order = order if order is not None else torch.arange(
            sample["target"].size(0), device=sample["target"].device
        )

    def next_logits(self, inputs: Tensor) -> Tensor:
        encoder_input = _expand_sample(self.model, self.sample, self.order)
        features = _full_forward(self.model, encoder_input, inputs)
        return last_step_scores(self.model, (features, None))

    def reorder(self, order: Tensor) -> None:
        self.order = self.order[order]

    def fork(self, order: Tensor) -> RecomputeState:
        return RecomputeState(self.model, self.sample, self.order[order])


def adaptive_softmax(model: torch.nn.Module) -> torch.nn.Module | None:
    """The decoder's adaptive softmax, or None for a decoder that outputs logits."""
    return getattr(model.decoder, "adaptive_softmax", None)


def output_scores(model: torch.nn.Module, net_output: tuple) -> Tensor:
    """Unnormalised log-probabilities of the next token at every position (rows, T, V).

    Plain logits where the decoder outputs them (a softmax of them is the model's
    distribution); the model's own log-probabilities for an adaptive softmax, whose
    decoder outputs features.
    """
    if adaptive_softmax(model) is None:
        return net_output[0]
    return model.get_normalized_probs(net_output, log_probs=True)


def last_step_scores(model: torch.nn.Module, net_output: tuple) -> Tensor:
    """:func:`output_scores` of the last position only (rows, V)."""
    return output_scores(model, (net_output[0][:, -1:, :], *net_output[1:]))[:, -1, :]


def banned_tokens(model: torch.nn.Module) -> tuple[int, ...]:
    """Tokens a sampler never emits: padding and BOS."""
    dictionary = model.decoder.dictionary
    return (dictionary.pad(), dictionary.bos())


def next_tokens(
    logits: Tensor,
    finished: Tensor,
    pad: int,
    eos: int,
    banned: tuple[int, ...],
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """One sampled token per row (padding for rows already ``finished``) and which rows
    are finished after it."""
    uniform = torch.rand(logits.size(0), generator=generator, device=logits.device)
    step = draw_tokens(logits, uniform, temperature, banned).masked_fill_(finished, pad)
    return step, finished | step.eq(eos)


@torch.no_grad()
def sample_continuations(
    model: torch.nn.Module,
    sample: dict,
    prefix_len: int,
    num_samples: int,
    max_len: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    recompute_prefix: bool = False,
    banned: tuple[int, ...] | None = None,
) -> Tensor:
    """Clamp the first ``prefix_len`` target tokens of each row and sample continuations.

    Returns target-side rows (B * num_samples, length): the clamped prefix, the sampled
    tokens up to and including EOS, then padding. ``max_len`` bounds the length (a row
    that reaches it has no EOS). Rows no longer than ``prefix_len`` come back as
    their clamped target. The model is sampled in eval mode (no dropout) and left in
    the mode it was in. ``recompute_prefix`` decodes without a cache
    (:class:`RecomputeState`, the reference implementation); ``banned`` replaces
    :func:`banned_tokens` (e.g. with EOS added, for samples of exactly ``max_len``).
    """
    target = sample["target"]
    prefix_len = min(prefix_len, max_len)
    dictionary = model.decoder.dictionary
    pad, eos = dictionary.pad(), dictionary.eos()
    banned = banned_tokens(model) if banned is None else banned

    with training_mode(model, False):
        state = (RecomputeState if recompute_prefix else DecoderState)(model, sample)
        prefix = target[:, :prefix_len]
        tokens = torch.cat([first_decoder_input(model, sample), prefix], dim=1)
        for t in range(0 if recompute_prefix else prefix_len):
            state.next_logits(tokens[:, : t + 1])
        finished = prefix.eq(eos).any(dim=1) | prefix.eq(pad).any(dim=1)
        order = torch.arange(target.size(0), device=target.device)
        order = order.repeat_interleave(num_samples)
        state.reorder(order)
        rows, finished = tokens[order], finished[order]
        for _ in range(prefix_len, max_len):
            if bool(finished.all()):
                break
            step, finished = next_tokens(state.next_logits(rows), finished, pad, eos, banned,
                                         temperature, generator)
            rows = torch.cat([rows, step.unsqueeze(1)], dim=1)
    return rows[:, 1:]


def _expand_sample(model: torch.nn.Module, sample: dict, order: Tensor) -> dict:
    """The rows ``order`` of a batch's encoder inputs (encoder-decoder models only)."""
    if not is_encoder_decoder(model):
        return {}
    net_input = sample["net_input"]
    return {
        "src_tokens": net_input["src_tokens"][order],
        "src_lengths": net_input["src_lengths"][order],
    }


def _full_forward(model: torch.nn.Module, encoder_input: dict, inputs: Tensor) -> Tensor:
    """Logits for every position of decoder ``inputs``, through the model's forward."""
    if is_encoder_decoder(model):
        return model(
            encoder_input["src_tokens"], encoder_input["src_lengths"], inputs
        )[0]
    return model(inputs)[0]


def decoder_inputs(model: torch.nn.Module, sample: dict, rows: Tensor, order: Tensor) -> Tensor:
    """Teacher-forcing decoder inputs for target-side ``rows`` drawn from batch rows ``order``."""
    first = first_decoder_input(model, sample)[order]
    return torch.cat([first, rows[:, :-1]], dim=1)


def token_log_probs(
    model: torch.nn.Module, sample: dict, rows: Tensor, order: Tensor
) -> Tensor:
    """log p(row_t | row_<t) for every position of target-side ``rows``, with gradient.

    ``order`` maps each row to its batch row (for its first decoder input and, for
    translation, its source). One teacher-forced forward; an encoder-decoder model runs
    its encoder once per batch row and reorders the output for the rows, except under
    c10d DDP, whose gradient hooks need every forward to pass through the wrapper.
    Padding positions get 0. An adaptive softmax is evaluated for the chosen tokens only
    (fairseq's ``get_log_prob`` builds the full distribution in place, which autograd
    refuses).
    """
    inputs = decoder_inputs(model, sample, rows, order)
    if is_encoder_decoder(model) and not isinstance(
        getattr(model, "module", None), torch.nn.parallel.DistributedDataParallel
    ):
        net_input = sample["net_input"]
        encoder_out = model.encoder(net_input["src_tokens"], src_lengths=net_input["src_lengths"])
        encoder_out = model.encoder.reorder_encoder_out(encoder_out, order)
        net_output = model.decoder(inputs, encoder_out=encoder_out)[0]
    else:
        net_output = _full_forward(model, _expand_sample(model, sample, order), inputs)
    softmax = adaptive_softmax(model)
    if softmax is not None:
        picked = adaptive_token_log_probs(softmax, net_output, rows)
    else:
        lprobs = model.get_normalized_probs((net_output, None), log_probs=True)
        picked = lprobs.gather(-1, rows.unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(rows.eq(model.decoder.dictionary.pad()), 0.0)


def adaptive_token_log_probs(softmax: torch.nn.Module, features: Tensor, tokens: Tensor) -> Tensor:
    """log p(token) under a fairseq ``AdaptiveSoftmax`` for the given tokens, with gradient.

    ``log p = log softmax(head)[cluster or token] + log softmax(tail_i)[token - cutoff_i]``
    for a token in tail cluster i; only the tails that some token falls in are computed.
    """
    tokens = tokens.contiguous()
    output, targets = softmax(features, tokens)
    picked = torch.log_softmax(output[0].float(), dim=-1).gather(
        1, targets[0].unsqueeze(1)).squeeze(1)
    flat = tokens.reshape(-1)
    for i, tail_out in enumerate(output[1:]):
        if tail_out is None:
            continue
        in_tail = flat.ge(softmax.cutoff[i]) & flat.lt(softmax.cutoff[i + 1])
        index = in_tail.nonzero().squeeze(1)
        tail = torch.log_softmax(tail_out.float(), dim=-1).gather(
            1, targets[i + 1].unsqueeze(1)).squeeze(1)
        picked = picked.index_add(0, index, tail)
    return picked.view_as(tokens).to(features.dtype)


def unconditional_batch(model: torch.nn.Module, num: int, max_len: int) -> dict:
    """A language-model batch with no data: decoding starts from ``</s>`` (N = 0)."""
    dictionary = model.decoder.dictionary
    device = next(model.parameters()).device
    src = torch.full((num, 1), dictionary.eos(), dtype=torch.long, device=device)
    target = torch.full((num, max_len), dictionary.pad(), dtype=torch.long, device=device)
    return {"net_input": {"src_tokens": src, "src_lengths": torch.ones(num)}, "target": target}


def sample_sentences(
    model: torch.nn.Module,
    num: int,
    max_len: int,
    temperature: float = 1.0,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
    banned: tuple[int, ...] | None = None,
) -> Tensor:
    """``num`` free-running samples of a language model (rows of at most ``max_len``;
    ``banned`` as in :func:`sample_continuations`)."""
    pad = model.decoder.dictionary.pad()
    chunks = []
    for start in range(0, num, batch_size):
        batch = unconditional_batch(model, min(batch_size, num - start), max_len)
        rows = sample_continuations(model, batch, 0, 1, max_len, temperature, generator,
                                    banned=banned)
        chunks.append(torch.nn.functional.pad(rows, (0, max_len - rows.size(1)), value=pad))
    return torch.cat(chunks)


ScoreFn = Callable[[Tensor, Tensor], Tensor]
"""Scores completed rows: ``(rows (n, L), batch_order (n,)) -> (n,)``."""


@torch.no_grad()
def rollout_scores(
    policy: torch.nn.Module,
    sample: dict,
    rows: Tensor,
    order: Tensor,
    start: int,
    num_rollouts: int,
    score: ScoreFn,
    max_len: int,
    generator: torch.Generator | None = None,
    recompute_prefix: bool = False,
    max_rows: int = 1024,
    banned: tuple[int, ...] | None = None,
) -> Tensor:
    """Monte-Carlo rollouts: ``score`` of R completions of every prefix ``rows[:, :t+1]``.

    ``rows`` are target-side rows taken from batch rows ``order``. For each step
    ``t >= start`` the policy's decoder state after ``rows[:, :t+1]`` is forked R times
    (no prefix is recomputed) and completed by sampling until EOS or ``max_len`` tokens
    (the limit the sampled rows had). A row that already ended by ``t`` completes as
    itself, so its value is its own score. Returns (n, L, R) for the L columns of
    ``rows``; entries before ``start``, and from the first step at which every row has
    ended, are zero.

    Completions of different start steps sit at the same position at every decoding
    step, so their caches have equal lengths and can advance together in one batch,
    one decoder call per position instead of one per position and start step. Start
    steps are grouped so that a batch holds at most about ``max_rows`` completions
    (at least one step per batch), and each group is scored in one call. Larger groups
    mean fewer, larger calls, which pays where calls are expensive (a GPU); on a CPU
    with a large vocabulary they were slower (``scripts/bench.py``).

    ``recompute_prefix`` selects the reference implementation of the tests and
    ``scripts/bench.py``: every decoding step recomputes the whole prefix
    (:class:`RecomputeState`); given the same random draws the values are the same.
    ``banned`` replaces :func:`banned_tokens` for the completions.
    """
    count, columns = rows.shape
    values = rows.new_zeros(count, columns, num_rollouts, dtype=torch.float)
    pad, eos = policy.decoder.dictionary.pad(), policy.decoder.dictionary.eos()
    rows = torch.nn.functional.pad(rows, (0, max(0, max_len - columns)), value=pad)
    ended = torch.cumsum(rows.eq(eos) | rows.eq(pad), dim=1).gt(0)
    all_ended = ended.all(dim=0).tolist()
    steps = [t for t in range(start, columns) if t == 0 or not all_ended[t - 1]]
    if not steps:
        return values
    per_group = max(1, max_rows // (count * num_rollouts))
    with training_mode(policy, False):
        state = (RecomputeState if recompute_prefix else DecoderState)(policy, sample)
        state.reorder(order)
        inputs = torch.cat([first_decoder_input(policy, sample)[order], rows], dim=1)
        for t in range(steps[0] + 1):
            state.next_logits(inputs[:, : t + 1])
        for first in range(0, len(steps), per_group):
            group = steps[first:first + per_group]
            completions, state = _complete_group(
                state, inputs, ended, group, num_rollouts, generator, banned,
                keep_rows=first + per_group < len(steps),
            )
            expand = order.repeat_interleave(num_rollouts).repeat(len(group))
            scores = score(completions, expand).float()
            values[:, group] = scores.view(len(group), count, num_rollouts).transpose(0, 1)
    return values


def _complete_group(
    state: DecoderState | RecomputeState,
    inputs: Tensor,
    ended: Tensor,
    steps: list[int],
    num_rollouts: int,
    generator: torch.Generator | None,
    banned: tuple[int, ...] | None,
    keep_rows: bool,
) -> tuple[Tensor, DecoderState | RecomputeState | None]:
    """R completions of the prefixes of every row at consecutive ``steps``, in one batch.

    ``state`` holds the n rows after ``inputs[:, :steps[0] + 1]`` and becomes the batch
    (it is consumed). The batch holds the rows, teacher-forced on ``inputs``, while forks
    still join: after ``x_t`` is fed for a step ``t`` of ``steps``, R forks of each row
    join; every fork samples until EOS or the length limit (the width of ``inputs``
    minus one) and leaves the batch when it
    ends. Returns the completions (len(steps) * n * R, L), step-major, then row, then
    rollout; and, if ``keep_rows``, the rows' state after ``inputs[:, :steps[-1] + 2]``.
    """
    count, width = ended.shape
    device = inputs.device
    dictionary = state.model.decoder.dictionary
    pad, eos = dictionary.pad(), dictionary.eos()
    banned = banned_tokens(state.model) if banned is None else banned
    row_ids = torch.arange(count, device=device)
    expand = row_ids.repeat_interleave(num_rollouts)
    completions = inputs.new_full((len(steps) * expand.numel(), width), pad)
    forks = inputs[:0, : steps[0] + 2]      # decoder inputs of the forks; last one not fed
    slots = row_ids[:0]                     # each fork's row in ``completions``
    rows_state: DecoderState | RecomputeState | None = None
    for t in range(steps[0], width):
        joining = t <= steps[-1]            # the rows sit first in the batch until then
        offset = count if joining else 0
        if t + 1 < width:
            fed = torch.cat([inputs[:, : t + 2], forks]) if joining else forks
            logits = state.next_logits(fed)
        in_batch = torch.arange(offset, offset + forks.size(0), device=device)
        finished = torch.zeros(forks.size(0), dtype=torch.bool, device=device)
        if joining:
            first_slot = (t - steps[0]) * expand.numel()
            forks = torch.cat([forks, inputs[expand, : t + 2]])
            slots = torch.cat([slots, first_slot + torch.arange(expand.numel(), device=device)])
            in_batch = torch.cat([in_batch, expand])
            finished = torch.cat([finished, ended[expand, t]])
        if t + 1 == width:
            break
        fork_logits = logits[in_batch] if joining else logits  # the rows have left
        step, done = next_tokens(fork_logits, finished, pad, eos, banned, generator=generator)
        forks = torch.cat([forks, step.unsqueeze(1)], dim=1)
        if keep_rows and t == steps[-1]:
            rows_state = state.fork(row_ids)
        completions[slots[done], : t + 2] = forks[done, 1:]
        live = (~done).nonzero().squeeze(1)
        forks, slots = forks[live], slots[live]
        if live.numel() == 0 and t >= steps[-1]:
            break
        if joining or live.numel() < done.numel():
            state.reorder(torch.cat([row_ids, in_batch[live]]) if t < steps[-1]
                          else in_batch[live])
    completions[slots, : forks.size(1) - 1] = forks[:, 1:]
    return completions, rows_state
