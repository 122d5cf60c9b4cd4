"""Upstream workaround: a `.keras` file compiled under Keras' PyTorch
backend names its optimizer by the torch-specific module
(`keras.src.backend.torch.optimizers.torch_sgd`), so loading it on another
backend imports PyTorch into that process; with TensorFlow running it
crashes the process (a segfault, measured here with plain `keras.Model`:
Keras 3.15.1, TensorFlow 2.21, torch 2.11). Found by this project's
cross-backend tests; no upstream report located.

`backend_neutral(config)` names such classes by their public
`keras.optimizers` path instead, which resolves to the loading backend's
own class."""

PREFIX = "keras.src.backend."


def backend_neutral(config):
    """`config` (a serialized compile config) with every class defined in
    a backend's own module named by its public `keras.optimizers` path."""
    if isinstance(config, dict):
        config = {k: backend_neutral(v) for k, v in config.items()}
        module = config.get("module")
        if (isinstance(module, str) and module.startswith(PREFIX)
                and ".optimizers" in module):
            config["module"] = "keras.optimizers"
        return config
    if isinstance(config, list):
        return [backend_neutral(v) for v in config]
    return config
