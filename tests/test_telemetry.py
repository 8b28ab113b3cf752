"""Telemetry through the Trainer's log, read back from real integrations (offline, no mocks):
TensorBoard's event files with tensorboard's own reader, MLflow's local file store with
MLflow's client, a W&B offline run's `.wandb` file with W&B's own protobuf records. Every value
must equal the run folder's own files."""

import json

import pandas as pd
import pytest

from lmdisp.train.config import TrainConfig
from lmdisp.train.run import run_train
from lmdisp.train.telemetry import grouped_names, heatmap_image, is_telemetry_only, layer_name

TINY = dict(model="random:tiny-gpt2", dataset="builtin", context_length=32, batch_size=4, grad_accum=1,
            lr=1e-3, gradient_checkpointing=False, logging_steps=1, save_steps=1000, warmup_ratio=0.0)


def test_names_are_grouped_and_stable():
    logs = {"loss": 1.0, "ce": 0.9, "reg": 2.0, "tokens_per_s": 5.0, "eval_loss": 3.0, "learning_rate": 1e-3,
            "condensation/layer_03": 0.5, "rewards/acc/mean": 1.0}
    assert grouped_names(logs) == {"train/loss": 1.0, "train/ce": 0.9, "train/regularizer": 2.0,
                                   "train/tokens_per_s": 5.0, "eval/loss": 3.0, "train/learning_rate": 1e-3,
                                   "condensation/layer_03": 0.5, "rewards/acc/mean": 1.0}
    assert layer_name(7, 13) == "condensation/layer_07" and layer_name(7, 120) == "condensation/layer_007"
    assert is_telemetry_only({"heldout/loss": 1.0, "epoch": 0.5}) and not is_telemetry_only({"loss": 1.0})


def test_heatmap_rows_are_layers_and_columns_steps():
    img = heatmap_image({0: [0.0, 1.0], 5: [1.0, 0.0]}, cell=2)
    assert img.shape == (4, 4, 3) and img.dtype.name == "uint8"
    # layer 1 (top row) at step 0 is 1.0 (viridis yellow), layer 0 (bottom) at step 0 is 0.0 (purple)
    assert img[0, 0, 0] > 200 and img[3, 0, 2] > img[3, 0, 1]
    assert (img[0, 0] == img[3, 3]).all() and (img[3, 0] == img[0, 3]).all()


def _tensorboard(folder):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    scalars = {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}
    return scalars, {tag: {e.step: _png(e.encoded_image_string) for e in acc.Images(tag)} for tag in acc.Tags()["images"]}


def _png(data: bytes):
    import io

    import numpy as np
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _mlflow(store):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.as_uri())
    exp = client.get_experiment_by_name("lmdisp-test")
    (run,) = client.search_runs([exp.experiment_id])
    metrics = {k: {m.step: m.value for m in client.get_metric_history(run.info.run_id, k)} for k in run.data.metrics}
    images = {}  # mlflow's time-stepped images: images/<key with / as ~>+step+<n>+timestamp+<t>+<uuid>.png
    for art in client.list_artifacts(run.info.run_id, "images"):
        name = art.path.rsplit("/", 1)[-1]
        if name.endswith(".png"):
            key, _, step, *_ = name.split("+")
            path = client.download_artifacts(run.info.run_id, art.path)
            images.setdefault(key.replace("~", "/"), {})[int(step)] = _png(open(path, "rb").read())
    return metrics, images


def _wandb_records(path):
    """The protobuf records of a W&B run file: W&B's 7-byte header, then LevelDB-log framing
    (32 KiB blocks; each chunk: crc32c, 2-byte length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, buf = path.read_bytes(), 7, 32768, b""
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # a block's tail too short for a chunk header is padding
            pos += block - pos % block
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        buf = chunk if kind in (1, 2) else buf + chunk
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(buf)
            yield record


def _wandb(folder):
    """Scalars by training step (W&B's history keeps the Trainer's `train/global_step`) and the
    heatmap images, from an offline run in `folder`."""
    (path,) = folder.glob("wandb/offline-run-*/run-*.wandb")
    scalars, images = {}, {}
    for record in _wandb_records(path):
        if record.WhichOneof("record_type") != "history":
            continue
        items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
        step = int(items["train/global_step"])
        if "condensation/heatmap/path" in items:
            png = (path.parent / "files" / items["condensation/heatmap/path"]).read_bytes()
            images.setdefault("condensation/heatmap", {})[step] = _png(png)
        for key, value in items.items():
            if not key.startswith(("_", "condensation/heatmap/")) and isinstance(value, (int, float)):
                scalars.setdefault(key, {})[step] = value
    return scalars, images


def test_tensorboard_mlflow_and_wandb_get_every_number_the_files_hold(tmp_path, monkeypatch):
    pytest.importorskip("tensorboard")
    pytest.importorskip("mlflow")
    wandb = pytest.importorskip("wandb")
    store = tmp_path / "mlruns"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store.as_uri())
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "lmdisp-test")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # the local file store (mlflow 3: maintenance mode)
    for key, value in {"WANDB_MODE": "offline", "WANDB_DIR": str(tmp_path), "WANDB_SILENT": "true"}.items():
        monkeypatch.setenv(key, value)
    try:
        run = run_train(TrainConfig(**TINY, loss="dispersion", train_tokens=4 * 128, condensation_every=2,
                                    condensation_sequences=4, report_to="tensorboard,mlflow,wandb",
                                    output=str(tmp_path / "run")))
    finally:
        wandb.finish()  # what ends a user's process: the run file complete
    trace = pd.read_csv(run.path / "condensation.csv")
    records = [json.loads(x) for x in (run.path / "metrics.jsonl").read_text().splitlines()]
    train_logs = {r["step"]: r for r in records if "ce" in r}
    heldout = {r["step"]: r for r in records if "heldout_loss" in r}
    assert sorted(train_logs) == [1, 2, 3, 4]  # telemetry records cancel none of the Trainer's own logs
    assert not any(any("/" in k for k in r) for r in records)  # the file is as it was
    scalars, tb_images = _tensorboard(run.path / "tensorboard")
    metrics, ml_images = _mlflow(store)
    wb_scalars, wb_images = _wandb(tmp_path)
    for got in (scalars, metrics, wb_scalars):
        for row in trace.itertuples():
            assert got[layer_name(row.layer, 5)][row.step] == pytest.approx(row.mean_cos, rel=1e-6)
        for step, r in heldout.items():
            assert got["heldout/loss"][step] == pytest.approx(r["heldout_loss"], rel=1e-6)
            assert got["heldout/perplexity"][step] == pytest.approx(r["heldout_perplexity"], rel=1e-6)
        for step, r in train_logs.items():
            assert got["train/ce"][step] == pytest.approx(r["ce"], rel=1e-6)
            assert got["train/regularizer"][step] == pytest.approx(r["reg"], rel=1e-6)
            assert got["train/loss"][step] == pytest.approx(r["loss"], rel=1e-6)
            assert got["train/tokens_per_s"][step] == pytest.approx(r["tokens_per_s"], rel=1e-6)
    # the heatmap at each snapshot: layer x step of condensation.csv so far, pixel for pixel
    by_step = {step: list(g.sort_values("layer")["mean_cos"]) for step, g in trace.groupby("step")}
    for images in (tb_images, ml_images, wb_images):
        assert list(images) == ["condensation/heatmap"] and sorted(images["condensation/heatmap"]) == [0, 2, 4]
        for step, got in images["condensation/heatmap"].items():
            want = heatmap_image({s: v for s, v in by_step.items() if s <= step})
            assert got.shape == want.shape and (got == want).all()


def test_active_forgetting_resets_reach_tensorboard(tmp_path):
    pytest.importorskip("tensorboard")
    run = run_train(TrainConfig(**TINY, loss="active-forgetting", forget_every=2, train_tokens=5 * 128,
                                condensation_every=0, report_to="tensorboard", output=str(tmp_path / "run")))
    scalars, _ = _tensorboard(run.path / "tensorboard")
    assert scalars["forgetting/resets"] == {2: 1.0, 4: 2.0}
    assert sorted(scalars["train/ce"]) == [1, 2, 3, 4, 5]
