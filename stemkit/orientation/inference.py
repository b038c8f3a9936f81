"""Running the model over many token sets: batches of similar length, padding trimmed, answers decoded.

Attention costs grow with the square of the token count, and most patterns have far fewer
disks than the longest one. :func:`run_model` therefore orders the patterns by their
number of tokens, cuts batches from that order and trims each batch's padding to its
longest member; masked tokens change nothing (the model ignores padding exactly), so the
answers are the same as in one padded batch, only sooner. :func:`length_sorted_batches`
serves training too.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch

from stemkit.orientation.decode import Decoded, decode
from stemkit.orientation.loss import SymmetryTable
from stemkit.orientation.model import OrientationTransformer

#: Patterns per model call on a CPU. Small batches, cut from the length-sorted order, carry
#: little padding and stay in cache: on the issue-5 benchmark's 4,096 patterns (1 thread,
#: benchmarks/orientation/run_stemkit.py) the model stage ran 15,660 patterns/s in batches of
#: 256 against 2,594 in one batch of 4,096 (benchmarks/RESULTS.md).
CPU_BATCH = 256
#: Patterns per model call on an accelerator, where large batches fill the device.
DEVICE_BATCH = 4096


def default_batch_size(device: str | torch.device) -> int:
    """:data:`CPU_BATCH` on the CPU, :data:`DEVICE_BATCH` elsewhere."""
    return CPU_BATCH if torch.device(device).type == "cpu" else DEVICE_BATCH


def length_sorted_batches(mask: torch.Tensor | np.ndarray, batch_size: int) -> Iterator[tuple[np.ndarray, int]]:
    """``(indices, length)`` of batches of patterns of similar token count (tokens first, as made by :mod:`tokens`).

    Parameters
    ----------
    mask
        ``(n, T)`` token masks.
    batch_size
        Most patterns per batch.

    Yields
    ------
    indices, length
        Pattern indices of one batch (ascending length) and the length to trim it to (at
        least 1): one past the last real token of its longest member, so that masks need not
        be packed at the front.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    lengths = token_lengths(mask.cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask))
    order = np.argsort(lengths, kind="stable")
    for start in range(0, len(order), batch_size):
        indices = order[start:start + batch_size]
        yield indices, max(1, int(lengths[indices].max()))


def token_lengths(mask: np.ndarray) -> np.ndarray:
    """One past the last real token of each row of ``mask`` ``(n, T)`` (0 for none): what trimming may keep."""
    last = mask.shape[1] - np.argmax(mask[:, ::-1], axis=1)
    return np.where(mask.any(axis=1), last, 0)


@torch.inference_mode()
def run_model(
    model: OrientationTransformer,
    features: np.ndarray,
    mask: np.ndarray,
    table: SymmetryTable,
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    **decode_options: float,
) -> Decoded:
    """Decoded answers for token sets ``(n, T, F)`` with masks ``(n, T)``, in their input order.

    Parameters
    ----------
    model
        The trained model (put in eval mode here).
    features, mask
        From :func:`stemkit.orientation.tokens.tokens_from_arrays`.
    table
        The phases' point groups.
    batch_size
        Patterns per model call; default :func:`default_batch_size` of ``device``.
    device
        Torch device.
    **decode_options
        ``ambiguity_weight``, ``ambiguity_angle`` for :func:`~stemkit.orientation.decode.decode`.
    """
    model = model.eval().to(device)
    parts: list[tuple[np.ndarray, Decoded]] = []
    for indices, length in length_sorted_batches(mask, batch_size or default_batch_size(device)):
        f = torch.as_tensor(features[indices, :length], device=device)
        m = torch.as_tensor(mask[indices, :length], device=device)
        parts.append((indices, decode(model(f, m), table, **decode_options)))
    return _in_input_order(parts, len(mask))


def _in_input_order(parts: list[tuple[np.ndarray, Decoded]], n: int) -> Decoded:
    """Concatenate per-batch answers and put them back in the patterns' order."""
    if not parts:
        raise ValueError("no patterns to run the model on")
    order = np.concatenate([indices for indices, _ in parts])
    inverse = np.empty(n, dtype=np.int64)
    inverse[order] = np.arange(n)
    fields = Decoded.__dataclass_fields__
    joined = {name: np.concatenate([getattr(d, name) for _, d in parts])[inverse] for name in fields}
    return Decoded(**joined)
