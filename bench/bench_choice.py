"""How the composite's choice of classifier decides its honest ZFN accuracy, on one metric table.

The honest protocol's outer folds and recipe (:func:`~vqganodip_pipeline.scoring.honest.
check_protocol`, :func:`~vqganodip_pipeline.scoring.calibrate.fit_and_calibrate`) run once at a
preset's settings; every candidate's out-of-fold scores (fit part) are kept, and its calibration
and test scores twice: *refitted* on the whole fit part (what the composite shipped until it
shipped fold models) and as the mean of its *fold models* (the models of its out-of-fold pass,
each fitted on (k - 1)/k of the fit part: what it ships now). Each *rule* then turns one outer
fold's candidates into one scorer and one split-conformal ZFN threshold, and its decisions on the
outer test parts are pooled, exactly as ``run_honest_protocol`` pools the composite.

Rules (each uses only what the recipe has at training time), on the refitted candidates and,
prefixed ``bagged:``, on their fold models:

* ``oof_zfn`` (the paper's choice, ``SearchConfig.combine="best"``; on refitted candidates the
  composite before fold models), ``cv_score`` (the search's CV accuracy), ``oof_auroc``: choose
  one candidate on the fit part's out-of-fold evidence; its threshold is exact split-conformal.
* ``calibration_fpr``: choose the candidate whose own conformal threshold flags the fewest
  normal *calibration* units. The choice has seen the calibration part, so its risk statement
  only holds through a union bound over the m candidates (confidence 1 - delta/m each); the
  result records that bound.
* ``mean_all``, ``mean_top3``: one fixed scorer, the mean abnormal probability of all candidates
  or of the three best by ``oof_zfn``, thresholded on its own calibration scores (exact).
  ``bagged:mean_all`` is the library's default composite (``combine="mean"``).
* ``rank_all``: the mean over candidates of each score's position among that candidate's
  *normal* calibration scores; the threshold comes from the abnormal calibration units only, so
  given the normal ones it is still exact.
* ``fixed:<code>``: one classifier in every fold (the honest leaderboard's fixed rows).
* ``library_composite``: the recipe's own composite (``--combine``), which must equal its rule
  (``bagged:mean_all`` or ``bagged:oof_zfn``).
* ``baseline:best_single_metric``: the honest protocol's baseline of that name (the one metric
  column with the highest AUROC on the fit part), thresholded on the same calibration part:
  the score a rule has to beat.

The table is a ``metrics.parquet`` written by ``vqganodip evaluate`` or ``bench_evaluate.py``
(it stays in the evaluation's output folder, e.g. the scratch folder bench_evaluate prints).
Tune rules on development tables only (synthetic seed 7, never a benchmark seed).

Without ``--table``, bench_scoring's synthetic metric table (174 + 174 rows, seeded by
``--seed``) is used; ``--quick`` runs the tiny preset on 45 + 45 of its rows (seconds).

Every rule is thresholded at both ZFN threshold rules (scoring/conformal.py: ``gap``, the
default, and the paper's ``lowest_abnormal``); ``rules`` holds the one of ``--threshold-rule``,
``threshold_rules`` both side by side.

Run: ``.venv/bin/python bench/bench_choice.py --table DIR/metrics.parquet --name synthetic_seed7
[--seed 7] [--preset demo] [--combine mean|best] [--threshold-rule gap|lowest_abnormal]`` ->
``bench/results/choice_<name>.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from imblearn.pipeline import Pipeline

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import load_average, write_result
from vqganodip_pipeline.presets import get_preset
from vqganodip_pipeline.scoring.baselines import BestSingleMetric
from vqganodip_pipeline.scoring.calibrate import (
    CalibrationConfig,
    Candidate,
    choose,
    fit_and_calibrate,
)
from vqganodip_pipeline.scoring.classifiers import build_pipeline, plan_smote, resolve_classifiers
from vqganodip_pipeline.scoring.conformal import (
    DEFAULT_RULE,
    THRESHOLD_RULES,
    conformal_threshold,
    miss_rate_upper_bound,
)
from vqganodip_pipeline.scoring.honest import check_protocol, fold_mean_auroc
from vqganodip_pipeline.scoring.search import SearchConfig, fitting_environment
from vqganodip_pipeline.scoring.table import training_table
from vqganodip_pipeline.scoring.thresholds import auroc, confusion_from_decisions


@dataclass
class CandidateScores:
    """One candidate of one outer fold: its evidence on the fit part and its scores."""

    code: str
    candidate: Candidate
    calibration: np.ndarray
    test: np.ndarray
    bagged_calibration: np.ndarray | None = None
    bagged_test: np.ndarray | None = None


@dataclass
class FoldScores:
    fold: int
    y_fit: np.ndarray
    y_calibration: np.ndarray
    y_test: np.ndarray
    candidates: list[CandidateScores] = field(default_factory=list)
    # baseline code -> (calibration scores, test scores), fitted on the fit part
    baselines: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def bagged(self) -> FoldScores:
        """The same fold with every candidate's refit replaced by its inner-fold models."""
        return replace(
            self,
            candidates=[
                replace(c, calibration=c.bagged_calibration, test=c.bagged_test)
                for c in self.candidates
            ],
        )


@dataclass(frozen=True)
class Decision:
    """A rule's scorer on one fold: its calibration and test scores and what it chose."""

    calibration: np.ndarray
    test: np.ndarray
    chosen: str
    candidates_seen_by_choice: int = 0  # > 0: the choice saw the calibration part


def _refit(
    candidate: Candidate, X_fit: np.ndarray, y_fit: np.ndarray, config: SearchConfig
) -> Pipeline:
    """The candidate refitted on the whole fit part (what the composite shipped before it
    shipped the fold models), with the SMOTE plan of a fit on all its rows."""
    smote = plan_smote(
        y_fit,
        [np.arange(len(y_fit))],
        config.smote_below,
        config.smote_ratio,
        config.smote_k_neighbors,
    )
    pipeline = build_pipeline(
        candidate.spec,
        config.seed,
        smote,
        config.correlation_threshold,
        candidate.params,
        config.max_features,
    )
    with fitting_environment():
        pipeline.fit(X_fit, y_fit)
    return pipeline


def collect(
    frame: pd.DataFrame,
    config: SearchConfig,
    classifiers: tuple[str, ...] | None,
    n_outer: int,
    calibration: CalibrationConfig,
    log: Callable[[str], None] = print,
) -> tuple[list[FoldScores], dict[str, np.ndarray]]:
    """Run the shipped recipe in every outer fold of the honest protocol and keep every
    candidate's scores, refitted and as fold models (see the module docstring); also the
    recipe's own composite (``config.combine``): its calibration and test scores per fold."""
    specs = resolve_classifiers(classifiers)
    table = training_table(frame, "classifier_set")
    X, y, groups = table.X, table.y, table.groups
    outer = check_protocol(y, groups, config, calibration, n_outer)
    folds: list[FoldScores] = []
    shipped: dict[str, np.ndarray] = {}
    for k, (train, test) in enumerate(outer):
        start = time.perf_counter()
        recipe = fit_and_calibrate(
            specs,
            X[train],
            y[train],
            None if groups is None else groups[train],
            config,
            calibration,
            stage=f"bench_choice outer fold {k}",
        )
        fit, cal = train[recipe.fit_rows], train[recipe.calibration_rows]
        fold = FoldScores(k, y[fit], y[cal], y[test])
        for calibrated in recipe.calibrated:
            assert calibrated.candidate is not None
            refit = _refit(calibrated.candidate, X[fit], y[fit], config)
            fold.candidates.append(
                CandidateScores(
                    code=calibrated.code,
                    candidate=calibrated.candidate,
                    calibration=refit.predict_proba(X[cal])[:, 1],
                    test=refit.predict_proba(X[test])[:, 1],
                    bagged_calibration=calibrated.calibration_scores,
                    bagged_test=calibrated.pipeline.predict_proba(X[test])[:, 1],
                )
            )
        single = BestSingleMetric(columns=table.columns).fit(table.frame.iloc[fit], y[fit])
        fold.baselines[single.code] = (
            single.score(table.frame.iloc[cal]),
            single.score(table.frame.iloc[test]),
        )
        shipped[f"calibration_{k}"] = recipe.chosen.calibration_scores
        shipped[f"test_{k}"] = recipe.chosen.pipeline.predict_proba(X[test])[:, 1]
        folds.append(fold)
        log(
            f"[bench_choice] outer fold {k + 1}/{n_outer}: {len(fold.candidates)} candidates, "
            f"composite {recipe.chosen.code} ({time.perf_counter() - start:.0f} s)"
        )
    return folds, shipped


def _pick(fold: FoldScores, code: str) -> Decision:
    chosen = next(c for c in fold.candidates if c.code == code)
    return Decision(chosen.calibration, chosen.test, code)


def _by_key(fold: FoldScores, key: Callable[[CandidateScores], float]) -> Decision:
    # ties: the first code in alphabetical order
    best = max(sorted(fold.candidates, key=lambda c: c.code), key=key)
    return _pick(fold, best.code)


def _mean(fold: FoldScores, members: list[CandidateScores]) -> Decision:
    cal = np.mean([c.calibration for c in members], axis=0)
    test = np.mean([c.test for c in members], axis=0)
    return Decision(cal, test, "+".join(c.code for c in members))


def _shipped_order(fold: FoldScores) -> list[CandidateScores]:
    order = []
    remaining = list(fold.candidates)
    while remaining:
        best = choose([c.candidate for c in remaining]).code
        order.append(next(c for c in remaining if c.code == best))
        remaining = [c for c in remaining if c.code != best]
    return order


def _calibration_fpr(fold: FoldScores) -> Decision:
    normal = fold.y_calibration == 0

    def flagged(c: CandidateScores) -> float:
        # the candidate's own abnormal-side threshold (the gap rule would flag none of them)
        threshold = conformal_threshold(
            c.calibration, fold.y_calibration, rule="lowest_abnormal"
        ).threshold
        return float(np.mean(c.calibration[normal] >= threshold))

    # fewest normal calibration units flagged; ties: the shipped rule's order
    order = _shipped_order(fold)
    best = min(order, key=flagged)
    decision = _pick(fold, best.code)
    return Decision(decision.calibration, decision.test, best.code, len(fold.candidates))


def _rank_all(fold: FoldScores) -> Decision:
    normal = fold.y_calibration == 0

    def position(reference: np.ndarray, scores: np.ndarray) -> np.ndarray:
        return np.searchsorted(np.sort(reference), scores, side="left") / len(reference)

    cal = np.mean([position(c.calibration[normal], c.calibration) for c in fold.candidates], 0)
    test = np.mean([position(c.calibration[normal], c.test) for c in fold.candidates], 0)
    return Decision(cal, test, "rank of all")


def rules(
    folds: list[FoldScores], shipped: dict[str, np.ndarray]
) -> dict[str, Callable[[FoldScores], Decision]]:
    table: dict[str, Callable[[FoldScores], Decision]] = {
        "oof_zfn": lambda f: _pick(f, choose([c.candidate for c in f.candidates]).code),
        "cv_score": lambda f: _by_key(f, lambda c: c.candidate.search.best_score),
        "oof_auroc": lambda f: _by_key(f, lambda c: auroc(c.candidate.oof_scores, f.y_fit)),
        "calibration_fpr": _calibration_fpr,
        "mean_all": lambda f: _mean(f, f.candidates),
        "mean_top3": lambda f: _mean(f, _shipped_order(f)[:3]),
        "rank_all": _rank_all,
    }
    codes = sorted({c.code for fold in folds for c in fold.candidates})
    for code in codes:
        if all(any(c.code == code for c in fold.candidates) for fold in folds):
            table[f"fixed:{code}"] = lambda f, code=code: _pick(f, code)
    for name, rule in list(table.items()):
        table[f"bagged:{name}"] = lambda f, rule=rule: rule(f.bagged())
    for code in sorted({code for fold in folds for code in fold.baselines}):
        table[f"baseline:{code}"] = lambda f, code=code: Decision(*f.baselines[code], code)
    table["library_composite"] = lambda f: Decision(
        shipped[f"calibration_{f.fold}"], shipped[f"test_{f.fold}"], "library composite"
    )
    return table


def evaluate_rule(
    folds: list[FoldScores],
    rule: Callable[[FoldScores], Decision],
    confidence: float,
    threshold_rule: str = DEFAULT_RULE,
) -> dict[str, Any]:
    """Pooled test decisions of ``rule`` with each fold's split-conformal ZFN threshold
    (``threshold_rule``: scoring/conformal.py)."""
    decisions, labels, scores, per_fold = [], [], [], []
    for fold in folds:
        decision = rule(fold)
        risk = conformal_threshold(
            decision.calibration, fold.y_calibration, confidence=confidence, rule=threshold_rule
        )
        flagged = decision.test >= risk.threshold
        decisions.append(flagged)
        labels.append(fold.y_test)
        scores.append(decision.test)
        bound = risk.miss_rate_upper_bound
        if decision.candidates_seen_by_choice:
            m = decision.candidates_seen_by_choice
            bound = miss_rate_upper_bound(1, risk.n_calibration, 1 - (1 - confidence) / m)
        per_fold.append(
            {
                "fold": fold.fold,
                "chosen": decision.chosen,
                "threshold": risk.threshold,
                "miss_rate_upper_bound": bound,
                "choice_saw_calibration": bool(decision.candidates_seen_by_choice),
                **confusion_from_decisions(flagged, fold.y_test),
            }
        )
    y = np.concatenate(labels)
    pooled = confusion_from_decisions(np.concatenate(decisions), y)
    return {
        "accuracy_zfn": pooled["accuracy"],
        "missed_zfn": pooled["missed"],
        "fpr_zfn": pooled["fpr"],
        "auroc_pooled": auroc(np.concatenate(scores), y),
        "auroc_fold_mean": fold_mean_auroc(
            pd.DataFrame(
                {
                    "fold": np.concatenate([np.full(len(v), i) for i, v in enumerate(labels)]),
                    "y": y,
                    "score": np.concatenate(scores),
                }
            )
        ),
        "folds": per_fold,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--table",
        default=None,
        help="metrics.parquet of an evaluation (default: bench_scoring's synthetic table)",
    )
    parser.add_argument("--name", default=None, help="result name: choice_<name>.json")
    parser.add_argument(
        "--quick", action="store_true", help="tiny preset on a small synthetic table (seconds)"
    )
    parser.add_argument("--seed", type=int, default=7, help="the evaluation's seed")
    parser.add_argument("--preset", default="demo")
    parser.add_argument(
        "--combine", default="mean", help="the library composite's SearchConfig.combine"
    )
    parser.add_argument("--n-jobs", type=int, default=-1)
    parser.add_argument(
        "--threshold-rule",
        choices=THRESHOLD_RULES,
        default=DEFAULT_RULE,
        help="the ZFN threshold rule of 'rules' (every rule is also reported at the other one)",
    )
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    started_load = load_average()
    if args.table:
        frame, table_name = pd.read_parquet(args.table), str(args.table)
    else:
        from bench.bench_scoring import synthetic_metric_table

        size = 45 if args.quick else 174
        frame = synthetic_metric_table(n_normal=size, n_abnormal=size, seed=args.seed)
        table_name = f"bench_scoring.synthetic_metric_table({size}, {size}, seed={args.seed})"
    preset = get_preset("tiny" if args.quick else args.preset)
    config = preset.search_config(args.seed, n_jobs=args.n_jobs, combine=args.combine)
    calibration = CalibrationConfig(rule=args.threshold_rule)
    start = time.perf_counter()
    folds, shipped = collect(frame, config, preset.classifiers, preset.outer_folds, calibration)
    collected_s = time.perf_counter() - start
    by_threshold_rule = {
        threshold_rule: {
            name: evaluate_rule(folds, rule, calibration.confidence, threshold_rule)
            for name, rule in rules(folds, shipped).items()
        }
        for threshold_rule in THRESHOLD_RULES
    }
    results = by_threshold_rule[calibration.rule]
    for name, result in sorted(results.items(), key=lambda item: -item[1]["accuracy_zfn"]):
        chosen = ",".join(f["chosen"] for f in result["folds"]) if "fixed" not in name else ""
        others = ", ".join(
            f"{r}: {by_threshold_rule[r][name]['accuracy_zfn']:.3f} / "
            f"{by_threshold_rule[r][name]['missed_zfn']}"
            for r in THRESHOLD_RULES
            if r != calibration.rule
        )
        print(
            f"{name:>18}: ZFN accuracy {result['accuracy_zfn']:.3f}, missed "
            f"{result['missed_zfn']}, AUROC {result['auroc_pooled']:.3f} ({others}) {chosen[:50]}"
        )
    payload = {
        "table": table_name,
        "rows": int((frame["role"] == "classifier_set").sum()),
        "seed": args.seed,
        "preset": preset.name,
        "search": config.to_dict(),
        "calibration": calibration.to_dict(),
        "collect_seconds": collected_s,
        "rules": results,
        # ZFN accuracy / missed of every rule at each threshold rule, side by side
        "threshold_rules": {
            name: {
                threshold_rule: {
                    "accuracy_zfn": by_threshold_rule[threshold_rule][name]["accuracy_zfn"],
                    "missed_zfn": by_threshold_rule[threshold_rule][name]["missed_zfn"],
                    "fpr_zfn": by_threshold_rule[threshold_rule][name]["fpr_zfn"],
                }
                for threshold_rule in THRESHOLD_RULES
            }
            for name in results
        },
        "machine": {"load_average_at_start": started_load},
    }
    name = args.name or ("quick" if args.quick else "synthetic_table")
    written = write_result(f"choice_{name}", payload, Path(args.out) if args.out else None)
    print(f"[bench_choice] wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
