"""`call_recomputed` (the bLVNet stem's backward-pass recomputation): same values, gradients and
batch statistics as a plain call, and the recomputed tensors are not kept for the backward pass."""
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from blvnet_jax import blresnet
from blvnet_jax.layers import TAM, Conv, batch_norm, call_recomputed


def stem_modules(seed=0):
    rngs = nnx.Rngs(seed)
    return (batch_norm(8, rngs=rngs), TAM(8, rngs=rngs), Conv(8, 8, 3, 2, rngs=rngs),
            Conv(8, 4, 3, rngs=rngs))


def loss_and_grads(recomputed: bool, x: jax.Array):
    modules = stem_modules()
    graphdef, params, rest = nnx.split(modules, nnx.Param, ...)

    def loss(params, x):
        merged = nnx.merge(graphdef, params, rest, copy=True)
        if recomputed:
            big, little = call_recomputed(blresnet.stem_branches, merged, x, clips=2)
        else:
            big, little = blresnet.stem_branches(merged, x, clips=2)
        return jnp.sum(big ** 2) + jnp.sum(jnp.sin(little)), nnx.state(merged, nnx.BatchStat)

    (value, stats), grads = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(params, x)
    return value, stats, grads


def test_recomputed_stem_matches_plain_call():
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 16, 16, 8)), jnp.float32)
    plain, recomputed = loss_and_grads(False, x), loss_and_grads(True, x)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), plain, recomputed)
    assert not np.allclose(np.asarray(jax.tree.leaves(recomputed[1])[0]), 0.0)


def test_recomputed_stem_keeps_only_its_input():
    """The residuals of the backward pass: the input and the weights, not the batch-norm and TAM
    tensors a plain call keeps (about 10x the input here)."""
    graphdef, state = nnx.split(stem_modules())
    x = jnp.ones((8, 16, 16, 8))
    kept = []
    for call in (lambda f, m, x, **static: f(m, x, **static), call_recomputed):
        def stem(state, x, call=call):
            return call(blresnet.stem_branches, nnx.merge(graphdef, state), x, clips=2)
        kept.append(sum(a.size for a in jax.tree.leaves(jax.vjp(stem, state, x)[1])))
    weights = sum(a.size for a in jax.tree.leaves(state))
    assert kept[1] == x.size + weights
    assert kept[0] > 5 * x.size
