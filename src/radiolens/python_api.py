"""The Python API: ``radiolens.load_model(path)`` -> :class:`Model`, for notebooks and scripts.

A driver over the one prediction path, like batch scoring (``predict``) and the service (``serve``): it reads
with :mod:`radiolens.io` (a file path, bytes, a pydicom data set, or a NumPy array through
:func:`radiolens.io.raster.image_from_array`), prepares with :func:`radiolens.pipeline.prepare` and predicts with
:class:`radiolens.pipeline.Predictor`. So ``Model.predict`` returns the same
:class:`~radiolens.pipeline.record.PredictionRecord` the service answers from and a batch row is written from,
input gate included: an image the gate refuses comes back "not assessed", with the gate's reasons, never as a
bare probability.

Nothing is stored, sent or logged here, so there is no de-identification step: pixels and header stay in the
caller's memory, and a record carries no header value beyond the gate's coded reasons.

Loading a ``.pt`` bundle needs PyTorch (``radiolens[train]``); an exported ``.onnx`` runs in a
``radiolens[serve]`` installation, heatmaps included when the export has its feature output.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from radiolens.errors import ConfigError, ModelError, RadiolensError, UnsupportedInputError
from radiolens.io.image import RadioImage
from radiolens.models.info import BundleInfo
from radiolens.pipeline.predictor import Failure, InferenceFailedError, Predictor, Prepared, prepare
from radiolens.pipeline.record import PredictionRecord

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    ImageSource = str | os.PathLike[str] | bytes | np.ndarray | Dataset | RadioImage

log = logging.getLogger("radiolens.python_api")

#: The file a training job writes its bundle to (``radiolens train`` -> ``OUT/model.pt``).
JOB_MODEL_FILE = "model.pt"
#: The file ``radiolens model-card --out DIR`` writes; read when it sits beside the model.
MODEL_CARD_FILE = "model_card.json"
MODEL_SUFFIXES = (".pt", ".onnx")


def read_source(image: ImageSource) -> RadioImage:
    """Any accepted image source -> :class:`RadioImage`; typed errors (``radiolens.errors.InputError``) otherwise.

    A path or bytes go through the format table (DICOM, PNG, JPEG, TIFF), as batch scoring and the service read
    them; a pydicom data set through the same DICOM decoder (Modality LUT, VOI window, MONOCHROME1); an array
    through :func:`radiolens.io.raster.image_from_array` (see its intensity convention).
    """
    if isinstance(image, RadioImage):
        return image
    if isinstance(image, str | os.PathLike | bytes | bytearray | memoryview):
        from radiolens.io.formats import read_image

        return read_image(image if isinstance(image, bytes | bytearray | memoryview) else Path(image))
    if isinstance(image, np.ndarray):
        from radiolens.io.raster import image_from_array

        return image_from_array(image)
    from pydicom.dataset import Dataset

    if isinstance(image, Dataset):
        from radiolens.io.dicom import dicom_to_image

        return dicom_to_image(image, name="dataset")
    raise UnsupportedInputError(f"cannot predict from a {type(image).__name__}: give a file path (DICOM, PNG, JPEG, "
                                "TIFF), its bytes, a NumPy array or a pydicom Dataset")


def resolve_model_file(path: str | os.PathLike[str]) -> Path:
    """The model file a path names: a ``.pt`` bundle or an ``.onnx`` export, or a folder holding one (a training
    job's output folder holds ``model.pt``)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise ModelError(f"model not found: {p.name}")
    if (p / JOB_MODEL_FILE).is_file():
        return p / JOB_MODEL_FILE
    found = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in MODEL_SUFFIXES)
    if len(found) != 1:
        what = "no" if not found else f"{len(found)}"
        raise ModelError(f"{p.name}: {what} model files (.pt or .onnx) in the folder; give the file itself")
    return found[0]


def _model_card(model_file: Path, sha256: str) -> dict[str, Any] | None:
    """``model_card.json`` beside the model (or in its ``model_card/`` folder), used only when it describes this
    very model (same sha256): a card of another model would state another model's intended use."""
    for candidate in (model_file.parent / MODEL_CARD_FILE, model_file.parent / "model_card" / MODEL_CARD_FILE):
        if not candidate.is_file():
            continue
        try:
            card = json.loads(candidate.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            log.warning("%s is not readable JSON; ignored", candidate.name)
            continue
        card_sha = str((card.get("model") or {}).get("sha256") or "") if isinstance(card, dict) else ""
        if card_sha and card_sha == sha256:
            return card
        log.warning("%s describes another model (sha256 differs); ignored", candidate.name)
    return None


def heatmap_at(heat: np.ndarray, height: int, width: int) -> np.ndarray:
    """A heatmap at the model input size -> (height, width) float32 in [0, 1], bilinear (the model input is
    the whole image stretched to the input size, so stretching back lines the map up with the image)."""
    from PIL import Image

    small = np.ascontiguousarray(heat, dtype=np.float32)
    if small.shape == (height, width):
        return np.clip(small, 0.0, 1.0)
    big = Image.fromarray(small).resize((int(width), int(height)), Image.Resampling.BILINEAR)
    return np.clip(np.asarray(big, dtype=np.float32), 0.0, 1.0)


@dataclass(frozen=True)
class Explanation:
    """A record with its heatmap at the size of the input image.

    ``heatmap`` is (H, W) float32 in [0, 1] on the input's pixel grid, for ``record.heatmap.target`` (the class
    the decision is about), or None when the image was not assessed (the gate refused it: nothing to explain).
    ``image`` is the display pixels the model saw, (H, W) in [0, 1] (first frame of a multi-frame file).
    """

    record: PredictionRecord
    heatmap: np.ndarray | None
    image: np.ndarray

    @property
    def target(self) -> str | None:
        return None if self.record.heatmap is None else self.record.heatmap.target

    def overlay(self, max_alpha: float = 0.6) -> np.ndarray:
        """(H, W, 3) uint8: the image under the heatmap, with the colour map and opacity of the service's
        overlays and the DICOM heatmap capture (``io.writers``); the plain image when there is no heatmap."""
        from radiolens.io.writers.dicom_sc import blend_heatmap

        heat = np.zeros_like(self.image) if self.heatmap is None else self.heatmap
        return blend_heatmap(self.image, heat, max_alpha)

    def __repr__(self) -> str:
        shape = "none" if self.heatmap is None else f"{self.heatmap.shape[1]}x{self.heatmap.shape[0]}"
        return f"Explanation(target={self.target!r}, heatmap={shape}, record={self.record!r})"


class Model:
    """A loaded model for in-process prediction. Build it with :func:`load_model`.

    ``predict`` / ``predict_batch`` give :class:`PredictionRecord` s (the service's and batch scoring's result
    type); ``explain`` / ``explain_batch`` add the heatmap at the input image size. Accepted images: a path
    (DICOM, PNG, JPEG, TIFF), bytes of such a file, a pydicom ``Dataset``, or a NumPy array (uint8 / uint16 over
    their full range, or float in [0, 1]; (H, W) grey or (H, W, 3) RGB; see :func:`read_source`).
    """

    def __init__(self, predictor: Predictor, model_file: Path, *, batch_size: int = 16):
        if batch_size < 1:
            raise ConfigError("batch_size must be at least 1")
        self.predictor = predictor
        self.model_file = model_file
        self.batch_size = int(batch_size)
        self.model_card = _model_card(model_file, predictor.provenance.sha256)

    # ------------------------------------------------------------------ what the model is
    @property
    def info(self) -> BundleInfo:
        return self.predictor.info

    @property
    def classes(self) -> list[str]:
        """One name per output (binary: the positive class; ``negative_name`` is what 1 - p means)."""
        return list(self.info.class_names)

    @property
    def task(self) -> str:
        return self.info.task

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) the model sees; any image is resized to it."""
        return tuple(self.info.input_size)  # type: ignore[return-value]

    @property
    def thresholds(self) -> dict[str, float]:
        """The operating threshold of each class (chosen on validation; ``operating_point`` names how)."""
        return {n: float(t) for n, t in zip(self.info.class_names, self.info.thresholds, strict=True)}

    @property
    def operating_point(self) -> str:
        return self.info.operating_point

    @property
    def gate_mode(self) -> str:
        """Which input gate applies: header rules, plus the learned score when the model has a profile."""
        return self.predictor.gate_mode

    @property
    def heatmap_method(self) -> str | None:
        """The heatmap ``explain`` draws (Grad-CAM on a .pt bundle, the export's CAM on an .onnx; None: none)."""
        return self.predictor.heatmap_method

    @property
    def intended_population(self) -> str | None:
        """Who the model is for, from what the model says about itself: the model card's intended use (a card
        beside the model file, for this model), else the images its input gate was calibrated on (monitoring
        profile), else None (the model states nothing: ask whoever trained it)."""
        if self.model_card and self.model_card.get("intended_use"):
            return str(self.model_card["intended_use"])
        profile = self.predictor.profile
        if profile is not None:
            source = f" ({profile.source})" if profile.source else ""
            return (f"images like the {profile.n_images} validation radiographs its input gate was calibrated "
                    f"on{source}")
        return None

    def __repr__(self) -> str:
        p = self.predictor.provenance
        return (f"Model({p.label!r}, task={self.task!r}, classes={self.classes}, input_size={self.input_size}, "
                f"gate={self.gate_mode!r})")

    # ------------------------------------------------------------------ prediction
    def _prepare(self, image: ImageSource) -> tuple[RadioImage, Prepared]:
        img = read_source(image)
        return img, prepare(self.info, img)

    def predict(self, image: ImageSource) -> PredictionRecord:
        """The record of one image: labelled probabilities, decision, review flag and reason, gate outcome.
        Unusable input raises a :class:`radiolens.errors.InputError`; a forward pass that fails raises
        :class:`radiolens.pipeline.InferenceFailedError`."""
        return self.predictor.predict(self._prepare(image)[1])

    def predict_batch(self, images: Iterable[ImageSource], *, batch_size: int | None = None,
                      errors: Literal["raise", "return"] = "raise") -> list[PredictionRecord | RadiolensError]:
        """Records of many images, in order, ``batch_size`` per forward pass (default: the model's).

        ``errors="raise"`` stops at the first unusable image with its typed error; ``"return"`` puts the error in
        that image's place and goes on (an archive with a corrupt file still gets scored).
        """
        return [r for r, _ in self._batches(images, batch_size, errors, heatmaps=False)]

    def explain(self, image: ImageSource) -> Explanation:
        """The record with the heatmap of its decision's class at the size of the input image."""
        self._need_heatmaps()
        img, item = self._prepare(image)
        return self._explained(self.predictor.predict(item, heatmap=True), img)

    def explain_batch(self, images: Iterable[ImageSource], *, batch_size: int | None = None,
                      errors: Literal["raise", "return"] = "raise") -> list[Explanation | RadiolensError]:
        """:meth:`explain` for many images (one forward pass per batch, then one heatmap per assessed image)."""
        self._need_heatmaps()
        return [r if isinstance(r, RadiolensError) else self._explained(r, img)
                for r, img in self._batches(images, batch_size, errors, heatmaps=True)]

    # ------------------------------------------------------------------ internals
    def _need_heatmaps(self) -> None:
        if self.predictor.heatmap_method is None:
            raise ModelError(f"{self.model_file.name} gives no heatmaps: it is an ONNX export without its feature "
                             "output; load the .pt bundle, or export it again")

    def _explained(self, record: PredictionRecord, img: RadioImage) -> Explanation:
        heat = None if record.heatmap is None else heatmap_at(record.heatmap.array, img.height, img.width)
        return Explanation(record, heat, img.first_frame())

    def _batches(self, images: Iterable[ImageSource], batch_size: int | None, errors: str, heatmaps: bool
                 ) -> Iterator[tuple[PredictionRecord | RadiolensError, RadioImage | None]]:
        if errors not in ("raise", "return"):
            raise ConfigError(f"errors must be 'raise' or 'return', not {errors!r}")
        size = int(batch_size or self.batch_size)
        if size < 1:
            raise ConfigError("batch_size must be at least 1")
        chunk: list[ImageSource] = []
        for image in images:
            chunk.append(image)
            if len(chunk) == size:
                yield from self._one_batch(chunk, errors, heatmaps)
                chunk = []
        if chunk:
            yield from self._one_batch(chunk, errors, heatmaps)

    def _one_batch(self, chunk: list[ImageSource], errors: str, heatmaps: bool
                   ) -> list[tuple[PredictionRecord | RadiolensError, RadioImage | None]]:
        read: list[tuple[RadioImage, Prepared] | RadiolensError] = []
        for image in chunk:
            try:
                read.append(self._prepare(image))
            except RadiolensError as exc:
                if errors == "raise":
                    raise
                read.append(exc)
        ok = [r for r in read if not isinstance(r, RadiolensError)]
        outs = iter(self.predictor.run([item for _, item in ok]))
        done: list[tuple[PredictionRecord | RadiolensError, RadioImage | None]] = []
        for r in read:
            if isinstance(r, RadiolensError):
                done.append((r, None))
                continue
            img, item = r
            out = next(outs)
            if isinstance(out, Failure):
                exc = InferenceFailedError(f"the model could not run on this image: {out.error_message}")
                if errors == "raise":
                    raise exc
                done.append((exc, None))
                continue
            done.append((self.predictor.with_heatmap(out, item) if heatmaps else out, img))
        return done


def load_model(path: str | os.PathLike[str], *, backend: Literal["torch", "torchscript", "onnx"] | None = None,
               threads: int | None = None, gate: bool = True, near_threshold_margin: float = 0.1,
               mc_dropout_passes: int = 0, cam_method: str = "gradcam", batch_size: int = 16) -> Model:
    """A model ready to predict: a ``.pt`` bundle, an exported ``.onnx``, or a folder holding one (a training
    job's output folder).

    ``backend``: by file when None (``.onnx`` -> ONNX Runtime, else PyTorch). ``gate``: apply the input gate
    (the default, as the service and batch scoring do; off only for research on what the gate refuses).
    ``near_threshold_margin``: the review band used when the bundle stores no fitted triage rule.
    ``mc_dropout_passes`` (> 1): the review flag also sees the MC-dropout spread (needs a .pt bundle).
    ``cam_method``: the CAM method on a .pt bundle (an .onnx draws its export's CAM).
    """
    from radiolens.models.backends import TorchBackend, load_backend

    model_file = resolve_model_file(path)
    be = load_backend(model_file, kind=backend, threads=threads)
    if mc_dropout_passes > 1 and not isinstance(be, TorchBackend):
        raise ConfigError("MC-dropout needs the PyTorch model: load the .pt bundle, or set mc_dropout_passes=0")
    predictor = Predictor(be, gate=gate, near_threshold_margin=near_threshold_margin,
                          mc_dropout_passes=mc_dropout_passes, cam_method=cam_method)
    return Model(predictor, model_file, batch_size=batch_size)
