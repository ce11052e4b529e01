"""Who a model is meant for, and whether one image falls inside it.

A model trained on one population (Kermany's films are of children aged 1-5, all frontal) says nothing reliable
about another (an adult, a lateral view), yet it still returns a probability. The bundle therefore states its
intended population (``BundleInfo.population``, from the training data's documentation), and every result carries
:func:`scope_of`: the age band, sex and view the de-identified header kept, the model's population and input size,
and a plain-language warning for each way the image is outside it. A bundle that states no population gets
"population not stated" rather than a silent pass.

Only the age *band* leaves this module: the exact age stays in the de-identified header.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radiolens.errors import ModelError
from radiolens.io.image import ImageMeta

#: The age bands reports and subgroup audits use (evaluate.subgroups groups by these too).
AGE_BANDS = ("paediatric (<18)", "adult (18-64)", "geriatric (>=65)")
#: View positions that are not frontal (DICOM ViewPosition terms, as coded by radiolens.io.vocab).
LATERAL_VIEWS = frozenset({"LL", "RL", "LATERAL", "LAT", "RLD", "LLD"})
NOT_STATED = "not stated"
SEXES = {"M": "male", "F": "female", "O": "other"}


def age_band(age_years: float | None) -> str:
    if age_years is None:
        return NOT_STATED
    if age_years < 18:
        return AGE_BANDS[0]
    return AGE_BANDS[1] if age_years < 65 else AGE_BANDS[2]


@dataclass(frozen=True)
class Population:
    """The population a model was trained for: an age range in years, the view positions, and a sentence
    naming the source (shown to the reader as is)."""

    description: str
    age_min_years: float | None = None
    age_max_years: float | None = None
    views: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Population | None:
        """``None`` for an empty record (a bundle that states no population)."""
        if not raw:
            return None
        try:
            pop = cls(description=str(raw["description"]),
                      age_min_years=None if raw.get("age_min_years") is None else float(raw["age_min_years"]),
                      age_max_years=None if raw.get("age_max_years") is None else float(raw["age_max_years"]),
                      views=tuple(str(v).upper() for v in raw.get("views") or ()))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed population record in the model bundle ({type(exc).__name__}: "
                             "description, age_min_years, age_max_years, views expected)") from exc
        if pop.age_min_years is not None and pop.age_max_years is not None and pop.age_min_years > pop.age_max_years:
            raise ModelError("population age_min_years is above age_max_years")
        return pop

    def ages(self) -> str:
        lo, hi = self.age_min_years, self.age_max_years
        if lo is None and hi is None:
            return "any age"
        if hi is None:
            return f"aged {lo:g} years and over"
        return f"aged up to {hi:g} years" if lo is None else f"aged {lo:g}-{hi:g} years"


def scope_of(population: dict[str, Any], input_size: tuple[int, int], meta: ImageMeta) -> dict[str, Any]:
    """The reader-facing scope record of one image against one model (see the module docstring).

    ``in_scope`` is ``False`` when any warning applies, ``None`` when it cannot be judged (no population
    stated, or no age/view in the header to check it against) and ``True`` otherwise."""
    pop = Population.from_dict(population)
    band = age_band(meta.patient_age_years)
    view = meta.view_position or NOT_STATED
    image = {"age_band": band, "sex": SEXES.get(meta.patient_sex or "", NOT_STATED), "view": view}
    model = {"population": pop.description if pop else "population not stated",
             "ages": pop.ages() if pop else None, "views": list(pop.views) if pop else [],
             "input_size": [int(input_size[0]), int(input_size[1])]}
    warnings: list[str] = []
    unknown: list[str] = []
    if pop is None:
        unknown.append("the model states no intended population")
    else:
        age = meta.patient_age_years
        if age is None:
            if pop.age_min_years is not None or pop.age_max_years is not None:
                unknown.append("the image states no age")
        elif (pop.age_min_years is not None and age < pop.age_min_years) or \
                (pop.age_max_years is not None and age > pop.age_max_years):
            warnings.append(f"Age outside the model's range: age band {band}, model trained on ages "
                            f"{pop.ages().removeprefix('aged ')}.")
        if meta.view_position is None:
            if pop.views:
                unknown.append("the image states no view")
        elif pop.views and meta.view_position not in pop.views:
            warnings.append(f"View outside the model's population: {meta.view_position} view, model trained on "
                            f"{'/'.join(pop.views)} films.")
    if meta.view_position in LATERAL_VIEWS and not any("View outside" in w for w in warnings):
        warnings.append(f"Lateral view ({meta.view_position}): chest models here are trained on frontal films.")
    in_scope = False if warnings else (None if unknown else True)
    return {"image": image, "model": model, "in_scope": in_scope, "warnings": warnings,
            "not_checked": unknown}
