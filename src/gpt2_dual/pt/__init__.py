"""PyTorch GPT-2 models (issue 3). Importing this package imports torch."""
