"""CLIP zero-shot under rot90 / flip: pretrained vs equitune vs equizero vs λ-equitune.

Paper Fig. 3–4 (Basu et al. 2023): every test image is transformed by its own random group
element (a quarter turn for ``rot90``, a true left-right mirror for ``flip``; the reference
code's "flip" was a 180° rotation, available here as ``rot180``), then classified by the CLIP
zero-shot head (per class: templates encoded, L2-normalised, averaged, L2-normalised):

* ``pretrained`` — CLIP as is, on the transformed image;
* ``equitune`` — mean over the group of the logits of g·x;
* ``equizero`` — the logits of the g·x with the lowest proxy loss (``--proxy``, an
  :mod:`equijax.proxies` name; default ``neg_max_probability``, i.e. the most confident branch);
* ``lambda_equitune`` — λ-weighted mean with a λ network trained by
  ``python -m experiments.clip_finetune`` (pass ``--lambda-params``; skipped otherwise).

Also reports the pretrained model's accuracy on untransformed images. Top-1 and top-5, batched
and jitted.

With network access (Hugging Face hub weights + a prepared tfds data_dir)::

    python -m experiments.clip_zeroshot --model ViT-B/32 --dataset cifar100
    python -m experiments.clip_zeroshot --model RN50 --dataset imagenet_v2 --groups rot90,flip

Offline smoke run on a tiny random CLIP (written with transformers + torch into ``<out>``)::

    python -m experiments.clip_zeroshot --model tiny-random --mock-data --limit 64

Settings: :class:`Config` with presets ``paper`` (every test image; the default) and ``quick``
(``--quick``: the first 512); ``--help`` lists each setting's value under each preset. Old
spellings (``--methods vanilla``, ``--proxy maxprob`` / ``maxscore``) still work and warn with
the new one.

Writes ``<out>/results.json``, ``results.md`` and ``accuracy.png``.

Several processes (``--distributed`` with jax's detection, or ``--coordinator HOST:PORT
--num-processes N --process-id I``): one mesh over all devices, every process feeds and
evaluates only its devices' rows of each batch, the counts are summed once at the end, and only
process 0 writes the files.

Reference behaviour (pinned by ``tests/test_paper_rows.py``): the zero-shot head is CLIP's
(each template embedding L2-normalised, averaged, re-normalised; 18 CIFAR100 / 80 ImageNet
templates); ``--proxy neg_max_probability`` keeps the *most* confident branch.
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
from experiments._config import check_choice, new_spelling, setting, split_commas

DATASETS = ("cifar100", "imagenet_v2")
TEMPLATE_SETS = ("cifar100", "imagenet")
GROUPS = ("rot90", "flip", "rot180")
METHODS = ("pretrained", "equitune", "equizero", "lambda_equitune")
LABELS = {
    "pretrained": "Pretrained CLIP", "equitune": "Equitune", "equizero": "Equizero",
    "lambda_equitune": "λ-equitune",
}  # fmt: skip
#: ``--proxy`` values: the names of the :mod:`equijax.proxies` functions.
PROXIES = ("neg_max_probability", "entropy", "neg_max_score")
OLD_METHODS = {"vanilla": "pretrained"}
OLD_PROXIES = {"maxprob": "neg_max_probability", "maxscore": "neg_max_score"}
log = logging.getLogger("experiments.clip_zeroshot")


@dataclasses.dataclass(frozen=True)
class Config:
    """Settings that shape the results of one run (frozen; presets :meth:`paper`, :meth:`quick`)."""

    model: str = setting("ViT-B/32",
        "ViT-B/32, ViT-B/16, RN50, RN101, a HF/OpenCLIP hub id or directory, or tiny-random")
    dataset: str = setting("cifar100", f"one of {DATASETS}")
    templates: str | None = setting(None, f"template set {TEMPLATE_SETS} (None: the dataset's own)")
    groups: tuple[str, ...] = setting(("rot90", "flip"),
        f"test-time transformation groups, from {GROUPS} (space or comma separated)")
    methods: tuple[str, ...] = setting(METHODS,
        f"methods, from {METHODS} (lambda_equitune needs --lambda-params)")
    proxy: str = setting("neg_max_probability",
        f"equizero proxy loss (equijax.proxies), one of {PROXIES}")
    batch_size: int = setting(32, "images per batch")
    limit: int | None = setting(None, "evaluate the first N test images (None: all)")
    seed: int = setting(0, "seed of the per-image transformations")

    def __post_init__(self) -> None:
        object.__setattr__(self, "dataset", self.dataset.lower().replace("-", "_"))
        check_choice("dataset", self.dataset, DATASETS)
        if self.templates is not None:
            check_choice("templates", self.templates, TEMPLATE_SETS)
        check_choice("groups", self.groups, GROUPS)
        check_choice("methods", self.methods, METHODS)
        check_choice("proxy", self.proxy, PROXIES)
        if self.batch_size < 1:
            raise ValueError("batch_size (--batch-size) must be >= 1")

    @classmethod
    def paper(cls, **overrides: Any) -> Config:
        """The paper's evaluation: every test image."""
        return cls(**overrides)

    @classmethod
    def quick(cls, **overrides: Any) -> Config:
        """The first 512 test images."""
        return cls(**{"limit": 512, **overrides})


# ----------------------------------------------------------------------------- helpers


def preprocess_fn(model: Any):
    """uint8 images (list, any sizes) -> CLIP-normalised NHWC float batch at the model size."""
    from equijax.models import preprocess

    return lambda ims: preprocess.clip_preprocess(ims, size=model.image_size)


def logits_fns(model: Any, group: Any, proxy: str, sharding: Any = None):
    """Per-method pure functions ``(params, classifier, lam_params, x) -> logits``.

    ``proxy`` names the :mod:`equijax.proxies` function of equizero (one of :data:`PROXIES`).
    ``sharding`` (from :func:`equijax.orbit_sharding`) spreads each orbit ``(|G|, B, ...)`` over a
    ``("group", "batch")`` device mesh; ``None`` keeps everything on the default device.
    """
    import equijax as ej

    if proxy not in PROXIES:
        raise ValueError(f"proxy={proxy!r} must be one of {PROXIES}")
    loss = getattr(ej.proxies, proxy)
    lam = ej.LambdaNet()

    def fn_aux(params, classifier):
        def fn(x):
            feats = model.encode_image(params, x, normalize=True)
            return model.logit_scale(params) * feats @ classifier, feats

        return fn

    def pretrained(params, classifier, lam_params, x):
        return fn_aux(params, classifier)(x)[0]

    def equitune(params, classifier, lam_params, x):
        return ej.equitune(lambda z: fn_aux(params, classifier)(z)[0], group, x,
                           orbit_sharding=sharding)

    def equizero(params, classifier, lam_params, x):
        return ej.equizero(lambda z: fn_aux(params, classifier)(z)[0], group, x, loss=loss,
                           orbit_sharding=sharding)

    def lambda_equitune(params, classifier, lam_params, x):
        return ej.lambda_equitune(
            fn_aux(params, classifier), group, x, has_aux=True,
            weight_fn=lambda f: lam.apply({"params": lam_params}, f), orbit_sharding=sharding,
        )  # fmt: skip

    return {"pretrained": pretrained, "equitune": equitune, "equizero": equizero,
            "lambda_equitune": lambda_equitune}  # fmt: skip


def topk_correct(logits: Any, labels: Any) -> tuple[int, int]:
    logits, labels = np.asarray(logits), np.asarray(labels)
    top5 = np.argsort(-logits, axis=-1)[:, :5]
    return int(np.sum(top5[:, 0] == labels)), int(np.sum(np.any(top5 == labels[:, None], -1)))


def _pad(x: np.ndarray, size: int) -> np.ndarray:
    if len(x) >= size:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - len(x), axis=0)])


def _add(counts: dict, method: str, logits: Any, labels: Any) -> None:
    top1, top5 = topk_correct(np.asarray(logits)[: len(labels)], labels)
    counts[method] = [counts[method][0] + top1, counts[method][1] + top5]


# ----------------------------------------------------------------------------- script


def _plain_flags(p: argparse.ArgumentParser) -> None:
    """The flags that are not config fields: data, λ parameters, devices, output."""
    p.add_argument("--data-dir", default=None, help="tfds data_dir")
    p.add_argument(
        "--lambda-params",
        type=Path,
        default=None,
        help="λ parameters written by experiments.clip_finetune (lambda_<group>.msgpack)",
    )
    p.add_argument(
        "--group-devices",
        type=int,
        default=None,
        help="shard each orbit over all devices: this many along the group axis, the rest along "
        "the batch (must divide the device count; the batch size must divide by the rest)",
    )
    p.add_argument(
        "--mock-data",
        action="store_true",
        help="use tfds.testing.mock_data (random images; offline smoke runs only)",
    )
    p.add_argument("--out", type=Path, default=Path("runs/clip_zeroshot"))
    add_distributed_flags(p)


def _prepare(a: argparse.Namespace) -> dict:
    """Comma lists, old method / proxy spellings and the device count, before the config."""
    a.groups = split_commas(a.groups)
    if a.methods is not None:
        a.methods = tuple(new_spelling(m, OLD_METHODS, "--methods")
                          for m in split_commas(a.methods))  # fmt: skip
    if a.proxy is not None:
        a.proxy = new_spelling(a.proxy, OLD_PROXIES, "--proxy")
    if a.group_devices is not None and a.group_devices < 1:
        raise ValueError("--group-devices must be >= 1")
    check_distributed_flags(a)
    return {}


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``(config, other flags)``: the preset with the flags' overrides, and the run's plumbing."""
    return _config.parse_config(
        Config, argv, prog="python -m experiments.clip_zeroshot",
        description=__doc__.split("\n")[0], plain=_plain_flags, prepare=_prepare,
    )  # fmt: skip


def load_lambda(path: Path | None, group: str) -> Any:
    """λ params for ``group`` from a msgpack file or a clip_finetune output directory."""
    import flax.serialization

    if path is None:
        return None
    if path.is_dir():
        path = path / f"lambda_{group}.msgpack"
    if not path.is_file():
        raise FileNotFoundError(f"--lambda-params: no λ parameters at {str(path)!r}")
    return flax.serialization.msgpack_restore(path.read_bytes())


@cli("python -m experiments.clip_zeroshot")
def main(argv: list[str] | None = None) -> dict:
    import jax

    from equijax.data import images
    from equijax.models.clip import zoo
    from equijax.training import parallel

    cfg, flags = parse_args(argv)
    start_distributed(flags)  # before anything touches devices (no-op without the flags)
    setup_logging("experiments")

    def read(split: str) -> Any:  # mock data must be materialised inside its context
        src = images.tfds_source(cfg.dataset, split, data_dir=flags.data_dir)
        return images.subset(src, range(len(src))) if flags.mock_data else src

    mock = (cfg.limit or 64) if flags.mock_data else None
    (source,) = tfds_splits(cfg.dataset, read, (("test",),), data_dir=flags.data_dir,
                            offline_fix=OFFLINE_CLIP, mock_examples=mock)  # fmt: skip
    flags.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model, params, tok_src = load_clip(cfg.model, flags.out)
    classifier, n_templates = zoo.zero_shot_head(model, params, tok_src, cfg.dataset,
                                                 templates=cfg.templates)  # fmt: skip
    n = min(len(source), cfg.limit or len(source))
    prep = preprocess_fn(model)
    d = zoo.feature_dim(model, params)
    log.info("%s on %s: %d test images, %d templates", cfg.model, cfg.dataset, n, n_templates)

    sharding = mesh = None
    if flags.group_devices is not None or flags.distributed:
        # One ("group", "batch") mesh over the devices of all processes: each process feeds and
        # evaluates only its devices' rows of every batch; the counts are summed once at the end.
        mesh = parallel.data_mesh(None, flags.group_devices or 1)
        sharding = parallel.orbit_spec_sharding(mesh)
        batch_devices = mesh.shape["batch"]
        if cfg.batch_size % batch_devices:
            raise ScriptError(
                f"--batch-size {cfg.batch_size} must be divisible by the {batch_devices} devices "
                "of the batch axis (device count / --group-devices)",
                f"pass a --batch-size that is a multiple of {batch_devices} or another "
                "--group-devices",
            )
        log.info("orbit sharded over %s", dict(sharding.mesh.shape))
    plain = jax.jit(logits_fns(model, images.transform_group("rot90"), cfg.proxy)["pretrained"])
    results: dict[str, Any] = {"untransformed": {"pretrained": [0, 0]}}
    jitted, lam_params = {}, {}
    for gname in cfg.groups:
        group = images.transform_group(gname)
        fns = logits_fns(model, group, cfg.proxy, sharding)
        try:
            lam_params[gname] = load_lambda(flags.lambda_params, gname)
        except FileNotFoundError as err:
            raise ScriptError(str(err), "train λ first with python -m experiments.clip_finetune "
                              "--group " + gname + ", or leave out --lambda-params") from err
        methods = [m for m in cfg.methods
                   if m != "lambda_equitune" or lam_params[gname] is not None]  # fmt: skip
        if "lambda_equitune" in cfg.methods and lam_params[gname] is None:
            log.info("lambda_equitune skipped for %s: pass --lambda-params (clip_finetune)", gname)
        jitted[gname] = {m: jax.jit(fns[m]) for m in methods}
        results[gname] = {m: [0, 0] for m in methods}

    def put(tree, batch=False):  # on the mesh (global arrays), or as they are
        if mesh is None:
            return tree
        return parallel.put_global_batch(tree, mesh) if batch else parallel.replicate(tree, mesh)

    def add(counts: dict, method: str, logits: Any, y: np.ndarray) -> None:
        if mesh is None:
            return _add(counts, method, logits, y)
        # The rows this process counts (once over all processes), real ones only.
        rows = parallel.host_rows(cfg.batch_size, mesh)
        own = parallel.owned_rows(cfg.batch_size, mesh)
        keep = (np.arange(rows.start, rows.stop) < min(own.stop, len(y))) & (
            np.arange(rows.start, rows.stop) >= own.start)
        local = parallel.local_rows(logits, mesh)[keep]
        return _add(counts, method, local, _pad(y, cfg.batch_size)[rows][keep])

    params, classifier, lam_params = put((params, classifier, lam_params))
    key = jax.random.key(cfg.seed)
    batches = images.batches(source, cfg.batch_size, limit=n, preprocess=prep)
    total = -(-n // cfg.batch_size)
    for i, (x, y) in enumerate(progress(batches, total=total, desc="batches")):
        x = _pad(x, cfg.batch_size)  # one compiled shape: pad the last batch, then slice
        if x.shape[1:] != (model.image_size, model.image_size, 3):
            raise ValueError(f"preprocessed images have shape {x.shape}")
        x = put(x, batch=True)
        add(results["untransformed"], "pretrained", plain(params, classifier, None, x), y)
        for gname, fns in jitted.items():
            xg, _ = images.random_transform(put(jax.random.fold_in(key, i)), x, gname)
            for m, f in fns.items():
                add(results[gname], m, f(params, classifier, lam_params[gname], xg), y)
    if jax.process_count() > 1:  # every process counted its rows: one all-gather, summed
        from jax.experimental import multihost_utils

        names = [(g, m) for g, r in results.items() for m in r]
        mine = np.asarray([results[g][m] for g, m in names], np.int64)
        every = np.asarray(multihost_utils.process_allgather(mine, tiled=False)).sum(0)
        for (g, m), v in zip(names, every.tolist(), strict=True):
            results[g][m] = v
    acc = {g: {m: {"top1": 100 * v[0] / n, "top5": 100 * v[1] / n} for m, v in r.items()}
           for g, r in results.items()}  # fmt: skip
    res = {"model": cfg.model, "dataset": cfg.dataset, "n_images": n, "templates": n_templates,
           "proxy": cfg.proxy, "feature_dim": d, "seed": cfg.seed, "accuracy": acc,
           "config": dataclasses.asdict(cfg), "devices": len(jax.devices()),
           "group_devices": flags.group_devices,
           "processes": jax.process_count(),
           "wall_seconds": round(time.time() - t0, 1)}  # fmt: skip
    if not is_main():  # process 0 is the only writer
        return res
    (flags.out / "results.json").write_text(json.dumps(res, indent=1))
    lines = [f"# CLIP zero-shot: {cfg.model} on {cfg.dataset} ({n} images, {n_templates} "
             "templates)", "", "| transform | method | top-1 % | top-5 % |",
             "| --- | --- | ---: | ---: |"]  # fmt: skip
    for g, r in acc.items():
        for m, v in r.items():
            lines.append(f"| {g} | {LABELS[m]} | {v['top1']:.2f} | {v['top5']:.2f} |")
    md = "\n".join(lines) + "\n"
    (flags.out / "results.md").write_text(md)
    _figure(res, flags.out / "accuracy.png")
    print(md)
    print(f"wrote {flags.out}/results.json, results.md, accuracy.png ({res['wall_seconds']} s)")
    return res


def _figure(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    acc = res["accuracy"]
    groups = [g for g in acc if g != "untransformed"]
    methods = sorted({m for g in groups for m in acc[g]}, key=METHODS.index)
    fig, ax = plt.subplots(figsize=(6, 4))
    width = 0.8 / max(1, len(methods))
    for j, m in enumerate(methods):
        vals = [acc[g].get(m, {}).get("top1", np.nan) for g in groups]
        ax.bar(np.arange(len(groups)) + j * width, vals, width, label=LABELS[m])
    ax.axhline(acc["untransformed"]["pretrained"]["top1"], color="k", ls="--", lw=1,
               label=f"{LABELS['pretrained']}, untransformed")  # fmt: skip
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{res['model']} zero-shot, {res['dataset']} ({res['n_images']} images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
