"""``pipeline(task, model=...)``: transformers' pipelines for the GPT-2 heads, in both frameworks.

- ``factory``: ``pipeline()`` and the task table;
- ``base``: ``Pipeline`` and the helpers the tasks share, all numpy;
- ``generation``, ``classification``, ``qa``: one module per task family.
"""

from gpt2_dual.pipelines.base import Pipeline
from gpt2_dual.pipelines.factory import SUPPORTED_TASKS, TASK_ALIASES, pipeline

__all__ = ["SUPPORTED_TASKS", "TASK_ALIASES", "Pipeline", "pipeline"]
