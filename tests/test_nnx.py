"""Flax NNX shells: one training step per method with BatchNorm + Dropout (issue 14.1)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import equijax as ej
from equijax import nnx as ejnnx


class Net(nnx.Module):
    """A small model with batch-coupled (BatchNorm) and random (Dropout) layers."""

    def __init__(self, din: int, dout: int, *, rngs: nnx.Rngs, aux: bool = False):
        self.fc1 = nnx.Linear(din, 16, rngs=rngs)
        self.bn = nnx.BatchNorm(16, rngs=rngs)
        self.drop = nnx.Dropout(0.3, rngs=rngs)
        self.fc2 = nnx.Linear(16, dout, rngs=rngs)
        self.aux = aux

    def __call__(self, x):
        h = self.drop(nnx.relu(self.bn(self.fc1(x.reshape(x.shape[0], -1)))))
        y = self.fc2(h)
        return (y, h) if self.aux else y


def _shells(rngs):
    G = ej.groups.rot90()
    return {
        "equitune": ejnnx.EquiTune(Net(16, 5, rngs=rngs), G),
        "equizero": ejnnx.EquiZero(Net(16, 5, rngs=rngs), G, ej.proxies.neg_max_probability),
        "lambda_equitune": ejnnx.LambdaEquiTune(
            Net(16, 5, rngs=rngs, aux=True), G, ejnnx.LambdaNet(16, hidden=8, rngs=rngs),
            has_aux=True,
        ),
    }  # fmt: skip


@pytest.mark.parametrize("method", ["equitune", "equizero", "lambda_equitune"])
def test_nnx_train_step_and_eval_invariance(method, keys):
    model = _shells(nnx.Rngs(0, dropout=1))[method]
    x = jax.random.normal(keys(), (8, 4, 4, 1))
    y = jax.random.randint(keys(), (8,), 0, 5)
    opt = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt, x, y):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    params0 = jax.tree.map(jnp.copy, nnx.state(model, nnx.Param))
    stats0 = jax.tree.map(jnp.copy, nnx.state(model, nnx.BatchStat))
    model.train()
    losses = [float(step(model, opt, x, y)) for _ in range(4)]
    assert all(np.isfinite(losses))
    if method != "equizero":  # equizero's straight-through gradient is the surrogate's
        assert min(losses[1:]) < losses[0], losses
    moved = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()), nnx.state(model, nnx.Param),
                         params0)  # fmt: skip
    assert max(jax.tree.leaves(moved)) > 0
    stats = jax.tree.map(lambda a, b: float(jnp.abs(a - b).max()),
                         nnx.state(model, nnx.BatchStat), stats0)  # fmt: skip
    assert max(jax.tree.leaves(stats)) > 0  # BatchNorm statistics updated in train mode

    model.eval()
    out = model(x)
    G = ej.groups.rot90()
    for g in range(1, 4):
        np.testing.assert_allclose(model(G.act(g, x)), out, atol=1e-5)


def test_nnx_train_mode_batchnorm_sees_the_orbit(keys):
    """BatchNorm in train mode normalises over the |G|·B transformed examples."""
    rngs = nnx.Rngs(0)
    inner = Net(16, 5, rngs=rngs)
    inner.drop.rate = 0.0
    model = ejnnx.EquiTune(inner, ej.groups.rot90())
    x = jax.random.normal(keys(), (3, 4, 4, 1))
    model.train()
    model(x)
    G = ej.groups.rot90()
    orbit = jnp.concatenate([G.act(g, x) for g in range(4)])
    h = inner.fc1(orbit.reshape(12, -1))
    expected = 0.01 * h.mean(0)  # running mean from 0 with momentum 0.99
    np.testing.assert_allclose(inner.bn.mean[...], expected, atol=1e-6)


def test_from_linen_bridge_loads_pretrained_variables(keys):
    from equijax.models.small_cnn import SmallCNN

    net = SmallCNN(widths=(4, 8), num_classes=3)
    x = jax.random.normal(keys(), (2, 8, 8, 1))
    variables = jax.tree.map(lambda a: a + 0.1, net.init(keys(), x))
    model = ejnnx.from_linen(net, x, variables=variables, rngs=nnx.Rngs(0))
    logits, _ = model(x)
    np.testing.assert_allclose(logits, net.apply(variables, x)[0], atol=1e-6)
    wrapped = ejnnx.EquiTune(lambda z: model(z)[0], ej.groups.rot90())
    assert wrapped(x).shape == (2, 3)
    dense = ejnnx.from_linen(nn.Dense(3), jnp.ones((1, 2)))
    assert dense(jnp.ones((4, 2))).shape == (4, 3)
    with pytest.raises(TypeError, match="callable"):
        ejnnx.EquiTune(3, ej.groups.rot90())
