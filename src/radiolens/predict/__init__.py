"""Batch scoring of whole archives (folders, manifests, DICOM trees) into resumable result files."""

from radiolens.predict.config import PredictConfig
from radiolens.predict.scoring import Scorer, ScoreSummary, result_columns
from radiolens.predict.sources import ScoreItem, discover

__all__ = ["PredictConfig", "ScoreItem", "ScoreSummary", "Scorer", "discover", "result_columns"]
