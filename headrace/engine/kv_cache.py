"""The KV cache: one slot per running sequence, each as long as the model's context."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["KVCache"]

# Slots are zeroed lazily, this many positions at a time (see ensure_zeroed).
_ZERO_CHUNK = 256


class KVCache:
    def __init__(
        self,
        *,
        num_layers: int,
        num_slots: int,
        max_len: int,
        num_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        shape = (num_slots, num_kv_heads, max_len, head_dim)
        # Allocated, not zeroed: untouched pages cost no memory until a sequence reaches them.
        self.layers: list[tuple[Tensor, Tensor]] = [
            (
                torch.empty(shape, dtype=dtype, device=device),
                torch.empty(shape, dtype=dtype, device=device),
            )
            for _ in range(num_layers)
        ]
        self.max_len = max_len
        self.num_slots = num_slots
        self._free_slots = list(range(num_slots - 1, -1, -1))
        self._zeroed_len = [0] * num_slots

    @property
    def num_free_slots(self) -> int:
        return len(self._free_slots)

    @property
    def bytes(self) -> int:
        k, _ = self.layers[0]
        return 2 * len(self.layers) * k.numel() * k.element_size()

    def allocate(self) -> int:
        return self._free_slots.pop()

    def free(self, slot: int) -> None:
        assert slot not in self._free_slots, f"slot {slot} freed twice"
        self._free_slots.append(slot)

    def ensure_zeroed(self, slot: int, length: int) -> None:
        """Make positions [0, length) of a slot finite, so masked attention reads no NaN."""
        start = self._zeroed_len[slot]
        if start >= length:
            return
        end = min(self.max_len, -(-length // _ZERO_CHUNK) * _ZERO_CHUNK)
        for k, v in self.layers:
            k[slot, :, start:end].zero_()
            v[slot, :, start:end].zero_()
        self._zeroed_len[slot] = end
