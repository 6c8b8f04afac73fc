"""CLIP image tower forward time: equijax's Flax port vs transformers' PyTorch CLIPModel.

One PyTorch ``transformers.CLIPModel`` with random weights and the ViT-B/32 configuration
(width 768, 12 layers, 12 heads, patch 32, 224x224 images, projection 512) is built; its state
dict is mapped into the Flax port with ``equijax.models.clip.hf_to_flax`` (the same conversion
``from_pretrained`` uses), so both frameworks run *the same weights* on *the same images*. Timed:
``CLIPModel.get_image_features`` under ``torch.inference_mode`` vs the jitted
``CLIP.encode_image``, batch 32 by default, ``--repeats`` interleaved rounds (torch, JAX,
torch, JAX, …) after one warm-up each (the JAX warm-up includes XLA compilation, reported
separately). The max |difference| of the embeddings is printed as a sanity check.

Run: ``python -m benchmarks.clip_vs_torch`` (``--quick``: batch 8). Prints a markdown table;
the ratio is the median of the per-round ratios, with its min–max.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

from benchmarks import _timing
from equijax.models import _hub, clip


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=32)
    _timing.add_repeat_args(parser)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    parser.add_argument("--quick", action="store_true", help="batch 8")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch = 8

    import torch
    import transformers

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    hf_config = transformers.CLIPConfig(
        text_config=dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12,
                         num_attention_heads=8),
        vision_config=dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                           num_attention_heads=12, image_size=224, patch_size=32),
        projection_dim=512,
    )  # fmt: skip
    torch_model = transformers.CLIPModel(hf_config).eval()
    config = clip.CLIPConfig.from_dict(hf_config.to_dict())
    model = clip.CLIP(config)
    state = {k: v.detach().numpy() for k, v in torch_model.state_dict().items()}
    params = _hub.assign(model.param_template(), clip.hf_to_flax(state))
    del state

    images = np.random.default_rng(0).normal(size=(args.batch, 224, 224, 3)).astype(np.float32)
    pixels = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    images_jax = jax.device_put(images)

    def run_torch():
        with torch.inference_mode():
            out = torch_model.get_image_features(pixel_values=pixels)
        return getattr(out, "pooler_output", out).numpy()

    encode = jax.jit(model.encode_image)

    def run_jax():
        return encode(params, images_jax).block_until_ready()

    load = _timing.Load.start()
    samples = _timing.interleave({"torch": run_torch, "jax": run_jax}, args.repeats)
    load.stop()
    torch_first, torch_t = samples["torch"].first, samples["torch"].median
    jax_first, jax_t = samples["jax"].first, samples["jax"].median
    ratio = _timing.pair_ratios(samples["jax"].wall, samples["torch"].wall)
    diff = float(np.abs(run_torch() - np.asarray(run_jax())).max())

    n = args.batch
    print(f"CLIP ViT-B/32 image tower (random weights, shared), batch {n}, 224x224, float32; "
          f"{_timing.machine(f'torch {torch.__version__} ({torch.get_num_threads()} threads)')}"
          "\n")  # fmt: skip
    print("| implementation | first call (s) | forward (s / batch) | images / s |")
    print("|---|---|---|---|")
    print(f"| transformers CLIPModel (PyTorch) | {torch_first:.2f} | {torch_t:.3f} | "
          f"{n / torch_t:.1f} |")  # fmt: skip
    print(f"| equijax CLIP (Flax, jit) | {jax_first:.2f} (incl. compile) | {jax_t:.3f} | "
          f"{n / jax_t:.1f} |")  # fmt: skip
    print(f"\nratio JAX / PyTorch forward time: {ratio.fmt(2)} "
          f"(< 1 means the port is faster); max |embedding difference|: {diff:.2e}")  # fmt: skip
    print(f"\n{_timing.footer(load, args.repeats)}")


if __name__ == "__main__":
    main()
