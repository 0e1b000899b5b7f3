"""Keras 3 / TensorFlow GPT-2 models (issue 4). Importing this package imports keras."""
