"""CLIP zero-shot classification under rot90 / flip: vanilla vs equitune vs equizero vs λ-equitune.

Paper Fig. 3–4 (Basu et al. 2023): every test image is transformed by its own random group
element (a quarter turn for ``rot90``, a true left-right mirror for ``flip``; the reference
code's "flip" was a 180° rotation, available here as ``rot180``), then classified by the CLIP
zero-shot head (per class: templates encoded, L2-normalised, averaged, L2-normalised):

* ``vanilla`` — CLIP on the transformed image;
* ``equitune`` — mean over the group of the logits of g·x;
* ``equizero`` — the logits of the g·x with the lowest proxy loss (default: negative max
  probability, i.e. the most confident branch);
* ``lambda_equitune`` — λ-weighted mean with a λ network trained by
  ``python -m experiments.clip_finetune`` (pass ``--lambda-params``; skipped otherwise).

Also reports vanilla accuracy on untransformed images. Top-1 and top-5, batched and jitted.

With network access (Hugging Face hub weights + a prepared tfds data_dir)::

    python -m experiments.clip_zeroshot --model ViT-B/32 --dataset cifar100
    python -m experiments.clip_zeroshot --model RN50 --dataset imagenet_v2 --groups rot90,flip

Offline smoke run on a tiny random CLIP (written with transformers + torch into ``<out>``)::

    python -m experiments.clip_zeroshot --model tiny-random --mock-data --limit 64

Writes ``<out>/results.json``, ``results.md`` and ``accuracy.png``.

Reference behaviour (pinned by ``tests/test_paper_rows.py``): the zero-shot head is CLIP's
(each template embedding L2-normalised, averaged, re-normalised; 18 CIFAR100 / 80 ImageNet
templates); ``--proxy maxprob`` keeps the *most* confident branch.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from equijax.models.tiny import write_tiny_random_clip
from experiments._cli import (
    OFFLINE_CLIP,
    ArgumentParser,
    ScriptError,
    cli,
    require,
    require_tfds,
    setup_logging,
)

MODELS = {
    "ViT-B/32": "openai/clip-vit-base-patch32",
    "ViT-B/16": "openai/clip-vit-base-patch16",
    "RN50": "timm/resnet50_clip.openai",
    "RN101": "timm/resnet101_clip.openai",
}
DEFAULT_TOKENIZER = "openai/clip-vit-base-patch32"
DATASETS = ("cifar100", "imagenet_v2")
TEMPLATE_SETS = ("cifar100", "imagenet")
METHODS = ("vanilla", "equitune", "equizero", "lambda_equitune")
log = logging.getLogger("experiments.clip_zeroshot")


# ----------------------------------------------------------------------------- shared helpers


def load_clip(name: str, out: Path) -> tuple[Any, Any, str]:
    """``(model, params, tokenizer source)`` for a paper name, hub id, local dir or tiny-random."""
    from equijax.models import clip, clip_resnet

    if name == "tiny-random":
        try:
            path = write_tiny_random_clip(out / "tiny_clip")
        except ImportError as err:
            raise ScriptError(f"--model tiny-random needs torch, transformers and open-clip-torch "
                              f"({err})", "pip install 'equijax[test]'") from err  # fmt: skip
        model, params = clip.from_pretrained(path)
        return model, params, str(path)
    ident = MODELS.get(name, name)
    local = Path(ident)
    is_rn = ident.startswith("timm/") or (local / "open_clip_config.json").is_file()
    try:
        if is_rn:
            model, params = clip_resnet.from_pretrained(ident)
            return model, params, DEFAULT_TOKENIZER
        model, params = clip.from_pretrained(ident)
    except OSError as err:
        raise ScriptError(f"cannot load CLIP {name!r} ({ident}): not a local directory and the "
                          "Hugging Face hub is unreachable or has no such id",
                          OFFLINE_CLIP) from err  # fmt: skip
    return model, params, ident


def feature_dim(model: Any, params: Any) -> int:
    import jax
    import jax.numpy as jnp

    s = model.image_size
    shape = jax.eval_shape(lambda p: model.encode_image(p, jnp.zeros((1, s, s, 3))), params)
    return int(shape.shape[-1])


def build_classifier(model: Any, params: Any, tokenizer_src: str, templates: str | None,
                     dataset: str) -> tuple[Any, int]:  # fmt: skip
    """Zero-shot classifier ``(D, C)`` from the dataset's class names and a template set."""
    import functools

    import jax

    from equijax.models import clip, clip_data

    names, _ = clip_data.get_zero_shot_prompts(dataset)
    _, temps = clip_data.get_zero_shot_prompts(templates or dataset)
    tokenizer = clip.load_tokenizer(tokenizer_src)
    encode = jax.jit(functools.partial(model.encode_text, params))
    w = clip.zero_shot_classifier(encode, tokenizer, names, temps,
                                  context_length=model.context_length)  # fmt: skip
    return w, len(temps)


def preprocess_fn(model: Any):
    """uint8 images (list, any sizes) -> CLIP-normalised NHWC float batch at the model size."""
    from equijax.models import preprocess

    return lambda ims: preprocess.clip_preprocess(ims, size=model.image_size)


def logits_fns(model: Any, group: Any, proxy: str, sharding: Any = None):
    """Per-method pure functions ``(params, classifier, lam_params, x) -> logits``.

    ``sharding`` (from :func:`equijax.orbit_sharding`) spreads each orbit ``(|G|, B, ...)`` over a
    ``("group", "batch")`` device mesh; ``None`` keeps everything on the default device.
    """
    import equijax as ej

    loss = {"maxprob": ej.proxies.neg_max_probability, "entropy": ej.proxies.entropy,
            "maxscore": ej.proxies.neg_max_score}[proxy]  # fmt: skip
    lam = ej.LambdaNet()

    def fn_aux(params, classifier):
        def fn(x):
            feats = model.encode_image(params, x, normalize=True)
            return model.logit_scale(params) * feats @ classifier, feats

        return fn

    def vanilla(params, classifier, lam_params, x):
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

    return {"vanilla": vanilla, "equitune": equitune, "equizero": equizero,
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


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = ArgumentParser(
        prog="python -m experiments.clip_zeroshot",
        description=__doc__.split("\n")[0],
    )
    p.add_argument(
        "--model",
        default="ViT-B/32",
        help=f"{sorted(MODELS)}, a HF/OpenCLIP hub id or directory, or tiny-random",
    )
    p.add_argument("--dataset", default="cifar100", help=f"one of {DATASETS}")
    p.add_argument(
        "--templates",
        default=None,
        help=f"template set {TEMPLATE_SETS} (default: the dataset's own)",
    )
    p.add_argument("--data-dir", default=None, help="tfds data_dir")
    p.add_argument("--groups", default="rot90,flip", help="comma list of rot90, flip, rot180")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--proxy", default="maxprob", choices=["maxprob", "entropy", "maxscore"])
    p.add_argument(
        "--lambda-params",
        type=Path,
        default=None,
        help="λ parameters written by experiments.clip_finetune (lambda_<group>.msgpack)",
    )
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N test images")
    p.add_argument("--seed", type=int, default=0, help="seed of the per-image transformations")
    p.add_argument("--quick", action="store_true", help="--limit 512")
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
    a = p.parse_args(argv)
    if a.dataset.lower().replace("-", "_") not in DATASETS:
        p.error(f"unknown --dataset {a.dataset!r}; choose from {list(DATASETS)}")
    a.dataset = a.dataset.lower().replace("-", "_")
    if a.templates is not None and a.templates not in TEMPLATE_SETS:
        p.error(f"unknown --templates {a.templates!r}; choose from {list(TEMPLATE_SETS)}")
    a.groups = [g.strip() for g in a.groups.split(",") if g.strip()]
    bad = [g for g in a.groups if g not in ("rot90", "flip", "rot180")]
    if bad:
        p.error(f"unknown --groups {bad}; choose from rot90, flip, rot180")
    a.methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    bad = [m for m in a.methods if m not in METHODS]
    if bad:
        p.error(f"unknown --methods {bad}; choose from {list(METHODS)}")
    if a.quick and a.limit is None:
        a.limit = 512
    if a.batch_size < 1:
        p.error("--batch-size must be >= 1")
    if a.group_devices is not None and a.group_devices < 1:
        p.error("--group-devices must be >= 1")
    return a


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

    args = parse_args(argv)
    setup_logging("experiments")
    if not args.mock_data:
        require_tfds(args.dataset, args.data_dir, OFFLINE_CLIP)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    model, params, tok_src = load_clip(args.model, args.out)
    classifier, n_templates = build_classifier(model, params, tok_src, args.templates, args.dataset)
    if args.mock_data:
        tfds = require("tensorflow_datasets", "pip install 'equijax[data]'", "--mock-data")
        with tfds.testing.mock_data(num_examples=args.limit or 64):
            source = images.tfds_source(args.dataset, data_dir=args.data_dir)
            source = images.subset(source, range(len(source)))
    else:
        source = images.tfds_source(args.dataset, data_dir=args.data_dir)
    n = min(len(source), args.limit or len(source))
    prep = preprocess_fn(model)
    d = feature_dim(model, params)
    log.info("%s on %s: %d test images, %d templates", args.model, args.dataset, n, n_templates)

    sharding = None
    if args.group_devices is not None:
        import equijax as ej

        sharding = ej.orbit_sharding(group_devices=args.group_devices)
        batch_devices = len(jax.devices()) // args.group_devices
        if args.batch_size % batch_devices:
            raise ScriptError(
                f"--batch-size {args.batch_size} must be divisible by the {batch_devices} devices "
                "of the batch axis (device count / --group-devices)",
                f"pass a --batch-size that is a multiple of {batch_devices} or another "
                "--group-devices",
            )
        log.info("orbit sharded over %s", dict(sharding.mesh.shape))
    plain = jax.jit(logits_fns(model, images.transform_group("rot90"), args.proxy)["vanilla"])
    results: dict[str, Any] = {"untransformed": {"vanilla": [0, 0]}}
    jitted, lam_params = {}, {}
    for gname in args.groups:
        group = images.transform_group(gname)
        fns = logits_fns(model, group, args.proxy, sharding)
        try:
            lam_params[gname] = load_lambda(args.lambda_params, gname)
        except FileNotFoundError as err:
            raise ScriptError(str(err), "train λ first with python -m experiments.clip_finetune "
                              "--group " + gname + ", or leave out --lambda-params") from err
        methods = [m for m in args.methods
                   if m != "lambda_equitune" or lam_params[gname] is not None]  # fmt: skip
        if "lambda_equitune" in args.methods and lam_params[gname] is None:
            log.info("lambda_equitune skipped for %s: pass --lambda-params (clip_finetune)", gname)
        jitted[gname] = {m: jax.jit(fns[m]) for m in methods}
        results[gname] = {m: [0, 0] for m in methods}

    from tqdm.auto import tqdm

    key = jax.random.key(args.seed)
    batches = images.batches(source, args.batch_size, limit=n, preprocess=prep)
    total = -(-n // args.batch_size)
    for i, (x, y) in enumerate(tqdm(batches, total=total, desc="batches")):
        x = _pad(x, args.batch_size)  # one compiled shape: pad the last batch, then slice
        if x.shape[1:] != (model.image_size, model.image_size, 3):
            raise ValueError(f"preprocessed images have shape {x.shape}")
        _add(results["untransformed"], "vanilla", plain(params, classifier, None, x), y)
        for gname, fns in jitted.items():
            xg, _ = images.random_transform(jax.random.fold_in(key, i), x, gname)
            for m, f in fns.items():
                _add(results[gname], m, f(params, classifier, lam_params[gname], xg), y)
    acc = {g: {m: {"top1": 100 * v[0] / n, "top5": 100 * v[1] / n} for m, v in r.items()}
           for g, r in results.items()}  # fmt: skip
    res = {"model": args.model, "dataset": args.dataset, "n_images": n, "templates": n_templates,
           "proxy": args.proxy, "feature_dim": d, "seed": args.seed, "accuracy": acc,
           "devices": len(jax.devices()), "group_devices": args.group_devices,
           "wall_seconds": round(time.time() - t0, 1)}  # fmt: skip
    (args.out / "results.json").write_text(json.dumps(res, indent=1))
    lines = [f"# CLIP zero-shot: {args.model} on {args.dataset} ({n} images, {n_templates} "
             "templates)", "", "| transform | method | top-1 % | top-5 % |",
             "| --- | --- | ---: | ---: |"]  # fmt: skip
    for g, r in acc.items():
        for m, v in r.items():
            lines.append(f"| {g} | {m} | {v['top1']:.2f} | {v['top5']:.2f} |")
    md = "\n".join(lines) + "\n"
    (args.out / "results.md").write_text(md)
    _figure(res, args.out / "accuracy.png")
    print(md)
    print(f"wrote {args.out}/results.json, results.md, accuracy.png ({res['wall_seconds']} s)")
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
        ax.bar(np.arange(len(groups)) + j * width, vals, width, label=m)
    ax.axhline(acc["untransformed"]["vanilla"]["top1"], color="k", ls="--", lw=1,
               label="vanilla, untransformed")  # fmt: skip
    ax.set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title(f"{res['model']} zero-shot, {res['dataset']} ({res['n_images']} images)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
