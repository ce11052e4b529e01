"""Patient-level splits and the checks that must pass before any training starts.

Images of one patient are strongly correlated (same anatomy, same scanner, follow-ups), so a patient in
both train and test inflates every metric. All splitting here groups by ``patient_id`` (scikit-learn's
StratifiedGroupKFold keeps class balance while never cutting a group), and :func:`check_leakage` refuses a
manifest whose existing split puts one patient on two sides.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold

from radiolens.data.manifest import LabelSpec, Manifest
from radiolens.errors import DataLeakageError, ManifestError


def stratification_key(targets: np.ndarray) -> np.ndarray:
    """One integer per image to stratify on: the class, or for multi-label the rarest positive finding."""
    if targets.ndim == 1:
        return targets.astype(np.int64)
    prevalence = targets.sum(axis=0)
    key = np.zeros(len(targets), dtype=np.int64)  # 0 = no finding
    for j in np.argsort(-prevalence, kind="stable"):  # most common first, so the rarest finding is written last
        key[targets[:, j] == 1] = j + 1
    return key


def _one_fold(key: np.ndarray, groups: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of a patient-grouped, stratified subset holding ~``fraction`` of the rows."""
    n_splits = max(2, int(round(1.0 / fraction)))
    n_groups = len(np.unique(groups))
    if n_groups < n_splits:
        raise ManifestError(f"only {n_groups} patients: too few for a {fraction:.0%} patient-level split")
    # Classes with fewer members than folds make sklearn warn; merge them into the majority key.
    counts = pd.Series(key).value_counts()
    rare = counts[counts < n_splits].index
    key = np.where(np.isin(key, rare), counts.idxmax(), key)
    sgkf = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    _, held = next(iter(sgkf.split(np.zeros(len(key)), key, groups)))
    mask = np.zeros(len(key), dtype=bool)
    mask[held] = True
    return mask


def multilabel_group_split(targets: np.ndarray, groups: np.ndarray, fractions: tuple[float, float, float],
                           seed: int = 0) -> np.ndarray:
    """Split index per row (0 train, 1 val, 2 test), whole patients, balancing EVERY finding at once.

    Iterative stratification (Sechidis, Tsoumakas & Vlahavas, ECML 2011) lifted to patients: the finding
    with the fewest unassigned positive patients is placed first, each of its patients going to the split
    that still lacks most of that finding's positives. A coverage rule comes first: the first patients
    (largest first) of a finding go to train, then test, then val, so every finding with >= 2 patients has
    test positives and one with >= 3 has positives everywhere. Written here because no maintained library
    combines multi-label stratification with groups (scikit-learn's StratifiedGroupKFold stratifies on one
    key; scikit-multilearn / iterative-stratification ignore groups), and keying on the rarest finding left
    NIH's Pneumothorax and Hernia without a single test positive.
    """
    return _iterative_group_assign(targets, groups, fractions, (0, 2, 1), seed)


def _iterative_group_assign(targets: np.ndarray, groups: np.ndarray, fractions, coverage: tuple[int, ...],
                            seed: int) -> np.ndarray:
    """Part index per row for parts of the given ``fractions``; ``coverage`` is the order in which parts get a
    finding's first patients (see :func:`multilabel_group_split`)."""
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    n_groups, n_labels, n_parts = len(uniq), targets.shape[1], len(fractions)
    active = [s for s in range(n_parts) if fractions[s] > 0]
    if n_groups < len(active):
        raise ManifestError(f"only {n_groups} patients: too few for a patient-level split into {len(active)} parts")
    pos = np.zeros((n_groups, n_labels))
    np.add.at(pos, inv, targets)
    size = np.bincount(inv, minlength=n_groups).astype(float)
    r = np.asarray(fractions, dtype=float)
    want_label = r[:, None] * pos.sum(axis=0)[None, :]
    want_size = r * size.sum()
    has = np.zeros((n_parts, n_labels), dtype=np.int64)
    assigned = np.full(n_groups, -1)
    coverage_order = [s for s in coverage if s in active]
    tie = rng.random(n_groups)  # seeded tie-breaks

    def place(g: int, s: int) -> None:
        assigned[g] = s
        want_label[s] -= pos[g]
        want_size[s] -= size[g]
        has[s] += pos[g] > 0

    while True:
        free = assigned < 0
        counts = ((pos > 0) & free[:, None]).sum(axis=0)
        if not counts.any():
            break
        k = int(np.argmin(np.where(counts > 0, counts, np.iinfo(np.int64).max)))
        members = np.flatnonzero(free & (pos[:, k] > 0))
        for g in members[np.lexsort((tie[members], -pos[members, k]))]:
            missing = [s for s in coverage_order if has[s, k] == 0]
            if missing:
                s = missing[0]
            else:
                s = max(active, key=lambda j: (want_label[j, k], want_size[j], -j))
            place(int(g), s)
    rest = np.flatnonzero(assigned < 0)
    for g in rest[np.lexsort((tie[rest], -size[rest]))]:
        place(int(g), max(active, key=lambda j: (want_size[j], -j)))
    return assigned[inv]


def assign_splits(manifest: Manifest, spec: LabelSpec, *, val: float = 0.15, test: float = 0.15,
                  seed: int = 0, only: str | None = None, names: tuple[str, str, str] = ("train", "val", "test")
                  ) -> Manifest:
    """Patient-level stratified train/val/test split, written into the ``split`` column.

    ``only``: re-split just the rows whose current split is ``only`` (e.g. carve a test set out of
    ``train`` when the source ships only train/val); other rows keep their split.
    """
    for what, frac in (("val", val), ("test", test)):
        if not 0.0 <= frac < 1.0:
            raise ManifestError(f"{what} fraction must be in [0, 1), got {frac}")
    frame = manifest.frame.copy()
    manifest.targets(spec)  # label errors name lines of the whole CSV, not of the re-split subset
    if only is not None:
        if "split" not in frame.columns or not (frame["split"].astype(str) == only).any():
            raise ManifestError(f"{manifest.source_name}: no rows in split '{only}' to re-split")
        rows = np.flatnonzero((frame["split"].astype(str) == only).to_numpy())
    else:
        rows = np.arange(len(frame))
    sub = manifest.with_frame(frame.iloc[rows])
    targets, _ = sub.targets(spec)
    key = stratification_key(targets)
    groups = sub.frame["patient_id"].astype(str).to_numpy()
    labels = np.full(len(rows), names[0], dtype=object)
    remaining = np.ones(len(rows), dtype=bool)
    if spec.task == "multilabel" and (val > 0 or test > 0):
        part = multilabel_group_split(targets, groups, (1.0 - val - test, val, test), seed)
        labels = np.asarray(names, dtype=object)[part]
        val = test = 0.0  # done
    if test > 0:
        mask = _one_fold(key, groups, test, seed)
        labels[mask] = names[2]
        remaining &= ~mask
    if val > 0:
        idx = np.flatnonzero(remaining)
        # val is a fraction of everything; rescale to the part that is left after the test cut
        mask = _one_fold(key[idx], groups[idx], val / max(1e-9, 1.0 - test), seed + 1)
        labels[idx[mask]] = names[1]
    if "split" not in frame.columns:
        frame["split"] = None
    frame["split"] = frame["split"].astype(object)
    frame.iloc[rows, frame.columns.get_loc("split")] = labels
    out = manifest.with_frame(frame)
    check_leakage(out)
    return out


def assign_folds(manifest: Manifest, spec: LabelSpec, k: int = 5, seed: int = 0,
                 column: str = "fold") -> Manifest:
    """Patient-level stratified k-fold: writes fold numbers 0..k-1 into ``column``. Multi-label folds use the
    same iterative stratification as :func:`multilabel_group_split`, so each finding (not only each image's
    rarest one) is spread over the folds as evenly as whole patients allow."""
    if k < 2:
        raise ManifestError("k-fold needs k >= 2")
    targets, _ = manifest.targets(spec)
    groups = manifest.frame["patient_id"].astype(str).to_numpy()
    if len(np.unique(groups)) < k:
        raise ManifestError(f"{k}-fold needs at least {k} patients")
    if spec.task == "multilabel":  # balance every finding across folds, not just the rarest one per image
        folds = _iterative_group_assign(targets, groups, [1.0 / k] * k, tuple(range(k)), seed).astype(np.int64)
    else:
        key = stratification_key(targets)
        folds = np.full(len(key), -1, dtype=np.int64)
        sgkf = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
        for i, (_, held) in enumerate(sgkf.split(np.zeros(len(key)), key, groups)):
            folds[held] = i
    frame = manifest.frame.copy()
    frame[column] = folds
    return manifest.with_frame(frame)


def fold_split(manifest: Manifest, fold: int, column: str = "fold", val_fold: int | None = None) -> Manifest:
    """Turn fold numbers into a split column: ``fold`` -> test, ``val_fold`` (default next) -> val."""
    if column not in manifest.frame.columns:
        raise ManifestError(f"{manifest.source_name}: no '{column}' column; run assign_folds first")
    folds = manifest.frame[column].astype(int)
    k = int(folds.max()) + 1
    if not 0 <= fold < k:
        raise ManifestError(f"fold {fold} does not exist (folds 0..{k - 1})")
    val_fold = (fold + 1) % k if val_fold is None else val_fold
    split = np.where(folds == fold, "test", np.where(folds == val_fold, "val", "train"))
    return manifest.with_frame(manifest.frame.assign(split=split))


def check_leakage(manifest: Manifest) -> None:
    """Raise DataLeakageError when one patient appears in more than one split."""
    if "split" not in manifest.frame.columns:
        return
    f = manifest.frame[["patient_id", "split"]].dropna()
    per_patient = f.groupby("patient_id")["split"].nunique()
    leaking = per_patient[per_patient > 1]
    if len(leaking):
        lines = np.flatnonzero(manifest.frame["patient_id"].isin(leaking.index).to_numpy())[:3] + 2
        raise DataLeakageError(
            f"{manifest.source_name}: {len(leaking)} patient(s) appear in more than one split "
            f"(e.g. CSV lines {', '.join(map(str, lines))}); re-split by patient (`radiolens split`)")


def _refuse_classes_unseen_in_train(manifest: Manifest, spec: LabelSpec, splits: dict[str, str],
                                    split_col: np.ndarray) -> None:
    """Classes learned from the data must all occur in train: a value present only in val/test is a typo
    or a class the model cannot learn, and would silently add an output that is never trained."""
    from radiolens.data.manifest import _describe_values, _label_values

    vals = _label_values(manifest.frame, spec.columns[0], spec.aliases)
    seen = set(vals[split_col == splits["train"]])
    for role, name in splits.items():
        if role == "train":
            continue
        unseen = (split_col == name) & ~vals.isin(seen).to_numpy()
        if unseen.any():
            listed, _ = _describe_values(vals, pd.Series(unseen), seen)
            raise ManifestError(
                f"{manifest.source_name}: {role} split '{name}' has label value(s) never seen in the train "
                f"split '{splits['train']}' of column '{spec.columns[0]}': {listed}; classes learned from "
                f"train: {', '.join(sorted(seen))} (declare label.classes, or fix/alias the values)")


def check_ready_for_training(manifest: Manifest, spec: LabelSpec, splits: dict[str, str],
                             check_files: bool = True) -> list[str]:
    """Every check that must pass before training: files, labels, classes per split, leakage.

    ``splits`` maps role -> split name, e.g. ``{"train": "train", "val": "val", "test": "test"}``.
    Returns the output (class) names.
    """
    for role, name in splits.items():
        if name not in manifest.split_names():
            raise ManifestError(f"{manifest.source_name}: {role} split '{name}' is empty or absent "
                                f"(splits present: {', '.join(manifest.split_names()) or 'none'})")
    check_leakage(manifest)
    targets, names = manifest.targets(spec)  # raises on unknown labels
    split_col = manifest.frame["split"].astype(str).to_numpy()
    if spec.task == "multiclass" and spec.classes is None:
        _refuse_classes_unseen_in_train(manifest, spec, splits, split_col)
    for role, name in splits.items():
        t = targets[split_col == name]
        if spec.task == "multilabel":
            empty = [names[j] for j in range(len(names)) if t[:, j].sum() == 0]
            if role == "train" and empty:
                raise ManifestError(f"{role} split '{name}': no positive example for {', '.join(empty)} "
                                    "(drop the finding or re-split)")
            if t.any(axis=1).all() and (t.sum(axis=0) == len(t)).any():
                raise ManifestError(f"{role} split '{name}': a finding is positive in every image")
            continue
        present = set(np.unique(t).tolist())
        n_classes = 2 if spec.task == "binary" else len(names)
        absent = [i for i in range(n_classes) if i not in present]
        if len(present) < 2:
            raise ManifestError(f"{role} split '{name}' holds only one class: AUROC and early stopping "
                                "need both positives and negatives")
        if absent:
            label = [spec.negative_name, names[0]] if spec.task == "binary" else names
            raise ManifestError(f"{role} split '{name}': class(es) with no example: "
                                f"{', '.join(label[i] for i in absent)}")
    if check_files:
        manifest.check_files_exist()
    return names


def split_manifest(manifest: Manifest, spec: LabelSpec, *, val: float = 0.15, test: float = 0.15, folds: int = 0,
                   only: str | None = None, seed: int = 0) -> tuple[Manifest, dict]:
    """Patient-level train/val/test split (``folds`` > 1: a ``fold`` column instead) -> (manifest, counts per
    split or fold). ``only`` re-splits just the rows of that split, into ``only`` / val / test."""
    if folds > 1:
        manifest = assign_folds(manifest, spec, k=folds, seed=seed)
        return manifest, manifest.frame["fold"].value_counts().sort_index().to_dict()
    names = ("train", "val", "test") if only is None else (only, "val", "test")
    manifest = assign_splits(manifest, spec, val=val, test=test, seed=seed, only=only, names=names)
    return manifest, manifest.frame["split"].value_counts().to_dict()
