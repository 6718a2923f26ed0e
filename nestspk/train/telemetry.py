"""Training telemetry of the nested encoder, read through forward hooks (the shipped model carries no switches).

:class:`ActivationTelemetry` records, on the steps it is enabled for, the RMS of every level's output (after its
nested input is added; ``act_rms/levelK``) and of every nested projection's output in training mode
(``nested_rms/levelK``), for ``steps.csv``.
"""
from __future__ import annotations

import torch
from torch import nn


class ActivationTelemetry:
    """Forward hooks on a :class:`~nestspk.models.nested.NestedSpeakerNet`; ``enabled`` per step, :meth:`read` after."""

    def __init__(self, encoder: nn.Module):
        self.enabled = False
        self._values: dict[str, torch.Tensor] = {}
        self._handles = []
        for i, tap in enumerate(encoder.level_outputs):
            self._handles.append(tap.register_forward_hook(self._hook(f"act_rms/level{i + 1}")))
        for k, projection in encoder.nested.items():
            self._handles.append(projection.proj.register_forward_hook(self._hook(f"nested_rms/level{k}")))

    def _hook(self, name: str):
        def record(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if self.enabled:
                self._values[name] = output.detach().float().pow(2).mean().sqrt()
        return record

    def read(self) -> dict[str, float]:
        """The values recorded since the last read, in forward order, as floats (then cleared)."""
        out = {k: float(v) for k, v in self._values.items()}
        self._values.clear()
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
