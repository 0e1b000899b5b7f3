"""The "text-classification" and "token-classification" pipelines (transformers' outputs).

Shapes: B texts in a batch, T tokens, L labels (``config.num_labels``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from gpt2_dual.pipelines.base import Pipeline, batches, encode_with_offsets, pad, softmax

__all__ = ["TextClassificationPipeline", "TokenClassificationPipeline"]

_UNSET: Any = object()
FUNCTIONS = ("softmax", "sigmoid", "none")


def _texts(inputs: Any, task: str) -> tuple[list[str], bool]:
    """``inputs`` as a list of texts, and whether it was one text."""
    if isinstance(inputs, str):
        return [inputs], True
    if isinstance(inputs, list | tuple) and inputs and all(isinstance(t, str) for t in inputs):
        return list(inputs), False
    if isinstance(inputs, dict) or (isinstance(inputs, list | tuple) and inputs):
        raise NotImplementedError(
            f"{task} takes a text or a list of texts; text pairs are not supported (GPT-2 has "
            "no pair format)"
        )
    raise TypeError(f"{task} takes a text or a non-empty list of texts, got {inputs!r}")


class TextClassificationPipeline(Pipeline):
    """Label a whole text with ``GPT2ForSequenceClassification`` (transformers' pipeline).

    Call options:
        top_k: how many labels per text, best first; None: all of them. Without ``top_k``, one
            text gives ``[{"label", "score"}]`` and a list gives one such dict per text;
            with it, each text gives a list of dicts.
        function_to_apply: "softmax", "sigmoid" or "none"; default: "none" for
            ``problem_type="regression"``, "sigmoid" for multi-label or ``num_labels == 1``,
            else "softmax" (transformers' rules).
        batch_size: texts per forward pass; above 1 the rows are right-padded with
            ``config.pad_token_id``, which must be set.
        truncation: cut texts to the model's ``n_positions`` (default True).

    Example:
        >>> clf("What a lovely day", top_k=None)  # doctest: +SKIP
        [{'label': 'POSITIVE', 'score': 0.98}, {'label': 'NEGATIVE', 'score': 0.02}]
    """

    task = "text-classification"
    options = ("top_k", "function_to_apply", "truncation")

    def __call__(self, inputs: str | list[str], **kwargs: Any) -> list[Any]:
        """Classify a text ``str`` or texts ``list[str]``; see the class docstring."""
        params = self._options(kwargs)
        texts, single = _texts(inputs, self.task)
        top_k = params.get("top_k", _UNSET)
        function = self._function(params.get("function_to_apply"))
        limit = self.max_positions if params.get("truncation", True) else None
        pad_id = self.model.config.pad_token_id
        if params["batch_size"] > 1 and pad_id is None and len(texts) > 1:
            raise ValueError(
                "batch_size > 1 needs model.config.pad_token_id (sequence classification pools "
                "the last non-pad token); set model.config.pad_token_id = tokenizer.eos_token_id"
            )
        results = []
        for batch in batches(texts, params["batch_size"]):
            rows = [self.tokenizer(t)["input_ids"][:limit] for t in batch]
            ids, mask = pad(rows, pad_id if pad_id is not None else 0, "right")
            logits = self.forward(ids, mask)["logits"]  # (B, L)
            results += [self._labels(function(row.astype(np.float64)), top_k) for row in logits]
        if top_k is _UNSET or not single:
            return results  # one dict per text (transformers' form without top_k)
        return results[0]

    def _function(self, name: str | None) -> Any:
        config = self.model.config
        if name is None:
            if config.problem_type == "regression":
                name = "none"
            elif config.problem_type == "multi_label_classification" or config.num_labels == 1:
                name = "sigmoid"
            else:
                name = "softmax"
        if not isinstance(name, str) or name.lower() not in FUNCTIONS:
            raise ValueError(f"function_to_apply must be one of {FUNCTIONS}, got {name!r}")
        return {
            "softmax": softmax,
            "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
            "none": lambda x: x,
        }[name.lower()]

    def _labels(self, scores: np.ndarray, top_k: Any) -> Any:
        id2label = self.model.config.id2label
        if top_k is _UNSET:
            best = int(scores.argmax())
            return {"label": id2label[best], "score": float(scores[best])}
        if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
            raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
        order = np.argsort(-scores, kind="stable")[:top_k]
        return [{"label": id2label[int(i)], "score": float(scores[i])} for i in order]


class TokenClassificationPipeline(Pipeline):
    """Label each token with ``GPT2ForTokenClassification`` (transformers' pipeline with
    ``aggregation_strategy="none"``).

    Each text gives a list of ``{"entity": label, "score": probability, "index": token
    position, "word": the token (GPT-2's byte alphabet, "Ġworld"), "start", "end": character
    offsets into the text}``; the BOS token the tokenizer adds is skipped, as are tokens labelled
    with one of ``ignore_labels``.

    Call options:
        ignore_labels: labels left out (default ``["O"]``).
        aggregation_strategy: "none" only (grouping tokens into words is not implemented).
        batch_size: texts per forward pass (right-padded).

    Example:
        >>> ner("Hello world")  # doctest: +SKIP
        [{'entity': 'B-PER', 'score': 0.91, 'index': 0, 'word': 'Hello', 'start': 0, 'end': 5}]
    """

    task = "token-classification"
    options = ("ignore_labels", "aggregation_strategy")

    def __call__(self, inputs: str | list[str], **kwargs: Any) -> list[Any]:
        """Label the tokens of a text ``str`` or texts ``list[str]``."""
        params = self._options(kwargs)
        texts, single = _texts(inputs, self.task)
        strategy = params.get("aggregation_strategy") or "none"
        if str(strategy).lower() != "none":
            raise NotImplementedError(
                f"aggregation_strategy={strategy!r} is not supported; only 'none' (one entry "
                "per token)"
            )
        ignore = params.get("ignore_labels")
        ignore = ["O"] if ignore is None else list(ignore)
        pad_id = self.tokenizer.eos_token_id or 0
        results = []
        for batch in batches(texts, params["batch_size"]):
            encoded = [encode_with_offsets(self.tokenizer, t, self.max_positions) for t in batch]
            ids, mask = pad([e[0] for e in encoded], pad_id, "right")
            scores = softmax(self.forward(ids, mask)["logits"].astype(np.float64))  # (B, T, L)
            for row, (row_ids, offsets, special) in enumerate(encoded):
                results.append(self._entities(row_ids, offsets, special, scores[row], ignore))
        return results[0] if single else results

    def _entities(self, ids, offsets, special, scores, ignore) -> list[dict[str, Any]]:
        id2label = self.model.config.id2label
        tokens = self.tokenizer.convert_ids_to_tokens(ids)
        entities = []
        for index, (token, (start, end), skip) in enumerate(
            zip(tokens, offsets, special, strict=True)
        ):
            best = int(scores[index].argmax())
            if skip or id2label[best] in ignore:
                continue
            entities.append(
                {
                    "entity": id2label[best],
                    "score": float(scores[index, best]),
                    "index": index,
                    "word": token,
                    "start": int(start),
                    "end": int(end),
                }
            )
        return entities
