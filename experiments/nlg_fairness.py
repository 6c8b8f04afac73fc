"""Group-theoretic fairness in GPT-2 generation: GPT-2, EquiGPT2, R-EquiGPT2, EquizeroGPT2,
R-EquizeroGPT2 (Basu et al. 2023, §NLG; prompts and word sets of Sheng et al. 2019).

For every attribute (gender [man, woman], color [Black, White], sexuality [gay, straight]) and
context type (respect, occupation), N samples per demographic are drawn (prompts
"The {demographic} {context}", the 5 contexts in turn; 15 new tokens, top-k 40), labelled by a
scorer with the subject masked as XYZ, and tabulated as label distributions per demographic.
The paired prompts of the two demographics use the same PRNG keys, so the script also reports
the fraction of pairs for which generation(g·x) == g·generation(x) exactly.

Run (offline, tiny random GPT-2 with the real GPT-2 tokenizer files; minutes on 2 CPU cores):
    python -m experiments.nlg_fairness --quick
Paper-size run with real weights (needs the Hugging Face hub or a local copy):
    python -m experiments.nlg_fairness --preset paper
(the same as ``--model gpt2 --n-samples 500 --scorer regard``).

One run is described by a :class:`Config` with presets ``default`` (GPT-2, 500 samples, the
offline VADER proxy scorer), ``paper`` (the regard scorer) and ``quick``; every field has an
override flag whose value under each preset ``--help`` shows. ``--methods`` takes
``pretrained equitune r_equitune equizero r_equizero`` (:data:`equijax.nlg.METHODS`; the old
``gpt2 equilm r-equilm r-equizero`` work with a warning); tables and figures label them with the
paper's names (:data:`LABELS`).

Outputs in --out (default runs/nlg_fairness): results.json, results.md, samples.jsonl,
label_distributions.png. With a random model every output says so.

One process, one device: ``--distributed`` / ``--coordinator`` are refused in one line naming
why (:data:`ONE_PROCESS`).

Reference behaviour (pinned by ``tests/test_paper_rows.py``): EquiGPT2 averages the
g⁻¹-mapped next-token logits of the |G| transformed contexts at every step (the reference code
applies g, identical here only because every equality set is a swap); R-EquiGPT2 gives the
general words (he, she, his, her, him) the identity branch's logits. EquizeroGPT2 has no public
code: m = ``--beam-tokens`` tokens per g, the g whose continuation the scorer likes best is kept.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import time
from typing import Any

import jax
import numpy as np

from equijax.models import gpt2
from equijax.models.testing import is_random_model
from equijax.models.testing import write_tiny_random_gpt2 as save_random_gpt2
from equijax.nlg import decoding, groups, scorers
from experiments._cli import (
    ScriptError,
    add_distributed_flags,
    cli,
    refuse_distributed,
    setup_logging,
)
from experiments._config import check_choice, new_spelling, parse_config, setting

#: The paper's model names (tables, figures) of the methods of :data:`equijax.nlg.METHODS`.
LABELS = {
    "pretrained": "GPT2",
    "equitune": "EquiGPT2",
    "r_equitune": "R-EquiGPT2",
    "equizero": "EquizeroGPT2",
    "r_equizero": "R-EquizeroGPT2",
}
CONTEXT_TYPES = ("respect", "occupation")


@dataclasses.dataclass(frozen=True)
class Config:
    """One run: model, scorer, the demographics and methods, and the sampling settings.

    Presets: :meth:`default` (GPT-2, 500 samples, offline VADER proxy scorer), :meth:`paper`
    (the regard scorer of Sheng et al.) and :meth:`quick` (tiny random GPT-2, offline).
    """

    model: str = setting(
        "gpt2",
        "hub id or local dir of a GPT-2 checkpoint, or 'random' for a tiny random GPT-2 with the "
        "real tokenizer",
    )
    n_samples: int = setting(500, "samples per demographic and context type")
    attributes: tuple[str, ...] = setting(groups.ATTRIBUTES, "demographic attributes")
    context_types: tuple[str, ...] = setting(CONTEXT_TYPES, "context types")
    methods: tuple[str, ...] = setting(decoding.METHODS, "sampling methods (equijax.nlg.METHODS)")
    scorer: str = setting(
        "vader", "'vader' (offline proxy), 'regard' (sasha/regardv3) or a local dir"
    )
    max_new_tokens: int = setting(15, "new tokens per sample")
    top_k: int = setting(40, "top-k sampling")
    beam_tokens: int = setting(5, "equizero: tokens per group element and round")
    batch_size: int = setting(50, "prompts per sampling call (at most --n-samples)")
    seed: int = setting(0, "PRNG seed")

    @classmethod
    def default(cls, **kw: Any) -> Config:
        """GPT-2 small, 500 samples, 15 tokens, top-k 40, the offline VADER proxy scorer."""
        return cls(**kw)

    @classmethod
    def paper(cls, **kw: Any) -> Config:
        """The paper's setting: GPT-2 small, 500 samples, the regard classifier."""
        return cls(**{"scorer": "regard", **kw})

    @classmethod
    def quick(cls, **kw: Any) -> Config:
        """Offline: a tiny random GPT-2 with the real tokenizer, 10 samples."""
        return cls(**{"model": "random", "n_samples": 10, "batch_size": 10, **kw})

    def __post_init__(self) -> None:
        check_choice("attributes", self.attributes, groups.ATTRIBUTES)
        check_choice("context_types", self.context_types, CONTEXT_TYPES)
        check_choice("methods", self.methods, decoding.METHODS)
        if self.n_samples < 1 or self.batch_size < 1:
            raise ValueError("--n-samples and --batch-size must be >= 1")

    @property
    def batch(self) -> int:
        """Prompts per sampling call: ``min(n_samples, batch_size)``."""
        return min(self.n_samples, self.batch_size)


PRESETS = ("default", "paper", "quick")


def _batches(prompts: list[str], batch: int):
    for i in range(0, len(prompts), batch):
        yield i // batch, prompts[i : i + batch]


def run(cfg: Config, *, out: str | pathlib.Path = "runs/nlg_fairness",
        data_dir: str | pathlib.Path | None = None) -> dict[str, Any]:  # fmt: skip
    """Samples, scores and tabulates every (attribute, context type, method) of ``cfg``."""
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.model == "random":
        try:
            model_dir = save_random_gpt2(out / "tiny-random-gpt2", seed=cfg.seed)
        except ImportError as err:
            raise ScriptError(f"--model random needs the GPT-2 tokenizer files ({err})",
                              "pip install 'equijax[nlg]'") from err  # fmt: skip
        model_ref = str(model_dir)
    else:
        model_ref = cfg.model
        model_dir = pathlib.Path(cfg.model) if pathlib.Path(cfg.model).is_dir() else None
    try:
        model, variables = gpt2.from_pretrained(model_ref)
        params = variables["params"]
        tokenizer = gpt2.load_tokenizer(model_ref)
    except OSError as err:
        raise ScriptError(
            f"cannot load GPT-2 {model_ref!r}: not a local directory and the Hugging Face hub is "
            "unreachable or has no such id",
            "for an offline run use --quick or --model random (a tiny random GPT-2 with the real "
            "tokenizer), or pass a local directory to --model",
        ) from err
    random_model = is_random_model(model_dir)
    try:
        scorer = scorers.load_scorer(cfg.scorer)
    except ImportError as err:
        raise ScriptError(f"--scorer {cfg.scorer} needs a missing package ({err})",
                          "pip install 'equijax[nlg]' (vader) or 'equijax[hf]' torch "
                          "(regard)") from err  # fmt: skip
    except OSError as err:
        raise ScriptError(f"cannot load the regard classifier {cfg.scorer!r} (hub unreachable "
                          "or no such id)", "use the offline proxy --scorer vader, or pass a "
                          "local directory to --scorer") from err  # fmt: skip
    score_fn = scorers.text_score_fn(scorer, tokenizer)
    try:
        words = groups.load_word_lists(data_dir)
    except FileNotFoundError as err:
        where = pathlib.Path(data_dir or groups.default_data_dir())
        raise ScriptError(f"the NLG word lists are missing: no nlg_fairness_words.json in {where}",
                          "pass --data-dir <shared data>/nlg_fairness or set "
                          "EQUIJAX_SHARED_DATA") from err  # fmt: skip
    eos = tokenizer.eos_token_id

    results: dict[str, Any] = {
        "model": model_ref,
        "model_is_random": random_model,
        "scorer": scorer.name,
        "scorer_is_proxy": scorer.is_proxy,
        "n_samples": cfg.n_samples,
        "max_new_tokens": cfg.max_new_tokens,
        "top_k": cfg.top_k,
        "beam_tokens": cfg.beam_tokens,
        "seed": cfg.seed,
        "counts": {},
        "exact_pair_fairness": {},
        "seconds": {},
    }
    samples_f = open(out / "samples.jsonl", "w")
    try:
        from tqdm import tqdm
    except ImportError:  # pragma: no cover
        tqdm = None
    jobs = [(a, c, m) for a in cfg.attributes for c in cfg.context_types for m in cfg.methods]
    bar = tqdm(total=len(jobs), desc="nlg_fairness") if tqdm else None
    width = max(
        len(tokenizer.encode(p))
        for a in cfg.attributes for c in cfg.context_types
        for ps in groups.prompts(a, c, data_dir).values() for p in ps
    )  # fmt: skip
    for attribute in cfg.attributes:
        dg = groups.demographic_group(
            tokenizer, words["equality_word_sets"][attribute],
            general_words=words["general_words"], fixed_ids=[eos],
            vocab_size=model.config.vocab_size,
        )  # fmt: skip
        for ctype in cfg.context_types:
            by_demo = groups.prompts(attribute, ctype, data_dir)
            demos = list(by_demo)
            for method in cfg.methods:
                counts: dict[str, dict[str, int]] = {}
                gens: dict[str, list[np.ndarray]] = {d: [] for d in demos}
                t0 = time.perf_counter()
                for demo in demos:
                    ctx = by_demo[demo]
                    plist = [ctx[i % len(ctx)] for i in range(cfg.n_samples)]
                    labels: list[str] = []
                    for bi, chunk in _batches(plist, cfg.batch):
                        rows = [tokenizer.encode(p) for p in chunk]
                        rows += [rows[-1]] * (cfg.batch - len(rows))  # fixed shapes
                        ids, mask = gpt2.left_pad(rows, pad_token_id=eos)
                        pad = width - ids.shape[1]
                        ids = np.pad(ids, ((0, 0), (pad, 0)), constant_values=eos)
                        mask = np.pad(mask, ((0, 0), (pad, 0)))
                        key = jax.random.fold_in(jax.random.key(cfg.seed), bi)
                        gen = decoding.sample(
                            model, params, ids, mask, method=method, group=dg, key=key,
                            max_new_tokens=cfg.max_new_tokens, top_k=cfg.top_k,
                            beam_tokens=cfg.beam_tokens, score_fn=score_fn,
                        )  # fmt: skip
                        new = np.asarray(gen.new_tokens)[: len(chunk)]
                        gens[demo].append(new)
                        texts = [
                            p + tokenizer.decode(r.tolist())
                            for p, r in zip(chunk, new, strict=True)
                        ]
                        lab = scorer.classify([scorers.mask_subject(t) for t in texts])
                        labels += lab
                        for t, lb in zip(texts, lab, strict=True):
                            samples_f.write(json.dumps(
                                {"attribute": attribute, "context_type": ctype,
                                 "method": method, "demographic": demo, "text": t, "label": lb}
                            ) + "\n")  # fmt: skip
                    counts[demo] = {lb: labels.count(lb) for lb in scorer.labels}
                secs = time.perf_counter() - t0
                # exact fairness of the pairs: generation(g x) == g · generation(x)
                a, b = (np.concatenate(gens[d]) for d in demos[:2])
                mapped = np.asarray(dg.group.act(1, a))
                exact = float(np.mean(np.all(mapped == b, axis=1)))
                key3 = f"{attribute}/{ctype}/{method}"
                results["counts"][key3] = counts
                results["exact_pair_fairness"][key3] = exact
                results["seconds"][key3] = secs
                if bar:
                    bar.update(1)
    if bar:
        bar.close()
    samples_f.close()
    (out / "results.json").write_text(json.dumps(results, indent=2))
    (out / "results.md").write_text(markdown_table(results))
    figure(results, out / "label_distributions.png")
    return results


def markdown_table(results: dict[str, Any]) -> str:
    warn = (
        "**RANDOM WEIGHTS: the model is a tiny randomly initialised GPT-2; the numbers only "
        "exercise the pipeline and say nothing about GPT-2's bias.**\n\n"
        if results["model_is_random"] else ""
    )  # fmt: skip
    proxy = " — a PROXY, not Sheng et al.'s regard classifier" if results["scorer_is_proxy"] else ""
    lines = [
        "# NLG fairness: label distributions per demographic\n",
        warn + f"Model `{results['model']}`; scorer: {results['scorer']}{proxy}; "
        f"{results['n_samples']} samples per demographic and context type; "
        f"{results['max_new_tokens']} new tokens, top-k {results['top_k']}; equizero chunks of "
        f"{results['beam_tokens']} tokens.\n",
        "Exact pair fairness = fraction of sample pairs (same PRNG key) with "
        "generation(g·x) == g·generation(x), token for token.\n",
        "| attribute | context | model | demographic | negative % | neutral % | positive % "
        "| exact pair fairness % |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for key, counts in results["counts"].items():
        attribute, ctype, method = key.split("/")
        for demo, c in counts.items():
            total = max(sum(c.values()), 1)
            pct = [100.0 * c.get(lb, 0) / total for lb in ("negative", "neutral", "positive")]
            lines.append(
                f"| {attribute} | {ctype} | {LABELS[method]} | {demo} | "
                + " | ".join(f"{p:.1f}" for p in pct)
                + f" | {100 * results['exact_pair_fairness'][key]:.1f} |"
            )
    return "\n".join(lines) + "\n"


def figure(results: dict[str, Any], path: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: dict[str, list[tuple[str, str, dict[str, int]]]] = {}
    for key, counts in results["counts"].items():
        attribute, ctype, method = key.split("/")
        for demo, c in counts.items():
            panels.setdefault(f"{attribute} / {ctype}", []).append((LABELS[method], demo, c))
    n = len(panels)
    fig, axes = plt.subplots(1, n, figsize=(max(4.0, 3.2 * n), 4.2), squeeze=False)
    colors = {"negative": "#d62728", "neutral": "#7f7f7f", "positive": "#2ca02c"}
    for ax, (title, bars) in zip(axes[0], panels.items(), strict=True):
        xs = np.arange(len(bars))
        bottom = np.zeros(len(bars))
        for lb, col in colors.items():
            vals = np.array([100.0 * c.get(lb, 0) / max(sum(c.values()), 1) for _, _, c in bars])
            ax.bar(xs, vals, bottom=bottom, color=col, label=lb, width=0.8)
            bottom += vals
        ax.set_xticks(xs, [f"{m}\n{d}" for m, d, _ in bars], rotation=90, fontsize=6)
        ax.set_title(title, fontsize=9)
        ax.set_ylim(0, 100)
    axes[0][0].set_ylabel("% of samples")
    axes[0][-1].legend(fontsize=7, loc="upper right")
    note = results["scorer"] + (" — RANDOM-WEIGHT MODEL" if results["model_is_random"] else "")
    fig.suptitle(f"Label distributions per demographic ({note})", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


ONE_PROCESS = (
    "experiments.nlg_fairness samples on one device (no data-parallel mesh), so several "
    "processes would only repeat the same run and write the same files"
)


def _plain_flags(p: argparse.ArgumentParser) -> None:
    add_distributed_flags(p)  # refused in one line (ONE_PROCESS)
    p.add_argument("--data-dir", default=None, help="the shared nlg_fairness folder")
    p.add_argument("--out", default="runs/nlg_fairness", help="default runs/nlg_fairness")


def _prepare(a: argparse.Namespace) -> dict[str, Any]:
    """Old method names (``gpt2``, ``equilm`` ...) map to the new ones with a warning."""
    refuse_distributed(a, ONE_PROCESS)
    if a.methods is not None:
        a.methods = tuple(new_spelling(m, decoding.RENAMED, "--methods") for m in a.methods)
    return {}


def parse_args(argv: list[str] | None = None) -> tuple[Config, argparse.Namespace]:
    """``(config, args)``: the run's :class:`Config` and the plain flags (``--out`` ...)."""
    return parse_config(
        Config, argv, prog="python -m experiments.nlg_fairness",
        description=" ".join(__doc__.split("\n\n")[0].split()), presets=PRESETS,
        plain=_plain_flags,
        prepare=_prepare,
    )  # fmt: skip


@cli("python -m experiments.nlg_fairness")
def main(argv: list[str] | None = None) -> dict[str, Any]:
    cfg, args = parse_args(argv)
    setup_logging("experiments")
    results = run(cfg, out=args.out, data_dir=args.data_dir)
    print(markdown_table(results))
    return results


if __name__ == "__main__":
    main()
