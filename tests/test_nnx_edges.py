"""NNX shells never train nothing silently; NNX train mode works with chunk_size (issue 22)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import equijax as ej

FLIP = ej.groups.sign_flip([-1.0, 1.0])
C4 = ej.groups.rot90()


class BNNet(nnx.Module):
    def __init__(self, rngs: nnx.Rngs, din: int = 2):
        self.fc = nnx.Linear(din, 8, rngs=rngs)
        self.bn = nnx.BatchNorm(8, rngs=rngs)
        self.drop = nnx.Dropout(0.2, rngs=rngs)
        self.out = nnx.Linear(8, 3, rngs=rngs)

    def __call__(self, x):
        h = self.fc(x.reshape(x.shape[0], -1) if x.ndim > 2 else x)
        return self.out(self.drop(nnx.relu(self.bn(h))))


# A module reached only through a module-level global, as in a script or a notebook.
GLOBAL_NET = BNNet(nnx.Rngs(3, dropout=4))


def global_forward(z):
    return GLOBAL_NET(z)


def _train(model, x, y, steps=3):
    opt = nnx.Optimizer(model, optax.sgd(0.5), wrt=nnx.Param)

    @nnx.jit
    def step(model, opt):
        def loss_fn(model):
            return optax.softmax_cross_entropy_with_integer_labels(model(x), y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        opt.update(model, grads)
        return loss

    return [float(step(model, opt)) for _ in range(steps)]


def _xy(n=8, d=2):
    x = jax.random.normal(jax.random.key(0), (n, d))
    return x, jnp.arange(n) % 3


@pytest.mark.parametrize("form", ["closure", "bound method", "partial", "default argument"])
def test_shell_owns_the_state_its_callable_uses_and_trains_it(form):
    lin = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    fn = {
        "closure": lambda z: lin(z),
        "bound method": lin.__call__,
        "partial": functools.partial(lambda m, z: m(z), lin),
        "default argument": lambda z, m=lin: m(z),
    }[form]
    model = ej.nnx.EquiTune(fn, FLIP)
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) == 2  # kernel and bias
    kernel = np.asarray(lin.kernel[...]).copy()
    losses = _train(model, *_xy())
    assert losses[-1] < losses[0], losses  # not a constant loss
    assert not np.allclose(lin.kernel[...], kernel)  # the user's module was trained


def test_shell_owns_a_module_reached_through_a_global_in_train_mode():
    model = ej.nnx.EquiTune(global_forward, FLIP)
    model.train()
    mean = np.asarray(GLOBAL_NET.bn.mean[...]).copy()
    kernel = np.asarray(GLOBAL_NET.fc.kernel[...]).copy()
    losses = _train(model, *_xy())
    assert all(np.isfinite(losses))
    assert not np.allclose(GLOBAL_NET.bn.mean[...], mean)  # BatchNorm statistics moved
    assert not np.allclose(GLOBAL_NET.fc.kernel[...], kernel)
    # the functional form recognises the global as NNX state too: folds, so train mode works
    x, _ = _xy()
    assert ej.equitune(global_forward, FLIP, x).shape == (8, 3)


def test_from_linen_docs_example_compiles_under_nnx_jit():
    from equijax.models.small_cnn import SmallCNN

    net = SmallCNN(widths=(4, 8), num_classes=3)
    images = jax.random.normal(jax.random.key(0), (2, 8, 8, 1))
    variables = net.init(jax.random.key(1), images)
    backbone = ej.nnx.from_linen(net, images, variables=variables, rngs=nnx.Rngs(0))
    model = ej.nnx.EquiTune(lambda z: backbone(z)[0], C4)
    eager = model(images)
    jitted = nnx.jit(lambda m, x: m(x))(model, images)
    np.testing.assert_allclose(jitted, eager, atol=1e-5)
    assert len(jax.tree.leaves(nnx.state(model, nnx.Param))) > 0  # an optimizer sees them


def test_shell_refuses_what_it_cannot_own_or_a_callable_without_state():
    with pytest.raises(TypeError, match=r"holds no Flax NNX state.*ej\.equitune\(fn, G, x\)"):
        ej.nnx.EquiTune(lambda z: 2 * z, FLIP)

    class Holder:  # a plain object holding a module
        def __init__(self):
            self.m = nnx.Linear(2, 3, rngs=nnx.Rngs(0))

        def __call__(self, z):
            return self.m(z)

    with pytest.raises(TypeError, match=r"cannot own, Holder\.m .*make that object an nnx"):
        ej.nnx.EquiTune(Holder(), FLIP)
    # a stateless model is fine when the λ network holds the state
    lam = ej.nnx.LambdaNet(2, hidden=4, rngs=nnx.Rngs(0))
    shell = ej.nnx.LambdaEquiTune(lambda z: jnp.tanh(z), FLIP, lambda z: lam(z))
    assert shell(jnp.ones((3, 2))).shape == (3, 2)
    assert len(jax.tree.leaves(nnx.state(shell, nnx.Param))) == 6


@pytest.mark.parametrize("under_jit", [False, True])
def test_nnx_train_mode_with_chunk_size_follows_the_per_chunk_batchnorm_rule(under_jit):
    net = BNNet(nnx.Rngs(0), din=4)
    net.drop.rate = 0.0
    x = jax.random.normal(jax.random.key(1), (3, 2, 2, 1))
    call = lambda m, x: ej.equitune(m, C4, x, chunk_size=2)
    if under_jit:
        call = nnx.jit(call)
    net.train()
    out = call(net, x)
    assert out.shape == (3, 3) and bool(jnp.isfinite(out).all())
    # folded path, stated for chunks: each chunk of c elements is one call on c·B examples,
    # normalised by its own statistics; the running averages take one update per chunk
    h = lambda gs: net.fc(jnp.concatenate([C4.act(g, x) for g in gs]).reshape(-1, 4))
    expected = 0.99 * 0.01 * h([0, 1]).mean(0) + 0.01 * h([2, 3]).mean(0)
    np.testing.assert_allclose(net.bn.mean[...], expected, atol=1e-6)
    net.eval()  # eval mode: the same result for every chunk_size
    np.testing.assert_allclose(call(net, x), ej.equitune(net, C4, x), atol=1e-5)


def test_nnx_training_step_with_chunk_size_and_sampled_equitune():
    net = BNNet(nnx.Rngs(0, dropout=1), din=4)
    x = jax.random.normal(jax.random.key(1), (4, 2, 2, 1))
    y = jnp.array([0, 1, 2, 0])
    opt = nnx.Optimizer(net, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def step(net, opt, key):
        def loss_fn(net):
            a = ej.equitune(net, C4, x, chunk_size=1)
            b = ej.sampled_equitune(net, C4, x, key=key, num_samples=4, chunk_size=2)
            return optax.softmax_cross_entropy_with_integer_labels(a + b, y).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(net)
        opt.update(net, grads)
        return loss

    net.train()
    count = int(net.drop.rngs.count[...])
    kernel = np.asarray(net.fc.kernel[...]).copy()
    losses = [float(step(net, opt, jax.random.key(i))) for i in range(2)]
    assert all(np.isfinite(losses))
    assert not np.allclose(net.fc.kernel[...], kernel)
    assert int(net.drop.rngs.count[...]) > count  # dropout drew fresh masks in every chunk
    net.eval()
    eager = ej.sampled_equitune(net, C4, x, key=jax.random.key(0), num_samples=4, chunk_size=2)
    assert eager.shape == (4, 3)


def test_wrong_output_shape_gives_one_message_on_the_nnx_and_vmap_paths():
    lin = nnx.Linear(2, 3, rngs=nnx.Rngs(0))
    x = jnp.ones((4, 2))
    message = r"fn must map a batch of \d+ examples to outputs with leading axis \d+, got an output"
    for batching in ("vmap", "fold", None):
        with pytest.raises(ValueError, match=message):
            ej.equitune(lambda z: lin(z)[:2], FLIP, x, batching=batching)
    with pytest.raises(ValueError, match=message):
        ej.nnx.EquiTune(lambda z: lin(z).sum(), FLIP)(x)  # no batch axis at all
    with pytest.raises(ValueError, match="weight_fn must return one scalar per example"):
        ej.lambda_equitune(lin, FLIP, x, weight_fn=lambda z: z.sum())


def test_an_empty_batch_leaves_nnx_batchnorm_statistics_unchanged():
    net = BNNet(nnx.Rngs(0), din=2)
    net.train()
    x = jnp.zeros((0, 2))
    assert ej.equitune(net, FLIP, x).shape == (0, 3)
    assert nnx.jit(lambda m, x: ej.equitune(m, FLIP, x, chunk_size=1))(net, x).shape == (0, 3)
    assert ej.nnx.EquiTune(net, FLIP)(x).shape == (0, 3)
    np.testing.assert_array_equal(net.bn.mean[...], np.zeros(8))  # not NaN (mean of 0 examples)
    np.testing.assert_array_equal(net.bn.var[...], np.ones(8))


def test_a_stateful_lambda_network_trains_with_chunk_size():
    lin = nnx.Linear(4, 3, rngs=nnx.Rngs(0))
    lam = ej.nnx.LambdaNet(4, hidden=4, rngs=nnx.Rngs(0, dropout=1))
    lam.train()
    x = jnp.ones((2, 2, 2, 1))
    flat = lambda z: z.reshape(z.shape[0], -1)
    call = nnx.jit(
        lambda lin, lam, x: ej.lambda_equitune(
            lambda z: lin(flat(z)), C4, x, weight_fn=lambda z: lam(flat(z)), chunk_size=1
        )
    )
    count = int(lam.drop.rngs.count[...])
    assert call(lin, lam, x).shape == (2, 3)
    assert int(lam.drop.rngs.count[...]) == count + 2 * 4  # two dropout layers, four chunks
