"""Model card (JSON + self-contained HTML): intended use, data, evaluation with CIs, calibration (reliability
diagram), subgroups, explanation examples, triage budget and risk-coverage curve, limitations and the hashes that
pin model and data. Figures are drawn from the numbers in the card, so the JSON and the HTML cannot disagree."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from radiolens.errors import InputError
from radiolens.models.bundle import ModelBundle, file_sha256
from radiolens.models.population import AGE_BANDS, Population, age_band

ADVISORY = ("Advisory only: decision support for qualified readers. It does not make a diagnosis and must not be "
            "used without review of the image by a clinician.")

DEFAULT_LIMITATIONS = [
    "Trained and evaluated on small public subsets; performance on other hospitals, devices and populations is "
    "unknown until measured locally.",
    "Subgroups marked 'too small to judge' have not been checked for bias.",
    "Class activation maps show where the model's evidence lies, not where disease is; check their measured "
    "localisation before trusting them.",
]


def _read_json(path: Path | None, what: str) -> dict | None:
    if path is None:
        return None
    if not path.is_file():
        raise InputError(f"{what} file not found: {path.name}")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{what} file {path.name} is not JSON") from exc


def _evaluation_summary(ev: dict | None) -> dict | None:
    """Headline metrics + ECE from either an evaluate-step metrics.json or a bundle's ``info.metrics``."""
    if not ev:
        return None
    headline = ev.get("headline") or (ev.get("summary") or {}).get("headline")
    ece = ev.get("ece_after")
    if ece is None:
        ece = ((ev.get("calibration") or {}).get("test") or {}).get("ece_after")
    return {"headline": headline, "ece_after": ece, "n_test": ev.get("n_test"), "full": ev}


def _calibration_summary(ev: dict | None) -> dict | None:
    """Calibration beyond one ECE number: T, ECE / Brier before and after, and the reliability-diagram bins
    (from an evaluate-step metrics.json, or a bundle's ``info.metrics`` written since they carry the bins)."""
    if not ev:
        return None
    cal = ev.get("calibration") or {}
    test = cal.get("test") or {}
    out = {"temperature": cal.get("temperature", ev.get("temperature")), "view": cal.get("view"),
           "n_bins": cal.get("n_bins"),
           "ece_before": test.get("ece_before"), "ece_after": test.get("ece_after", ev.get("ece_after")),
           "brier_before": test.get("brier_before"), "brier_after": test.get("brier_after"),
           "reliability_before": cal.get("reliability_before"), "reliability_after": cal.get("reliability_after")}
    return out if any(v is not None for v in out.values()) else None


def card_figures(card: dict) -> dict[str, str]:
    """Reliability diagram and test risk-coverage curve as data: URIs, drawn from the card's own numbers."""
    from radiolens.evaluate import plots

    figs: dict[str, str] = {}
    cal = card.get("calibration") or {}
    series = {}
    if cal.get("reliability_before"):
        series["before temperature scaling"] = cal["reliability_before"]
    if cal.get("reliability_after"):
        t = cal.get("temperature")
        series["after" + (f" (T = {t:.2f})" if isinstance(t, int | float) else "")] = cal["reliability_after"]
    if series:
        figs["reliability"] = plots.to_data_uri(plots.reliability_diagram(series, title="Reliability on test"))
    triage = card.get("triage") or {}
    rc = triage.get("risk_coverage_test")
    if rc and rc.get("coverage"):
        figs["risk_coverage"] = plots.to_data_uri(
            plots.risk_coverage_figure(rc, (triage.get("test") or {}).get("referral_rate")))
    return figs


#: Fields of the int8-vs-fp32 comparison (``radiolens quantize --eval``) that the card shows.
QUANTIZATION_FIELDS = ("auroc_fp32", "auroc_int8", "auroc_change", "n_eval_images", "decision_agreement",
                       "max_abs_prob_diff", "mean_abs_prob_diff", "model_images_per_s_fp32",
                       "model_images_per_s_int8", "speedup_int8", "speed_batch", "threads", "calibration_images",
                       "method", "size_mb_fp32", "size_mb_int8", "fp32_onnx_sha256", "int8_onnx_sha256",
                       "source_sha256")


def quantization_summary(path: Path, model_sha256: str = "") -> dict:
    """The measured INT8 result from a ``radiolens quantize --report`` JSON or from the int8 ``.onnx`` itself
    (its metadata carries the comparison). Refused when it was measured on another model than the card's."""
    from radiolens.models.export import METADATA_KEY, PRECISION_KEY, SOURCE_SHA_KEY, info_from_json, read_metadata

    if not path.is_file():
        raise InputError(f"quantization file not found: {path.name}")
    if path.suffix.lower() == ".onnx":
        props = read_metadata(path)
        if props.get(PRECISION_KEY) != "int8":
            raise InputError(f"{path.name} is not an int8 model (give the file `radiolens quantize` wrote)")
        cmp = dict(info_from_json(props[METADATA_KEY]).metrics.get("int8_vs_fp32") or {})
        cmp.setdefault("source_sha256", props.get(SOURCE_SHA_KEY, ""))
        cmp["int8_onnx_sha256"] = file_sha256(path)
    else:
        cmp = dict((_read_json(path, "quantization") or {}).get("comparison") or {})
    if "auroc_int8" not in cmp:
        raise InputError(f"{path.name} holds no fp32-vs-int8 comparison; run `radiolens quantize --eval ...`")
    source = cmp.get("source_sha256") or ""
    if model_sha256 and source and source != model_sha256:
        raise InputError(f"{path.name} was measured on another model (source sha256 {source[:12]}... is not "
                         f"this bundle's {model_sha256[:12]}...)")
    return {**{k: cmp.get(k) for k in QUANTIZATION_FIELDS}, "from": path.name}




def training_population(manifest: Path | None, split: str | None = "train") -> dict | None:
    """Who the model was trained on, from the training manifest's optional ``age``, ``sex`` and ``view``
    columns (rows of ``split`` when the manifest has splits): counts per age band, sex and view, and the
    5th-95th age percentiles (not the extremes: a single oldest patient's age identifies more than a band)."""
    if manifest is None:
        return None
    import pandas as pd

    try:
        frame = pd.read_csv(manifest, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise InputError(f"{manifest.name}: not a readable CSV ({type(exc).__name__})") from exc
    if split and "split" in frame.columns and (frame["split"] == split).any():
        frame = frame[frame["split"] == split]
    out: dict = {"rows": f"{split} split" if split and "split" in frame.columns else "all rows",
                 "images": int(len(frame))}
    if "patient_id" in frame.columns:
        out["patients"] = int(frame["patient_id"].replace("", pd.NA).dropna().nunique())
    ages = pd.to_numeric(frame["age"], errors="coerce").dropna() if "age" in frame.columns else pd.Series([])
    if len(ages):
        out["age_known"] = int(len(ages))
        out["age_5th_to_95th"] = [int(round(ages.quantile(0.05))), int(round(ages.quantile(0.95)))]
        bands = ages.map(age_band)  # the bands of the subgroup audit and of every prediction's scope
        out["age_bands"] = {name: int((bands == name).sum()) for name in AGE_BANDS}
    for column in ("sex", "view"):
        if column in frame.columns:
            values = frame[column].str.strip().replace("", "unknown")
            out[column] = {k: int(v) for k, v in values.value_counts().sort_index().items()}
    return out


def out_of_scope(info, population: dict | None) -> list[str]:
    """What the model must not be used for: from the population the bundle states (its training data's
    documentation) and from what the training manifest holds."""
    stated = Population.from_dict(info.population or {})
    items = ["Diagnosis without a qualified reader: outputs are advisory.",
             "Other modalities and body parts (CT, MR, ultrasound, extremity or abdominal radiographs); the input "
             "gate refuses most of them, but it is a safety net, not a licence.",
             f"Findings other than the model's outputs ({', '.join(info.class_names)})."]
    if stated is not None:
        lo, hi = stated.age_min_years, stated.age_max_years
        if hi is not None:
            items.append(f"Patients outside the stated age range ({lo or 0:g} to {hi:g} years).")
        elif lo is not None:
            items.append(f"Patients younger than {lo:g} years (the stated population).")
        if stated.views:
            items.append(f"Views other than {', '.join(stated.views)} (the stated population).")
    pop = population or {}
    bands = {k: v for k, v in (pop.get("age_bands") or {}).items()}
    if bands:
        missing = [name for name, n in bands.items() if n == 0]
        if missing:
            items.append(f"Patients in the age band(s) {', '.join(missing)}: none in the training data.")
    elif population is not None:
        items.append("Any particular age group: the training data records no ages, so the population the model "
                     "suits is not known from the data.")
    views = [v for v in (pop.get("view") or {}) if v != "unknown"]
    if views and not any(v.upper().startswith("L") for v in views):
        items.append(f"Lateral views: trained on {', '.join(sorted(views))} only.")
    side = info.input_size[0] if info.input_size else None
    if side:
        items.append(f"Fine detail below what a {side} x {side} px input resolves (the model sees every image "
                     "downsampled to this size).")
    return items


def display_rows(record: dict, prefix: str = "") -> list[tuple[str, str]]:
    """A nested record (the bundle's training record) as (dotted key, text) rows with rounded numbers: floats to
    4 significant digits, short lists inline; the per-epoch history is summarised, not dumped."""
    rows: list[tuple[str, str]] = []
    for key, value in record.items():
        name = f"{prefix}{key}"
        if key == "history" and isinstance(value, list):
            rows.append((name, f"{len(value)} epochs recorded (see the evaluation report's training curves)"))
        elif isinstance(value, dict):
            rows += display_rows(value, name + ".")
        elif isinstance(value, float):
            rows.append((name, f"{value:.4g}"))
        elif isinstance(value, list | tuple):
            shown = [f"{v:.4g}" if isinstance(v, float) else str(v) for v in value]
            rows.append((name, ", ".join(shown) if len(shown) <= 12 else ", ".join(shown[:12]) + ", ..."))
        else:
            rows.append((name, "" if value is None else str(value)))
    return rows


def build_card(bundle: ModelBundle, *, eval_json: Path | None = None, subgroups_json: Path | None = None,
               triage_json: Path | None = None, manifest: Path | None = None, images: list[Path] | None = None,
               intended_use: str | None = None, limitations: list[str] | None = None,
               quantization: Path | None = None) -> dict:
    info = bundle.info
    population = training_population(manifest)
    ev_raw = _read_json(eval_json, "evaluation") or info.metrics or None
    triage = _read_json(triage_json, "triage")
    fitted_on = (triage or {}).get("model_sha256")
    if fitted_on and bundle.sha256 and fitted_on != bundle.sha256:
        raise InputError(f"{triage_json.name} was fitted on another model (sha256 {fitted_on[:12]}... is not this "
                         f"bundle's {bundle.sha256[:12]}...)")
    evaluation = _evaluation_summary(ev_raw)
    subgroups = _read_json(subgroups_json, "subgroups")
    if subgroups:
        from radiolens.evaluate.subgroups import rejudge

        subgroups = rejudge(subgroups)  # an older audit file also flagged groups doing better than overall
    card = {
        "model": {"name": info.name, "arch": info.arch, "task": info.task, "classes": info.class_names,
                  "version": info.version, "radiolens_version": info.radiolens_version, "sha256": bundle.sha256,
                  "input_size": list(info.input_size), "temperature": info.temperature,
                  "thresholds": info.thresholds, "operating_point": info.operating_point},
        "intended_use": intended_use or (f"Flag chest radiographs as likely {', '.join(info.class_names)} for "
                                         "prioritised review by a qualified reader."),
        "advisory": ADVISORY,
        "training_data": {"summary": info.training,
                          "manifest_sha256": file_sha256(manifest) if manifest else None,
                          "manifest_name": manifest.name if manifest else None},
        "scope": {"input_size": list(info.input_size), "population": population,
                  "stated_population": info.population or None,
                  "out_of_scope": out_of_scope(info, population)},
        "evaluation": evaluation,
        "calibration": _calibration_summary(ev_raw),
        "subgroups": subgroups,
        "triage": triage or info.triage or None,
        "quantization": quantization_summary(quantization, bundle.sha256) if quantization else None,
        "limitations": limitations or DEFAULT_LIMITATIONS,
        "explanation_examples": [p.name for p in images or []],
    }
    return card


def write_card(card: dict, out: Path, images: list[Path] | None = None) -> tuple[Path, Path]:
    from radiolens.evaluate.templating import render

    out.mkdir(parents=True, exist_ok=True)
    json_path = out / "model_card.json"
    json_path.write_text(json.dumps(card, indent=2, default=str))
    embedded = []
    for p in images or []:
        if not p.is_file():
            raise InputError(f"image not found: {p.name}")
        embedded.append({"name": p.name, "data": base64.b64encode(p.read_bytes()).decode()})
    html = render("radiolens.evaluate", "model_card.html", strict=False, card=card, images=embedded,
                  figs=card_figures(card), pretty=json.dumps(card, indent=2, default=str),
                  training_rows=display_rows((card.get("training_data") or {}).get("summary") or {}),
                  model_rows=display_rows(card.get("model") or {}))
    html_path = out / "model_card.html"
    html_path.write_text(html)
    return json_path, html_path
