"""A trained model as one self-describing file: architecture, weights, labels, preprocessing,
calibration (temperature), operating thresholds and provenance.

Everything downstream (evaluate, explain, serve, batch scoring, monitoring) loads this and never needs
the training config. Saved with ``torch.save`` as plain tensors and Python literals so that
``torch.load(weights_only=True)`` can read it safely (no pickle of arbitrary objects).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from radiolens.data.transforms import to_model_tensor
from radiolens.errors import ModelError
from radiolens.io.image import RadioImage
from radiolens.models.info import FORMAT, BundleInfo, Task, file_sha256
from radiolens.models.registry import create_model

__all__ = ["FORMAT", "BundleInfo", "ModelBundle", "Task", "file_sha256"]


@dataclass
class ModelBundle:
    info: BundleInfo
    model: nn.Module
    sha256: str = ""

    def __post_init__(self) -> None:
        self.model.eval()

    # ---------------------------------------------------------------- persistence
    def save(self, path: str | Path) -> str:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        info = asdict(self.info)
        info["input_size"] = list(self.info.input_size)
        payload = {"format": FORMAT, "info": info,
                   "state_dict": {k: v.detach().cpu() for k, v in self.model.state_dict().items()}}
        tmp = path.with_suffix(path.suffix + ".tmp")
        torch.save(payload, tmp)
        tmp.replace(path)
        self.sha256 = file_sha256(path)
        return self.sha256

    @classmethod
    def load(cls, path: str | Path) -> ModelBundle:
        path = Path(path)
        if not path.is_file():
            raise ModelError(f"model file not found: {path.name}")
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise ModelError(f"{path.name}: not a radiolens model file ({type(exc).__name__})") from exc
        if not isinstance(payload, dict) or payload.get("format") != FORMAT:
            raise ModelError(f"{path.name}: not a radiolens model file (format {FORMAT} expected)")
        raw = dict(payload["info"])
        raw["input_size"] = tuple(raw["input_size"])
        info = BundleInfo(**raw)
        model = create_model(info.arch, info.num_outputs, dropout=info.dropout)
        model.load_state_dict(payload["state_dict"])
        return cls(info=info, model=model, sha256=file_sha256(path))

    # ---------------------------------------------------------------- inference
    def preprocess(self, image: RadioImage | np.ndarray) -> torch.Tensor:
        """One image -> (1, H, W) normalised tensor, validating the [0, 1] contract."""
        pixels = image.first_frame() if isinstance(image, RadioImage) else image
        return to_model_tensor(pixels, self.info.input_size, self.info.mean, self.info.std)

    def probabilities_from_logits(self, logits: torch.Tensor | np.ndarray,
                                  calibrated: bool = True) -> np.ndarray:
        z = torch.as_tensor(logits, dtype=torch.float32)
        if calibrated:
            z = z / float(self.info.temperature)
        if self.info.task == "multiclass":
            return torch.softmax(z, dim=-1).numpy()
        return torch.sigmoid(z).numpy()

    @torch.inference_mode()
    def predict_batch(self, batch: torch.Tensor, calibrated: bool = True) -> np.ndarray:
        """(N, 1, H, W) normalised tensors -> (N, outputs) probabilities."""
        return self.probabilities_from_logits(self.model(batch), calibrated)

    def predict_image(self, image: RadioImage, calibrated: bool = True) -> np.ndarray:
        return self.predict_batch(self.preprocess(image)[None], calibrated)[0]

    def decisions(self, probs: np.ndarray) -> np.ndarray:
        """Positive/negative per output at the stored operating thresholds (argmax for multi-class)."""
        probs = np.atleast_2d(probs)
        if self.info.task == "multiclass":
            out = np.zeros_like(probs, dtype=bool)
            out[np.arange(len(probs)), probs.argmax(axis=1)] = True
            return out
        return probs >= np.asarray(self.info.thresholds)[None, :]
