"""Pure, stateless TensorFlow math shared by the layers (no weights, no Keras)."""
