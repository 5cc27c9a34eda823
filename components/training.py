"""Training of any family with lightning.Trainer, as its own process.

Run as ``python -m components.training --request req.json --result res.json`` (or under
``torchrun`` for several devices/nodes): Lightning's DDP re-executes the entry point in
each process, which must therefore be this module, not the Prefect flow (DESIGN.md §4).
:func:`launch` starts it; the request carries URIs and the TrainConfig (serialised only
here, at the process boundary); the result reports the best epoch, the metrics, the
checkpoint URI and, for the final fit, where the trained Recommender was written (the
caller logs it to MLflow, components/pipeline.py).

Training you can watch: the Lightning progress bar reaches the caller's terminal when it
has one, and rank 0 prints one line per epoch (``EPOCH {json}``) that :func:`launch` hands
to its ``log`` callback while the training runs (the flow's tasks pass the Prefect run
logger).

Stages: ``fold`` trains on all but one fold's validation targets with early stopping on
their NDCG@10; ``final`` trains on everything but the test targets for a fixed number
of epochs (chosen by the folds) and logs the model to MLflow. Checkpoints go to the
lake after every epoch; a killed training restarts from the last one.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import contextvars
import hashlib
import json
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint
from torch.utils.data import DataLoader

from components import evaluation, lake, preload, storage, tracking
from components.batches import pad_left, pair_batches
from components.behaviour import EVENT_TYPES, PAD_TYPE
from components.config import PROTOCOL_VERSION, TrainConfig
from components.datasets import Dataset, View
from components.lake import DatasetLayer
from components.models import MODELS, SideInputs
from components.models.system import OptimConfig, RecSystem
from components.recommender import Recommender
from components.serving import STORED_EVENTS, ServingTables

RESULT = "result.json"  # a finished training's result, beside its checkpoints
RECOMMENDER = "recommender.pt"  # the final fit's trained model, beside its checkpoints
EXAMPLE = "input_example.json"  # a request frame for the logged model's signature
WARM_START = "warm_start.pt"  # the model a warm-started training starts from
EPOCH = "EPOCH "  # prefix of the per-epoch lines rank 0 prints for launch()
PROGRESS_ENV = "INTERESTFLOW_PROGRESS"  # "1": show Lightning's progress bar (the caller has a terminal)


class _Users(torch.utils.data.Dataset):
    def __init__(self, users: np.ndarray):
        self.users = users

    def __len__(self) -> int:
        return len(self.users)

    def __getitem__(self, i: int) -> int:
        return int(i)


def train_loader(view: View, n_items: int, max_len: int, batch_size: int, seed: int) -> DataLoader:
    """Batches of users with a non-empty training sequence: {users, seq, types}."""
    users = np.array([u for u, s in enumerate(view.train_seqs) if len(s)], dtype=np.int64)

    def collate(pos: list[int]) -> dict:
        us = users[pos]
        return {
            "users": torch.as_tensor(us),
            "seq": pad_left([view.train_seqs[u] for u in us], max_len, n_items),
            "types": pad_left([view.train_types[u] for u in us], max_len, PAD_TYPE),
        }

    return DataLoader(
        _Users(users),
        batch_size=batch_size,
        shuffle=True,
        collate_fn=collate,
        generator=torch.Generator().manual_seed(seed),
    )


def pair_loader(view: View, max_len: int, users_per_batch: int, type_weights: np.ndarray | None = None) -> DataLoader:
    """A closed-form family's training batches (components/batches.py: pair_batches), the
    same every epoch: its solves do not depend on the order."""
    batches = pair_batches(view.train_seqs, view.train_types, max_len, users_per_batch, type_weights)
    return DataLoader(batches, batch_size=None)


def val_loader(view: View, n_items: int, max_len: int, batch_size: int | None = None) -> DataLoader:
    batches = [b for _, b in evaluation.eval_batches(view, n_items, max_len, batch_size)]
    return DataLoader(batches, batch_size=None, shuffle=False)


class LakeCheckpoint(Callback):
    """Copies the last checkpoint to the lake after every epoch (rank 0)."""

    def __init__(self, local_dir: Path, uri: str):
        self.local, self.uri = local_dir / "last.ckpt", lake.file(uri, "last.ckpt")

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        trainer.save_checkpoint(self.local)
        if trainer.is_global_zero:
            storage.upload_file(self.local, self.uri)


class EpochLog(Callback):
    """Per-epoch metrics to MLflow on rank 0 (the learning curve), with each epoch's training
    time, and one ``EPOCH {json}`` line on stdout for the launching process."""

    def __init__(self, run_id: str | None, label: dict):
        self.run_id, self.label, self.history, self._t0, self._last = run_id, label, [], 0.0, 0.0

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._t0 = self._last = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        self._last = time.perf_counter()  # validation runs before on_train_epoch_end: stop the clock here

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Every rank reads the metrics: reading syncs them across DDP ranks (a collective).
        keep = ("train_loss", "val_ndcg10", "val_hr10")
        row = {k: float(v) for k, v in trainer.callback_metrics.items() if k in keep}
        if not trainer.is_global_zero:
            return
        row["train_epoch_s"] = self._last - self._t0
        self.history.append({"epoch": trainer.current_epoch + 1, **row})
        print(EPOCH + json.dumps({**self.label, "epoch": trainer.current_epoch + 1, **row}), flush=True)
        if self.run_id:
            tracking.log_metrics(self.run_id, row, step=trainer.current_epoch + 1)


class SamplerAudit(Callback):
    """Records which users each rank trained on in the first epoch (the DDP sampler's split)."""

    def __init__(self, n_users: int):
        self.seen, self.summary = torch.zeros(n_users + 1, dtype=torch.int32), None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.current_epoch == 0:
            self.seen[batch["users"].cpu()] += 1

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if trainer.current_epoch != 0:
            return
        per_rank = trainer.strategy.all_gather(self.seen.to(pl_module.device)).reshape(-1, len(self.seen)).cpu()
        self.summary = {
            "users_per_rank": (per_rank > 0).sum(1).tolist(),
            "users_on_several_ranks": int(((per_rank > 0).sum(0) > 1).sum()),
            "users_total": int((per_rank.sum(0) > 0).sum()),
        }


def resolve_precision(cfg: TrainConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if torch.cuda.is_available() and cfg.accelerator in ("auto", "gpu", "cuda") else "32-true"


def resolve_strategy(cfg: TrainConfig) -> str:
    if cfg.strategy != "auto":
        return cfg.strategy
    return "ddp" if cfg.devices * cfg.num_nodes > 1 else "auto"


def side_inputs(cls, data: Dataset, view: View, config=None) -> SideInputs:
    """What a family gets beside ids (see components/models/contract.py): the behaviour
    tables of the dataset's spec, and for a text-reading family the items' text (with the
    review text of the view's training events mixed in when its ``config.review_text`` is on)."""
    behaviour = {
        "type_weights": torch.as_tensor(data.behaviour.weight_table()),
        "target_types": torch.as_tensor(data.behaviour.target_table()),
        "typed": len(np.unique(np.concatenate(view.train_types))) > 1 if view.train_types else False,
        "repeats": data.behaviour.exclude != "interacted",
        "item_counts": torch.as_tensor(evaluation.item_counts(view, data.n_items)),  # the sampled softmax's proposal
    }
    if not cls.reads_text(config or cls.Config()):
        if config is not None and config.review_text:
            raise ValueError(
                f"{cls.__name__} does not read item text: review_text needs bert, or lstm or cnn with text: true"
            )
        return SideInputs(**behaviour)
    if data.item_text is None:
        raise ValueError(
            f"{cls.__name__} reads item text, but the dataset has no text embeddings: "
            "run the item-text stage (tasks/features.py: embed_items) before training it"
        )
    text = data.item_text_with_reviews(view) if config is not None and config.review_text else data.item_text
    return SideInputs(
        item_text=torch.from_numpy(text),
        item_strings=data.item_strings,
        **behaviour,
    )


def fit(request: dict) -> dict:
    """Train one model as the request says; returns the result dict (rank 0 is authoritative)."""
    cfg = TrainConfig(**request["train_config"])
    family, stage, fold = request["family"], request["stage"], request.get("fold")
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    L.seed_everything(cfg.seed + (fold or 0), workers=True, verbose=False)
    data = Dataset.load(lake.dataset_from_dict(request["dataset"]))
    view = data.view(stage, fold)
    cls = MODELS[family]
    model_cfg = cls.Config(**cfg.model)
    optim = OptimConfig(
        lr=cfg.lr if cfg.lr is not None else model_cfg.lr,
        weight_decay=cfg.weight_decay if cfg.weight_decay is not None else model_cfg.weight_decay,
    )
    system = RecSystem(cls(model_cfg, data.n_items, data.n_users, side_inputs(cls, data, view, model_cfg)), optim)
    warm = None
    if request.get("warm_start"):  # the champion's weights where today's ids were its ids
        start = Recommender.from_bytes(storage.read_bytes(request["warm_start"]["uri"]))
        item_map = torch.tensor([start.item_pos.get(str(i), -1) for i in data.item_ids], dtype=torch.long)
        user_map = torch.tensor([start.user_pos.get(str(u), -1) for u in data.user_ids], dtype=torch.long)
        shrink = float(request["warm_start"].get("shrink", 1.0))
        carried = system.model.warm_start(start.state_dict, item_map, user_map, shrink)
        warm = {"from": request["warm_start"]["label"], **carried}
    max_len = model_cfg.max_len
    ckpt_uri = request["checkpoint_uri"]
    epochs = cfg.max_epochs if stage == "fold" else int(request["epochs"])
    tmp = Path(tempfile.mkdtemp(prefix="interestflow-train-"))
    epoch_log = EpochLog(request.get("run_id"), {"family": family, "stage": stage, "fold": fold})
    audit = SamplerAudit(data.n_users)
    callbacks: list[Callback] = [LakeCheckpoint(tmp, ckpt_uri), epoch_log, audit]
    best = None
    if stage == "fold":
        best = ModelCheckpoint(dirpath=tmp, filename="best", monitor="val_ndcg10", mode="max", save_top_k=1)
        callbacks += [best, EarlyStopping(monitor="val_ndcg10", mode="max", patience=cfg.patience)]
    trainer = L.Trainer(
        max_epochs=epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=resolve_strategy(cfg),
        precision=resolve_precision(cfg),
        callbacks=callbacks,
        logger=False,
        enable_checkpointing=stage == "fold",
        enable_progress_bar=sys.stderr.isatty() or os.environ.get(PROGRESS_ENV) == "1",
        enable_model_summary=False,
        num_sanity_val_steps=0,
        limit_val_batches=1.0 if stage == "fold" else 0,
        deterministic=False,
    )
    resume = None
    if storage.exists(lake.file(ckpt_uri, "last.ckpt")) and not lake.is_complete(ckpt_uri):
        resume = storage.download_file(lake.file(ckpt_uri, "last.ckpt"), tmp / "resume.ckpt")
    t0 = time.perf_counter()
    trainer.fit(
        system,
        train_dataloaders=(
            pair_loader(view, max_len, system.model.solve_users, system.model.type_weights.numpy())
            if system.model.closed_form
            else train_loader(view, data.n_items, max_len, cfg.batch_size, cfg.seed)
        ),
        val_dataloaders=val_loader(view, data.n_items, max_len) if stage == "fold" else None,
        ckpt_path=resume,
    )
    train_s = time.perf_counter() - t0
    result = {
        "family": family,
        "stage": stage,
        "fold": fold,
        "train_s": train_s,
        "epochs_run": trainer.current_epoch,
        "history": epoch_log.history,
        "checkpoint_uri": ckpt_uri,
        "run_id": request.get("run_id"),
        # Epochs done before a restart (checkpoints are written at the end of an epoch).
        "resumed_from_epoch": torch.load(resume, weights_only=False)["epoch"] + 1 if resume else None,
        "sampler": audit.summary,
        "world_size": trainer.world_size,
        "train_users": sum(1 for s in view.train_seqs if len(s)),
        "train_samples": int(sum(len(s) for s in view.train_seqs)),  # training events per epoch
        "warm_start": warm,
    }
    if not trainer.is_global_zero:
        return result
    if stage == "fold":
        state = torch.load(best.best_model_path, map_location="cpu", weights_only=False)
        system.load_state_dict(state["state_dict"])
        result["best_epoch"] = int(state["epoch"]) + 1
        storage.upload_file(best.best_model_path, lake.file(ckpt_uri, "best.ckpt"))
        system.eval()
        ranks, top, _ = evaluation.rank_view(torch.no_grad()(system.model.score), view, data.n_items, max_len=max_len)
        result["metrics"] = evaluation.full_report(ranks, top, view, data.n_items)
    else:
        system.eval()
        rec = Recommender(
            family,
            model_cfg.__dict__,
            {k: v.cpu() for k, v in system.model.state_dict().items()},
            data.item_ids,
            data.user_ids,
            data.behaviour,
            ServingTables.from_dataset(
                data,
                view,
                request.get("catalogue_uri"),
                _text_version(request["dataset"]) if cls.reads_text(model_cfg) else None,
                keep=max(STORED_EVENTS, max_len),
            ),
        )
        storage.write_bytes(lake.file(ckpt_uri, RECOMMENDER), rec.to_bytes())
        storage.write_json(_input_example(data, view), lake.file(ckpt_uri, EXAMPLE))
    storage.write_json(result, lake.file(ckpt_uri, RESULT))
    if stage == "fold":  # a final fit is complete once the caller has logged its model (mark_final)
        lake.mark_complete(ckpt_uri, {"stage": stage, "fold": fold})
    return result


def mark_final(ckpt_uri: str, result: dict) -> None:
    """A final fit's layer is complete once its logged model is recorded in its result: a run
    that dies before that trains again (resuming from the last checkpoint) instead of reusing a
    training without a model."""
    storage.write_json(result, lake.file(ckpt_uri, RESULT))
    lake.mark_complete(ckpt_uri, {"stage": "final", "fold": None})


def _text_version(dataset: dict) -> str | None:
    """The encoder version of the dataset's item-text layer (``.../text-<version>``)."""
    uri = dataset["features"].get("text_uri")
    return storage.name(uri).removeprefix("text-") if uri else None


def _input_example(data: Dataset, view: View, n: int = 2) -> dict:
    """Two users' request rows (user_id, their last 5 items, those events' types and unix
    seconds) as columns."""
    users = [u for u in view.eval_users[:n]] or [0]
    return {
        "user_id": [str(data.user_ids[u]) for u in users],
        "history": [[str(data.item_ids[i]) for i in data.seqs[u][-5:]] for u in users],
        "event_types": [[EVENT_TYPES[t] for t in data.types[u][-5:]] for u in users],
        "timestamps": [[int(t) for t in (data.ts[u][-5:] if data.ts is not None else [0] * 5)] for u in users],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train one interestflow model (one fold or the final fit).")
    parser.add_argument("--request", required=True, help="JSON file: dataset, family, stage, configs, URIs")
    parser.add_argument("--result", required=True, help="where rank 0 writes the result JSON")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    request = json.loads(Path(args.request).read_text())
    result = fit(request)
    # Lightning leaves the DDP process group up. A rank leaving the interpreter with it
    # alive now and then aborts in gloo's threads ("terminate called without an active
    # exception", SIGABRT; seen once in CI on rank 1 while rank 0 registered the model),
    # and Lightning then kills every rank. Destroying it is local: rank 0 needs no
    # collective after fit.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
    if int(os.environ.get("RANK", os.environ.get("LOCAL_RANK", 0))) == 0 and "run_id" in result:
        Path(args.result).write_text(json.dumps(result, indent=2, default=str))


class TrainingStopped(RuntimeError):
    """The run is being stopped (SIGINT, SIGTERM): this training was ended, or not started."""


# The training processes this process runs now (process-group id -> the stop of the block that
# started it). Each runs in its own process group (so that a kill reaches every DDP rank),
# which also means a Ctrl-C at the terminal does not reach it: stoppable() does. The stop
# travels in a context variable, which Prefect copies into its task threads, so a stopped
# run's threads see it and a later run in the same process gets a stop of its own.
_LIVE: dict[int, threading.Event] = {}
_LIVE_LOCK = threading.Lock()
_STOP: contextvars.ContextVar[threading.Event | None] = contextvars.ContextVar("interestflow_stop", default=None)


@contextlib.contextmanager
def stoppable():
    """Run a block whose trainings a SIGINT or SIGTERM must end: on KeyboardInterrupt or
    Prefect's TerminationSignal (any BaseException that is not an Exception), the training
    process groups this block started are killed, and none of its tasks starts another."""
    stop = threading.Event()
    token = _STOP.set(stop)
    try:
        yield
    except BaseException as e:
        if not isinstance(e, Exception):  # an interrupt, not a failure
            stop.set()
            with _LIVE_LOCK:
                groups = [pgid for pgid, owner in _LIVE.items() if owner is stop]
            for pgid in groups:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pgid, signal.SIGKILL)
        raise
    finally:
        _STOP.reset(token)


class TrainingPruned(RuntimeError):
    """``launch``'s ``stop_if`` ended the training after an epoch (a search pruned its trial).
    Its last checkpoint stays in the lake, so the same training started again resumes there."""

    def __init__(self, message: str, epoch: int):
        super().__init__(message)
        self.epoch = epoch

    def __reduce__(self):  # Prefect persists task failures
        return (type(self), (str(self), self.epoch))


class TrainingFailed(RuntimeError):
    """The training process failed; ``killed``: it was ended by a signal (OOM killer, a node
    going away), which a retry from the last checkpoint can get past."""

    def __init__(self, message: str, returncode: int | None):
        super().__init__(message)
        self.returncode = returncode

    @property
    def killed(self) -> bool:
        return self.returncode is not None and self.returncode < 0

    def __reduce__(self):  # Prefect persists task failures: keep the return code through pickling
        return (type(self), (str(self), self.returncode))


def launch(
    request: dict,
    log: Callable[[str], None] | None = None,
    workdir: str | Path | None = None,
    timeout: float | None = None,
    stop_if: Callable[[dict], bool] | None = None,
) -> dict:
    """Run :func:`fit` in its own process (``torchrun`` across nodes) and return its result.

    A separate process is what lets Lightning's DDP re-execute the entry point, isolates
    memory, and lets a killed training be retried from its last lake checkpoint. ``log``
    receives one line per epoch while it trains; the child's stderr (Lightning's progress
    bar) goes through to this process's terminal when it has one. The request folder is
    removed when the training ends, successful or not (unless ``workdir`` is given).
    ``stop_if`` gets each epoch's figures (``epoch``, ``val_ndcg10``, ...) as they come; when
    it returns True the training is ended there and :class:`TrainingPruned` raised.
    """
    if workdir is None:
        with tempfile.TemporaryDirectory(prefix="interestflow-req-") as tmp:
            return launch(request, log, tmp, timeout, stop_if)
    cfg = TrainConfig(**request["train_config"])
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    req, res = workdir / "request.json", workdir / "result.json"
    req.write_text(json.dumps(request, default=str))
    res.unlink(missing_ok=True)
    args = ["--request", str(req), "--result", str(res)]
    if cfg.num_nodes > 1:  # one torchrun per node; rendezvous settings come from the environment
        module = "torch.distributed.run"
        args = [f"--nnodes={cfg.num_nodes}", f"--nproc-per-node={cfg.devices}", "-m", "components.training", *args]
    else:  # Lightning launches the other local processes itself
        module = "components.training"
    terminal = sys.stderr.isatty()
    env = {**os.environ, PROGRESS_ENV: "1" if terminal else "0", "PYTHONUNBUFFERED": "1"}
    stop = _STOP.get() or threading.Event()  # outside a stoppable block: never stopped
    with _LIVE_LOCK:
        if stop.is_set():
            raise TrainingStopped(f"training {request['family']}/{request['stage']} not started: the run is stopping")
        # Its own process group, so that a kill reaches every rank. One process trains forked
        # from an interpreter with torch and Lightning imported (seconds less per training);
        # DDP re-executes the entry point, so several devices or nodes start a real `python -m`.
        proc = preload.start(module, args, env, fork=cfg.devices == 1 and cfg.num_nodes == 1)
        _LIVE[proc.pid] = stop
    tail: collections.deque[str] = collections.deque(maxlen=30)
    pruned: list[int] = []  # the epoch after which stop_if ended the training

    def on_epoch(row: dict) -> None:
        if stop_if is not None and not pruned and stop_if(row):
            pruned.append(row["epoch"])
            with contextlib.suppress(ProcessLookupError):  # its checkpoint of this epoch is in the lake already
                os.killpg(proc.pid, signal.SIGKILL)

    readers = [
        threading.Thread(target=_epoch_lines, args=(proc.stdout, log or (lambda line: None), on_epoch), daemon=True),
        threading.Thread(target=_stderr, args=(proc.stderr, tail, terminal), daemon=True),
    ]
    for t in readers:
        t.start()
    try:
        proc.wait(timeout=timeout)
    except BaseException:  # a timeout, a cancelled task, Ctrl-C: the training must not outlive us
        with contextlib.suppress(ProcessLookupError):  # the whole group: Lightning's DDP ranks too
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        raise
    finally:
        with _LIVE_LOCK:
            _LIVE.pop(proc.pid, None)
        for t in readers:
            t.join(timeout=10)
    if pruned:
        where = f"training {request['family']}/{request['stage']}"
        raise TrainingPruned(f"{where} pruned after epoch {pruned[0]}", pruned[0])
    if stop.is_set() and proc.returncode != 0:
        raise TrainingStopped(f"training {request['family']}/{request['stage']} was stopped (the run is stopping)")
    if proc.returncode != 0 or not res.exists():
        raise TrainingFailed(
            f"training {request['family']}/{request['stage']}"
            f"{'' if request.get('fold') is None else ' fold ' + str(request['fold'])} "
            f"failed (exit {proc.returncode}):\n" + "\n".join(tail),
            proc.returncode,
        )
    return json.loads(res.read_text())


def epoch_line(e: dict) -> str:
    """One readable line per epoch: family, stage, fold, epoch, loss, validation NDCG@10, seconds."""
    where = f"{e['family']} " + (e["stage"] if e.get("fold") is None else f"fold {e['fold']}")
    val = f" val_ndcg10 {e['val_ndcg10']:.4f}" if "val_ndcg10" in e else ""
    loss = e.get("train_loss", float("nan"))
    return f"{where} epoch {e['epoch']}: train_loss {loss:.4f}{val} ({e['train_epoch_s']:.1f} s)"


def _epoch_lines(stream, log: Callable[[str], None], on_epoch: Callable[[dict], None] = lambda row: None) -> None:
    """The child's stdout: EPOCH lines become log lines (and ``on_epoch`` calls); anything
    else is passed through."""
    for raw in iter(stream.readline, b""):
        line = raw.decode(errors="replace").rstrip("\n")
        try:
            if line.startswith(EPOCH):
                row = json.loads(line[len(EPOCH) :])
                log(epoch_line(row))
                try:
                    on_epoch(row)
                except Exception as e:  # noqa: BLE001 - said, not swallowed as a garbled line; draining goes on
                    print(f"interestflow: the epoch callback failed ({type(e).__name__}: {e})", flush=True)
            elif line:
                print(line, flush=True)
        except Exception:  # noqa: BLE001 - a garbled line must not stop the draining (the child would block)
            print(line, flush=True)


def _stderr(stream, tail: collections.deque, terminal: bool) -> None:
    """The child's stderr: through to this terminal as it comes (progress bars redraw with \\r),
    and its last lines kept for the error message."""
    buf = b""
    for chunk in iter(lambda: stream.read1(4096), b""):
        if terminal:
            sys.stderr.buffer.write(chunk)
            sys.stderr.flush()
        buf = (buf + chunk)[-20000:]
        # Kept current as it comes: a rank that holds the pipe open must not cost us the tail.
        text = buf.decode(errors="replace").replace("\r", "\n")
        tail.clear()
        tail.extend(x for x in text.splitlines() if x.strip())


def summarize_folds(results) -> dict:
    """CV summary: per-metric mean and std over folds, and the final fit's epoch budget
    (the median of the folds' best epochs). ``results``: the folds' ModelResults."""
    from components.metrics import mean_std

    summary = mean_std([r.metrics for r in results])
    summary["epochs"] = int(np.median([r.best_epoch for r in results]))
    summary["folds_train_s"] = float(sum(r.train_s for r in results))
    return summary


def fold_metrics(results) -> list[dict]:
    """Each fold's validation figures, in fold order (for the per-fold CV plot)."""
    return [r.metrics for r in sorted(results, key=lambda r: r.fold)]


def checkpoint_uri(
    root: str, dataset: DatasetLayer, family: str, cfg: TrainConfig, stage: str, fold, epochs=None, warm=None
) -> str:
    """05_models/...: one place per distinct training (a final fit for another epoch count, or
    from another model's weights ``warm``, is another training)."""
    name = f"fold{fold}" if stage == "fold" else f"{stage}-e{epochs}"
    if warm:
        name += "-warm-" + hashlib.sha256(warm.encode()).hexdigest()[:8]
    # The whole family config is part of the key, defaults included: a training made before
    # a default changed (bert's popularity_adjust, say) is not reused. So is the protocol
    # version: a training evaluated under an older rule is not reused either.
    model = asdict(MODELS[family].Config(**cfg.model))
    return lake.model_uri(root, dataset, family, {**asdict(cfg), "model": model, "protocol": PROTOCOL_VERSION}, name)


def finished(ckpt_uri: str) -> dict | None:
    """The result of a training that already finished on the same data and config: its
    layer is complete and its MLflow run still exists. Then it is reused instead of trained
    again; otherwise None."""
    if not lake.is_complete(ckpt_uri) or not storage.exists(lake.file(ckpt_uri, RESULT)):
        return None
    result = storage.read_json(lake.file(ckpt_uri, RESULT))
    if not tracking.run_exists(result.get("run_id")) or (result["stage"] == "final" and not result.get("model_uri")):
        return None
    return result


if __name__ == "__main__":
    main()
