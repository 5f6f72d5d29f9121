"""Joining a multi-host job: what is refused before any process connects, and what a single
process does (the job itself runs in tests/test_multihost.py)."""

import jax
import numpy as np
import pytest

from experiments.configs import smoke
from experiments.length_extrapolation import join_study_job
from posenc_jax.train import distributed
from posenc_jax.train.distributed import HalfConfiguredJobError, join_job, stop_job_on_error
from posenc_jax.train.sharding import make_mesh, placement, to_host


@pytest.fixture(autouse=True)
def no_cluster(monkeypatch):
    """This machine is not in a cluster JAX detects, nor is the test's environment."""
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert distributed.cluster_environment() is None
    yield
    assert not jax.distributed.is_initialized()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (
            {"process_id": 1},
            "half configured: process_id=1 given, but no coordinator_address and no num_processes",
        ),
        (
            {"coordinator_address": "10.0.0.1:1234"},
            "coordinator_address='10.0.0.1:1234' given, but no num_processes and no process_id",
        ),
        (
            {"num_processes": 4, "process_id": 0},
            "but no coordinator_address, and no cluster environment",
        ),
    ],
)
def test_a_half_configured_job_is_refused(kwargs, message):
    with pytest.raises(HalfConfiguredJobError, match=message.replace("(", r"\(")):
        join_job(**kwargs)


def test_a_coordinator_from_the_environment_counts_as_given(monkeypatch):
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "10.0.0.1:1234")
    with pytest.raises(HalfConfiguredJobError, match="no num_processes and no process_id"):
        join_job()


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"coordinator_address": "10.0.0.1"}, "coordinator_address='10.0.0.1'; give host:port"),
        ({"num_processes": 0}, "num_processes=0; give a positive integer"),
        ({"process_id": -1}, r"process_id=-1; give an integer in 0 \.\. num_processes - 1"),
        ({"num_processes": 2, "process_id": 2}, r"process_id=2 but num_processes=2; ids run 0"),
        ({"heartbeat_timeout": 0}, "heartbeat_timeout=0; give a positive number of seconds"),
    ],
)
def test_job_values_out_of_range_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        join_job(**kwargs)


def test_the_study_config_joins_or_refuses_alike():
    cfg = smoke.get_config()
    assert join_study_job(cfg) is False  # nothing given, no cluster: one process
    cfg.distributed.process_id = 1
    with pytest.raises(HalfConfiguredJobError, match="process_id=1 given"):
        join_study_job(cfg)


def test_a_single_process_is_unchanged():
    assert join_job() is False
    assert distributed.is_main_process() and distributed.which_processes(True) == [0]
    assert distributed.which_processes(False) == []
    distributed.barrier("nothing to wait for")
    with pytest.raises(KeyError, match="raised as it is"), stop_job_on_error():
        raise KeyError("raised as it is")
    mesh = make_mesh()
    place = placement(mesh, num_seeds=2, batch_size=4)
    values = jax.device_put(np.arange(6.0).reshape(2, 3), place.state)
    np.testing.assert_array_equal(to_host({"a": values})["a"], np.arange(6.0).reshape(2, 3))
