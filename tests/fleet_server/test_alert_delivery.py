"""The delivery worker: the continuous-training command gets the payload on stdin and the model in its
environment; a failing command is retried and finally marked failed with its error."""

import json
import sys
import time
from pathlib import Path

from sqlalchemy import Engine
from sqlmodel import Session

from fleet_server.alerting.alerts import RETRAIN_COMMAND_TARGET
from fleet_server.alerting.delivery import DeliverySettings, DeliveryWorker, retry_delay
from fleet_server.models.alert import Alert, AlertDelivery

SCRIPT = ("import json, os, sys; payload = json.load(sys.stdin); "
          "open(sys.argv[1], 'w').write(json.dumps([payload, os.environ['EDGEFLEET_MODEL_NAME'], "
          "os.environ['EDGEFLEET_MODEL_VERSION']]))")


def queue_retrain(engine: Engine) -> int:
    with Session(engine) as session:
        alert = Alert(kind="drift", scope="cohort", subject="line-1", model_name="digits", model_version=3,
                      summary="drift", active_key="drift|cohort|line-1|digits:3")
        session.add(alert)
        session.flush()
        delivery = AlertDelivery(alert_id=alert.id or 0, event="retrain", target=RETRAIN_COMMAND_TARGET,
                                 payload={"event": "retrain", "model": {"name": "digits", "version": 3}})
        session.add(delivery)
        session.commit()
        return delivery.id or 0


def test_the_retraining_command_runs_with_the_payload(migrated_engine: Engine, tmp_path: Path) -> None:
    out = tmp_path / "called.json"
    delivery_id = queue_retrain(migrated_engine)
    worker = DeliveryWorker(migrated_engine, DeliverySettings(
        retrain_command=f"{sys.executable} -c \"{SCRIPT}\" {out}"))
    assert worker.deliver_due() == 1
    payload, name, version = json.loads(out.read_text())
    assert payload["model"] == {"name": "digits", "version": 3} and (name, version) == ("digits", "3")
    with Session(migrated_engine) as session:
        delivery = session.get(AlertDelivery, delivery_id)
        assert delivery is not None and delivery.state == "delivered" and delivery.attempts == 1


def test_a_failing_command_is_retried_then_marked_failed(migrated_engine: Engine) -> None:
    delivery_id = queue_retrain(migrated_engine)
    worker = DeliveryWorker(migrated_engine, DeliverySettings(
        retrain_command=f"{sys.executable} -c \"import sys; sys.exit('no trainer')\"", max_attempts=2,
        retry_base_s=0.01, retry_max_s=0.01))
    assert worker.deliver_due() == 1
    with Session(migrated_engine) as session:
        delivery = session.get(AlertDelivery, delivery_id)
        assert delivery is not None and delivery.state == "pending" and "no trainer" in (delivery.last_error or "")
    time.sleep(0.05)
    assert worker.deliver_due() == 1
    with Session(migrated_engine) as session:
        delivery = session.get(AlertDelivery, delivery_id)
        assert delivery is not None and delivery.state == "failed" and delivery.attempts == 2
    assert retry_delay(1, 2.0, 300.0) == 2.0 and retry_delay(4, 2.0, 300.0) == 16.0
    assert retry_delay(20, 2.0, 300.0) == 300.0
