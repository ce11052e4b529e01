"""The operating-point rule grammar (``youden``, ``sensitivity:0.90``, ``specificity:0.95``).

It sits in the models layer, below both train and evaluate, because a bundle stores the rule
(``BundleInfo.operating_point``), the training config validates it when the config is loaded (before any data is
read), and the evaluator applies it; one parser serves all three.
"""

from __future__ import annotations

from radiolens.errors import InputError


class OperatingPointError(InputError):
    code = "bad_operating_point"


def parse_operating_point(rule: str) -> tuple[str, float | None]:
    """``"youden"`` -> ("youden", None); ``"sensitivity:0.90"`` / ``"specificity:0.95"`` -> (kind, target)."""
    text = str(rule).strip().lower()
    if text == "youden":
        return "youden", None
    kind, sep, value = text.partition(":")
    if sep and kind in ("sensitivity", "specificity"):
        try:
            target = float(value)
        except ValueError:
            target = float("nan")
        if not 0.0 < target <= 1.0:
            raise OperatingPointError(f"operating point '{rule}': the target must be a number in (0, 1]")
        return kind, target
    raise OperatingPointError(
        f"unknown operating point '{rule}': use 'youden', 'sensitivity:0.90' or 'specificity:0.95'")
