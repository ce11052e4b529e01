"""CLI commands of the explain layer: CAM overlays, subgroup audit, triage fitting."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import typer

from radiolens._cli.common import friendly_errors

#: CAM methods offered to users (the quality benchmark's "random" baseline is left out).
USER_METHODS = ("gradcam", "gradcam++", "scorecam", "eigencam", "layercam", "xgradcam")
#: Columns of ``explain``'s index.csv: one row per file written.
INDEX_COLUMNS = ["output", "kind", "input", "input_position", "input_sha256", "class", "model_output",
                 "negated_logit", "probability", "method", "width", "height", "model_sha256"]


def _read_split(manifest: Path, split: str | None):
    import pandas as pd

    from radiolens.errors import ManifestError

    if not manifest.is_file():
        raise ManifestError(f"manifest not found: {manifest.name}")
    frame = pd.read_csv(manifest, dtype={"patient_id": str, "split": str})
    if split is not None:
        if "split" not in frame.columns:
            raise ManifestError("manifest has no 'split' column")
        frame = frame[frame["split"] == split].reset_index(drop=True)
    if frame.empty:
        raise ManifestError("no rows to score")
    return frame


def _labels(bundle, frame, manifest: Path, label: str | None):
    """0/1 targets: the ``--label`` column when given, else the label definition the model was trained with."""
    import pandas as pd

    from radiolens.data.manifest import LabelSpec, Manifest
    from radiolens.errors import ManifestError

    if label is not None:
        if label not in frame.columns:
            raise ManifestError(f"manifest has no label column '{label}'")
        values = pd.to_numeric(frame[label], errors="coerce")
        if values.isna().any() or not values.isin([0, 1]).all():
            raise ManifestError(f"label column '{label}' must hold 0/1 values; omit --label to use the label "
                                "definition stored in the model")
        return values.astype(int).to_numpy()
    stored = bundle.info.training.get("label")
    if not stored:
        raise ManifestError("this model does not record its label column(s): pass --label COLUMN (0/1 values)")
    return Manifest(frame, manifest.parent.resolve(), manifest.name).targets(LabelSpec.model_validate(stored))[0]


def _score_manifest(bundle, manifest: Path, split: str | None, label: str | None, *, mc_passes: int = 0,
                    ensemble=(), batch_size: int = 64):
    """Manifest rows, scored cases (calibrated probabilities, optional spread) and targets, batch by batch:
    images are read lazily per batch, so a large split never sits in memory as one tensor."""
    from radiolens.explain.uncertainty import score_with_uncertainty
    from radiolens.io import read_image

    frame = _read_split(manifest, split)
    y = _labels(bundle, frame, manifest, label)
    images = (read_image(manifest.parent / p).first_frame() for p in frame["path"])
    scored = score_with_uncertainty(bundle, images, mc_passes=mc_passes, ensemble=ensemble, batch_size=batch_size)
    return frame, scored, y


def register(app: typer.Typer) -> None:
    """Add this layer's commands to the main app."""
    _register_model_card(app)

    @app.command("explain")
    @friendly_errors
    def explain_cmd(
        files: list[Path] = typer.Argument(..., help="Images (DICOM/PNG/JPEG/TIFF) to explain."),
        model: Path = typer.Option(..., "--model", "-m", help="Model bundle (.pt)."),
        out: Path = typer.Option(..., "--out", "-o", help="Output folder for overlay PNGs and index.csv."),
        method: Literal[USER_METHODS] = typer.Option("gradcam", case_sensitive=False, help="CAM method."),
        class_name: list[str] = typer.Option(None, "--class", help="Class to explain (repeatable); binary models "
                                             "also accept the negative name. Default: every output."),
        figure: bool = typer.Option(False, "--figure", help="Also write a side-by-side figure per overlay "
                                    "(image beside overlay, colour bar, class, probability)."),
        filters: bool = typer.Option(False, "--filters", help="Also write first-layer filters and feature maps."),
    ) -> None:
        """Class activation maps as overlay PNGs of exactly each image's width x height (advisory only), and
        index.csv mapping every output file to its input, class and model output."""
        import csv

        from radiolens.explain.explainer import explain_pixels
        from radiolens.explain.figures import save_feature_maps, save_filters, save_overlay, save_overlay_figure
        from radiolens.io import read_image
        from radiolens.models.bundle import ModelBundle, file_sha256

        bundle = ModelBundle.load(model)
        out.mkdir(parents=True, exist_ok=True)
        tag = method.replace("++", "pp")
        # index.csv is written row by row as files appear, so a run stopped by an unreadable image still maps
        # every overlay it wrote
        with open(out / "index.csv", "w", newline="", encoding="utf-8") as fh:
            index = csv.DictWriter(fh, fieldnames=INDEX_COLUMNS)
            index.writeheader()

            def record(path: Path, kind: str, source: dict | None = None, e=None, size=None) -> None:
                typer.echo(path)
                index.writerow({**dict.fromkeys(INDEX_COLUMNS, ""), "output": path.name, "kind": kind,
                                "model_sha256": bundle.sha256, **(source or {}),
                                **({} if e is None else {"class": e.class_name, "model_output": e.output_index,
                                                         "negated_logit": e.negative, "method": method,
                                                         "probability": f"{e.probability:.6f}"}),
                                **({} if size is None else {"width": size[1], "height": size[0]})})
                fh.flush()

            if filters:
                record(save_filters(bundle.model, out / "filters.png"), "filters")
            for k, f in enumerate(files):
                pixels = read_image(f).first_frame()
                source = {"input": str(f), "input_position": k, "input_sha256": file_sha256(f)}
                # outputs are named by position, never by the input's file name: names in DICOM trees often
                # carry patient identifiers; index.csv maps each output back to the path given
                stem = f"image{k:03d}"
                for e in explain_pixels(bundle, pixels, method, class_name or None):
                    safe = "".join(c if c.isalnum() else "_" for c in e.class_name)
                    name = f"{stem}_{safe}_{tag}"
                    record(save_overlay(pixels, e.heatmap, out / f"{name}.png", e.class_name, e.probability,
                                        method), "overlay", source, e, pixels.shape)
                    if figure:
                        record(save_overlay_figure(pixels, e.heatmap, out / f"{name}_figure.png", e.class_name,
                                                   e.probability, method), "figure", source, e)
                if filters:
                    record(save_feature_maps(bundle.model, bundle.preprocess(pixels)[None],
                                             out / f"{stem}_feature_maps.png"), "feature_maps", source)
        typer.echo(out / "index.csv")

    @app.command("audit-subgroups")
    @friendly_errors
    def audit_cmd(
        model: Path = typer.Option(..., "--model", "-m"),
        manifest: Path = typer.Option(..., "--manifest"),
        column: list[str] = typer.Option(..., "--column", help="age_band | sex | view | site | any column"),
        out: Path = typer.Option(..., "--out", "-o"),
        label: str = typer.Option(None, help="0/1 label column (default: the model's own label definition)."),
        split: str = typer.Option(None, help="Only rows of this split (e.g. test)."),
        n_bootstrap: int = typer.Option(1000),
    ) -> None:
        """Per-subgroup AUROC (95% CI), sensitivity, specificity, ECE, equalized-odds gaps; flags groups where
        the model does worse than overall (a group doing better is reported as a note)."""
        from radiolens.errors import ModelError
        from radiolens.evaluate.subgroups import audit_subgroups, subgroup_column, subgroup_table
        from radiolens.models.bundle import ModelBundle

        bundle = ModelBundle.load(model)
        if bundle.info.task != "binary":
            raise ModelError("audit-subgroups needs a binary model")
        rows = _read_split(manifest, split)
        for c in column:  # a missing column fails before any image is read
            subgroup_column(rows, c)
        frame, scored, y = _score_manifest(bundle, manifest, split, label)
        audit = audit_subgroups(y, scored.probs[:, 0], frame, list(column), bundle.info.thresholds[0],
                                n_bootstrap=n_bootstrap)
        audit["model_sha256"] = bundle.sha256
        out.mkdir(parents=True, exist_ok=True)
        (out / "subgroups.json").write_text(json.dumps(audit, indent=2, default=float))
        table = subgroup_table(audit)
        table.to_csv(out / "subgroups.csv", index=False)
        cols = [c for c in ("column", "group", "n", "n_positive", "auroc", "auroc_lower", "auroc_upper",
                            "sensitivity", "specificity", "ece", "status") if c in table.columns]
        typer.echo(table[cols].to_string(index=False, float_format=lambda v: f"{v:.3f}"))
        o = audit["overall"]
        typer.echo(f"overall AUROC {o['auroc']:.3f} [{o['auroc_lower']:.3f}, {o['auroc_upper']:.3f}] n={o['n']}")
        for c, block in audit["columns"].items():
            for r in block["groups"]:
                for flag in r.get("flags", []):
                    typer.echo(f"FLAGGED {c}={r['group']}: {flag}")
                for note in r.get("notes", []):
                    typer.echo(f"note {c}={r['group']}: {note}")
            typer.echo(f"{c}: equalized-odds difference {block['equalized_odds_difference']}")

    @app.command("triage-fit")
    @friendly_errors
    def triage_cmd(
        model: Path = typer.Option(..., "--model", "-m"),
        manifest: Path = typer.Option(..., "--manifest"),
        out: Path = typer.Option(..., "--out", "-o"),
        budget: float = typer.Option(0.2, help="Maximum fraction of cases referred for human review."),
        label: str = typer.Option(None, help="0/1 label column (default: the model's own label definition)."),
        val_split: str = typer.Option("val"),
        test_split: str = typer.Option("test"),
        mc_passes: int = typer.Option(0, help="MC-dropout passes for a spread (0 = threshold margin only)."),
        ensemble: list[Path] = typer.Option(None, "--ensemble", help="Other member bundle(s) of a deep ensemble "
                                            "(repeatable): the score is the members' mean, the spread their std."),
        batch_size: int = typer.Option(64, help="Images per forward pass (and per MC-dropout / ensemble batch)."),
        write_bundle: bool = typer.Option(False, help="Store the rule in the bundle's info.triage."),
    ) -> None:
        """Fit the human-review rule on validation to a referral budget; report it and the test risk-coverage."""

        from radiolens.errors import InputError
        from radiolens.evaluate.plots import risk_coverage_figure
        from radiolens.explain.triage import decision_errors, fit_triage_rule, risk_coverage, triage_kind
        from radiolens.models.bundle import ModelBundle

        bundle = ModelBundle.load(model)
        info = bundle.info
        kind = triage_kind(info.task)  # multi-class: refer when the top two classes are close (no thresholds)
        members = [ModelBundle.load(p) for p in ensemble or []]
        if members and write_bundle:
            raise InputError("a rule fitted on ensemble spread cannot be stored in one bundle: the service "
                             "measures MC-dropout spread of that bundle alone (fit with --mc-passes instead)")
        opts = dict(mc_passes=mc_passes, ensemble=members, batch_size=batch_size)
        _, vs, vy = _score_manifest(bundle, manifest, val_split, label, **opts)
        thresholds = [] if kind == "top2_margin" else list(info.thresholds)
        if members and kind == "threshold":
            # the members' calibrated probabilities need not share a scale (their own thresholds can differ
            # widely), so the mean gets its own threshold, chosen on validation by the model's rule
            from radiolens.evaluate.operating_point import choose_threshold

            rule_name = "youden" if info.operating_point.startswith("default") else info.operating_point
            vy2 = vy.reshape(len(vs.probs), -1)
            thresholds = [choose_threshold(vy2[:, k], vs.probs[:, k], rule_name) for k in range(vs.probs.shape[1])]
            vs.source.update(thresholds=thresholds, threshold_rule=f"{rule_name} on validation, for the members' "
                                                                     "mean")
        rule = fit_triage_rule(vs.probs, vy, thresholds, info.class_names, budget, vs.spread, kind=kind)
        _, ts, ty = _score_manifest(bundle, manifest, test_split, label, **opts)
        tp = ts.probs
        refer = rule.refer_mask(tp, ts.spread)
        wrong = decision_errors(tp, ty, thresholds, kind)
        rc = risk_coverage(tp, ty, thresholds, ts.spread, kind=kind)
        report = {"rule": rule.model_dump(), "uncertainty": vs.source, "model_sha256": bundle.sha256, "test": {
            "n": int(len(tp)), "referral_rate": float(refer.mean()), "error_rate_all": float(wrong.mean()),
            "error_rate_kept": float(wrong[~refer].mean()) if (~refer).any() else None,
            "error_rate_referred": float(wrong[refer].mean()) if refer.any() else None},
            "risk_coverage_test": rc}
        if write_bundle:  # before triage.json, which must name the file's new hash
            info.triage = rule.model_dump()
            report["model_sha256"] = bundle.save(model)
        out.mkdir(parents=True, exist_ok=True)
        (out / "triage.json").write_text(json.dumps(report, indent=2))
        risk_coverage_figure(rc, report["test"]["referral_rate"]).savefig(out / "risk_coverage.png", dpi=100,
                                                                        bbox_inches="tight")
        typer.echo(json.dumps({k: v for k, v in report.items() if k != "risk_coverage_test"}, indent=2))
        typer.echo(f"test AURC {rc['aurc']:.3f}")


def _register_model_card(app: typer.Typer) -> None:
    @app.command("model-card")
    @friendly_errors
    def model_card_cmd(
        model: Path = typer.Option(..., "--model", "-m"),
        out: Path = typer.Option(..., "--out", "-o"),
        eval_json: Path = typer.Option(None, "--eval-json", help="Evaluation metrics.json (default: bundle's)."),
        subgroups_json: Path = typer.Option(None, "--subgroups-json"),
        triage_json: Path = typer.Option(None, "--triage-json"),
        manifest: Path = typer.Option(None, "--manifest", help="Training manifest (hashed, not copied)."),
        image: list[Path] = typer.Option(None, "--image", help="Explanation overlay PNG to embed (repeatable)."),
        quantization: Path = typer.Option(None, "--quantization", help="`radiolens quantize --report` JSON or "
                                          "the int8 .onnx it wrote: AUROC fp32 vs int8, speed-up, hashes."),
    ) -> None:
        """Model card as JSON and self-contained HTML."""
        from radiolens.evaluate.model_card import build_card, write_card
        from radiolens.models.bundle import ModelBundle

        bundle = ModelBundle.load(model)
        card = build_card(bundle, eval_json=eval_json, subgroups_json=subgroups_json, triage_json=triage_json,
                          manifest=manifest, images=image, quantization=quantization)
        for p in write_card(card, out, image):
            typer.echo(p)
