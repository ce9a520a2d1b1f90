"""`generate`'s return values: strings, or right-padded token dicts, per prompt or per beam.

Example:
>>> rows_to_token_dict([[5, 6, 7], [8]], width=4, pad=0)["padding_mask"].sum(axis=1)
array([3, 1])
"""

import numpy as np


def rows_to_token_dict(rows, width: int, pad: int) -> dict:
    """Ragged id rows as `{"token_ids", "padding_mask"}`, right-padded to at least `width`."""
    width = max([width] + [len(r) for r in rows])
    token_ids = np.full((len(rows), width), pad, dtype=np.int32)
    padding_mask = np.zeros((len(rows), width), dtype=bool)
    for i, row in enumerate(rows):
        token_ids[i, : len(row)] = row
        padding_mask[i, : len(row)] = True
    return {"token_ids": token_ids, "padding_mask": padding_mask}


def concatenate(outputs: list):
    """The outputs of several batches as one: dicts padded to the widest and stacked, lists
    and strings flattened in order."""
    if not outputs:
        return []
    if isinstance(outputs[0], dict):
        width = max(o["token_ids"].shape[1] for o in outputs)
        merged = {}
        for key in outputs[0]:
            parts = [np.pad(o[key], ((0, 0), (0, width - o[key].shape[1]))) for o in outputs]
            merged[key] = np.concatenate(parts)
        return merged
    flat = []
    for o in outputs:
        flat.extend(o if isinstance(o, list) else [o])
    return flat
