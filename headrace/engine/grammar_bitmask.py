"""Masks the logits of grammar-constrained rows to the tokens their grammars allow next.

Each constrained request holds an llguidance matcher. In a step, every constrained row's
matcher writes its packed mask (one bit per token id) into a CPU buffer. Each byte of those
masks then picks, from a 256-row table, the bias of its 8 tokens: 0 where a token is allowed,
about -3e38 where it is not; the bias is added to the row's logits before any sampling. The
buffers are allocated on the first constrained step and grow only when more rows are
constrained at once than ever before; a step with no constrained row does nothing at all.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from headrace.engine.request import Request, isolated

__all__ = ["GrammarBitmask"]

# What a disallowed token's logit drops by: finite, so masking never makes a NaN, and low enough
# that softmax gives it exactly zero and argmax never picks it.
_BLOCKED = 3e38


@dataclass(frozen=True)
class _Buffers:
    # Rows the buffers hold.
    rows: int
    # 32-token words per row: enough for the logits and for every grammar's mask.
    words: int
    # Packed masks as the matchers write them, on the CPU: [rows, words] int32.
    packed: Tensor
    # The packed masks on the model's device (the same tensor on the CPU): [rows, words] int32.
    packed_on_device: Tensor
    # The masks' bytes as table indices: [rows * words * 4] int64.
    indices: Tensor
    # The bias of the 8 tokens of every possible mask byte: [256, 8] float32.
    byte_bias: Tensor
    # What each row adds to its logits: [rows, words * 32] float32.
    bias: Tensor


class GrammarBitmask:
    def __init__(self, vocab_size: int, device: torch.device) -> None:
        # Width of the model's logits (its lm_head rows).
        self.vocab_size = vocab_size
        self.device = device
        self._buffers: _Buffers | None = None

    def apply(self, logits: Tensor, requests: list[Request]) -> None:
        """Mask in place the rows of `logits` whose request has a grammar.

        logits: [N, V] float32, row i belonging to requests[i].
        """
        rows = [row for row, request in enumerate(requests) if request.matcher is not None]
        if not rows:
            return
        buffers = self._reserve(len(rows), max(_mask_words(requests[row]) for row in rows))
        for i, row in enumerate(rows):
            # A row whose mask fails fails its request alone: the sampler then skips the row.
            isolated(requests[row], self._fill, buffers.packed[i], requests[row])
        bias = self._bias(buffers, len(rows))
        if len(rows) == logits.shape[0]:
            logits.add_(bias)
        else:
            for i, row in enumerate(rows):
                logits[row].add_(bias[i])

    def _fill(self, packed: Tensor, request: Request) -> None:
        # packed: [words] int32, this row's slot in the CPU buffer
        matcher, words = request.matcher, _mask_words(request)
        assert matcher is not None
        mask = packed[:words]
        matcher.unsafe_compute_mask_ptr(mask.data_ptr(), mask.numel() * mask.element_size())
        if words < packed.numel():
            packed[words:] = 0  # ids the model has but the tokenizer does not
        if matcher.is_error():
            # The mask is undefined; allow everything and let the engine fail the request
            # when the matcher refuses the sampled token.
            mask.fill_(-1)

    def _bias(self, buffers: _Buffers, num_rows: int) -> Tensor:
        # -> [num_rows, V] float32: 0 where allowed, -_BLOCKED where not
        packed = buffers.packed_on_device[:num_rows]
        if buffers.packed_on_device is not buffers.packed:
            packed.copy_(buffers.packed[:num_rows])
        # Little-endian: byte j of word w holds the bits of tokens 32w + 8j ... 32w + 8j + 7.
        indices = buffers.indices[: packed.numel() * 4]
        indices.copy_(packed.view(torch.uint8).view(-1))
        bias = buffers.bias[:num_rows]
        torch.index_select(buffers.byte_bias, 0, indices, out=bias.view(-1, 8))
        return bias[:, : self.vocab_size]

    def _reserve(self, num_rows: int, mask_words: int) -> _Buffers:
        """Buffers for `num_rows` rows of at least `mask_words` words and the logits' width."""
        buffers = self._buffers
        if buffers is not None and buffers.rows >= num_rows and buffers.words >= mask_words:
            return buffers
        old_rows, old_words = (buffers.rows, buffers.words) if buffers is not None else (0, 0)
        rows = old_rows if num_rows <= old_rows else max(num_rows, 2 * old_rows)
        words = max(mask_words, old_words, (self.vocab_size + 31) // 32)
        packed = torch.zeros(rows, words, dtype=torch.int32)
        bits = torch.arange(8)
        allowed = (torch.arange(256).unsqueeze(1) >> bits) & 1  # [256, 8]
        self._buffers = _Buffers(
            rows=rows,
            words=words,
            packed=packed,
            packed_on_device=packed if self.device.type == "cpu" else packed.to(self.device),
            indices=torch.empty(rows * words * 4, dtype=torch.int64, device=self.device),
            byte_bias=((allowed - 1) * _BLOCKED).float().to(self.device),
            bias=torch.empty(rows, words * 32, dtype=torch.float32, device=self.device),
        )
        return self._buffers


def _mask_words(request: Request) -> int:
    """32-bit words in the mask of the request's grammar."""
    grammar = request.params.grammar
    assert grammar is not None
    return (grammar.vocab_size + 31) // 32
