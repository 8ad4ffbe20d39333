"""Dask: the same tables on a LocalCluster as locally, even when a worker dies mid-run.

Known answers: a local run of the same call, with the same seed. One ``LocalCluster(n_workers=2,
threads_per_worker=1, processes=True)`` for the module (workers import TensorFlow once each).
"""
from __future__ import annotations

import os
import signal
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

distributed = pytest.importorskip("distributed")

import concepts  # noqa: E402
from synthetic import build_model, make_data, write_png  # noqa: E402

FAST = dict(n_random=4, n_directions=100, progress=False, cache_dir=False, batch_size=4)


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client, LocalCluster

    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=40)
    with Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    return make_data(tmp_path_factory.mktemp("planted"), n_class=16, n_concept=12, n_pool=40), build_model()


def _tables_equal(a, b, rtol=1e-6):
    assert list(a.columns) == list(b.columns) and len(a) == len(b)
    for column in a.columns:
        if a[column].dtype.kind in "fc":
            np.testing.assert_allclose(a[column].to_numpy(float), b[column].to_numpy(float), rtol=rtol, atol=0,
                                       equal_nan=True, err_msg=column)
        else:
            assert (a[column].astype(str) == b[column].astype(str)).all(), column


def _score(planted, **kw):
    data, model = planted
    measure = concepts.measure(lambda image: float(np.mean(image)), name="mean")
    return concepts.score(model, ["conv1", "conv2"], [data / "concepts" / "horizontal", measure], **FAST, **kw)


def test_score_on_a_cluster_equals_the_local_run(planted, client):
    local = _score(planted)
    remote = _score(planted, client=client)
    _tables_equal(local.to_frame(), remote.to_frame())
    _tables_equal(local.per_example(), remote.per_example())


def test_a_worker_killed_mid_run_is_replaced_and_the_result_is_unchanged(planted, client):
    local = _score(planted, memory_budget=0)
    pids = client.run(os.getpid)
    killed = []

    def kill_a_busy_worker():
        deadline = time.time() + 120
        while time.time() < deadline and not killed:
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            if busy:
                os.kill(pids[busy[0]], signal.SIGKILL)
                killed.append(busy[0])
                return
            time.sleep(0.02)

    # A fresh engine: the workers rebuild the model (seconds of TensorFlow start-up), so tasks are in flight
    # long enough to kill one.
    from probes import distributed as dist

    client.run(dist._ENGINES.clear)
    killer = threading.Thread(target=kill_a_busy_worker)
    killer.start()
    remote = _score(planted, client=client)
    killer.join()
    assert killed, "no worker was busy to kill"
    _tables_equal(local.to_frame(), remote.to_frame())
    client.wait_for_workers(2, timeout=120)  # the nanny restarted it


def test_shards_lost_on_the_cluster_are_submitted_again_and_the_result_is_unchanged(planted, client, monkeypatch):
    """A shard whose future Dask cancels (its worker died with data Dask cannot recompute) is resubmitted."""
    local = _score(planted)
    real_submit, cancelled = client.submit, []

    def submit_and_lose_the_first(*args, **kwargs):
        future = real_submit(*args, **kwargs)
        if not cancelled:
            future.cancel()
            cancelled.append(future)
        return future
    monkeypatch.setattr(client, "submit", submit_and_lose_the_first)
    remote = _score(planted, client=client)
    assert cancelled and cancelled[0].status == "cancelled"
    _tables_equal(local.to_frame(), remote.to_frame())


def test_a_shard_lost_every_time_is_an_error_that_says_so(planted, client, monkeypatch):
    real_submit = client.submit

    def submit_and_lose(*args, **kwargs):
        future = real_submit(*args, **kwargs)
        future.cancel()
        return future
    monkeypatch.setattr(client, "submit", submit_and_lose)
    with pytest.raises(RuntimeError, match=r"lost on the cluster 3 times"):
        _score(planted, client=client)


@pytest.mark.filterwarnings("ignore:Radiomics. 1 of 10 images failed")
def test_radiomics_on_a_cluster_equals_the_local_table_with_the_same_failures(client, tmp_path):
    rng = np.random.default_rng(0)
    images, masks = tmp_path / "images", tmp_path / "masks"
    for i in range(10):
        image = rng.uniform(0, 1, (24, 24))
        mask = np.zeros((24, 24))
        mask[4:16 + i % 5, 5:18] = 1.0
        write_png(images / f"im{i:02d}.png", image)
        write_png(masks / f"im{i:02d}.png", mask)
    write_png(masks / "im03.png", np.zeros((24, 24)))  # an empty mask: this image must fail, on any machine
    features = ["original_firstorder_Mean", "original_shape2D_PixelSurface", "original_glcm_Contrast"]
    local = concepts.measure_table(images, masks, features=features, cache_dir=False, n_jobs=1)
    remote = concepts.measure_table(images, masks, features=features, cache_dir=tmp_path / "cache", client=client)
    _tables_equal(local, remote, rtol=1e-9)
    assert [f["image"] for f in remote.attrs["failures"]] == [f["image"] for f in local.attrs["failures"]]
    assert any("im03" in f["image"] for f in remote.attrs["failures"])
    again = concepts.measure_table(images, masks, features=features, cache_dir=tmp_path / "cache", client=client)
    _tables_equal(local, again, rtol=1e-9)  # from the per-image cache, written by this process
    single = concepts.radiomics("original_firstorder_Mean", images, masks, cache_dir=False, client=client)
    np.testing.assert_allclose(single.values.dropna().to_numpy(), local["original_firstorder_Mean"].dropna(),
                               rtol=1e-9)


@pytest.mark.filterwarnings("ignore:Radiomics")
def test_cli_measures_on_a_scheduler(client, tmp_path):
    import pandas as pd

    from concepts.cli import main

    rng = np.random.default_rng(1)
    for i in range(6):
        write_png(tmp_path / "images" / f"im{i}.png", rng.uniform(0, 1, (20, 20)))
    local, remote = tmp_path / "local.csv", tmp_path / "remote.csv"
    assert main(["measures", str(tmp_path / "images"), "--out", str(local), "--jobs", "1", "--quiet"]) == 0
    assert main(["measures", str(tmp_path / "images"), "--out", str(remote), "--quiet",
                 "--scheduler", client.scheduler.address]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(local, index_col=0), pd.read_csv(remote, index_col=0))


class _StubClient:
    """What score() sees of a client: its status, and a scatter that fails like a lost cluster's."""

    id = "stub"

    def __init__(self, status: str) -> None:
        self.status = status

    def scheduler_info(self) -> dict:
        return {"workers": {"w": {}}}

    def scatter(self, *args, **kwargs):
        raise OSError("in <TCP (closed) ConnectionPool.scatter>: Stream is closed")


def test_a_closed_client_is_refused_before_any_work(planted, client, monkeypatch):
    from dask.distributed import Client

    from concepts.analysis import Analysis

    closed = Client(client.scheduler.address, set_as_default=False)
    closed.close()
    monkeypatch.setattr(Analysis, "run", lambda *a, **k: pytest.fail("ran with a closed client"))
    with pytest.raises(RuntimeError, match=r"The Dask client is closed .*start a new Client"):
        _score(planted, client=closed)


def test_a_cluster_lost_mid_run_is_an_error_that_says_so(planted):
    from probes.distributed import project_on_cluster
    from probes.engine import Engine
    from probes.sources import InMemoryImages

    engine = Engine(planted[1], ["conv1"], progress=False)
    images = InMemoryImages(np.zeros((4, *engine.input_shape), np.float32))
    with pytest.raises(RuntimeError, match=r"cluster was lost .*OSError: .*Stream is closed"):
        project_on_cluster(_StubClient("running"), engine, images, 0, {"conv1": {}})
    with pytest.raises(RuntimeError, match=r"The Dask client is closing"):
        project_on_cluster(_StubClient("closing"), engine, images, 0, {"conv1": {}})
