"""SLERP: spherical interpolation between two models, tensor by tensor.

Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985; as mergekit applies it
(``slerp``, https://en.wikipedia.org/wiki/Slerp): with Ω the angle between the two tensors
flattened, θ = sin((1-t)Ω)/sin Ω · v₀ + sin(tΩ)/sin Ω · v₁, and a linear interpolation where the
tensors are nearly colinear (|cos Ω| > 0.9995). v₀ is the base and v₁ the one input (or, without
a base, the two inputs). The angle needs the whole tensor: a first pass gathers the norms and the
dot product in float64; the coefficients are computed in float64 too (mergekit: float32).
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from fmforge.errors import InvalidMerge
from fmforge.merging.method import MergeMethod, Rows, Space

if TYPE_CHECKING:
    from fmforge.merging.base import MergeSpec

DOT_THRESHOLD = 0.9995
EPS = 1e-8


class Slerp(MergeMethod):
    name = "slerp"
    title = "Spherical linear interpolation"
    reference = "https://en.wikipedia.org/wiki/Slerp"
    space: ClassVar[Space] = "weights"
    parameters = frozenset({"t"})
    needs_base = False
    inputs = (1, 2)
    has_scan: ClassVar[bool] = True

    def check(self, spec: MergeSpec, *, has_base: bool, adapters: bool) -> None:
        super().check(spec, has_base=has_base, adapters=adapters)
        wanted = 1 if has_base else 2
        if len(spec.inputs) != wanted:
            raise InvalidMerge(
                "slerp interpolates between two models: the base and one input, or two "
                f"inputs without a base (got {len(spec.inputs)} input(s)"
                f"{' and a base' if has_base else ''})"
            )
        if any(i.weight != 1 for i in spec.inputs):
            raise InvalidMerge("slerp takes no weights: its position between the two is --t")

    @staticmethod
    def _ends(rows: Rows) -> tuple[torch.Tensor, torch.Tensor]:
        if rows.base is not None:
            return rows.base, rows.values[0]
        return rows.values[0], rows.values[1]

    def scan_state(self) -> Any:
        return [0.0, 0.0, 0.0]  # |v0|², |v1|², v0·v1

    def scan(self, state: Any, rows: Rows) -> Any:
        v0, v1 = (v.reshape(-1).to(torch.float64) for v in self._ends(rows))
        state[0] += float(v0 @ v0)
        state[1] += float(v1 @ v1)
        state[2] += float(v0 @ v1)
        return state

    def combine(self, rows: Rows, spec: MergeSpec, state: Any) -> torch.Tensor:
        v0, v1 = self._ends(rows)
        t = spec.t
        s0, s1 = coefficients(t, state[0], state[1], state[2])
        return s0 * v0 + s1 * v1


def coefficients(t: float, sq0: float, sq1: float, dot: float) -> tuple[float, float]:
    """(s0, s1) of the interpolation, from the squared norms and the dot product."""
    n0 = math.sqrt(sq0)
    n1 = math.sqrt(sq1)
    cos = dot / ((n0 if n0 > EPS else 1.0) * (n1 if n1 > EPS else 1.0))
    if abs(cos) > DOT_THRESHOLD:
        return 1 - t, t
    omega = math.acos(max(-1.0, min(1.0, cos)))
    sin_omega = math.sin(omega)
    omega_t = omega * t
    return math.sin(omega - omega_t) / sin_omega, math.sin(omega_t) / sin_omega


SLERP = Slerp()
