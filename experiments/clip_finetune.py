"""Finetune CLIP with λ-equitune / equitune / equizero on rot90 (or flip) images (paper Fig. 6).

λ-equitune (default), two stages as in the paper:

1. **stage 1** trains the λ network only (:class:`equijax.LambdaNet` on L2-normalised image
   features; SGD lr 0.33, momentum 0.9; paper: 2,000 steps of 32 images), CLIP frozen;
2. **stage 2** finetunes CLIP's image tower (SGD lr 5e-6; paper: 4,000 steps), λ frozen
   (paper) or trainable (``--lambda-trainable``, which the reproduction found better).

By default λ reads the backbone's own features (``lambda_equitune(..., has_aux=True)``), so no
second CLIP copy is held in memory; ``--lambda-features frozen`` keeps a frozen copy of the
pretrained image tower for λ instead. ``--method equitune`` finetunes the group average;
``--method equizero`` uses the straight-through estimator (forward: the chosen branch; gradient:
the equitune mean). The classifier is CLIP's zero-shot head (fixed). Training images
(train split) and test images (held-out test split) are transformed by a random group element
**per image**. Accuracy on the test set every ``--eval-every`` steps; orbax checkpoints of
all training state and the curves, resumed automatically from ``<out>/checkpoints`` when the
settings match (``--no-resume`` starts fresh).

    python -m experiments.clip_finetune --model ViT-B/32 --dataset cifar100      # paper setting
    python -m experiments.clip_finetune --model tiny-random --mock-data --quick    # offline smoke
    python -m experiments.clip_finetune --devices 8 --group-devices 2   # data-parallel, 8 devices
    python -m experiments.clip_finetune --distributed   # every host of a TPU VM pod / GPU cluster

Data parallelism (``--devices``, ``--group-devices``, ``--distributed``; see
:mod:`equijax.training.parallel`): the batch is split over the mesh's ``"batch"`` axis, the
parameters are replicated and the orbit is split over ``--group-devices`` devices; the results
equal a one-device run to round-off, and checkpoints resume on any device count.

Writes ``<out>/results.json``, ``results.md``, ``curves.png`` and ``lambda_<group>.msgpack``
(λ parameters, readable by ``experiments.clip_zeroshot --lambda-params <out>``).

"paper setting" = the paper's schedule (stage 1 SGD 0.33 / momentum 0.9, 2,000 × 32 images;
stage 2 SGD 5e-6, 4,000 steps, λ frozen). The λ net is :class:`equijax.LambdaNet` with its
default ReLU after the second layer; the reference net (no second ReLU) is
``LambdaNet(paper_compatible=True)`` (pinned by ``tests/test_paper_rows.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from equijax.models.clip import zoo
from equijax.models.tiny import write_tiny_random_clip
from experiments._cli import (
    OFFLINE_CLIP,
    RESUME_HINT,
    ArgumentParser,
    ScriptError,
    cli,
    require,
    require_tfds,
    setup_logging,
)

log = logging.getLogger("experiments.clip_finetune")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python -m experiments.clip_finetune",
        description=__doc__.split("\n")[0],
    )
    p.add_argument("--model", default="ViT-B/32", help="as in experiments.clip_zeroshot")
    p.add_argument("--dataset", default="cifar100", choices=["cifar100", "imagenet_v2"])
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--mock-data", action="store_true", help="tfds mock data (offline smoke run)")
    p.add_argument("--group", default="rot90", choices=["rot90", "flip", "rot180"])
    p.add_argument(
        "--method", default="lambda_equitune", choices=["lambda_equitune", "equitune", "equizero"]
    )
    p.add_argument("--lambda-features", default="own", choices=["own", "frozen"])
    p.add_argument("--lambda-trainable", action="store_true", help="train λ in stage 2 too")
    p.add_argument("--stage1-steps", type=int, default=None, help="default 2000 (quick 20)")
    p.add_argument("--stage2-steps", type=int, default=None, help="default 4000 (quick 20)")
    p.add_argument("--lr-lambda", type=float, default=0.33)
    p.add_argument("--lr-model", type=float, default=5e-6)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--eval-every", type=int, default=None, help="default 500 (quick 10)")
    p.add_argument("--eval-limit", type=int, default=None, help="test images per evaluation")
    p.add_argument("--train-limit", type=int, default=None, help="use the first N train images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--quick",
        action="store_true",
        help="stage steps 20/20, eval every 10 on 64 images, 256 train images",
    )
    p.add_argument("--no-resume", action="store_true",
                   help="start fresh; existing checkpoints are moved aside, not deleted")
    p.add_argument("--out", type=Path, default=Path("runs/clip_finetune"))
    p.add_argument("--devices", type=int, default=None,
                   help="train data-parallel on the first N devices (default: one device; "
                        "with --distributed or --group-devices: all devices)")
    p.add_argument("--group-devices", type=int, default=None,
                   help="split the group orbit over this many devices of the mesh")
    p.add_argument("--distributed", action="store_true",
                   help="multi-host: jax.distributed.initialize() first (TPU VM pods and SLURM "
                        "are detected; else set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, "
                        "JAX_PROCESS_ID)")
    a = p.parse_args(argv)
    q = a.quick
    a.stage1_steps = a.stage1_steps if a.stage1_steps is not None else (20 if q else 2000)
    a.stage2_steps = a.stage2_steps if a.stage2_steps is not None else (20 if q else 4000)
    a.eval_every = a.eval_every or (10 if q else 500)
    if q:
        a.eval_limit, a.train_limit = a.eval_limit or 64, a.train_limit or 256
    if a.method != "lambda_equitune":
        a.stage1_steps = 0
    if min(a.stage1_steps, a.stage2_steps) < 0 or a.eval_every < 1 or a.batch_size < 1:
        p.error("steps must be >= 0, --eval-every and --batch-size >= 1")
    if (a.devices is not None and a.devices < 1) or (
        a.group_devices is not None and a.group_devices < 1
    ):
        p.error("--devices and --group-devices must be >= 1")
    return a


def _load_clip(name: str, out: Path) -> tuple[Any, Any, str]:
    """:func:`equijax.models.clip.zoo.load`, plus ``tiny-random`` and one-line failures."""
    try:
        if name == "tiny-random":
            name = str(write_tiny_random_clip(out / "tiny_clip"))
        return zoo.load(name)
    except ImportError as err:
        raise ScriptError(f"--model {name} needs torch, transformers and open-clip-torch ({err})",
                          "pip install 'equijax[test]'") from err  # fmt: skip
    except OSError as err:
        raise ScriptError(f"cannot load CLIP {name!r}: not a local directory and the Hugging "
                          "Face hub is unreachable or has no such id",
                          OFFLINE_CLIP) from err  # fmt: skip


def _sources(args: argparse.Namespace, prep: Any) -> tuple[Any, Any]:
    from equijax.data import images

    def load(split: str, limit: int | None) -> Any:
        src = images.tfds_source(args.dataset, split, data_dir=args.data_dir)
        n = min(len(src), limit or len(src))
        if args.mock_data or n < len(src):  # materialise (mock data must be read in context)
            return images.ArraySource(
                *_materialise(src, n, prep), getattr(src, "class_names", None)
            )
        return src

    if args.mock_data:
        tfds = require("tensorflow_datasets", "pip install 'equijax[data]'", "--mock-data")
        with tfds.testing.mock_data(num_examples=max(args.train_limit or 64, 64)):
            return load(args.train_split, args.train_limit), load(args.test_split, args.eval_limit)
    require_tfds(args.dataset, args.data_dir, OFFLINE_CLIP)
    return load(args.train_split, args.train_limit), load(args.test_split, args.eval_limit)


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
    from equijax.training import resume_or_start

    args = parse_args(argv)
    from equijax.training import parallel

    parallel.initialize_distributed(args.distributed)  # before anything touches devices
    setup_logging("experiments")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    mesh = _mesh(args)
    model, params, tok_src = _load_clip(args.model, args.out)
    classifier, _ = zoo.zero_shot_head(model, params, tok_src, args.dataset)
    size = model.image_size

    def to_uint8_square(im: np.ndarray) -> np.ndarray:  # shortest side -> size, centre crop
        return preprocess.center_crop(preprocess.resize_shortest_edge(im, size), size)

    train_src, test_src = _sources(args, to_uint8_square)
    mean = jnp.asarray(preprocess.CLIP_MEAN)
    std = jnp.asarray(preprocess.CLIP_STD)

    def prep(x):  # uint8 (B, S, S, 3) -> CLIP-normalised float
        return (jnp.asarray(x, jnp.float32) / 255.0 - mean) / std

    def prep_batch(ims: list) -> np.ndarray:
        return np.stack([to_uint8_square(im) for im in ims])

    group = images.transform_group(args.group)
    lam_net = ej.LambdaNet()
    d = zoo.feature_dim(model, params)
    orbit = None  # the orbit split over --group-devices devices of the mesh
    if mesh is not None and args.group_devices:
        orbit = parallel.orbit_spec_sharding(mesh)
    frozen = params  # the pretrained tower, for --lambda-features frozen (no copy: immutable)

    def forward(state, x, rng, train):
        p = state["model"]

        def fn(z):
            feats = model.encode_image(p, z, normalize=True)
            logits = model.logit_scale(p) * feats @ classifier
            if args.lambda_features == "frozen":
                feats = jax.lax.stop_gradient(model.encode_image(frozen, z, normalize=True))
            return logits, feats

        if args.method == "equitune":
            return ej.equitune(lambda z: fn(z)[0], group, x, orbit_sharding=orbit)
        if args.method == "equizero":
            return ej.equizero(lambda z: fn(z)[0], group, x, straight_through=True,
                               loss=ej.proxies.neg_max_probability,
                               orbit_sharding=orbit)  # fmt: skip

        def weight_fn(f):
            return lam_net.apply({"params": state["lam"]}, f, deterministic=not train,
                                 rngs={"dropout": rng})  # fmt: skip

        return ej.lambda_equitune(fn, group, x, weight_fn=weight_fn, has_aux=True,
                                  orbit_sharding=orbit)  # fmt: skip

    def make_opt(stage: int) -> optax.GradientTransformation:
        lam_lr = args.lr_lambda if stage == 1 else (args.lr_model if args.lambda_trainable else 0)
        model_lr = 0.0 if stage == 1 else args.lr_model
        return optax.multi_transform(
            {"lam": optax.sgd(lam_lr, momentum=0.9) if lam_lr else optax.set_to_zero(),
             "model": optax.sgd(model_lr, momentum=0.9) if model_lr else optax.set_to_zero()},
            lambda t: {k: jax.tree.map(lambda _, k=k: k, v) for k, v in t.items()},
        )  # fmt: skip

    state = {"model": params, "lam": lam_net.init(jax.random.key(args.seed), jnp.zeros((1, d)))[
        "params"]}  # fmt: skip
    stages = [(1, args.stage1_steps), (2, args.stage2_steps)]
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
            xg, _ = images.random_transform(r1, prep(x), args.group)

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
        for x, y in images.batches(test_src, args.batch_size, preprocess=prep_batch):
            ok += int(correct(state, *put_batch(x, y, test_g[start : start + len(y)])))
            start += len(y)
        return 100.0 * ok / n_test

    # ---- checkpoints (equijax.training: settings fingerprint, history, fallback), resume
    total = sum(n for _, n in stages)
    # What shapes the result. stage2_steps is left out on purpose: stage 2 has a constant lr, so
    # a longer run continues a shorter one exactly (a checkpoint past the total is refused).
    settings = {"experiment": "clip_finetune", "model": args.model, "dataset": args.dataset,
                "train_split": args.train_split, "test_split": args.test_split,
                "data_dir": args.data_dir, "mock_data": args.mock_data, "group": args.group,
                "method": args.method, "lambda_features": args.lambda_features,
                "lambda_trainable": args.lambda_trainable, "stage1_steps": args.stage1_steps,
                "lr_lambda": args.lr_lambda, "lr_model": args.lr_model,
                "batch_size": args.batch_size, "eval_limit": args.eval_limit,
                "train_limit": args.train_limit, "seed": args.seed}  # fmt: skip

    def stage_of(step: int) -> int:  # the stage whose optimiser state a checkpoint holds
        return 1 if 0 < step <= args.stage1_steps else 2

    def target(step: int) -> dict:
        return {"state": state, "opt_state": opts[stage_of(step) if step else 1].init(state)}

    run = resume_or_start(args.out / "checkpoints", settings, target,
                          resume=not args.no_resume, hint=RESUME_HINT)  # fmt: skip
    start = run.step
    if start > total:
        run.close()
        raise ScriptError(f"{run.directory} holds step {start}, past the {total} steps asked for",
                          f"pass --stage2-steps >= {start - args.stage1_steps}, another --out, "
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

    from tqdm.auto import tqdm

    key = jax.random.key(args.seed)
    step_no = 0
    bar = tqdm(total=total, initial=start, desc=f"finetune {args.method}")
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
            steps_per_epoch = max(1, len(train_src) // args.batch_size)
            s = max(first, start)
            while s < last:
                epoch = s // steps_per_epoch
                it = images.batches(train_src, args.batch_size, shuffle=True, seed=args.seed,
                                    epoch=epoch, drop_remainder=len(train_src) >= args.batch_size,
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
                    if s % args.eval_every == 0 or s == last:
                        curve.append([s, evaluate(state)])
                        log.info("step %d (stage %d): test top-1 %.2f%%", s, stage, curve[-1][1])
                        run.save(s, {"state": state, "opt_state": opt_state}, history())
                        _write(args, curve, losses, t0, n_test)
                    if s >= last:
                        break
            resumed_opt = None
    bar.close()
    (args.out / f"lambda_{args.group}.msgpack").write_bytes(
        flax.serialization.msgpack_serialize(jax.device_get(state["lam"]))
    )
    return _write(args, curve, losses, t0, n_test)


def _mesh(args: argparse.Namespace) -> Any:
    """The ``("group", "batch")`` device mesh, or ``None`` for the default one-device run."""
    if args.devices is None and args.group_devices is None and not args.distributed:
        return None
    import jax

    from equijax.training import parallel

    try:
        mesh = parallel.data_mesh(args.devices, args.group_devices or 1)
    except ValueError as e:
        raise ScriptError(str(e), "pass other --devices / --group-devices") from None
    if args.batch_size % mesh.shape["batch"]:
        raise ScriptError(f"--batch-size {args.batch_size} is not divisible by the mesh's "
                          f"{mesh.shape['batch']} batch devices",
                          "choose --batch-size, --devices and --group-devices to fit")  # fmt: skip
    log.info("data-parallel over %s (%d process(es))", dict(mesh.shape), jax.process_count())
    return mesh


def _write(args: argparse.Namespace, curve: list, losses: list, t0: float, n_test: int) -> dict:
    res = {"model": args.model, "dataset": args.dataset, "group": args.group,
           "method": args.method, "lambda_features": args.lambda_features,
           "lambda_trainable_stage2": args.lambda_trainable, "stage1_steps": args.stage1_steps,
           "stage2_steps": args.stage2_steps, "batch_size": args.batch_size,
           "n_test": n_test, "curve": curve, "loss": losses,
           "wall_seconds": round(time.time() - t0, 1)}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    lines = [f"# CLIP finetuning: {args.model}, {args.method}, {args.group}-{args.dataset}", "",
             "| step | test top-1 % |", "| ---: | ---: |"]  # fmt: skip
    lines += [f"| {s} | {a:.2f} |" for s, a in curve]
    (args.out / "results.md").write_text("\n".join(lines) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
    c = np.asarray(curve)
    ax[0].plot(c[:, 0], c[:, 1], marker="o")
    if args.stage1_steps:
        ax[0].axvline(args.stage1_steps, color="k", ls="--", lw=1, label="stage 1 | stage 2")
        ax[0].legend(fontsize=8)
    ax[0].set_xlabel("step")
    ax[0].set_ylabel(f"test top-1 % ({n_test} images)")
    if losses:
        lo = np.asarray(losses)
        ax[1].plot(lo[:, 0], lo[:, 1])
    ax[1].set_xlabel("step")
    ax[1].set_ylabel("train loss")
    fig.suptitle(f"{args.model} {args.method} on {args.group}-{args.dataset}")
    fig.tight_layout()
    fig.savefig(args.out / "curves.png", dpi=120)
    plt.close(fig)
    return res


if __name__ == "__main__":
    main()
