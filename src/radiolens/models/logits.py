"""Raw model outputs over a data loader: shared by training (validation/test outputs of the fitted model) and
by the evaluation of a saved bundle, so both score images the same way."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def stack_logits(module: nn.Module, loader) -> tuple[np.ndarray, np.ndarray]:
    """Run a model over a loader of ``(images, targets)`` batches -> (logits (N, K), targets) as numpy."""
    module.eval()
    logits, targets = [], []
    with torch.inference_mode():
        for x, y in loader:
            logits.append(module(x.to(next(module.parameters()).device)).float().cpu())
            targets.append(y)
    return torch.cat(logits).numpy(), torch.cat(targets).numpy()
