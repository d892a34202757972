"""Measuring runs: retrieval metrics (pure functions), a run's embeddings of any split or
image folder, a saved run's evaluation, several runs compared, and the time-to-accuracy
benchmark."""

from .embeddings import ImageEmbeddings, run_data, trained_bank, split_embeddings, folder_embeddings
from .compare import (load_metrics, run_names, named_runs, metric_columns, comparison_rows, missing_notes,
    comparison_table)
from .metrics import recall_at_k, map_at_r, nmi, retrieval_metrics
from .run import evaluate_run, format_metrics
from .time_to_accuracy import (run_dir, train_one, run_record, benchmark, summary_rows, summary_table,
    write_summary, load_or_run, mean_std, stat_cell)
