"""The default call with a stateful Flax NNX module: BatchNorm + Dropout train under nnx.jit."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import equijax as ej

G = ej.groups.rot90()


class Tiny(nnx.Module):
    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(16, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.head = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = self.dense(x.reshape(x.shape[0], 16))
        h = self.drop(nnx.relu(self.bn(h)))
        return self.head(h)


def _call(method, model, x):
    if method == "equitune":
        return ej.equitune(model, G, x)
    if method == "equizero":
        return ej.equizero(model, G, x, loss=ej.proxies.neg_max_probability, straight_through=True)
    return ej.lambda_equitune(model, G, x, weight_fn=lambda z: z[:, 0, 0, 0])


@pytest.mark.parametrize("method", ["equitune", "equizero", "lambda"])
def test_nnx_batchnorm_dropout_train_step_with_the_default_call(method):
    model = Tiny(nnx.Rngs(0, dropout=1))
    opt = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)
    x = jax.random.normal(jax.random.key(2), (6, 4, 4, 1))
    y = jnp.array([0, 1, 2, 0, 1, 2])

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            logits = _call(method, model, x)
            return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    mean_before = np.asarray(model.bn.mean[...]).copy()
    kernel_before = np.asarray(model.dense.kernel[...]).copy()
    losses = [float(step(model, opt, x, y)) for _ in range(3)]
    assert all(np.isfinite(losses))
    # BatchNorm statistics moved (they cover the |G|·B transformed examples) and weights trained
    assert not np.allclose(model.bn.mean[...], mean_before)
    assert not np.allclose(model.dense.kernel[...], kernel_before)

    # eval mode: deterministic, invariant
    model.eval()
    f = nnx.jit(lambda m, x: _call(method, m, x))
    out = f(model, x)
    np.testing.assert_array_equal(np.asarray(out), np.asarray(f(model, x)))
    np.testing.assert_allclose(f(model, G.act(1, x)), out, rtol=1e-4, atol=1e-5)


SEEN: list[int] = []


class Recorder(nnx.Module):
    """Records the batch size it is called with (|G|·B when folded, B under vmap)."""

    def __init__(self, rngs: nnx.Rngs):
        self.dense = nnx.Linear(16, 2, rngs=rngs)

    def __call__(self, x):
        SEEN.append(x.shape[0])
        return self.dense(x.reshape(x.shape[0], 16))


def test_batching_auto_detection_folds_for_every_form_of_nnx_state():
    model = Recorder(nnx.Rngs(0))
    x = jnp.ones((3, 4, 4, 1))
    forms = {
        "module": model,
        "bound method": model.__call__,
        "partial": functools.partial(lambda m, x: m(x), model),
        "closure": lambda x: model(x),
    }
    for name, fn in forms.items():
        SEEN.clear()
        ej.equitune(fn, G, x)
        assert SEEN == [4 * 3], name  # one call on the folded |G|·B batch
    SEEN.clear()
    ej.equitune(forms["closure"], G, x, batching="vmap")
    assert SEEN == [3]  # explicit vmap: one traced call per element batch
    SEEN.clear()
    plain = lambda x: SEEN.append(x.shape[0]) or x.reshape(x.shape[0], 16)
    ej.equitune(plain, G, x)
    assert SEEN == [3]  # no NNX state: vmap
    with pytest.raises(ValueError, match="batching"):
        ej.equitune(plain, G, x, batching="scan")
