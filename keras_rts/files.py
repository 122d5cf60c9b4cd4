"""Reading the files the package writes, with one clear error when one is
damaged: which file, what is wrong with it, and what to do."""

import json


def read_json(path, remedy):
    """The JSON object in `path`.

    Args:
        path: the file.
        remedy: what to do if it is damaged, said in the error.

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
    if not isinstance(value, dict):
        raise ValueError(f"{path} is damaged (a JSON {type(value).__name__}, "
                         f"not an object): {remedy}")
    return value
