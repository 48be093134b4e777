"""Private: `GradWatch`'s TensorBoard event files (`tensorboard=True`)."""

import math
import pathlib

import tensorflow as tf


def _finite(value):
    return value is not None and math.isfinite(value)


class Board:
    """Writes a run's scalars and plots as TensorBoard events in `log_dir`."""

    def __init__(self, log_dir):
        self.log_dir = pathlib.Path(log_dir)
        self._writer = tf.summary.create_file_writer(str(self.log_dir))

    def steps(self, step_records):
        """Per-step loss and grad_norm, from step records."""
        with self._writer.as_default():
            for record in step_records:
                for key in ("loss", "grad_norm"):
                    if _finite(record.get(key)):
                        tf.summary.scalar(f"train/{key}", record[key], step=record["step"])

    def measurement(self, step, result):
        """Gradient norms, decay rates and horizons of a `Measurement`."""
        with self._writer.as_default():
            if _finite(result.global_norm):
                tf.summary.scalar("gradients/global_norm", result.global_norm, step=step)
            for name, norm in (result.layer_norms or {}).items():
                if _finite(norm):
                    tf.summary.scalar(f"gradients/{name}", norm, step=step)
            for name, record in result.layers.items():
                if _finite(record.decay_rate):
                    tf.summary.scalar(f"decay_rate/{name}", record.decay_rate, step=step)
                tf.summary.scalar(f"horizon/{name}", record.horizon, step=step)

    def images(self, step, names):
        """The plots of the run folder, as images."""
        with self._writer.as_default():
            for name in names:
                path = self.log_dir / name
                if path.exists():
                    image = tf.image.decode_png(path.read_bytes(), channels=4)
                    tf.summary.image(f"plots/{path.stem}", image[None], step=step)

    def flush(self):
        self._writer.flush()
