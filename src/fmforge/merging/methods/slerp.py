"""SLERP: spherical interpolation between two models, tensor by tensor.

Shoemake, "Animating rotation with quaternion curves", SIGGRAPH 1985; as mergekit applies it
(``slerp``, https://en.wikipedia.org/wiki/Slerp): with Ω the angle between the two tensors
flattened, θ = sin((1-t)Ω)/sin Ω · v₀ + sin(tΩ)/sin Ω · v₁, and a linear interpolation where the
tensors are nearly colinear (|cos Ω| > 0.9995). v₀ is the base and v₁ the one input (or, without
a base, the two inputs). The angle needs the whole tensor: a first pass gathers the norms and the
dot product in float64; the coefficients are computed in float64 too. With
``compute_dtype="float32"`` every step is mergekit 0.1.5's, in float32 (two passes: the norms,
then the dot product of the normalized tensors), so the result is the same bit for bit; its
float32 angle is then off the exact one by up to ~1e-5 relative on nearly parallel tensors.
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

    def scan_passes(self, spec: MergeSpec) -> int:
        return 2 if spec.compute_dtype == "float32" else 1

    def scan_state(self, spec: MergeSpec, shape: tuple[int, ...]) -> Any:
        if spec.compute_dtype == "float32":
            return _Float32Angle(math.prod(shape) if shape else 1)
        return [0.0, 0.0, 0.0]  # |v0|², |v1|², v0·v1

    def scan(self, state: Any, rows: Rows, spec: MergeSpec, index: int) -> Any:
        v0, v1 = self._ends(rows)
        if isinstance(state, _Float32Angle):
            state.feed(v0, v1, index)
            return state
        a, b = v0.reshape(-1).to(torch.float64), v1.reshape(-1).to(torch.float64)
        state[0] += float(a @ a)
        state[1] += float(b @ b)
        state[2] += float(a @ b)
        return state

    def scan_finish(self, state: Any, spec: MergeSpec, index: int) -> Any:
        if isinstance(state, _Float32Angle):
            state.finish(index, spec.t)
        return state

    def combine(self, rows: Rows, spec: MergeSpec, state: Any) -> torch.Tensor:
        v0, v1 = self._ends(rows)
        if isinstance(state, _Float32Angle):
            return state.coef_a * v0 + state.coef_b * v1
        s0, s1 = coefficients(spec.t, state[0], state[1], state[2])
        return s0 * v0 + s1 * v1


class _Float32Angle:
    """mergekit 0.1.5's SLERP statistics, operation by operation in float32: the norms and
    the dot product of the normalized tensors over chunks of 2^20 elements of the flattened
    tensor (assembled here from the engine's batches of rows), then the coefficients."""

    CHUNK = 1024 * 1024

    def __init__(self, numel: int) -> None:
        # everything allocated up front: small tensors kept alive between the engine's
        # batch-sized buffers would fragment the heap
        chunks = max(1, -(-numel // self.CHUNK))
        self.x = torch.empty(self.CHUNK, dtype=torch.float32)
        self.y = torch.empty(self.CHUNK, dtype=torch.float32)
        self.filled = 0
        self.parts = torch.empty((3, chunks, 1, 1), dtype=torch.float32)  # |v0|, |v1|, dots
        self.count = [0, 0, 0]
        self.norm_a = torch.ones((1, 1))
        self.norm_b = torch.ones((1, 1))
        self.coef_a = torch.zeros(())
        self.coef_b = torch.zeros(())

    def feed(self, v0: torch.Tensor, v1: torch.Tensor, index: int) -> None:
        a, b = v0.reshape(-1), v1.reshape(-1)
        done = 0
        while done < a.numel():
            room = min(self.CHUNK - self.filled, a.numel() - done)
            self.x[self.filled : self.filled + room] = a[done : done + room]
            self.y[self.filled : self.filled + room] = b[done : done + room]
            self.filled += room
            done += room
            if self.filled == self.CHUNK:
                self._chunk(index)

    def _chunk(self, index: int) -> None:
        x = self.x[: self.filled].reshape(1, -1)
        y = self.y[: self.filled].reshape(1, -1)
        if index == 0:
            self._keep(0, torch.linalg.vector_norm(x, dim=1, keepdim=True))
            self._keep(1, torch.linalg.vector_norm(y, dim=1, keepdim=True))
        else:
            x, y = x / self.norm_a, y / self.norm_b
            self._keep(2, (x * y).sum(dim=1, keepdim=True))
        self.filled = 0

    def _keep(self, which: int, value: torch.Tensor) -> None:
        self.parts[which, self.count[which]] = value
        self.count[which] += 1

    def finish(self, index: int, t: float) -> None:
        if self.filled:
            self._chunk(index)
        if index == 0:
            norm_a = torch.linalg.vector_norm(self.parts[0, : self.count[0]], dim=0)
            norm_b = torch.linalg.vector_norm(self.parts[1, : self.count[1]], dim=0)
            self.norm_a.copy_(torch.where(norm_a > EPS, norm_a, 1))
            self.norm_b.copy_(torch.where(norm_b > EPS, norm_b, 1))
            return
        dot = self.parts[2, : self.count[2]].sum(dim=0).clamp(-1, 1)
        position = torch.tensor(t).reshape(-1, 1).to(torch.float32)
        linear = dot.abs() > DOT_THRESHOLD
        theta = torch.acos(torch.where(linear, 0, dot))
        sin_theta = torch.sin(theta)
        coef_a = torch.where(linear, 1 - position, torch.sin((1 - position) * theta) / sin_theta)
        coef_b = torch.where(linear, position, torch.sin(position * theta) / sin_theta)
        self.coef_a.copy_(coef_a.reshape(()))
        self.coef_b.copy_(coef_b.reshape(()))


def coefficients(t: float, sq0: float, sq1: float, dot: float) -> tuple[float, float]:
    """(s0, s1) of the interpolation, from the squared norms and the dot product."""
    n0 = math.sqrt(sq0)
    n1 = math.sqrt(sq1)
    cos = dot / ((n0 if n0 > EPS else 1.0) * (n1 if n1 > EPS else 1.0))
    if abs(cos) > DOT_THRESHOLD:
        return 1 - t, t
    omega = math.acos(max(-1.0, min(1.0, cos)))
    sin_omega = math.sin(omega)
    return math.sin((1 - t) * omega) / sin_omega, math.sin(t * omega) / sin_omega


SLERP = Slerp()
