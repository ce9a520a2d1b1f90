"""`Task`: a backbone plus an optional preprocessor, trained and served on raw inputs."""

import keras
import numpy as np

from keras_lm import checks
from keras_lm.layers.remat import StaticArgumentsRemat
from keras_lm.layers.variable_release import CollectsOnceAfterQuantize
from keras_lm.presets.mixin import PresetMixin


def is_raw_text(x) -> bool:
    """True for a string, bytes, or a list / numpy array of strings."""
    if isinstance(x, (str, bytes)):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype.kind in ("U", "S", "O")
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(item, (str, bytes)) for item in x)
    return False


def is_prompt_response(x) -> bool:
    """True for KerasHub's `{"prompts": ..., "responses": ...}` training input."""
    return isinstance(x, dict) and set(x) == {"prompts", "responses"}


def is_batch_stream(x) -> bool:
    """True for a tf.data.Dataset or any iterator / generator of batches."""
    if type(x).__module__.startswith("tensorflow") and hasattr(x, "element_spec"):
        return True
    return hasattr(x, "__next__") or (
        hasattr(x, "__iter__") and not isinstance(x, (str, bytes, list, tuple, dict, np.ndarray))
        and not hasattr(x, "shape")
    )


def to_numpy_tree(x):
    """Convert tf / backend tensors inside a nest to numpy (strings stay Python strings)."""
    if isinstance(x, dict):
        return {k: to_numpy_tree(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)) and not is_raw_text(x):
        return type(x)(to_numpy_tree(v) for v in x)
    if hasattr(x, "numpy") and not isinstance(x, np.ndarray):
        value = x.numpy()
        if isinstance(value, np.ndarray) and value.dtype.kind in ("S", "O"):
            return [v.decode("utf-8") if isinstance(v, bytes) else v for v in value.tolist()]
        return value.decode("utf-8") if isinstance(value, bytes) else value
    return x


def check_token_inputs(x, name: str, vocabulary_size: int | None) -> None:
    """`x` is `{"token_ids", "padding_mask"}`: 2-D, same shape, at least one row, integer ids
    within the vocabulary."""
    if not isinstance(x, dict) or "token_ids" not in x or "padding_mask" not in x:
        raise TypeError(
            f"`{name}` must be strings (with a preprocessor), a dict with `token_ids` and "
            f"`padding_mask`, or a dataset of those. Received: {_describe(x)}"
        )
    token_ids = np.asarray(keras.ops.convert_to_numpy(x["token_ids"]))
    mask = np.asarray(keras.ops.convert_to_numpy(x["padding_mask"]))
    if token_ids.ndim != 2 or token_ids.dtype.kind not in "iu":
        raise ValueError(
            f"`{name}['token_ids']` must be a 2-D integer array. Received shape "
            f"{token_ids.shape}, dtype {token_ids.dtype}"
        )
    if mask.shape != token_ids.shape:
        raise ValueError(
            f"`{name}['padding_mask']` must have the shape of `token_ids` {token_ids.shape}. "
            f"Received shape {mask.shape}"
        )
    if token_ids.shape[0] == 0:
        raise ValueError(f"`{name}` is empty: pass at least one example.")
    if vocabulary_size is not None:
        checks.token_id_array(token_ids, f"{name}['token_ids']", vocabulary_size)


def _describe(x) -> str:
    shape = getattr(x, "shape", None)
    return type(x).__name__ + ("" if shape is None else f" of shape {tuple(shape)}")


@keras.saving.register_keras_serializable(package="keras_lm")
class Task(CollectsOnceAfterQuantize, StaticArgumentsRemat, PresetMixin, keras.Model):
    """Base class of task models: `backbone`, `preprocessor`, and preset support.

    Example:
    >>> lm = keras_lm.models.Task.from_preset("./my_preset")  # doctest: +SKIP
    """

    preset_kind = "task"
    preprocessor_cls = None

    @property
    def preprocessor(self):
        """The `Preprocessor` applied to raw inputs, or None."""
        return self._preprocessor

    @preprocessor.setter
    def preprocessor(self, value):
        self._preprocessor = value

    def get_config(self) -> dict:
        return {
            "name": self.name,
            "trainable": self.trainable,
            "backbone": keras.saving.serialize_keras_object(self.backbone),
            "preprocessor": (
                None
                if self.preprocessor is None
                else keras.saving.serialize_keras_object(self.preprocessor)
            ),
        }

    @classmethod
    def from_config(cls, config: dict):
        config = dict(config)
        for key in ("backbone", "preprocessor"):
            if isinstance(config.get(key), dict):
                config[key] = keras.saving.deserialize_keras_object(config[key])
        return cls(**config)

    # -- training on raw inputs ---------------------------------------------------------------
    def _preprocess_for_training(self, x, y, sample_weight):
        if self.preprocessor is None:
            return x, y, sample_weight
        if is_batch_stream(x):
            xs, ys, ws = [], [], []
            for batch in x:
                batch = to_numpy_tree(batch)
                if isinstance(batch, tuple):
                    batch = batch[0]
                bx, by, bw = self._preprocess_for_training(batch, None, None)
                xs.append(bx)
                ys.append(by)
                ws.append(bw)
            if not xs:
                raise ValueError("`x` is an empty dataset.")
            self._stream_batch_size = len(ys[0])
            x = {k: np.concatenate([b[k] for b in xs]) for k in xs[0]}
            return x, np.concatenate(ys), np.concatenate(ws)
        if is_raw_text(x) or is_prompt_response(x):
            return self.preprocessor(x)
        return x, y, sample_weight

    def _training_inputs(self, x, y, sample_weight, need_labels=True):
        """Preprocess, then check, before Keras sees anything: a dict of 2-D integer
        `token_ids` within the vocabulary and a `padding_mask` of the same shape."""
        if isinstance(x, (list, tuple)) and len(x) == 0:
            raise ValueError("`x` is empty: pass at least one example.")
        if (is_raw_text(x) or is_prompt_response(x)) and self.preprocessor is None:
            raise ValueError("String `x` needs a preprocessor; this model has none.")
        x, y, sample_weight = self._preprocess_for_training(x, y, sample_weight)
        if is_batch_stream(x):  # a dataset of model inputs, for Keras to read
            return x, y, sample_weight
        check_token_inputs(x, "x", getattr(self.backbone, "vocabulary_size", None))
        if need_labels and y is None:
            raise ValueError(
                "`y` is missing: pass raw strings (labels are computed from them) or "
                "`y` with a dict `x`."
            )
        _check_label_shape(x, y)
        return x, y, sample_weight

    def fit(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """`keras.Model.fit` that also takes raw strings or a dataset of strings."""
        stream = is_batch_stream(x)
        x, y, sample_weight = self._training_inputs(x, y, sample_weight)
        if stream and batch_size is None:
            batch_size = getattr(self, "_stream_batch_size", None)
        return super().fit(x=x, y=y, batch_size=batch_size, sample_weight=sample_weight, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """`keras.Model.evaluate` that also takes raw strings."""
        x, y, sample_weight = self._training_inputs(x, y, sample_weight)
        return super().evaluate(
            x=x, y=y, batch_size=batch_size, sample_weight=sample_weight, **kwargs
        )

    def predict(self, x=None, batch_size=None, **kwargs):
        """`keras.Model.predict` that also takes raw strings (returns logits)."""
        if self.preprocessor is not None and is_raw_text(x):
            x = self.preprocessor(x)[0]
        elif not is_batch_stream(x):
            x, _, _ = self._training_inputs(x, None, None, need_labels=False)
        return super().predict(x=x, batch_size=batch_size, **kwargs)


def _check_label_shape(x, y) -> None:
    """Labels are one target id per token: `y` has the shape of `x["token_ids"]`."""
    if not isinstance(x, dict) or getattr(y, "shape", None) is None:
        return
    tokens, labels = tuple(x["token_ids"].shape), tuple(y.shape)
    if labels != tokens and labels != tokens + (1,):
        raise ValueError(
            f"`y` must have the shape of `x['token_ids']` {tokens}: one target id per token. "
            f"Received shape {labels}"
        )
