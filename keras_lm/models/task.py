"""`Task`: a backbone plus an optional preprocessor, trained and served on raw inputs."""

import keras
import numpy as np

from keras_lm.models.preset_mixin import PresetMixin


def is_raw_text(x) -> bool:
    """True for a string, bytes, or a list / numpy array of strings."""
    if isinstance(x, (str, bytes)):
        return True
    if isinstance(x, np.ndarray):
        return x.dtype.kind in ("U", "S", "O")
    if isinstance(x, (list, tuple)) and x:
        return all(isinstance(item, (str, bytes)) for item in x)
    return False


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


@keras.saving.register_keras_serializable(package="keras_lm")
class Task(PresetMixin, keras.Model):
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
        if is_raw_text(x):
            return self.preprocessor(x)
        return x, y, sample_weight

    def fit(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """`keras.Model.fit` that also takes raw strings or a dataset of strings."""
        stream = is_batch_stream(x)
        x, y, sample_weight = self._preprocess_for_training(x, y, sample_weight)
        if stream and batch_size is None:
            batch_size = getattr(self, "_stream_batch_size", None)
        return super().fit(x=x, y=y, batch_size=batch_size, sample_weight=sample_weight, **kwargs)

    def evaluate(self, x=None, y=None, batch_size=None, sample_weight=None, **kwargs):
        """`keras.Model.evaluate` that also takes raw strings."""
        x, y, sample_weight = self._preprocess_for_training(x, y, sample_weight)
        return super().evaluate(
            x=x, y=y, batch_size=batch_size, sample_weight=sample_weight, **kwargs
        )

    def predict(self, x=None, batch_size=None, **kwargs):
        """`keras.Model.predict` that also takes raw strings (returns logits)."""
        if self.preprocessor is not None and is_raw_text(x):
            x = self.preprocessor(x)[0]
        return super().predict(x=x, batch_size=batch_size, **kwargs)

