"""The inbox sensor: new batch folders become partitions; a changed folder is ingested again.

It keeps a cursor (JSON) of the folders it has seen and each one's fingerprint, so a tick lists
the inbox's top level once, inspects only folders it has not registered yet, and re-inspects the
registered ones a bounded number at a time (``recheck_per_tick``, round robin) for corrections
and for labels that arrived later. Scoring is left to the automation conditions
(defs/automation.py): a new partition is missing, which is what they act on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import dagster as dg

from vqganodip_pipeline.defs.jobs import ingest_reference_job, process_batch_job
from vqganodip_pipeline.defs.partitions import reference_partitions, shift_partitions
from vqganodip_pipeline.defs.resources import BatchInbox, FolderState

RECHECK_PER_TICK = 20


@dataclass
class InboxCursor:
    """Fingerprint of every registered folder, and where the round-robin re-check stands."""

    seen: dict[str, str] = field(default_factory=dict)
    position: int = 0

    @classmethod
    def parse(cls, text: str | None) -> InboxCursor:
        if not text:
            return cls()
        data = json.loads(text)
        return cls(seen=dict(data.get("seen", {})), position=int(data.get("position", 0)))

    def dumps(self) -> str:
        return json.dumps({"seen": self.seen, "position": self.position}, sort_keys=True)


@dataclass
class InboxPlan:
    """What one tick does: partitions to add and runs to request (corrected batches)."""

    new_references: list[str] = field(default_factory=list)
    new_shifts: list[str] = field(default_factory=list)
    reingest: list[tuple[str, str, str]] = field(default_factory=list)  # (set, name, fingerprint)


def plan_tick(
    inbox: BatchInbox,
    cursor: InboxCursor,
    references: set[str],
    shifts: set[str],
    recheck_per_tick: int = RECHECK_PER_TICK,
) -> InboxPlan:
    """Compare the inbox with the registered partitions and the cursor; updates ``cursor``."""
    plan = InboxPlan()
    names = inbox.batch_folders()
    registered = references | shifts
    for name in names:
        if name in registered:
            continue
        state = inbox.inspect(name)
        if not state.ready:
            continue
        _register(state, plan)
        cursor.seen[name] = state.fingerprint
    known = [n for n in names if n in registered]
    if known and recheck_per_tick > 0:
        start = cursor.position % len(known)
        batch = (known[start:] + known[:start])[:recheck_per_tick]
        cursor.position = (start + len(batch)) % len(known)
        for name in batch:
            state = inbox.inspect(name)
            if not state.ready:
                continue
            if state.labelled and name not in references:
                plan.new_references.append(name)  # operator-confirmed labels arrived
            previous = cursor.seen.get(name)
            if previous is not None and previous != state.fingerprint:
                if name in shifts:
                    plan.reingest.append(("shifts", name, state.fingerprint))
                if name in references:
                    plan.reingest.append(("reference_batches", name, state.fingerprint))
            cursor.seen[name] = state.fingerprint
    return plan


def _register(state: FolderState, plan: InboxPlan) -> None:
    # a labelled layout is reference data only; a plain folder is a shift, and reference data
    # too when it holds a labels.csv
    if state.labelled:
        plan.new_references.append(state.name)
    if not state.reference_layout:
        plan.new_shifts.append(state.name)


@dg.sensor(
    jobs=[process_batch_job, ingest_reference_job],
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description="Registers every ready inbox folder as a reference batch or a shift, and "
    "re-ingests a folder whose files changed (a corrected batch).",
)
def batch_inbox_sensor(
    context: dg.SensorEvaluationContext, inbox: BatchInbox
) -> dg.SensorResult | dg.SkipReason:
    cursor = InboxCursor.parse(context.cursor)
    references = set(context.instance.get_dynamic_partitions(reference_partitions.name))
    shifts = set(context.instance.get_dynamic_partitions(shift_partitions.name))
    plan = plan_tick(inbox, cursor, references, shifts)
    requests = []
    for kind, name, fingerprint in plan.reingest:
        job = process_batch_job if kind == "shifts" else ingest_reference_job
        requests.append(
            dg.RunRequest(
                run_key=f"{kind}:{name}:{fingerprint}",
                job_name=job.name,
                partition_key=name,
                tags={"vqganodip/reason": "batch files changed"},
            )
        )
    additions = []
    if plan.new_references:
        additions.append(reference_partitions.build_add_request(sorted(set(plan.new_references))))
    if plan.new_shifts:
        additions.append(shift_partitions.build_add_request(sorted(set(plan.new_shifts))))
    if not requests and not additions:
        context.update_cursor(cursor.dumps())
        return dg.SkipReason(f"no new or changed ready batch in {inbox.root}")
    return dg.SensorResult(
        run_requests=requests, dynamic_partitions_requests=additions, cursor=cursor.dumps()
    )
