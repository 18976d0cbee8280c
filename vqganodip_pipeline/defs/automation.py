"""Declarative automation: what runs by itself, and when (with the automation sensor on).

- A newly registered shift or reference batch is ingested (``on_missing``); a new shift's chain
  (reconstructions, metrics, scores) then runs with the current release in the same run.
- A changed upstream recomputes its downstream only: every asset below the ingestion runs when
  one of its dependencies updated, once none of them is missing or in progress and every
  blocking check upstream passed (a failed check stops the automation there).
- Retraining: at each tick of ``retrain_cron`` (Sunday 02:00 UTC by default), a model-side asset
  runs if it is missing, or if its code version changed or one of its inputs updated since it
  was last requested; its downstream follows in the same run. An unchanged model side costs
  nothing.
- The evaluation report follows each new composite score model, also of a rejected candidate.
- ``rescore_on_release``: whether a new release also re-scores the shifts scored before it
  (default off: a shift keeps the decision of the release that scored it, and its lineage says
  which; those shifts then show as stale in the UI, which is what the setting means).
"""

from __future__ import annotations

import dagster as dg

from vqganodip_pipeline.defs.keys import key

RETRAIN_CRON = "0 2 * * 0"
AC = dg.AutomationCondition


def _runnable() -> dg.AutomationCondition:
    return (
        ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
        & AC.all_deps_blocking_checks_passed()
    )


def on_new_partition() -> dg.AutomationCondition:
    """Ingest a partition once it is registered."""
    return AC.on_missing()


def on_upstream_change(ignore: tuple[str, ...] = ()) -> dg.AutomationCondition:
    """Run a new partition, or one whose dependencies updated (those in ``ignore`` aside)."""
    updated = AC.any_deps_updated()
    if ignore:
        updated = updated.ignore(dg.AssetSelection.assets(*(key(name) for name in ignore)))
    return ((AC.newly_missing() | updated).since_last_handled() & _runnable()).with_label(
        "new partition or upstream updated" + (f" (not {', '.join(ignore)})" if ignore else "")
    )


def on_retraining_cron(
    cron: str = RETRAIN_CRON, follow_upstream: bool = True
) -> dg.AutomationCondition:
    """Model side: at the cron tick when missing or changed; with ``follow_upstream``, also
    after an upstream update (or request). The split, the root of the model side, does not
    follow: a new reference batch waits for the cron, so retraining runs on the schedule."""
    changed = (AC.code_version_changed() | AC.any_deps_updated()).since(
        AC.newly_requested() | AC.newly_updated()
    )
    due = AC.cron_tick_passed(cron) & (AC.missing() | changed)
    trigger = due | AC.any_deps_updated() if follow_upstream else due
    label = f"retrain at {cron} if changed" + (
        "; follow upstream updates" if follow_upstream else ""
    )
    return (trigger.since_last_handled() & _runnable()).with_label(label)


def on_new_candidate() -> dg.AutomationCondition:
    """The evaluation report: after a new composite score model, the last step of a
    candidate (a rejected one included: the report is how a person finds out why). Not after
    a lone checkpoint or mask, which would report it beside an older candidate's classifier."""
    updated = AC.any_deps_updated().allow(dg.AssetSelection.assets(key("composite_score_model")))
    return (
        updated.since_last_handled()
        & ~AC.any_deps_missing()
        & ~AC.any_deps_in_progress()
        & ~AC.in_progress()
    ).with_label("new composite score model")


def on_checked_asset_request(asset: str | None = None) -> dg.AutomationCondition:
    """An asset check: whenever the automation requests what it checks, in the same run, so
    that its blocking checks gate the downstream of that run. Manual runs of an asset include
    its checks already; a check that failed is not re-run by itself, so the assets below it
    stay where they are until the asset is materialized again.

    A check that also reads other assets (``additional_ins``) names its own ``asset``: its
    dependencies include those inputs, and a request of one of them alone (a new shift's
    ``batch_images``) would otherwise request the check before its asset exists, failing
    the run."""
    requested = AC.any_deps_match(AC.will_be_requested())
    if asset is not None:
        requested = requested.allow(dg.AssetSelection.assets(key(asset)))
    return requested.with_label("checked asset requested")


CHECK_AUTOMATION = on_checked_asset_request()


def conditions(
    rescore_on_release: bool = False, cron: str = RETRAIN_CRON
) -> dict[str, dg.AutomationCondition]:
    """The automation condition of every asset, by name."""
    chain = on_upstream_change(() if rescore_on_release else ("released_model",))
    model = on_retraining_cron(cron)
    report = on_new_candidate()
    return {
        "reference_images": on_new_partition(),
        "reference_quarantine": on_new_partition(),
        "batch_images": on_new_partition(),
        "batch_quarantine": on_new_partition(),
        "dataset_split": on_retraining_cron(cron, follow_upstream=False),
        "vqgan_checkpoint": model,
        "weighting_mask": model,
        "training_metrics": model,
        "training_patches": model,
        "composite_score_model": model,
        "released_model": model,
        "batch_reconstructions": chain,
        "batch_metrics": chain,
        "batch_patches": chain,
        "batch_scores": chain,
        "evaluation_report": report,
        "evaluation_report_html": report,
        "evaluation_figures": report,
    }


automation_sensor = dg.AutomationConditionSensorDefinition(
    "vqganodip_automation",
    target=dg.AssetSelection.all(),
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Evaluates every asset's automation condition (see defs/automation.py): new "
    "partitions ingested and scored, upstream changes followed, retraining on its cron.",
)
