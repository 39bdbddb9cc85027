"""planner.make_way: which workers to stop at a training job's submit (pure)."""

from __future__ import annotations

from isense_slurm.planner.make_way import RunningWorker, StoppableNode, WaitingJob, make_way

PARTS = ("train", "inference")
PREEMPTING = {"train"}


def node(name, *, other=0, workers=(), total=4, usable=True, partitions=PARTS):
    return StoppableNode(name, partitions, total, other, tuple(RunningWorker(j, g, o) for j, g, o in workers), usable)


def waiting(job_id, gpus=4, *, nodes=1, required=(), partitions=("train",)):
    return WaitingJob(job_id, tuple(partitions), gpus, nodes, tuple(required))


def stopped(releases):
    return [(r.worker_job_id, r.node, r.for_job_id) for r in releases]


def test_pinned_job_stops_the_worker_on_its_node():
    nodes = [node("n1", workers=[("w1", 4, 0)]), node("n2", workers=[("w2", 4, 0)])]
    releases, lines = make_way([waiting("t1", required=("n2",))], nodes, PREEMPTING)
    assert stopped(releases) == [("w2", "n2", "t1")]
    assert "would preempt" in releases[0].reason and "t1" in lines[0].text and "w2" in lines[0].text


def test_a_job_that_fits_on_free_gpus_stops_nothing():
    nodes = [node("n1", workers=[("w1", 4, 0)]), node("n2")]
    releases, lines = make_way([waiting("t1")], nodes, PREEMPTING)
    assert releases == [] and "nothing to stop" in lines[0].text and "n2" in lines[0].text
    assert not lines[0].notable


def test_partition_that_does_not_preempt_stops_nothing():
    nodes = [node("n1", workers=[("w1", 4, 0)])]
    releases, lines = make_way([waiting("t1", partitions=("inference",))], nodes, PREEMPTING)
    assert releases == [] and "does not preempt" in lines[0].text


def test_job_held_back_by_training_stops_nothing():
    # n1: 2 GPUs of training + a 2-GPU worker; a 4-GPU job cannot start there anyway.
    nodes = [node("n1", other=2, workers=[("w1", 2, 0)])]
    releases, lines = make_way([waiting("t1", 4)], nodes, PREEMPTING)
    assert releases == [] and "waits for training" in lines[0].text and lines[0].notable


def test_unusable_required_node_stops_nothing():
    nodes = [node("n1", workers=[("w1", 4, 0)], usable=False)]
    releases, lines = make_way([waiting("t1", required=("n1",))], nodes, PREEMPTING)
    assert releases == [] and "not all usable" in lines[0].text and lines[0].notable


def test_fewest_gpus_stopped_and_idlest_worker_first():
    # n1 has 2 free GPUs and two 1-GPU workers: a 3-GPU job needs one of them, the idle one.
    # n2 would need a whole 4-GPU worker stopped.
    nodes = [node("n1", other=0, workers=[("busy", 1, 5), ("idle", 1, 0)]), node("n2", workers=[("big", 4, 0)])]
    releases, _ = make_way([waiting("t1", 3)], nodes, PREEMPTING)
    assert stopped(releases) == [("idle", "n1", "t1")]


def test_one_worker_that_covers_the_need_beats_several():
    nodes = [node("n1", total=8, workers=[("a", 2, 0), ("b", 2, 0), ("c", 4, 0)])]
    releases, _ = make_way([waiting("t1", 4)], nodes, PREEMPTING)
    assert stopped(releases) == [("c", "n1", "t1")]


def test_several_workers_when_no_single_one_is_enough():
    nodes = [node("n1", total=8, other=2, workers=[("a", 2, 0), ("b", 2, 0), ("c", 2, 0)])]
    releases, _ = make_way([waiting("t1", 6)], nodes, PREEMPTING)
    assert sorted(r.worker_job_id for r in releases) == ["a", "b", "c"]


def test_multi_node_job_takes_free_nodes_before_stopping_workers():
    nodes = [node("n1", workers=[("w1", 4, 0)]), node("n2"), node("n3", workers=[("w3", 4, 3)])]
    releases, _ = make_way([waiting("t1", 4, nodes=2)], nodes, PREEMPTING)
    assert stopped(releases) == [("w1", "n1", "t1")]  # n2 is free; w1 is idler than w3


def test_two_jobs_do_not_count_on_the_same_gpus():
    nodes = [node("n1", workers=[("w1", 4, 0)]), node("n2"), node("n3", workers=[("w3", 4, 0)])]
    releases, lines = make_way([waiting("t1"), waiting("t2")], nodes, PREEMPTING)
    # t1 takes free n2; t2 then needs a worker stopped.
    assert stopped(releases) == [("w1", "n1", "t2")]
    assert "nothing to stop" in lines[0].text


def test_job_without_gpus_is_left_to_slurm():
    releases, lines = make_way([waiting("t1", 0)], [node("n1", workers=[("w1", 4, 0)])], PREEMPTING)
    assert releases == [] and "no GPUs" in lines[0].text
