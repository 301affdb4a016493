"""Notifications on a failed retraining and on a promotion, through Prefect automations.

Set `flows.notify_block` to a Prefect notification block ("<block-type>/<name>", e.g.
`slack-webhook/ops`, made once with the UI or `prefect block create`). `visionloop flows
serve` then keeps two automations in place: one fires when a `retrain` flow run fails, the
other on the `visionloop.model.promoted` event that the flow emits after a promotion, a
third on `visionloop.drift.detected` with an alert verdict (docs/monitoring.md shows an
automation that starts `retrain` on it instead).
"""

from __future__ import annotations

from prefect.automations import Automation
from prefect.blocks.core import Block
from prefect.client.orchestration import get_client
from prefect.events.actions import SendNotification
from prefect.events.schemas.automations import EventTrigger, Posture

from visionloop.config import Config
from visionloop.errors import VisionloopError

PROMOTED_EVENT = "visionloop.model.promoted"
DRIFT_EVENT = "visionloop.drift.detected"
ON_DRIFT = "visionloop: drift detected"
ON_FAILURE = "visionloop: retrain failed"
ON_PROMOTION = "visionloop: model promoted"


def ensure_notifications(config: Config) -> list[Automation]:
    """Create (or replace) the three automations; none when no block is configured."""
    if not config.flows.notify_block:
        return []
    block_id = _block_id(config.flows.notify_block)
    wanted = [
        _automation(
            ON_FAILURE,
            EventTrigger(
                expect={"prefect.flow-run.Failed"},
                match_related={"prefect.resource.role": "flow", "prefect.resource.name": "retrain"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            SendNotification(
                block_document_id=block_id,
                subject="visionloop: retraining failed",
                body="Flow run {{ flow_run.name }} failed: {{ flow_run.state.message }}",
            ),
        ),
        _automation(
            ON_PROMOTION,
            EventTrigger(expect={PROMOTED_EVENT}, posture=Posture.Reactive, threshold=1),
            SendNotification(
                block_document_id=block_id,
                subject="visionloop: new champion",
                body="{{ event.payload.model }} v{{ event.payload.version }} is the champion: "
                "{{ event.payload.summary }}",
            ),
        ),
        _automation(
            ON_DRIFT,
            EventTrigger(
                expect={DRIFT_EVENT},
                match={"visionloop.verdict": "alert"},
                posture=Posture.Reactive,
                threshold=1,
            ),
            SendNotification(
                block_document_id=block_id,
                subject="visionloop: input drift",
                body="{{ event.payload.verdict }} on {{ event.payload.source }} for model "
                "{{ event.payload.model }}: p {{ event.payload.drift.p_value }}; report "
                "{{ event.payload.report }}",
            ),
        ),
    ]
    return [_replace(automation) for automation in wanted]


def _block_id(slug: str):
    try:
        block = Block.load(slug)
    except ValueError as exc:
        raise VisionloopError(
            f"flows.notify_block: no Prefect block {slug!r} ({exc}); create it with "
            '`prefect block create` or the UI, or set notify_block to ""'
        ) from None
    return block._block_document_id


def _automation(name: str, trigger: EventTrigger, action: SendNotification) -> Automation:
    return Automation(name=name, trigger=trigger, actions=[action], enabled=True)


def _replace(automation: Automation) -> Automation:
    """Serving twice must not double every notification: drop same-named ones first."""
    with get_client(sync_client=True) as client:
        for existing in client.read_automations_by_name(automation.name):
            client.delete_automation(existing.id)
    return automation.create()
