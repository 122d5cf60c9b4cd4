"""RTSModel under tf.distribute on 2 logical CPU devices (in subprocesses,
since logical devices must be configured before TensorFlow starts)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent('''
    import json, sys
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, numpy as np, keras_rts

    method, distributed = sys.argv[1], sys.argv[2] == "mirrored"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(32, 5)).astype("float32")
    y = rng.integers(0, 3, 32)
    x[28, 1] = np.nan if len(sys.argv) > 3 else x[28, 1]

    def build():
        keras.utils.set_random_seed(1)
        net = keras.Sequential([keras.Input((5,)), keras.layers.Dense(8),
                                keras.layers.ReLU(), keras.layers.Dense(3)])
        model = keras_rts.RTSModel(net, method=method)
        model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                      loss=keras.losses.SparseCategoricalCrossentropy(True))
        return model

    try:
        if distributed:
            with tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]).scope():
                model = build()
        else:
            model = build()
    except ValueError as error:
        print(json.dumps({"error": str(error)}))
        sys.exit(0)
    history = model.fit(x, y, batch_size=16, epochs=2, shuffle=False,
                        verbose=0)
    print(json.dumps({
        "weights": [v.numpy().tolist() for v in model.trainable_variables],
        "skipped_steps": history.history["skipped_steps"],
    }))
''')


def _run(*args):
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, *args], capture_output=True,
        text=True, env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sgd_under_mirrored_strategy_equals_one_device():
    import numpy as np

    one, two = _run("sgd", "single"), _run("sgd", "mirrored")
    for a, b in zip(one["weights"], two["weights"]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_non_finite_replica_skips_the_step_on_every_replica():
    import numpy as np

    # The NaN is in the second batch's second half: replica 1 only.
    result = _run("sgd", "mirrored", "nan")
    assert result["skipped_steps"] == [1, 2]  # the 2nd batch, each epoch
    assert all(np.all(np.isfinite(w)) for w in result["weights"])


@pytest.mark.parametrize("method", ["pugd", "ugd"])
def test_normalising_methods_refuse_several_replicas_clearly(method):
    result = _run(method, "mirrored")
    assert "not yet compute across 2 replicas" in result["error"]


def test_gradient_accumulation_is_refused_at_compile_time():
    import keras

    import keras_rts

    net = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model = keras_rts.RTSModel(net, method="pugd")
    with pytest.raises(ValueError, match="gradient_accumulation_steps"):
        model.compile(optimizer=keras.optimizers.SGD(
            0.1, gradient_accumulation_steps=4), loss="mse")
