"""The lossless tensor encodings, one module each; ``fmforge.tensors.codec`` lists them.

- ``base``: the ``Encoding`` interfaces and ``EncodedTensor``.
- ``planes``: byte planes and zstd blocks, the container every encoding's payload uses.
- ``raw``, ``xor``, ``diff``: dense encodings (the tensor, or a bitwise delta, byte-grouped).
- ``sparse``, ``lowrank``: deltas that apply to some updates only.

Nothing registers itself on import: the registry is an explicit list in ``codec``.
"""
