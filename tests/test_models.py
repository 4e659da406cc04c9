import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from mnistxai.util.jit import jit
from mnistxai.models.cnn import CNN, LAYERS, count_params, init_cnn, max_pool_2x2, resolve_layer


def test_parameter_count_and_shapes(random_classifier):
    assert count_params(random_classifier.params) == 322_474
    x = jax.random.uniform(jax.random.key(1), (3, 28, 28, 1))
    assert random_classifier.logits(x).shape == (3, 10)
    assert random_classifier.features(x).shape == (3, 7, 7, 128)
    assert random_classifier.features(x, "block1").shape == (3, 28, 28, 32)
    assert random_classifier.features(x, "block2").shape == (3, 14, 14, 64)
    assert random_classifier.features(x, "dense").shape == (3, 256)


@pytest.mark.parametrize("layer", LAYERS + ("block1", "block2", "block3"))
def test_head_of_features_is_logits(random_classifier, layer):
    x = jax.random.uniform(jax.random.key(2), (4, 28, 28, 1))
    np.testing.assert_allclose(
        random_classifier.head(random_classifier.features(x, layer), layer),
        random_classifier.logits(x),
        rtol=1e-5,
        atol=1e-5,
    )


def test_unknown_layer():
    with pytest.raises(ValueError, match="unknown layer 'conv9'"):
        resolve_layer("conv9")


def test_inference_is_per_example(random_classifier):
    """BatchNorm uses running statistics in eval mode: an example's logits ignore its batch
    mates."""
    x = jax.random.uniform(jax.random.key(3), (5, 28, 28, 1))
    batched = random_classifier.logits(x)
    single = jnp.concatenate([random_classifier.logits(x[i : i + 1]) for i in range(5)])
    np.testing.assert_allclose(batched, single, rtol=1e-5, atol=1e-5)


def test_max_pool_matches_flax_and_its_gradient():
    import flax.linen as nn

    x = jax.random.normal(jax.random.key(4), (2, 6, 8, 3))
    np.testing.assert_array_equal(max_pool_2x2(x), nn.max_pool(x, (2, 2), (2, 2)))
    g_ours = jax.grad(lambda v: (max_pool_2x2(v) ** 2).sum())(x)
    g_flax = jax.grad(lambda v: (nn.max_pool(v, (2, 2), (2, 2)) ** 2).sum())(x)
    np.testing.assert_allclose(g_ours, g_flax, rtol=1e-6)


def test_one_step_lowers_the_loss_on_a_fixed_batch():
    model = CNN()
    variables = init_cnn(model, jax.random.key(0))
    x = jax.random.uniform(jax.random.key(5), (32, 28, 28, 1))
    y = jnp.arange(32) % 10
    tx = optax.adam(1e-3)

    def loss(params):
        logits, _ = model.apply(
            {"params": params, "batch_stats": variables["batch_stats"]},
            x,
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": jax.random.key(6)},
        )
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean()

    loss = jax.jit(loss)
    params = variables["params"]
    before, grads = jax.jit(jax.value_and_grad(loss))(params)
    updates, _ = tx.update(grads, tx.init(params), params)
    assert loss(optax.apply_updates(params, updates)) < before


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="the option concerns XLA:CPU only")
def test_project_jit_keeps_convolutions_on_xlas_own_path():
    """mnistxai._jit.jit's option must reach XLA: on CPU its convolutions leave YNNPACK (which the
    default sends them to, and which runs this CNN's input gradients ~1.6x slower)."""
    conv = lambda x, w: jax.lax.conv_general_dilated(
        x,
        w,
        (1, 1),
        "SAME",  # noqa: E731
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )
    x, w = jnp.ones((8, 28, 28, 32)), jnp.ones((3, 3, 32, 32))
    default = jax.jit(conv).lower(x, w).compile().as_text()
    ours = jit(conv).lower(x, w).compile().as_text()
    assert "convolution(" in ours and "ynn" not in ours
    assert (
        "ynn" in default
    )  # else jaxlib changed its default and mnistxai.util.jit should be revisited
