"""Monitoring on real data: how well the input gate separates non-chest images, and how fast (and how
falsely) drift alerts fire on a real population shift. Run by hand; prints tables; asserts nothing.

    RADIOLENS_DATA_DIR=../shared/data python benchmarks/monitoring.py [--model M.pt --heldin CSV]

Without --model it trains the Kermany binary model of configs/kermany_binary.yaml (small_cnn, 48 px) on
70 % of the Kermany training patients; the other 30 % never touch training and are the held-in
"production" stream; the Kermany validation split is the baseline (as `radiolens monitor baseline` does).
The shift is the adult NIH ChestX-ray14 subset. A naive check (alert when the window's mean probability
moves more than 0.1 from validation) runs beside radiolens' monitor on the same windows.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

sys.path.insert(0, str(Path(__file__).parent))
from _train_common import load_average, setup  # noqa: E402


def kermany_split(data: Path, out: Path, seed: int = 0) -> Path:
    """Manifest with train (70 % of train patients), val (the shared val split), test (held-in, 30 %)."""
    root = data / "kermany_pediatric_pneumonia"
    with open(root / "manifest.csv") as fh:
        rows = list(csv.DictReader(fh))
    patients = sorted({r["patient_id"] for r in rows if r["split"] == "train"})
    held = set(np.random.default_rng(seed).permutation(patients)[: int(0.3 * len(patients))])
    out.mkdir(parents=True, exist_ok=True)
    path = out / "kermany_monitoring_manifest.csv"
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["path", "label", "patient_id", "split"])
        w.writeheader()
        for r in rows:
            split = r["split"] if r["split"] == "val" else ("test" if r["patient_id"] in held else "train")
            w.writerow({"path": str(root / r["path"]), "label": r["label"], "patient_id": r["patient_id"],
                        "split": split})
    return path


def train(manifest: Path, out: Path) -> Path:
    from radiolens.train.config import load_config
    from radiolens.train.job import run_training_job

    cfg = load_config(Path(__file__).parents[1] / "configs" / "kermany_binary.yaml",
                      {"progress_bar": False, "mlflow": False, "data.manifest": str(manifest),
                       "model.arch": "small_cnn", "model.input_size": 48, "optim.epochs": 5},
                      ("data.carve_test_from_train",))
    t0 = time.perf_counter()
    summary = run_training_job(cfg, out, echo=lambda *a: None)
    print(f"trained {cfg.model.arch} at {cfg.model.input_size} px in {time.perf_counter() - t0:.0f} s; "
          f"held-in test AUROC {summary.headline.get('auroc_macro', summary.headline)}")
    return Path(summary.model)


def rows_of(manifest: Path, split: str) -> list[dict]:
    with open(manifest) as fh:
        return [r for r in csv.DictReader(fh) if r["split"] == split]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, help="a trained binary bundle (default: train one)")
    ap.add_argument("--manifest", type=Path, help="manifest with its val (baseline) and test (held-in) splits")
    ap.add_argument("--out", type=Path, default=Path("out/bench-monitoring"))
    ap.add_argument("--streams", type=int, default=20, help="shuffled streams per scenario")
    ap.add_argument("--windows", type=int, default=500, help="random in-distribution windows")
    ap.add_argument("--consecutive", type=int, help="override DriftConfig.consecutive (alert rule)")
    args = ap.parse_args()
    setup()
    import os

    from radiolens.errors import InputError
    from radiolens.io import read_image
    from radiolens.models.bundle import ModelBundle
    from radiolens.monitor import AlertTracker, DriftConfig, build_profile, evaluate_window
    from radiolens.monitor.profile import observe_images

    data = Path(os.environ["RADIOLENS_DATA_DIR"])
    print(f"load before: {load_average()}")
    manifest = args.manifest or kermany_split(data, args.out)
    model_path = args.model or train(manifest, args.out / "model")
    bundle = ModelBundle.load(model_path)
    val, heldin = rows_of(manifest, "val"), rows_of(manifest, "test")
    t0 = time.perf_counter()
    profile = build_profile(bundle, (read_image(r["path"]) for r in val),
                            np.array([r["label"].upper() == "PNEUMONIA" for r in val], dtype=int),
                            source="kermany val", groups=[r["patient_id"] for r in val])
    print(f"baseline: {profile.n_images} val images in {time.perf_counter() - t0:.1f} s; {profile.summary()}")

    def observe(paths):
        ims, names = [], []
        for p in paths:
            try:
                ims.append(read_image(p))
                names.append(Path(p).name)
            except InputError:
                pass
        return names, ims, observe_images(bundle, profile, ims)

    held_names, _, held = observe([r["path"] for r in heldin])
    label_of = {Path(r["path"]).name: r["label"].upper() for r in heldin}
    nih_root = data / "nih_chestxray14"
    with open(nih_root / "manifest.csv") as fh:
        nih_paths = [nih_root / r["path"] for r in csv.DictReader(fh)]
    _, _, nih = observe(nih_paths)

    # ------------------------------------------------------------------ 1. input gate
    import data_store
    import matplotlib

    dicoms = sorted((Path(data_store.__file__).parent / "data").rglob("*.dcm"))
    sample = Path(matplotlib.get_data_path()) / "sample_data"
    neg_paths = [p for p in dicoms if not p.name.startswith("RG1_")]
    neg_paths += [sample / n for n in ("grace_hopper.jpg", "Minduka_Present_Blue_Pack.png", "logo2.png")]
    names, ims, neg = observe(neg_paths)
    seen, uniq = set(), []
    for n, im, o in zip(names, ims, neg, strict=True):  # one entry per distinct image (many files re-encode one)
        h = hashlib.sha256(np.round(im.first_frame()[::4, ::4], 2).tobytes()).hexdigest()
        if h not in seen:
            seen.add(h)
            uniq.append((n, im, o))
    s_in = [g.ood_score for g, _ in held]
    print("\n## Input gate (threshold from the validation calibration half, target false rejection 2 %)\n")
    print("| images | n | rejected | by header rule | by learned score | learned-score AUROC vs held-in |")
    print("|---|---|---|---|---|---|")

    def row(label, results):
        gates = [g for g, _ in results]
        learned = [any(r.startswith("outside what") for r in g.reasons) for g in gates]
        header = [len(g.reasons) > int(ln) for g, ln in zip(gates, learned, strict=True)]
        scores = [g.ood_score for g in gates]
        auroc = None if results is held else roc_auc_score([0] * len(s_in) + [1] * len(scores), s_in + scores)
        print(f"| {label} | {len(gates)} | {np.mean([not g.passed for g in gates]):.3f} | {np.mean(header):.3f} | "
              f"{np.mean(learned):.3f} | {'—' if auroc is None else f'{auroc:.3f}'} |")

    row("held-in Kermany (never trained on)", held)
    row("non-chest: pydicom-data (MR, CT, US, NM, SC, SEG, CR extremity) + photos, distinct images",
        [o for *_, o in uniq])
    header_silent = [o for *_, o in uniq if not [r for r in o[0].reasons if not r.startswith("outside")]]
    if header_silent:
        row("  of which no header rule fires (the learned score alone must catch them)", header_silent)
    row("adult NIH ChestX-ray14 (chest, other population)", nih)
    for label, folder, pattern in (("adult SIIM DICOM (chest)", "siim_acr_pneumothorax", "dicom/*.dcm"),
                                   ("COVID Figure 1 (chest, mixed sources)", "covid_figure1", "images/*"),
                                   ("TBX11K (chest)", "tbx11k", "imgs/*/*.png")):
        _, _, obs = observe(sorted((data / folder).glob(pattern)))
        if obs:
            row(label, obs)
    missed = [n for n, _, (g, _) in uniq if g.passed]
    print(f"\nnon-chest images accepted by the gate: {', '.join(missed) or 'none'}")

    # ------------------------------------------------------------------ 2. drift: false alarms
    cfg = DriftConfig(**({"consecutive": args.consecutive} if args.consecutive else {}))
    held_obs, nih_obs = [o for _, o in held], [o for _, o in nih]
    base_mean = np.mean([r["probabilities"][0] for r in profile.reference])
    rng = np.random.default_rng(0)
    print(f"\n## False alarms on held-in data ({len(held_obs)} Kermany images of patients never trained on)\n")
    print("| check | window | windows | fraction of windows with drift | most frequent signals |")
    print("|---|---|---|---|---|")
    for size in (30, 50, 100):
        c = cfg.model_copy(update={"window": size, "min_window": min(cfg.min_window, size)})
        hits, naive, by_signal = 0, 0, {}
        for w in range(args.windows):
            win = [held_obs[i] for i in rng.choice(len(held_obs), size, replace=False)]
            rep = evaluate_window(profile, win, c, seed=w)
            hits += rep.status == "drift"
            for s in rep.drifted:
                by_signal[s.name] = by_signal.get(s.name, 0) + 1
            naive += abs(np.mean([o["probabilities"][0] for o in win]) - base_mean) > 0.1
        top = ", ".join(f"{k} {v}" for k, v in sorted(by_signal.items(), key=lambda kv: -kv[1])[:4])
        print(f"| radiolens | {size} | {args.windows} | {hits / args.windows:.3f} | {top or '—'} |")
        print(f"| naive mean-probability (>0.1) | {size} | {args.windows} | {naive / args.windows:.3f} | — |")

    def run_stream(stream, switch, check):
        """(first alert position or None, alert events before the switch)"""
        tracker, active, first, before = AlertTracker(cfg.consecutive), set(), None, 0
        for end in range(cfg.check_every, len(stream) + 1, cfg.check_every):
            win = stream[max(0, end - cfg.window):end]
            for t in tracker.update(check(win, end), active):
                if t.kind == "drift_alert":
                    active.add(t.signal.name)
                    if end <= switch:
                        before += 1
                    elif first is None:
                        first = end
                else:
                    active.discard(t.signal.name)
        return first, before

    def radiolens_check(only=None):
        def check(win, end):
            rep = evaluate_window(profile, win, cfg, seed=end)
            if only is not None:
                rep.signals = [s for s in rep.signals if only(s.name)]
                if rep.status != "insufficient_data":
                    rep.status = "drift" if any(s.status == "drift" for s in rep.signals) else "ok"
            return rep
        return check

    from radiolens.monitor.drift import SignalResult, WindowReport

    def naive_check(win, end):
        if len(win) < cfg.min_window:
            return WindowReport("insufficient_data", len(win))
        d = abs(np.mean([o["probabilities"][0] for o in win]) - base_mean)
        return WindowReport("drift" if d > 0.1 else "ok", len(win),
                            [SignalResult("mean_probability", "rate", "drift" if d > 0.1 else "ok", statistic=d)])

    content = {"embedding", "ood_score", "ood_rate", "probability:pneumonia"}
    scenarios = {
        "radiolens (all signals)": radiolens_check(),
        "radiolens, content signals only (embedding, OOD score/rate, probability)":
            radiolens_check(content.__contains__),
        "naive mean-probability (>0.1)": naive_check,
    }
    n_pre = 300
    print(f"\n## Kermany -> adult NIH: {args.streams} shuffled streams of {n_pre} held-in then {len(nih_obs)} NIH "
          f"images; window {cfg.window}, check every {cfg.check_every}, alert after {cfg.consecutive} drifting "
          "checks\n")
    print("| monitor | streams alerted after the switch | detection delay (images) median [min, max] | "
          "false alerts before the switch (per 1000 held-in predictions) |")
    print("|---|---|---|---|")
    for label, check in scenarios.items():
        delays, false = [], 0
        for k in range(args.streams):
            r = np.random.default_rng(100 + k)
            pre = [held_obs[i] for i in r.permutation(len(held_obs))[:n_pre]]
            post = [nih_obs[i] for i in r.permutation(len(nih_obs))]
            first, before = run_stream(pre + post, n_pre, check)
            false += before
            if first is not None:
                delays.append(first - n_pre)
        d = (f"{np.median(delays):.0f} [{min(delays)}, {max(delays)}]" if delays else "never")
        print(f"| {label} | {len(delays)}/{args.streams} | {d} | {1000 * false / (args.streams * n_pre):.2f} |")

    # long in-distribution streams: alert events per 1000 predictions under the full alert rule
    events, total = 0, 0
    for k in range(args.streams):
        stream = [held_obs[i] for i in np.random.default_rng(500 + k).permutation(len(held_obs))]
        events += run_stream(stream, len(stream), radiolens_check())[1]
        total += len(stream)
    print(f"\nheld-in only: {events} alert events over {total} predictions "
          f"({1000 * events / total:.2f} per 1000) across {args.streams} shuffled streams")

    # a prevalence shift: the same held-in population, normals only
    normals = [o for n, o in zip(held_names, held_obs, strict=True) if label_of[n] == "NORMAL"]
    if len(normals) >= cfg.window:
        rep = evaluate_window(profile, normals[: cfg.window], cfg)
        print(f"prevalence shift (a window of {cfg.window} held-in NORMAL images only): {rep.status}; "
              f"{rep.reason}")
    print(f"\nload after: {load_average()}")


if __name__ == "__main__":
    main()
