"""Jobs built on the pipeline's API, each running many pipelines: batch (models × variants, local
or Ray), demo (the embedded digits job), sensitivity (accuracy per group and a ratio plan) and
schedules (iterative and soft filter pruning). They import ``pipeline``, ``passes`` and ``ir``;
only ``cli`` imports them."""
