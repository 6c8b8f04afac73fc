"""CLIP model: configs, the text and ViT towers, the shared functional shell, zero-shot head.

See :mod:`equijax.models.clip` for the overview; loading lives in
:mod:`equijax.models.clip.convert`, tokenization in :mod:`equijax.models.clip.tokenizer`.

Examples:
    >>> import jax, jax.numpy as jnp
    >>> model = CLIP(CLIPConfig.tiny())
    >>> params = model.init(jax.random.key(0))
    >>> model.encode_image(params, jnp.zeros((2, 16, 16, 3))).shape
    (2, 8)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from equijax.models._activations import ACTIVATIONS, check_activation
from equijax.models._attention import attend
from equijax.models._ids import check_id_range
from equijax.models.clip.tokenizer import tokenize

__all__ = [
    "CLIP",
    "CLIPBase",
    "CLIPConfig",
    "CLIPModule",
    "CLIPTextConfig",
    "CLIPTextTransformer",
    "CLIPVisionConfig",
    "CLIPVisionTransformer",
    "ZeroShotHead",
    "check_ids",
    "check_images",
    "zero_shot_classifier",
]

Params = Any


def _check_activation(name: str, arg: str) -> None:
    check_activation(name, arg)


# ----------------------------------------------------------------------------- configs


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Text tower hyper-parameters (field names follow ``transformers.CLIPTextConfig``).

    ``pooling`` selects the pooled token: ``"eos"`` takes the first position holding
    ``eos_token_id`` (current ``transformers`` behaviour), ``"argmax"`` the position of the largest
    id (OpenAI/OpenCLIP behaviour, and ``transformers``' behaviour for legacy configs with
    ``eos_token_id == 2``; the CLIP end-of-text token has the largest id).
    """

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    eos_token_id: int = 49407
    pooling: str = "eos"

    def __post_init__(self):
        _check_activation(self.hidden_act, "text hidden_act")
        if self.pooling not in ("eos", "argmax"):
            raise ValueError(f"pooling={self.pooling!r} must be 'eos' or 'argmax'")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"text hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """ViT image tower hyper-parameters (field names follow ``transformers.CLIPVisionConfig``)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    image_size: int = 224
    patch_size: int = 32
    num_channels: int = 3
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        _check_activation(self.hidden_act, "vision hidden_act")
        if self.image_size % self.patch_size:
            raise ValueError(
                f"image_size={self.image_size} must be a multiple of patch_size={self.patch_size}"
            )
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"vision hidden_size={self.hidden_size} must be divisible by "
                f"num_attention_heads={self.num_attention_heads}"
            )

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """A full CLIP model: text tower, ViT image tower and the shared embedding size.

    Hashable and compared by value, so it can be a static argument of ``jax.jit``.
    """

    text: CLIPTextConfig = CLIPTextConfig()
    vision: CLIPVisionConfig = CLIPVisionConfig()
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592

    @classmethod
    def from_dict(cls, config: Mapping[str, Any]) -> CLIPConfig:
        """Build from a Hugging Face ``CLIPModel`` ``config.json`` dict (unknown keys ignored).

        Raises:
            ValueError: if ``config`` has no ``text_config`` / ``vision_config`` objects.
        """
        if not isinstance(config, Mapping):
            raise TypeError(f"config must be a mapping, got {type(config).__name__}")
        text = config.get("text_config") or config.get("text_config_dict")
        vision = config.get("vision_config") or config.get("vision_config_dict")
        if not isinstance(text, Mapping) or not isinstance(vision, Mapping):
            raise ValueError(
                "config must be a CLIPModel config.json with 'text_config' and 'vision_config' "
                f"objects; got keys {sorted(config)}"
            )
        text_fields = {f.name for f in dataclasses.fields(CLIPTextConfig)} - {"pooling"}
        vision_fields = {f.name for f in dataclasses.fields(CLIPVisionConfig)}
        t = {k: v for k, v in text.items() if k in text_fields and v is not None}
        v = {k: val for k, val in vision.items() if k in vision_fields and val is not None}
        t["pooling"] = "argmax" if t.get("eos_token_id", 49407) == 2 else "eos"
        kw = {}
        for key in ("projection_dim", "logit_scale_init_value"):
            if config.get(key) is not None:
                kw[key] = config[key]
        return cls(text=CLIPTextConfig(**t), vision=CLIPVisionConfig(**v), **kw)

    @classmethod
    def tiny(cls) -> CLIPConfig:
        """A few-thousand-parameter config for tests and doctests."""
        return cls(
            text=CLIPTextConfig(
                vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=8, eos_token_id=63,
            ),
            vision=CLIPVisionConfig(
                hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                image_size=16, patch_size=8,
            ),
            projection_dim=8,
        )  # fmt: skip


# ----------------------------------------------------------------------------- modules


class _Attention(nn.Module):
    hidden_size: int
    num_heads: int
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        b, t, _ = x.shape
        d = self.hidden_size // self.num_heads

        def proj(name: str) -> jax.Array:
            y = nn.Dense(self.hidden_size, dtype=self.dtype, name=name)(x)
            return y.reshape(b, t, self.num_heads, d)

        out = attend(proj("q_proj"), proj("k_proj"), proj("v_proj"), mask)
        out = out.reshape(b, t, self.hidden_size)
        return nn.Dense(self.hidden_size, dtype=self.dtype, name="out_proj")(out)


class _MLP(nn.Module):
    hidden_size: int
    intermediate_size: int
    act: str
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Dense(self.intermediate_size, dtype=self.dtype, name="fc1")(x)
        x = ACTIVATIONS[self.act](x)
        return nn.Dense(self.hidden_size, dtype=self.dtype, name="fc2")(x)


class _EncoderLayer(nn.Module):
    config: CLIPTextConfig | CLIPVisionConfig  # either tower's: the same encoder fields
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        c, dt = self.config, self.dtype
        h = nn.LayerNorm(c.layer_norm_eps, dtype=dt, name="layer_norm1")(x)
        x = x + _Attention(c.hidden_size, c.num_attention_heads, dt, name="self_attn")(h, mask)
        h = nn.LayerNorm(c.layer_norm_eps, dtype=dt, name="layer_norm2")(x)
        mlp = _MLP(c.hidden_size, c.intermediate_size, c.hidden_act, dt, name="mlp")
        return x + mlp(h)


class _Encoder(nn.Module):
    config: CLIPTextConfig | CLIPVisionConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, x: jax.Array, mask: jax.Array | None = None) -> jax.Array:
        for i in range(self.config.num_hidden_layers):
            x = _EncoderLayer(self.config, self.dtype, name=f"layers_{i}")(x, mask)
        return x


def check_ids(ids: jax.typing.ArrayLike, config: CLIPTextConfig) -> jax.Array:
    """Validate ``(N, T)`` integer token ids for a text tower (``ValueError``/``TypeError``)."""
    if not jnp.issubdtype(jnp.result_type(ids), jnp.integer):
        raise TypeError(f"ids must be integer token ids, got dtype {jnp.result_type(ids)}")
    if jnp.ndim(ids) != 2:
        raise ValueError(f"ids must have shape (batch, seq_len), got {jnp.shape(ids)}")
    seq_len = jnp.shape(ids)[1]
    if not 1 <= seq_len <= config.max_position_embeddings:
        raise ValueError(
            f"ids has seq_len={seq_len}, but the text tower has max_position_embeddings="
            f"{config.max_position_embeddings}; tokenize with context_length="
            f"{config.max_position_embeddings} (truncation=True)"
        )
    check_id_range(
        ids,
        config.vocab_size,
        name="ids",
        hint="was the text tokenized with this model's tokenizer?",
    )
    return jnp.asarray(ids)


class CLIPTextTransformer(nn.Module):
    """Causal text transformer; returns the pooled, final-layer-normed state ``(N, width)``.

    Out-of-range ids are rejected with ``ValueError`` for concrete inputs; inside ``jit`` they
    produce NaN embeddings (``jnp.take``'s fill mode) instead.
    """

    config: CLIPTextConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        c = self.config
        ids = check_ids(ids, c)
        t = ids.shape[1]
        x = _TextEmbeddings(c, self.dtype, name="embeddings")(ids)
        mask = jnp.tril(jnp.ones((t, t), bool))[None, None]
        x = _Encoder(c, self.dtype, name="encoder")(x, mask)
        x = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="final_layer_norm")(x)
        if c.pooling == "argmax":
            index = jnp.argmax(ids, axis=-1)
        else:  # first eos position (0 if absent, as in transformers)
            index = jnp.argmax(ids == c.eos_token_id, axis=-1)
        return jnp.take_along_axis(x, index[:, None, None], axis=1)[:, 0]


class _TextEmbeddings(nn.Module):
    config: CLIPTextConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, ids: jax.Array) -> jax.Array:
        c = self.config
        tok = nn.Embed(c.vocab_size, c.hidden_size, dtype=self.dtype, name="token_embedding")
        pos = nn.Embed(
            c.max_position_embeddings, c.hidden_size, dtype=self.dtype, name="position_embedding"
        )
        return tok(ids) + pos(jnp.arange(ids.shape[1]))[None]


def check_images(images: jax.typing.ArrayLike, size: int, channels: int) -> jax.Array:
    """Validate ``(B, size, size, channels)`` float NHWC images (NCHW input is named)."""
    shape = jnp.shape(images)
    if len(shape) != 4:
        raise ValueError(
            f"images must be a (batch, height, width, channels) NHWC array, got shape {shape}"
        )
    if shape[-1] != channels and shape[1] == channels and shape[-1] == size:
        raise ValueError(
            f"images has shape {shape}, which looks like NCHW; CLIP here takes NHWC images: "
            "convert with equijax.models.preprocess.nchw_to_nhwc"
        )
    if shape[1:] != (size, size, channels):
        raise ValueError(
            f"images must have shape (batch, {size}, {size}, {channels}) for this model, got "
            f"{shape}; resize/crop with equijax.models.preprocess.clip_preprocess"
        )
    if not jnp.issubdtype(jnp.result_type(images), jnp.floating):
        raise TypeError(
            f"images must be floating point (preprocessed and normalised), got dtype "
            f"{jnp.result_type(images)}; use equijax.models.preprocess.clip_preprocess"
        )
    return jnp.asarray(images)


class CLIPVisionTransformer(nn.Module):
    """ViT image tower; returns the post-layer-normed class token ``(B, width)``."""

    config: CLIPVisionConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        images = check_images(images, c.image_size, c.num_channels)
        embeddings = _VisionEmbeddings(c, self.dtype, name="embeddings")(images)
        x = nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="pre_layrnorm")(embeddings)
        x = _Encoder(c, self.dtype, name="encoder")(x)
        return nn.LayerNorm(c.layer_norm_eps, dtype=self.dtype, name="post_layernorm")(x[:, 0])


class _VisionEmbeddings(nn.Module):
    config: CLIPVisionConfig
    dtype: Any = None

    @nn.compact
    def __call__(self, images: jax.Array) -> jax.Array:
        c = self.config
        p = c.patch_size
        cls = self.param("class_embedding", nn.initializers.normal(0.02), (c.hidden_size,))
        patches = nn.Conv(
            c.hidden_size, (p, p), strides=(p, p), padding="VALID", use_bias=False,
            dtype=self.dtype, name="patch_embedding",
        )(images)  # fmt: skip
        b = patches.shape[0]
        patches = patches.reshape(b, -1, c.hidden_size)
        cls = jnp.broadcast_to(cls.astype(patches.dtype), (b, 1, c.hidden_size))
        x = jnp.concatenate([cls, patches], axis=1)
        pos = nn.Embed(c.num_positions, c.hidden_size, dtype=self.dtype, name="position_embedding")
        return x + pos(jnp.arange(c.num_positions))[None]


class _CLIPShell(nn.Module):
    """What the linen shells of both CLIP families share: the text tower ``text_model``, its
    projection ``text_projection`` and ``logit_scale``. A subclass's ``setup`` builds the image
    side, calls :meth:`_setup_text` and defines ``encode_image``."""

    def _setup_text(self, text: CLIPTextConfig, embed_dim: int, logit_scale_init: float) -> None:
        self.text_model = CLIPTextTransformer(text, self.dtype)
        self.text_projection = nn.Dense(embed_dim, use_bias=False, dtype=self.dtype)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(logit_scale_init), ())

    def encode_text(self, ids: jax.Array) -> jax.Array:
        return self.text_projection(self.text_model(ids))

    def __call__(self, images: jax.Array, ids: jax.Array) -> tuple[jax.Array, jax.Array]:
        return self.encode_image(images), self.encode_text(ids)


class CLIPModule(_CLIPShell):
    """Flax linen shell holding both towers, the projections and ``logit_scale``.

    Prefer the functional wrapper :class:`CLIP`; this module is what it applies.
    """

    config: CLIPConfig
    dtype: Any = None

    def setup(self):
        c = self.config
        self.vision_model = CLIPVisionTransformer(c.vision, self.dtype)
        self.visual_projection = nn.Dense(c.projection_dim, use_bias=False, dtype=self.dtype)
        self._setup_text(c.text, c.projection_dim, c.logit_scale_init_value)

    def encode_image(self, images: jax.Array) -> jax.Array:
        return self.visual_projection(self.vision_model(images))

    def get_logit_scale(self) -> jax.Array:
        return self.logit_scale


# ----------------------------------------------------------------------------- functional API


def _l2_normalize(x: jax.Array) -> jax.Array:
    return x / jnp.linalg.norm(x, axis=-1, keepdims=True)


def _apply(model: Any, method: str, normalize: bool, params: Params, x: jax.Array) -> jax.Array:
    """``model.module.apply(params, x, method=method)``, compiled once per (model, method, shape).

    Eager Flax application dispatches (and compiles) every primitive separately, which is slow;
    nesting this ``jit`` inside a user's ``jit`` / ``grad`` / equitune costs nothing. The
    normalisation stays outside so that normalised and raw embeddings share one compilation.
    """
    out = _jit_apply(model, method, params, x)
    return _l2_normalize(out) if normalize else out


@functools.partial(jax.jit, static_argnums=(0, 1))
def _jit_apply(model: Any, method: str, params: Params, x: jax.Array) -> jax.Array:
    module = model.module
    return module.apply(params, x, method=getattr(type(module), method))


def _init(model: Any, key: jax.Array, logit_scale: float) -> Params:
    """Random variables shaped like ``model.module.init``'s, from a single normal draw.

    Kernels ~ N(0, 1/fan_in), embeddings ~ N(0, 0.02^2), layer-norm/batch-norm scales and
    variances 1, biases and means 0. (Flax's per-leaf initialisers compile one RNG program per
    leaf, which takes tens of seconds on a busy CPU; this is one draw.)
    """
    template = model.param_template()
    flat, treedef = jax.tree_util.tree_flatten_with_path(template)
    sizes = [int(np.prod(leaf.shape)) for _, leaf in flat]
    noise = np.asarray(jax.random.normal(key, (sum(sizes),), jnp.float32))
    leaves, offset = [], 0
    for (path, leaf), n in zip(flat, sizes, strict=True):
        name = getattr(path[-1], "key", str(path[-1]))
        chunk = noise[offset : offset + n].reshape(leaf.shape)
        offset += n
        if name in ("scale", "var"):
            value = np.ones(leaf.shape, np.float32)
        elif name in ("bias", "mean"):
            value = np.zeros(leaf.shape, np.float32)
        elif name == "logit_scale":
            value = np.full(leaf.shape, logit_scale, np.float32)
        elif name == "kernel":
            value = chunk / np.sqrt(max(1, int(np.prod(leaf.shape[:-1]))))
        else:
            value = 0.02 * chunk
        leaves.append(jnp.asarray(value, leaf.dtype))
    return jax.tree_util.tree_unflatten(treedef, leaves)


class ZeroShotHead:
    """Shared CLIP head: logit scale, image-text logits and zero-shot classification.

    Mixed into :class:`CLIPBase`, which provides ``encode_image``, ``encode_text``,
    ``context_length`` and ``embed_dim``.
    """

    def logit_scale(self, params: Params) -> jax.Array:
        """``exp(logit_scale)`` (about 100 for the released checkpoints)."""
        return jnp.exp(params["params"]["logit_scale"])

    def logits(
        self, params: Params, images: jax.typing.ArrayLike, ids: jax.typing.ArrayLike
    ) -> jax.Array:
        r"""Image-text similarity logits ``exp(s) \hat{f}(x) \hat{g}(t)^T`` (``logits_per_image``).

        Returns:
            ``(B, N)`` logits for ``B`` images and ``N`` texts.
        """
        img = self.encode_image(params, images, normalize=True)
        txt = self.encode_text(params, ids, normalize=True)
        return self.logit_scale(params) * img @ txt.T

    def build_zero_shot_classifier(
        self,
        params: Params,
        tokenizer: Any,
        classnames: Sequence[str],
        templates: Sequence[str],
        *,
        batch_size: int = 256,
    ) -> jax.Array:
        """``(D, C)`` zero-shot classifier from class names x templates with this text tower.

        See :func:`equijax.models.clip.zero_shot_classifier`; ids are padded to the model's
        context length.
        """
        return zero_shot_classifier(
            functools.partial(self.encode_text, params), tokenizer, classnames, templates,
            context_length=self.context_length, batch_size=batch_size,
        )  # fmt: skip

    def zero_shot_logits(
        self, params: Params, images: jax.typing.ArrayLike, classifier: jax.typing.ArrayLike
    ) -> jax.Array:
        """Zero-shot class logits ``exp(s) * norm(encode_image(x)) @ classifier``.

        Args:
            params: variables dict.
            images: ``(B, S, S, C)`` preprocessed NHWC images.
            classifier: ``(embed_dim, num_classes)`` from :func:`zero_shot_classifier`.

        Returns:
            ``(B, num_classes)`` logits.
        """
        classifier = jnp.asarray(classifier)
        d = self.embed_dim
        if classifier.ndim != 2 or classifier.shape[0] != d:
            raise ValueError(
                f"classifier must have shape ({d}, num_classes), got {classifier.shape}; build it "
                "with zero_shot_classifier"
            )
        img = self.encode_image(params, images, normalize=True)
        return self.logit_scale(params) * img @ classifier


class CLIPBase(ZeroShotHead):
    """The functional shell shared by both CLIP families (ViT :class:`CLIP`, ModifiedResNet
    :class:`equijax.models.clip_resnet.CLIPResNet`).

    A subclass is a frozen dataclass holding a hashable ``config`` (with a ``text`` tower config)
    and a ``dtype``, and names its parts: ``module_class`` (a linen shell built as
    ``module_class(config, dtype)`` with ``encode_image`` / ``encode_text`` methods),
    ``image_size``, ``num_channels``, ``embed_dim`` and ``logit_scale_init``. Everything else --
    parameter template, random init, input checks, the jitted encoders, logits and zero-shot
    classification -- is written once, here.
    """

    module_class: ClassVar[type[nn.Module]]
    image_size: int
    num_channels: int
    embed_dim: int
    logit_scale_init: float

    @property
    def module(self) -> nn.Module:
        """The linen shell these pure methods apply."""
        return self.module_class(self.config, self.dtype)

    @property
    def text_config(self) -> CLIPTextConfig:
        return self.config.text

    @property
    def context_length(self) -> int:
        """Token length of the text tower (``max_position_embeddings``, 77 for released CLIPs)."""
        return self.text_config.max_position_embeddings

    def _dummy_inputs(self) -> tuple[jax.Array, jax.Array]:
        s = self.image_size
        images = jnp.zeros((1, s, s, self.num_channels), jnp.float32)
        return images, jnp.zeros((1, 1), jnp.int32)

    def init(self, key: jax.Array) -> Params:
        """Random variables shaped like the checkpoint's (for tests; see ``_init``)."""
        return _init(self, key, float(self.logit_scale_init))

    def param_template(self) -> Params:
        """Shapes/dtypes of all variables (``jax.ShapeDtypeStruct`` leaves), no allocation."""
        return jax.eval_shape(
            lambda key: self.module.init(key, *self._dummy_inputs()), jax.random.key(0)
        )

    def encode_image(
        self, params: Params, images: jax.typing.ArrayLike, *, normalize: bool = False
    ) -> jax.Array:
        """Projected image embeddings.

        Args:
            params: variables dict (``{"params": ...}``, plus ``"batch_stats"`` for ResNets).
            images: ``(B, S, S, C)`` preprocessed NHWC float images, ``S = image_size``.
            normalize: L2-normalise the embeddings.

        Returns:
            ``(B, embed_dim)`` embeddings (``CLIPModel.get_image_features`` /
            OpenCLIP ``encode_image``).

        Raises:
            ValueError: wrong rank, size or channel count (NCHW input is detected and named).
            TypeError: integer images (not preprocessed).
        """
        images = check_images(images, self.image_size, self.num_channels)
        return _apply(self, "encode_image", normalize, params, images)

    def encode_text(
        self, params: Params, ids: jax.typing.ArrayLike, *, normalize: bool = False
    ) -> jax.Array:
        """Projected text embeddings.

        Args:
            params: variables dict.
            ids: ``(N, T)`` int token ids, ``T <= context_length``; each row holds an
                end-of-text token (padding after it does not matter: the mask is causal).
            normalize: L2-normalise the embeddings.

        Returns:
            ``(N, embed_dim)`` embeddings (``CLIPModel.get_text_features`` / OpenCLIP
            ``encode_text``).

        Raises:
            ValueError: wrong rank, sequence longer than the position table, or (for concrete
                arrays) ids outside ``[0, vocab_size)``.
        """
        ids = check_ids(ids, self.text_config)
        return _apply(self, "encode_text", normalize, params, ids)


@dataclasses.dataclass(frozen=True)
class CLIP(CLIPBase):
    """Functional CLIP (ViT image tower): a static config plus pure ``(params, inputs)`` methods.

    Attributes:
        config: the :class:`CLIPConfig` (hashable).
        dtype: computation dtype (``None``: follow the parameters, i.e. float32 by default).
    """

    config: CLIPConfig
    dtype: Any = None
    module_class: ClassVar[type[nn.Module]] = CLIPModule

    @property
    def image_size(self) -> int:
        return self.config.vision.image_size

    @property
    def num_channels(self) -> int:
        return self.config.vision.num_channels

    @property
    def embed_dim(self) -> int:
        """Joint embedding size (``config.projection_dim``)."""
        return self.config.projection_dim

    @property
    def logit_scale_init(self) -> float:
        return self.config.logit_scale_init_value


def zero_shot_classifier(
    encode_text: Callable[[jax.Array], jax.Array],
    tokenizer: Any,
    classnames: Sequence[str],
    templates: Sequence[str],
    *,
    context_length: int = 77,
    batch_size: int = 256,
) -> jax.Array:
    r"""Zero-shot classifier weights from class names x prompt templates (Radford et al., 2021).

    For each class :math:`c`: :math:`w_c = \mathrm{norm}\big(\frac{1}{|T|}\sum_{t\in T}
    \mathrm{norm}(g(t(c)))\big)`, where ``g`` is the text encoder and ``norm`` L2 normalisation.

    Args:
        encode_text: ``(N, T) ids -> (N, D)`` embeddings, e.g.
            ``functools.partial(model.encode_text, params)`` (jit it for speed).
        tokenizer: as in :func:`tokenize`.
        classnames: ``C`` class names (e.g. :data:`equijax.data.zero_shot.CIFAR100_CLASSNAMES`).
        templates: prompt templates with one ``{}`` (e.g.
            :data:`equijax.data.zero_shot.CIFAR100_TEMPLATES`).
        context_length: token length; must not exceed the model's position table.
        batch_size: prompts encoded per call.

    Returns:
        ``(D, C)`` float32 classifier matrix with unit-norm columns.

    Raises:
        ValueError: empty class names / templates, or a template without ``{}``.

    Examples:
        >>> import jax
        >>> model = CLIP(CLIPConfig.tiny()); params = model.init(jax.random.key(0))
        >>> tok = lambda texts: [[1 + len(t) % 9, 63] + [0] * 6 for t in texts]
        >>> encode = lambda ids: model.encode_text(params, ids)
        >>> w = zero_shot_classifier(encode, tok, ["cat", "dog"], ["a {}.", "a photo of a {}."],
        ...                          context_length=8)
        >>> w.shape
        (8, 2)
    """
    classnames, templates = list(classnames), list(templates)
    if not classnames:
        raise ValueError("classnames must be a non-empty sequence of strings")
    if not templates:
        raise ValueError("templates must be a non-empty sequence of format strings")
    bad = [t for t in templates if "{}" not in t]
    if bad:
        raise ValueError(f"every template needs a '{{}}' placeholder; these lack it: {bad[:3]}")
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size} must be >= 1")
    texts = [t.format(c) for c in classnames for t in templates]
    ids = tokenize(tokenizer, texts, context_length)
    chunks = [
        _l2_normalize(jnp.asarray(encode_text(jnp.asarray(ids[i : i + batch_size])), jnp.float32))
        for i in range(0, len(ids), batch_size)
    ]
    emb = jnp.concatenate(chunks).reshape(len(classnames), len(templates), -1)
    return _l2_normalize(emb.mean(axis=1)).T
