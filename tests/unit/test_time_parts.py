"""Where a retrain's time went: the stages' own time, then the overhead by part."""

import pytest

from visionloop.pipeline.reports import TIME_PARTS, time_line, time_parts

TASKS = {  # seconds Running, by task function, as Prefect records them
    "ingest_with_checks": 1.5,
    "reproduce_stage": 53.2,  # the stages and their DVC bookkeeping, already counted
    "register_and_promote": 2.0,
    "push": 0.5,
    "train_pipeline": 56.0,  # the subflow's stand-in task run in its parent: not a part
}


def test_the_parts_add_up_to_the_wall_time_and_prefect_has_only_what_no_part_claims():
    parts = time_parts(60.0, stage_seconds=50.0, dvc_seconds=3.0, task_seconds=TASKS)
    assert list(parts) == list(TIME_PARTS)
    assert parts["ingest"] == 1.5 and parts["register"] == 2.0 and parts["push"] == 0.5
    assert parts["dvc"] == 3.0 and parts["start"] == 0.0
    assert parts["prefect"] == pytest.approx(60.0 - 50.0 - 3.0 - 1.5 - 2.0 - 0.5)
    assert sum(parts.values()) == pytest.approx(60.0)


def test_the_time_line_names_each_part_and_start_only_where_a_worker_started_the_run():
    embedded = time_parts(60.0, 50.0, 3.0, TASKS)
    assert time_line(60.0, embedded) == (
        "time: 60.0 s in all, 50.0 s in the stages, 10.0 s of overhead (17%): "
        "ingest 1.5, dvc 3.0, register 2.0, push 0.5, prefect 3.0"
    )
    worker = time_parts(72.0, 50.0, 3.0, TASKS, start=12.0)
    assert "push 0.5, start 12.0, prefect 3.0" in time_line(72.0, worker)
