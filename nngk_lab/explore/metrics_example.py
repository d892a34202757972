"""The retrieval measures the notebooks report (Recall@1, MAP@R), worked out item by item
on a handful of points, so a student can check each number by hand against
:func:`nngk_lab.evaluation.metrics.recall_at_k` and :func:`~nngk_lab.evaluation.metrics.map_at_r`."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class WorkedItem:
    """One query of the worked example: the labels of the other items, nearest first."""

    index: int
    label: int
    ranking: list[int]        # labels of all other items, nearest first
    r: int                    # how many other items share the query's label
    precisions: list[float]   # P(i) at each rank i <= R where the i-th item is relevant

    @property
    def hit_at_1(self) -> bool:
        return bool(self.ranking) and self.ranking[0] == self.label

    @property
    def ap_at_r(self) -> float | None:
        """(1/R) * sum of P(i) over the relevant ranks among the first R; None when R = 0."""
        return sum(self.precisions) / self.r if self.r else None


def worked_retrieval(features: torch.Tensor, labels: torch.Tensor) -> list[WorkedItem]:
    """For every item as a query: the other items ranked by squared Euclidean distance
    (ties by index), R and the precisions that make up its AP@R."""
    features, labels = features.double(), torch.as_tensor(labels)
    if features.dim() != 2 or labels.shape != features.shape[:1] or len(labels) < 2:
        raise ValueError(f"features {tuple(features.shape)} and labels {tuple(labels.shape)} must be (N, D) and (N,)"
                         " with N >= 2")
    items = []
    for q in range(len(labels)):
        others = [j for j in range(len(labels)) if j != q]
        others.sort(key=lambda j: (float(((features[q] - features[j]) ** 2).sum()), j))
        ranking = [int(labels[j]) for j in others]
        label = int(labels[q])
        r = ranking.count(label)
        precisions = [sum(x == label for x in ranking[:i]) / i for i in range(1, r + 1) if ranking[i - 1] == label]
        items.append(WorkedItem(q, label, ranking, r, precisions))
    return items


def worked_retrieval_text(items: list[WorkedItem]) -> str:
    """One line per query, then Recall@1 and MAP@R as the means of its columns."""
    lines = ["query  label  others' labels, nearest first   hit@1   R   AP@R"]
    for item in items:
        ap = "  -  " if item.ap_at_r is None else f"{item.ap_at_r:.3f}"
        terms = " + ".join(f"{p:.2f}" for p in item.precisions) or "0"
        lines.append(f"{item.index:5d}  {item.label:5d}  {' '.join(map(str, item.ranking)):30s}  "
                     f"{'yes' if item.hit_at_1 else 'no ':5s}  {item.r:2d}   {ap}"
                     + (f"  = ({terms}) / {item.r}" if item.r else ""))
    valid = [item.ap_at_r for item in items if item.ap_at_r is not None]
    recall = sum(item.hit_at_1 for item in items) / len(items)
    lines.append(f"Recall@1 = {sum(item.hit_at_1 for item in items)} hits / {len(items)} queries = {recall:.3f}")
    lines.append(f"MAP@R = mean of the AP@R column = {sum(valid) / len(valid):.3f}" if valid
                 else "MAP@R: no query has another item of its class")
    return "\n".join(lines)
