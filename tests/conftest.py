import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _isolate_keras_state():
    """Every test starts from the float32 policy and a fresh Keras session."""
    keras.config.set_dtype_policy("float32")
    keras.utils.clear_session()
    keras.utils.set_random_seed(0)
    yield
    keras.config.set_dtype_policy("float32")


SHARED_DATASETS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
    "shared", "datasets")


@pytest.fixture(scope="session")
def shared_datasets():
    """The real data in ../shared/datasets.

    A user's clone has no ../shared: there, tests that need it skip. In CI
    (CI=true) a missing ../shared is a failure, never a skip.
    """
    path = os.path.normpath(SHARED_DATASETS)
    if not os.path.isdir(path):
        message = f"real data not found at {path}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI must have ../shared)")
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def tfds_dir(shared_datasets):
    return os.path.join(shared_datasets, "tensorflow_datasets")


@pytest.fixture(scope="session")
def tiny_dir(shared_datasets):
    return os.path.join(shared_datasets, "tiny-imagenet-20")


def pytest_sessionfinish(session, exitstatus):
    """With KERAS_RTS_NO_TENSORFLOW=1 (CI's core-only stage, where it is not
    installed), a test run that imported TensorFlow fails."""
    if os.environ.get("KERAS_RTS_NO_TENSORFLOW") == "1" and (
            "tensorflow" in sys.modules):
        print("\nKERAS_RTS_NO_TENSORFLOW=1 but TensorFlow was imported",
              file=sys.stderr)
        session.exitstatus = 1
