"""Training from the command line (``gpt2-dual train`` and ``gpt2-dual eval``): the token
cache and the batch order, learning-rate schedules, checkpoints in transformers' layout, logs,
sliding-window perplexity and the loop that drives each framework's optimizer step
(``gpt2_dual.pt.train_step``, ``gpt2_dual.tf.train_step``)."""
