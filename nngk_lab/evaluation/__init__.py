"""Measuring runs: retrieval metrics (pure functions), a run's embeddings of any split or
image folder, a saved run's evaluation, several runs compared, and the time-to-accuracy
benchmark."""

from .compare import (
    comparison_rows,
    comparison_table,
    load_metrics,
    metric_columns,
    missing_notes,
    named_runs,
    run_names,
)
from .embeddings import ImageEmbeddings, folder_embeddings, run_data, split_embeddings, trained_bank
from .metrics import map_at_r, nmi, recall_at_k, retrieval_metrics
from .run import evaluate_run, format_metrics
from .time_to_accuracy import (
    benchmark,
    load_or_run,
    mean_std,
    run_dir,
    run_record,
    stat_cell,
    summary_rows,
    summary_table,
    train_one,
    write_summary,
)
