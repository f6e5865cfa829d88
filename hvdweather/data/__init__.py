"""Data: discovery of class folders, decoding, the stratified split, the tf.data pipeline, synthetic sets."""
