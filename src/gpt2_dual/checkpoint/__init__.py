"""Checkpoints on disk, below ``gpt2_dual.pt`` and ``gpt2_dual.tf``: names, formats, reading.

Imports no framework (the ``.bin`` reader imports torch when called).

- ``names``: THE weight-name table, the only place that knows checkpoint names and layouts;
- ``hf``: transformers' file layout (``model.safetensors``, shard indexes, ``.bin``), finding a
  checkpoint and the lazy safetensors reader;
- ``safetensors_io``: streaming safetensors writes and dtype casts without a framework;
- ``torch_bin``: ``pytorch_model.bin``, unpickled only with ``weights_only`` loading;
- ``tf_h5``: reading transformers-TF ``tf_model.h5`` tensor by tensor;
- ``loading``: planning a load (missing, unexpected, mis-shaped, tied) and building the config.

Conversion between formats, which needs the models, is one layer up in ``gpt2_dual.convert``.
"""
