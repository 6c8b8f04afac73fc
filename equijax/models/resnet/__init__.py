"""ResNet (Hugging Face ``microsoft/resnet-*``) in Flax linen, loading HF checkpoints.

A faithful port of ``transformers``' ``ResNetForImageClassification`` (basic blocks for
ResNet-18/34, bottleneck blocks for ResNet-50/101/152) operating on **NHWC** images (use
:func:`nchw_to_nhwc` for PyTorch-layout arrays). Parameter names mirror the PyTorch module tree, so
checkpoints load by name with shape checks (:class:`~equijax.models.CheckpointMismatchError`).

BatchNorm runs in inference mode (running statistics) by default; pass ``train=True`` and
``mutable=["batch_stats"]`` to use and update batch statistics when finetuning.

Usage::

    from equijax.models import resnet
    model, variables = resnet.from_pretrained("microsoft/resnet-50")   # or a local directory
    images = resnet.preprocess(uint8_images_nhwc)                      # ImageNet normalisation
    out = model.apply(variables, images)     # ResNetOutput(logits, pooled, last_hidden_state)
    # pure function of (variables, images): jit / grad / equitune all work
    logits_fn = lambda v, x: model.apply(v, x).logits
    y = ej.equitune(lambda x: logits_fn(variables, x), ej.groups.rot90(), images)

Examples:
    >>> import jax, jax.numpy as jnp
    >>> cfg = ResNetConfig(embedding_size=4, hidden_sizes=(8,), depths=(1,),
    ...                    layer_type="basic", num_labels=5)
    >>> model = ResNet(cfg)
    >>> x = jnp.zeros((2, 16, 16, 3))
    >>> variables = jax.jit(model.init)(jax.random.key(0), x)
    >>> out = jax.jit(model.apply)(variables, x)
    >>> out.logits.shape, out.pooled.shape, out.last_hidden_state.shape
    ((2, 5), (2, 8), (2, 4, 4, 8))

The package reads like every family: :mod:`~equijax.models.resnet.model` (config, modules,
:func:`preprocess`) and :mod:`~equijax.models.resnet.convert` (the HF name mapping and
:func:`from_pretrained`); every name is importable from ``equijax.models.resnet``.
"""

from equijax.models.resnet import convert, model
from equijax.models.resnet.convert import *  # noqa: F403
from equijax.models.resnet.model import *  # noqa: F403

__all__ = [*model.__all__, *convert.__all__]
