"""Model factory, parameter counts, initialisation and behavioural invariants on tiny models."""
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from blvnet_jax.models import MODEL_NAMES, create_model
from blvnet_jax.summary import count_params
from configs import base


def tiny_config(name="blvnet_tam", **overrides):
    config = base.get_model_config()
    config.update(dict(name=name, width=8, num_frames=4, num_classes=5, dropout=0.0))
    config.update(overrides)
    return config


def clips(batch=2, frames=4, size=32, channels=3, seed=0):
    return jnp.asarray(np.random.default_rng(seed).standard_normal((batch, frames, size, size, channels)),
                       jnp.float32)


def eval_model(config, seed=0):
    model = create_model(config, rngs=nnx.Rngs(seed))
    # Non-zero last-BN scales and a larger head so that every path reaches the logits.
    for path, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        if path[-1] == "scale" or path[0] == "head":
            variable[...] = jax.random.uniform(jax.random.key(len(path)), variable[...].shape, minval=0.5, maxval=1.5)
    model.eval()
    return model


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_model_gives_logits(name):
    model = eval_model(tiny_config(name))
    logits = model(clips())
    assert logits.shape == (2, 5) and logits.dtype == jnp.float32
    assert np.all(np.isfinite(np.asarray(logits)))


@pytest.mark.parametrize("depth,num_classes,expected", [(50, 174, 25_020_142), (101, 174, 40_177_134)])
def test_blvnet_tam_parameter_count_is_official(depth, num_classes, expected):
    config = base.get_model_config()
    config.update(dict(depth=depth, num_classes=num_classes))
    model = nnx.eval_shape(lambda: create_model(config, rngs=nnx.Rngs(0)))
    assert count_params(model) == expected


def test_parameters_do_not_depend_on_frame_count():
    shapes = [jax.tree.map(lambda x: x.shape, nnx.state(nnx.eval_shape(
        lambda f=frames: create_model(tiny_config(num_frames=f), rngs=nnx.Rngs(0)))))
        for frames in (4, 16)]
    assert shapes[0] == shapes[1]


def test_unknown_model_name_is_named():
    with pytest.raises(ValueError, match="'resnext'"):
        create_model(tiny_config("resnext"), rngs=nnx.Rngs(0))


def test_odd_frame_count_is_rejected_for_blvnet():
    with pytest.raises(ValueError, match="even"):
        create_model(tiny_config(num_frames=5), rngs=nnx.Rngs(0))


def test_official_initialisation():
    model = create_model(tiny_config(width=16, num_classes=1000), rngs=nnx.Rngs(0))
    backbone = model.backbone
    for block in list(backbone.layer4) + list(backbone.layer1.big) + list(backbone.layer1.fusion):
        np.testing.assert_array_equal(np.asarray(block.bn3.scale[...]), 0.0)
    np.testing.assert_array_equal(np.asarray(backbone.bn1.scale[...]), 1.0)
    head = np.asarray(model.head.kernel[...])
    assert 0.0008 < head.std() < 0.0012 and np.all(np.asarray(model.head.bias[...]) == 0)
    conv = np.asarray(backbone.layer4[0].conv2.kernel[...])  # 3x3, fan_out = 9 * out channels
    assert abs(conv.std() / np.sqrt(2.0 / (9 * conv.shape[-1])) - 1) < 0.05
    tam = np.asarray(backbone.layer4[0].temporal.weight[...])
    assert abs(tam.std() / np.sqrt(2.0 / tam.shape[1]) - 1) < 0.2


def test_order_matters_for_temporal_models_only():
    video = clips(batch=1, frames=8)
    reversed_video = video[:, ::-1]
    for name, order_blind in [("tsn", True), ("blvnet_tam", False), ("tsm", False), ("tsn_tam", False)]:
        model = eval_model(tiny_config(name, num_frames=8))
        a, b = np.asarray(model(video)), np.asarray(model(reversed_video))
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5) == order_blind, name


def test_clips_of_a_batch_do_not_mix():
    model = eval_model(tiny_config())
    video = clips(batch=2)
    changed = video.at[1].add(3.0)
    np.testing.assert_allclose(np.asarray(model(video))[0], np.asarray(model(changed))[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["blvnet_tam", "tsm"])
def test_frame_count_comes_from_the_input(name):
    """Built for 4 or 8 frames, a model is the same (parameters, and a graph that stores no frame
    count) and gives the same logits on 8-frame clips; each clip of a batch gets the logits it
    gets alone."""
    (graphdef, state), (long_graphdef, long_state) = (
        nnx.split(eval_model(tiny_config(name, num_frames=frames))) for frames in (4, 8))
    assert graphdef == long_graphdef
    jax.tree.map(np.testing.assert_array_equal, state, long_state)
    forward = jax.jit(lambda graphdef, state, video: nnx.merge(graphdef, state)(video), static_argnums=0)
    video = clips(batch=2, frames=8)
    logits = np.asarray(forward(long_graphdef, long_state, video))
    np.testing.assert_array_equal(np.asarray(forward(graphdef, state, video)), logits)
    for index in range(2):
        alone = np.asarray(forward(graphdef, state, video[index:index + 1]))[0]
        np.testing.assert_allclose(alone, logits[index], rtol=1e-5, atol=1e-6)


def test_blvnet_refuses_an_odd_frame_count_at_call_time():
    with pytest.raises(ValueError, match="big/little pairs: got clips of 5 frames"):
        eval_model(tiny_config())(clips(batch=1, frames=5))


def test_bfloat16_compute_keeps_float32_parameters():
    config = tiny_config(dtype="bfloat16")
    model = eval_model(config)
    assert {x.dtype for x in jax.tree.leaves(nnx.state(model))} == {jnp.dtype(jnp.float32)}
    reference = eval_model(tiny_config())
    low, high = np.asarray(model(clips())), np.asarray(reference(clips()))
    assert low.dtype == np.float32
    assert np.max(np.abs(low - high)) < 0.05 * np.max(np.abs(high))


def test_optical_flow_input_channels():
    model = eval_model(tiny_config(input_channels=10))
    assert model(clips(channels=10)).shape == (2, 5)


def test_train_mode_uses_batch_statistics_and_dropout():
    model = create_model(tiny_config(dropout=0.5), rngs=nnx.Rngs(0))
    model.train()
    video = clips()
    a = model(video, rngs=nnx.Rngs(dropout=1))
    b = model(video, rngs=nnx.Rngs(dropout=2))
    assert not np.allclose(np.asarray(a), np.asarray(b))
    assert not np.allclose(np.asarray(model.backbone.bn1.mean[...]), 0.0)


@pytest.mark.parametrize("name", ["blvnet_tam", "tsm"])
def test_rematerialisation_changes_nothing_but_memory(name):
    import optax
    from blvnet_jax import steps
    batch = {"video": np.random.default_rng(0).integers(0, 256, (2, 4, 32, 32, 3), dtype=np.uint8),
             "label": np.array([1, 3])}
    results = []
    for remat in (False, True):
        optimizer = optax.sgd(0.1)
        graphdef, state = steps.init_train_state(create_model(tiny_config(name, remat=remat), rngs=nnx.Rngs(0)),
                                                 optimizer)
        state, metrics = jax.jit(steps.make_train_step(graphdef, optimizer))(state, batch, jax.random.key(0))
        results.append((float(metrics["loss"]), jax.tree.map(np.asarray, state.params)))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-6)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6), results[0][1], results[1][1])


@pytest.mark.parametrize("depth, stages", [(101, (3, 4, 23, 3)), (152, (3, 8, 36, 3))])
def test_deep_resnet_baselines_have_torchvision_block_counts_and_tsm_shifts_every_other_block(depth, stages):
    """As torchvision's ResNets and TSM's code (a shift in blocks 0, 2, 4, ... once layer3 has 23 or
    more); bLResNet keeps its own counts, TSN+TAM a TAM in every block."""
    shifted = {}
    for name in ("tsn", "tsm", "tsn_tam"):
        config = base.get_config().model
        config.update(dict(name=name, depth=depth, width=8, num_classes=3))
        backbone = nnx.eval_shape(lambda: create_model(config, rngs=nnx.Rngs(0))).backbone
        layers = (backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
        assert tuple(len(layer) for layer in layers) == stages
        shifted[name] = [[block.temporal is not None for block in layer] for layer in layers]
    assert shifted["tsm"] == [[index % 2 == 0 for index in range(count)] for count in stages]
    assert shifted["tsn_tam"] == [[True] * count for count in stages]
    assert not any(map(any, shifted["tsn"]))


@pytest.mark.parametrize("depth, expected", [(50, 25_557_032), (101, 44_549_160), (152, 60_192_808)])
def test_tsn_parameter_count_is_torchvisions_resnet(depth, expected):
    """torchvision's ResNet-50/101/152 with their 1000-class classifier."""
    config = base.get_model_config()
    config.update(dict(name="tsn", depth=depth, num_classes=1000))
    assert count_params(nnx.eval_shape(lambda: create_model(config, rngs=nnx.Rngs(0)))) == expected
