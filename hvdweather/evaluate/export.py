"""Export a run's model as a TF SavedModel for TF Serving: encoded image bytes in, probabilities out.

    hvdweather-export runs/one --out exports/weather            # writes exports/weather/1/ (then 2/, ...)
    saved_model_cli run --dir exports/weather/1 --tag_set serve --signature_def serving_default \
        --input_exprs 'image_bytes=[open("photo.jpg","rb").read()]'

The serving function decodes, resizes and normalises inside the graph with the training pipeline's own
functions (`decode_tf.decode_bytes`, `pipeline.normalize`), so a client sends raw JPEG/PNG bytes and
needs nothing from this package. Plain JPEG and 8-bit PNG give exactly the training pixels; other files
(CMYK JPEG, 16-bit PNG, BMP, GIF) are decoded by `tf.io.decode_image`, close to but not the same as
training's Pillow route (see decode_bytes).
"""
from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from hvdweather.data.decode_tf import decode_bytes
from hvdweather.data.pipeline import to_unit_range
from hvdweather.errors import check_output_dir
from hvdweather.evaluate.predict import load_keras
from hvdweather.evaluate.runmodel import RunModel, check_run_dir

SIGNATURE = "serving_default"
INPUT_NAME = "image_bytes"  # TF Serving's REST API base64-decodes inputs whose name ends in _bytes


class WeatherServing(tf.Module):
    """The Keras model wrapped with the training preprocessing and the class names."""

    def __init__(self, model: tf.keras.Model, class_names: tuple[str, ...], image_size: int):
        super().__init__()
        self.model = model
        self.image_size = image_size
        self.class_names = tf.constant(list(class_names))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=INPUT_NAME)])
    def serve(self, image_bytes: tf.Tensor) -> dict[str, tf.Tensor]:
        """A batch of encoded images -> probabilities [B, C], class_names [B, C], predicted_class [B]."""
        images = tf.map_fn(lambda raw: decode_bytes(raw, self.image_size), image_bytes,
                           fn_output_signature=tf.TensorSpec((self.image_size, self.image_size, 3), tf.uint8))
        probabilities = tf.nn.softmax(self.model(to_unit_range(images), training=False))
        batch = tf.shape(probabilities)[0]
        # Per-row class names: TF Serving's row format needs every output to have the batch dimension.
        names = tf.tile(self.class_names[tf.newaxis, :], [batch, 1])
        return {"probabilities": probabilities, "class_names": names,
                "predicted_class": tf.gather(self.class_names, tf.argmax(probabilities, axis=1))}


def next_version(export_dir: Path) -> Path:
    """EXPORT_DIR/<n>: 1, or one more than the highest integer folder there (TF Serving loads the highest)."""
    versions = [int(p.name) for p in export_dir.iterdir() if p.is_dir() and p.name.isdigit()] \
        if export_dir.is_dir() else []
    return export_dir / str(max(versions, default=0) + 1)


def export_model(run_model: RunModel, export_dir: str | Path) -> Path:
    """Write the SavedModel into the next free version folder of `export_dir`; returns that folder."""
    module = WeatherServing(load_keras(run_model), run_model.class_names, run_model.image_size)
    target = next_version(Path(export_dir))
    tf.saved_model.save(module, str(target), signatures={SIGNATURE: module.serve})
    return target


def run_export(run_dir: str, out: str, checkpoint: str = "best") -> Path:
    """hvdweather-export: checks first (run, checkpoint, writable --out), then the SavedModel."""
    run_model = check_run_dir(run_dir, checkpoint)
    check_output_dir(out)
    target = export_model(run_model, out)
    print(f"exported {run_model.checkpoint} ({len(run_model.class_names)} classes, {run_model.image_size} px) "
          f"to {target}; signature {SIGNATURE}: {INPUT_NAME} (encoded JPEG/PNG strings) -> probabilities, "
          "class_names, predicted_class", flush=True)
    return target
