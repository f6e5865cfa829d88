"""The checkpoint callback: last.keras, best.keras and the resume state at each epoch end."""
from __future__ import annotations

import tensorflow as tf

from hvdweather.resume import STATE_FILE, capture
from hvdweather.writers import RunWriter


class Checkpoints(tf.keras.callbacks.Callback):
    """last.keras every epoch; best.keras when val_loss (else loss) improves; then the resume state
    (hvdweather.resume), so last.keras is never newer than what a resume continues from.

    Files are written atomically by the primary only (via the writer). Every rank keeps the best weights
    in memory: the averaged val_loss is the same on all ranks, so all restore the same weights for the
    test report without reading a file another node wrote.
    """

    def __init__(self, writer: RunWriter, best_loss: float = float("inf"), best_epoch: int = 0,
                 best_weights: list | None = None):
        super().__init__()
        self.writer, self.best_loss = writer, best_loss
        self.best_epoch = best_epoch
        self.best_weights: list | None = best_weights

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        monitor = logs.get("val_loss", logs.get("loss"))
        self.writer.save_model("last.keras", self.model)
        if monitor is not None and monitor < self.best_loss:
            self.best_loss, self.best_epoch = float(monitor), epoch + 1
            self.best_weights = self.model.get_weights()
            # The model just saved as last.keras: a link to that file, not a second save (~0.1 s of
            # Keras serialising the same model again, paid once per improving epoch while the other
            # ranks wait in the next step's allreduce).
            self.writer.copy_file("last.keras", "best.keras")
        self.writer.save_state(STATE_FILE, lambda: capture(self.model, epoch + 1, self.best_loss,
                                                           self.best_epoch, self.best_weights))
