"""Loading local weights files into the feature networks, with errors that name the file.

Every backbone keeps torchvision's module names, so torchvision's own state-dict files load
without torchvision installed. Nothing here downloads anything.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn


def read_state_dict(
    path: str | Path, network: str, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """The str -> tensor mapping stored at ``path`` (``{"state_dict": ...}`` is unwrapped).

    Raises ``FileNotFoundError`` naming ``path`` when it does not exist and ``ValueError`` when
    it is not a readable PyTorch state dict.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{network} weights file not found: {path}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # torch raises several types for a non-checkpoint file
        raise ValueError(f"{path} is not a readable PyTorch state dict: {error}") from error
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ValueError(f"{path} does not hold a state dict (str -> tensor mapping)")
    return state


def load_weights_file(
    module: nn.Module,
    path: str | Path,
    network: str,
    *,
    prefix: str = "",
    not_built: Sequence[str] = (),
) -> None:
    """Load ``module`` from the file's entries ``prefix + <module key>``, strictly: every
    parameter and buffer of ``module`` must be there with its shape, and every other entry must
    either start with ``prefix`` (deeper layers that were not built) or with one of the
    ``not_built`` prefixes (e.g. a classifier). Errors name the file and the offending keys."""
    state = read_state_dict(path, network)
    expected = module.state_dict()
    # BatchNorm's step counter is not a weight; files saved before PyTorch 0.4.1 lack it
    optional = {k for k in expected if k.endswith("num_batches_tracked")}
    missing = [k for k in expected if prefix + k not in state and k not in optional]
    # with a prefix, any key under it is a deeper layer that was not built; without one, every
    # key must belong to the module
    accounted = (lambda k: k.startswith(prefix)) if prefix else (lambda k: k in expected)
    unexpected = [k for k in state if not accounted(k) and not k.startswith(tuple(not_built))]
    wrong_shape = [
        f"{prefix}{k}: {tuple(state[prefix + k].shape)} != {tuple(v.shape)}"
        for k, v in expected.items()
        if prefix + k in state and state[prefix + k].shape != v.shape
    ]
    if missing or unexpected or wrong_shape:
        raise ValueError(
            f"{path} is not a {network} state dict: "
            f"{len(missing)} missing keys {[prefix + k for k in missing[:3]]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, "
            f"{len(wrong_shape)} shape mismatches {wrong_shape[:3]}"
        )
    module.load_state_dict({k: state.get(prefix + k, v) for k, v in expected.items()}, strict=True)
