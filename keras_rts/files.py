"""Reading the files the package writes, with one clear error when one is
damaged: which file, what is wrong with it, and what to do."""

import json
import os


def read_json(path, remedy, kind=dict):
    """The JSON object (or, with `kind=None`, any JSON value) in `path`.

    Args:
        path: the file.
        remedy: what to do if it is damaged, said in the error.
        kind: the type the value must have, or `None` for any.

    Raises:
        ValueError: the file is not a complete JSON object (truncated by an
            interrupted write, say), naming it — not a parse position alone.
    """
    try:
        with open(path) as f:
            value = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path} does not exist: {remedy}") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is damaged (not complete JSON: {e.msg} at "
                         f"line {e.lineno} column {e.colno}): {remedy}") \
            from None
    except UnicodeDecodeError:
        raise ValueError(f"{path} is damaged (not text): {remedy}") from None
    if kind is not None and not isinstance(value, kind):
        raise ValueError(f"{path} is damaged (a JSON {type(value).__name__}, "
                         f"not an object): {remedy}")
    return value


def check_saved_model(path):
    """Raises a `ValueError` naming `path` if it is a damaged `.keras` file
    (not a whole zip archive, a member that does not read back, config.json
    or model.weights.h5 missing) or a damaged `.weights.h5` file — what
    Keras reports as "File not found" or an HDF5 error deep in loading.
    Reads the archive's members (their checksums), builds nothing."""
    import zipfile

    import h5py

    path = str(path)
    if not os.path.isfile(path):
        return  # Keras' own error names a missing file
    remedy = "save it again, or load an intact copy"
    if path.endswith(".keras"):
        if not zipfile.is_zipfile(path):
            raise ValueError(f"{path} is damaged (not a whole .keras zip "
                             f"archive: truncated?): {remedy}.")
        try:
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
                names = set(archive.namelist())
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            raise ValueError(f"{path} is damaged ({e}): {remedy}.") from None
        if bad is not None:
            raise ValueError(f"{path} is damaged (its {bad} does not read "
                             f"back): {remedy}.")
        missing = {"config.json", "model.weights.h5"} - names
        if missing:
            raise ValueError(f"{path} is not a whole .keras file (no "
                             f"{', '.join(sorted(missing))}): {remedy}.")
    elif path.endswith(".h5"):
        try:
            h5py.File(path, "r").close()
        except OSError:
            raise ValueError(f"{path} is damaged (not a readable HDF5 "
                             f"weights file: truncated?): {remedy}.") \
                from None
