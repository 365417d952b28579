"""DARE: drop each task-vector entry with probability p and rescale survivors by 1/(1 - p),
then sum (``dare_linear``) or elect signs as TIES does (``dare_ties``).

Yu et al., "Language Models are Super Mario", ICML 2024 (arXiv 2311.03099). ``density`` is
1 - p. The drop mask is drawn from a PCG64 stream seeded by the spec's ``seed``, the tensor's
name and the input's position, element by element in row-major order, so it does not depend on
how the engine splits a tensor into rows: a merge is reproduced from its recorded seed. (mergekit
rescales by the L1 norm instead of 1/(1 - p), and draws from torch's global generator.)
"""

from __future__ import annotations

import blake3
import numpy as np
import torch

from fmforge.merging.methods.task_arithmetic import TaskArithmetic

_PARAMETERS = frozenset({"lambda", "density", "seed", "normalize"})

DARE_LINEAR = TaskArithmetic(
    "dare_linear", "DARE with task arithmetic", "https://arxiv.org/abs/2311.03099",
    trim="random", parameters=_PARAMETERS,
)  # fmt: skip
DARE_TIES = TaskArithmetic(
    "dare_ties", "DARE with TIES sign election", "https://arxiv.org/abs/2311.03099",
    trim="random", elect=True, parameters=_PARAMETERS,
)  # fmt: skip


def drop_stream(seed: int, tensor: str, position: int) -> np.random.Generator:
    """The random stream of input ``position``'s mask on ``tensor``."""
    key = blake3.blake3(f"dare:{seed}:{position}:{tensor}".encode()).digest()
    return np.random.Generator(np.random.PCG64(int.from_bytes(key[:16], "little")))


def keep_mask(stream: np.random.Generator, shape: tuple[int, ...], density: float) -> torch.Tensor:
    """The next ``prod(shape)`` draws of ``stream``: True where the entry is kept."""
    count = int(np.prod(shape)) if shape else 1
    return torch.from_numpy(stream.random(count) < density).reshape(shape)
