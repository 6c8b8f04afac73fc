"""Finetune CLIP with λ-equitune / equitune / equizero on rot90 (or flip) images (paper Fig. 6).

λ-equitune (default), two stages as in the paper:

1. **stage 1** trains the λ network only (:class:`equijax.LambdaNet` on L2-normalised image
   features; SGD lr 0.33, momentum 0.9; paper: 2,000 steps of 32 images), CLIP frozen;
2. **stage 2** finetunes CLIP's image tower (SGD lr 5e-6; paper: 4,000 steps), λ frozen
   (paper) or trainable (``--lambda-trainable``, which the reproduction found better).

By default λ reads the backbone's own features (``lambda_equitune(..., has_aux=True)``), so no
second CLIP copy is held in memory; ``--lambda-features frozen`` keeps a frozen copy of the
pretrained image tower for λ instead. ``--method finetuned_equitune`` finetunes the group
average; ``--method finetuned_equizero`` uses the straight-through estimator (forward: the chosen
branch; gradient: the equitune mean); the default is ``finetuned_lambda_equitune`` (the old
spellings ``lambda_equitune`` / ``equitune`` / ``equizero`` still work and warn). The
classifier is CLIP's zero-shot head (fixed). Training images (train split) and test images
(held-out test split) are transformed by a random group element **per image**. Accuracy on the
test set every ``--eval-every`` steps; orbax checkpoints of all training state and the curves,
resumed automatically from ``<out>/checkpoints`` when the settings match (``--no-resume``
starts fresh).

    python -m experiments.clip_finetune --model ViT-B/32 --dataset cifar100      # paper setting
    python -m experiments.clip_finetune --model tiny-random --mock-data --quick    # offline smoke
    python -m experiments.clip_finetune --devices 8 --group-devices 2   # data-parallel, 8 devices
    python -m experiments.clip_finetune --distributed   # every host of a TPU VM pod / GPU cluster
    python -m experiments.clip_finetune --coordinator 10.0.0.1:1234 --num-processes 2 --process-id 0

Data parallelism (``--devices``, ``--group-devices``, ``--distributed``; see
:mod:`equijax.training.parallel`): the batch is split over the mesh's ``"batch"`` axis, the
parameters are replicated and the orbit is split over ``--group-devices`` devices; the results
equal a one-device run to round-off, and checkpoints resume on any device count. With several
processes (``--distributed`` or the explicit ``--coordinator`` flags) every process reads the
same batch stream and feeds only its devices' rows, the test set is split the same way, and
only process 0 writes the files below and shows the progress bar.

Settings: :class:`Config` with presets ``paper`` (the default) and ``quick`` (``--quick``: 20 + 20
steps on 256 train images, evaluated every 10 steps on 64 test images); ``--help`` lists each
setting's value under each preset.

Writes ``<out>/results.json``, ``results.md``, ``curves.png`` and ``lambda_<group>.msgpack``
(λ parameters, readable by ``experiments.clip_zeroshot --lambda-params <out>``).

"paper setting" = the paper's schedule (stage 1 SGD 0.33 / momentum 0.9, 2,000 × 32 images;
stage 2 SGD 5e-6, 4,000 steps, λ frozen). The λ net is :class:`equijax.LambdaNet` with its
default ReLU after the second layer; the reference net (no second ReLU) is
``LambdaNet(paper_compatible=True)`` (pinned by ``tests/test_paper_rows.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import _config
from experiments._cli import (
    OFFLINE_CLIP,
    RESUME_HINT,
    ScriptError,
    add_distributed_flags,
    check_distributed_flags,
    cli,
    is_main,
    load_clip,
    progress,
    setup_logging,
    start_distributed,
    tfds_splits,
)
from experiments._config import check_choice, new_spelling, setting

METHODS = ("finetuned_lambda_equitune", "finetuned_equitune", "finetuned_equizero")
LABELS = {
    "finetuned_lambda_equitune": "λ-equitune, finetuned",
    "finetuned_equitune": "Equitune, finetuned",
    "finetuned_equizero": "Equizero, finetuned (straight-through)",
}
OLD_METHODS = {m.removeprefix("finetuned_"): m for m in METHODS}
DATASETS = ("cifar100", "imagenet_v2")
GROUPS = ("rot90", "flip", "rot180")
LAMBDA_FEATURES = ("own", "frozen")
#: Config fields left out of the checkpoint fingerprint: stage 2 has a constant lr, so a longer
#: run continues a shorter one exactly (a checkpoint past the total is refused); evaluation
#: points do not change the training.
NOT_FINGERPRINTED = ("stage2_steps", "eval_every")
log = logging.getLogger("experiments.clip_finetune")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings that shape the results of one run (frozen; presets :meth:`paper`, :meth:`quick`).

    ``stage1_steps`` is 0 unless ``method`` is ``finetuned_lambda_equitune`` (only λ-equitune
    has a λ stage).
    """

    model: str = setting("ViT-B/32",
        "as in experiments.clip_zeroshot (a paper name, hub id, directory or tiny-random)")
    dataset: str = setting("cifar100", f"one of {DATASETS}")
    train_split: str = setting("train", "tfds training split")
    test_split: str = setting("test", "tfds test split")
    group: str = setting("rot90", f"one of {GROUPS}")
    method: str = setting("finetuned_lambda_equitune", f"one of {METHODS}")
    lambda_features: str = setting("own",
        "λ reads the finetuned tower's own features, or a frozen pretrained copy's")
    lambda_trainable: bool = setting(False, "train λ in stage 2 too")
    stage1_steps: int = setting(2000, "stage 1 steps (λ only, CLIP frozen)")
    stage2_steps: int = setting(4000, "stage 2 steps (CLIP image tower)")
    lr_lambda: float = setting(0.33, "stage 1 SGD lr")
    lr_model: float = setting(5e-6, "stage 2 SGD lr")
    batch_size: int = setting(32, "images per step")
    eval_every: int = setting(500, "steps between test evaluations")
    eval_limit: int | None = setting(None, "test images per evaluation (None: all)")
    train_limit: int | None = setting(None, "use the first N train images (None: all)")
    seed: int = setting(0, "seed of λ's init, data order, transformations")

    def __post_init__(self) -> None:
        for name, allowed in (("dataset", DATASETS), ("group", GROUPS), ("method", METHODS),
                              ("lambda_features", LAMBDA_FEATURES)):  # fmt: skip
            check_choice(name, getattr(self, name), allowed)
        if self.method != "finetuned_lambda_equitune":
            object.__setattr__(self, "stage1_steps", 0)
        if min(self.stage1_steps, self.stage2_steps) < 0 or self.eval_every < 1 or (
            self.batch_size < 1
        ):
            raise ValueError("steps must be >= 0, --eval-every and --batch-size >= 1")

    @classmethod
    def paper(cls, **overrides: Any) -> Config:
        """The paper's schedule: 2,000 λ steps (SGD 0.33), 4,000 CLIP steps (SGD 5e-6)."""
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> Config:
        """20 + 20 steps on 256 train images, evaluated every 10 steps on 64 test images."""
        base = dict(stage1_steps=20, stage2_steps=20, eval_every=10, eval_limit=64,
                    train_limit=256)  # fmt: skip
        return cls(**{**base, **overrides})


def fingerprint_settings(cfg: Config, data_dir: Any, mock_data: bool) -> dict:
    """The settings that shape the result, for the checkpoint fingerprint.

    Every :class:`Config` field but :data:`NOT_FINGERPRINTED`, and where the data come from.
    """
    fields = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in NOT_FINGERPRINTED}
    return {"experiment": "clip_finetune", **fields, "data_dir": data_dir, "mock_data": mock_data}


def _plain_flags(p: argparse.ArgumentParser) -> None:
    """The flags that are not config fields: data, output, devices."""
    p.add_argument("--data-dir", default=None, help="tfds data_dir")
    p.add_argument("--mock-data", action="store_true", help="tfds mock data (offline smoke run)")
    p.add_argument("--no-resume", action="store_true",
                   help="start fresh; existing checkpoints are moved aside, not deleted")
    p.add_argument("--out", type=Path, default=Path("runs/clip_finetune"))
    p.add_argument("--devices", type=int, default=None,
                   help="train data-parallel on the first N devices (default: one device; "
                        "with --distributed or --group-devices: all devices)")
    p.add_argument("--group-devices", type=int, default=None,
                   help="split the group orbit over this many devices of the mesh")
    add_distributed_flags(p)


def _prepare(a: argparse.Namespace) -> dict:
    """Old method spellings and the device counts, checked before the config is built."""
    if a.method is not None:
        a.method = new_spelling(a.method, OLD_METHODS, "--method")
    if (a.devices is not None and a.devices < 1) or (
        a.group_devices is not None and a.group_devices < 1
    ):
        raise ValueError("--devices and --group-devices must be >= 1")
    check_distributed_flags(a)
    return {}


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``(config, other flags)``: the preset with the flags' overrides, and the run's plumbing."""
    return _config.parse_config(
        Config, argv, prog="python -m experiments.clip_finetune",
        description=__doc__.split("\n")[0], plain=_plain_flags, prepare=_prepare,
    )  # fmt: skip


def _sources(cfg: Config, flags: argparse.Namespace, prep: Any) -> tuple[Any, Any]:
    from equijax.data import images

    def load(split: str, limit: int | None) -> Any:
        src = images.tfds_source(cfg.dataset, split, data_dir=flags.data_dir)
        n = min(len(src), limit or len(src))
        if flags.mock_data or n < len(src):  # materialise (mock data must be read in context)
            return images.ArraySource(
                *_materialise(src, n, prep), getattr(src, "class_names", None)
            )
        return src

    mock = max(cfg.train_limit or 64, 64) if flags.mock_data else None
    splits = ((cfg.train_split, cfg.train_limit), (cfg.test_split, cfg.eval_limit))
    train, test = tfds_splits(cfg.dataset, load, splits,
                              data_dir=flags.data_dir, offline_fix=OFFLINE_CLIP,
                              mock_examples=mock)  # fmt: skip
    return train, test


def _materialise(src: Any, n: int, prep: Any) -> tuple[np.ndarray, np.ndarray]:
    """Resize/crop (uint8) so examples of any size can be held as one array."""
    items = [src[i] for i in range(n)]
    ims = np.stack([prep(im) for im, _ in items])
    return ims, np.asarray([lab for _, lab in items])


@cli("python -m experiments.clip_finetune")
def main(argv: list[str] | None = None) -> dict:
    import flax.serialization
    import jax
    import jax.numpy as jnp
    import optax

    import equijax as ej
    from equijax.data import images
    from equijax.models import preprocess
    from equijax.models.clip import zoo
    from equijax.training import resume_or_start

    cfg, flags = parse_args(argv)
    from equijax.training import parallel

    start_distributed(flags)  # before anything touches devices
    setup_logging("experiments")
    flags.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    mesh = _mesh(cfg, flags)
    model, params, tok_src = load_clip(cfg.model, flags.out)
    classifier, _ = zoo.zero_shot_head(model, params, tok_src, cfg.dataset)
    size = model.image_size

    def to_uint8_square(im: np.ndarray) -> np.ndarray:  # shortest side -> size, centre crop
        return preprocess.center_crop(preprocess.resize_shortest_edge(im, size), size)

    train_src, test_src = _sources(cfg, flags, to_uint8_square)
    mean = jnp.asarray(preprocess.CLIP_MEAN)
    std = jnp.asarray(preprocess.CLIP_STD)

    def prep(x):  # uint8 (B, S, S, 3) -> CLIP-normalised float
        return (jnp.asarray(x, jnp.float32) / 255.0 - mean) / std

    def prep_batch(ims: list) -> np.ndarray:
        return np.stack([to_uint8_square(im) for im in ims])

    group = images.transform_group(cfg.group)
    lam_net = ej.LambdaNet()
    d = zoo.feature_dim(model, params)
    orbit = None  # the orbit split over --group-devices devices of the mesh
    if mesh is not None and flags.group_devices:
        orbit = parallel.orbit_spec_sharding(mesh)
    frozen = params  # the pretrained tower, for --lambda-features frozen (no copy: immutable)

    def forward(state, x, rng, train):
        p = state["model"]

        def fn(z):
            feats = model.encode_image(p, z, normalize=True)
            logits = model.logit_scale(p) * feats @ classifier
            if cfg.lambda_features == "frozen":
                feats = jax.lax.stop_gradient(model.encode_image(frozen, z, normalize=True))
            return logits, feats

        if cfg.method == "finetuned_equitune":
            return ej.equitune(lambda z: fn(z)[0], group, x, orbit_sharding=orbit)
        if cfg.method == "finetuned_equizero":
            return ej.equizero(lambda z: fn(z)[0], group, x, straight_through=True,
                               loss=ej.proxies.neg_max_probability,
                               orbit_sharding=orbit)  # fmt: skip

        def weight_fn(f):
            return lam_net.apply({"params": state["lam"]}, f, deterministic=not train,
                                 rngs={"dropout": rng})  # fmt: skip

        return ej.lambda_equitune(fn, group, x, weight_fn=weight_fn, has_aux=True,
                                  orbit_sharding=orbit)  # fmt: skip

    def make_opt(stage: int) -> optax.GradientTransformation:
        lam_lr = cfg.lr_lambda if stage == 1 else (cfg.lr_model if cfg.lambda_trainable else 0)
        model_lr = 0.0 if stage == 1 else cfg.lr_model
        return optax.multi_transform(
            {"lam": optax.sgd(lam_lr, momentum=0.9) if lam_lr else optax.set_to_zero(),
             "model": optax.sgd(model_lr, momentum=0.9) if model_lr else optax.set_to_zero()},
            lambda t: {k: jax.tree.map(lambda _, k=k: k, v) for k, v in t.items()},
        )  # fmt: skip

    state = {"model": params, "lam": lam_net.init(jax.random.key(cfg.seed), jnp.zeros((1, d)))[
        "params"]}  # fmt: skip
    stages = [(1, cfg.stage1_steps), (2, cfg.stage2_steps)]
    opts = {s: make_opt(s) for s, _ in stages}

    # One device (default): plain jit, arrays as they come. A mesh: batches split over "batch",
    # state replicated, outputs replicated (equijax.training.parallel).
    jit = jax.jit if mesh is None else (lambda f: parallel.data_parallel_jit(f, mesh))

    def put_batch(*arrays):
        if mesh is None:
            return arrays
        if len(arrays[0]) % mesh.shape["batch"]:  # a short last test batch: replicate it
            return parallel.replicate(arrays, mesh)
        return parallel.put_global_batch(arrays, mesh)

    def put_state(tree):
        return tree if mesh is None else parallel.replicate(tree, mesh)

    def make_step(stage: int):
        opt = opts[stage]

        @jit
        def step(state, opt_state, x, y, rng):
            r1, r2 = jax.random.split(rng)
            xg, _ = images.random_transform(r1, prep(x), cfg.group)

            def loss(s):
                logits = forward(s, xg, r2, True)
                return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

            value, grads = jax.value_and_grad(loss)(state)
            updates, opt_state = opt.update(grads, opt_state, state)
            return optax.apply_updates(state, updates), opt_state, value

        return step

    @jit
    def correct(state, x, y, g):
        xg = images.apply_per_image(group, g, prep(x))
        return jnp.sum(jnp.argmax(forward(state, xg, jax.random.key(0), False), -1) == y)

    n_test = len(test_src)
    test_g = np.asarray(jax.random.randint(jax.random.key(1234), (n_test,), 0, group.order))

    def evaluate(state) -> float:
        ok, start = 0, 0
        for x, y in images.batches(test_src, cfg.batch_size, preprocess=prep_batch):
            ok += int(correct(state, *put_batch(x, y, test_g[start : start + len(y)])))
            start += len(y)
        return 100.0 * ok / n_test

    # ---- checkpoints (equijax.training: settings fingerprint, history, fallback), resume
    total = sum(n for _, n in stages)
    settings = fingerprint_settings(cfg, flags.data_dir, flags.mock_data)

    def stage_of(step: int) -> int:  # the stage whose optimiser state a checkpoint holds
        return 1 if 0 < step <= cfg.stage1_steps else 2

    def target(step: int) -> dict:  # on the run's (global) shardings: restored onto them
        opt = opts[stage_of(step) if step else 1]
        return put_state({"state": state, "opt_state": opt.init(state)})

    run = resume_or_start(flags.out / "checkpoints", settings, target,
                          resume=not flags.no_resume, hint=RESUME_HINT)  # fmt: skip
    start = run.step
    if start > total:
        run.close()
        raise ScriptError(f"{run.directory} holds step {start}, past the {total} steps asked for",
                          f"pass --stage2-steps >= {start - cfg.stage1_steps}, another --out, "
                          "or --no-resume")  # fmt: skip
    state = put_state(run.state["state"])
    resumed_opt = put_state(run.state["opt_state"]) if run.resumed else None
    curve = [[h["step"], h["value"]] for h in run.history if h["kind"] == "eval"]
    losses = [[h["step"], h["value"]] for h in run.history if h["kind"] == "loss"]
    if not curve:
        curve.append([0, evaluate(state)])
        log.info("step 0: test top-1 %.2f%%", curve[-1][1])

    def history() -> list[dict]:
        return [{"kind": "eval", "step": s, "value": v} for s, v in curve] + [
            {"kind": "loss", "step": s, "value": v} for s, v in losses]  # fmt: skip

    key = jax.random.key(cfg.seed)
    step_no = 0
    bar = progress(total=total, initial=start, desc=f"finetune {cfg.method}")
    with run:
        for stage, n_steps in stages:
            first, last = step_no, step_no + n_steps
            step_no = last
            if n_steps == 0 or start >= last:
                continue
            train_step = make_step(stage)
            # A checkpoint inside this stage carries its optimiser state; at a stage boundary
            # the next stage starts with a fresh one, as in an uninterrupted run.
            opt_state = resumed_opt if (resumed_opt is not None and first < start) else (
                put_state(opts[stage].init(state)))  # fmt: skip
            steps_per_epoch = max(1, len(train_src) // cfg.batch_size)
            s = max(first, start)
            while s < last:
                epoch = s // steps_per_epoch
                it = images.batches(train_src, cfg.batch_size, shuffle=True, seed=cfg.seed,
                                    epoch=epoch, drop_remainder=len(train_src) >= cfg.batch_size,
                                    preprocess=prep_batch)  # fmt: skip
                for _ in range(s % steps_per_epoch):  # skip to the resume position
                    next(it, None)
                for x, y in it:
                    rng = put_state(jax.random.fold_in(key, s))
                    state, opt_state, loss = train_step(state, opt_state, *put_batch(x, y), rng)
                    s += 1
                    bar.update(1)
                    if s % 10 == 0 or s == last:
                        losses.append([s, float(loss)])
                    if s % cfg.eval_every == 0 or s == last:
                        curve.append([s, evaluate(state)])
                        log.info("step %d (stage %d): test top-1 %.2f%%", s, stage, curve[-1][1])
                        run.save(s, {"state": state, "opt_state": opt_state}, history())
                        _write(cfg, flags.out, curve, losses, t0, n_test, is_main())
                    if s >= last:
                        break
            resumed_opt = None
    bar.close()
    if is_main():  # one writer; replicated values are readable on every process
        (flags.out / f"lambda_{cfg.group}.msgpack").write_bytes(
            flax.serialization.msgpack_serialize(parallel.gather(state["lam"]))
        )
    return _write(cfg, flags.out, curve, losses, t0, n_test, is_main())


def _mesh(cfg: Config, flags: argparse.Namespace) -> Any:
    """The ``("group", "batch")`` device mesh, or ``None`` for the default one-device run."""
    if flags.devices is None and flags.group_devices is None and not flags.distributed:
        return None
    import jax

    from equijax.training import parallel

    try:
        mesh = parallel.data_mesh(flags.devices, flags.group_devices or 1)
    except ValueError as e:
        raise ScriptError(str(e), "pass other --devices / --group-devices") from None
    if cfg.batch_size % mesh.shape["batch"]:
        raise ScriptError(f"--batch-size {cfg.batch_size} is not divisible by the mesh's "
                          f"{mesh.shape['batch']} batch devices",
                          "choose --batch-size, --devices and --group-devices to fit")  # fmt: skip
    log.info("data-parallel over %s (%d process(es))", dict(mesh.shape), jax.process_count())
    return mesh


def _write(cfg: Config, out: Path, curve: list, losses: list, t0: float, n_test: int,
           write: bool = True) -> dict:
    """The results dict; written (json, markdown, figure) only when ``write`` (process 0)."""
    res = {"model": cfg.model, "dataset": cfg.dataset, "group": cfg.group,
           "method": cfg.method, "lambda_features": cfg.lambda_features,
           "lambda_trainable_stage2": cfg.lambda_trainable, "stage1_steps": cfg.stage1_steps,
           "stage2_steps": cfg.stage2_steps, "batch_size": cfg.batch_size,
           "n_test": n_test, "curve": curve, "loss": losses, "config": dataclasses.asdict(cfg),
           "wall_seconds": round(time.time() - t0, 1)}  # fmt: skip
    if not write:
        return res
    (out / "results.json").write_text(json.dumps(res, indent=1))
    lines = [f"# CLIP finetuning: {cfg.model}, {LABELS[cfg.method]}, {cfg.group}-{cfg.dataset}", "",
             "| step | test top-1 % |", "| ---: | ---: |"]  # fmt: skip
    lines += [f"| {s} | {a:.2f} |" for s, a in curve]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    c = np.asarray(curve)
    ax[0].plot(c[:, 0], c[:, 1], marker="o")
    if cfg.stage1_steps:
        ax[0].axvline(cfg.stage1_steps, color="k", ls="--", lw=1, label="stage 1 | stage 2")
        ax[0].legend(fontsize=8)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel(f"test top-1 % ({n_test} images)")
    if losses:
        lo = np.asarray(losses)
        ax[1].plot(lo[:, 0], lo[:, 1])
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("train loss")
    fig.suptitle(f"{cfg.model} {LABELS[cfg.method]} on {cfg.group}-{cfg.dataset}")
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=120)
    plt.close(fig)
    return res


if __name__ == "__main__":
    main()
