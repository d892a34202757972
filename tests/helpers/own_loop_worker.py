"""A user's own loop with NNGKLoss, run by tests/kernel/test_nngk_loss_torchrun.py as one
process or as a process of a torchrun group: each process trains on its slice of every
global batch, the loss's kernel weights sit in DistributedDataParallel with the network,
and the bank is refreshed (sharded) at each epoch and moved online after each step.
Usage: python own_loop_worker.py OUT.pt"""

import sys

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from nngk_lab import NNGKLoss, WithIndex, distributed

N, BATCH, EPOCHS = 48, 8, 2


def main(out: str) -> None:
    torch.set_num_threads(1)
    with distributed.session("cpu", None, 1.0) as device:
        g = torch.Generator().manual_seed(0)
        data, labels = torch.randn(N, 6, generator=g), torch.randint(3, (N,), generator=g)
        dataset = WithIndex(TensorDataset(data, labels))
        torch.manual_seed(0)
        model, loss_fn = nn.Linear(6, 4), NNGKLoss(N, 1.0, 5, momentum=0.5)
        network = distributed.wrap(model, [loss_fn], device, sync_bn=False)
        optimiser = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-2)
        rank, world = distributed.rank(), distributed.world_size()
        for epoch in range(EPOCHS):
            loss_fn.refresh(model, DataLoader(dataset, batch_size=BATCH))  # the same whole loader everywhere
            for batch in torch.randperm(N, generator=torch.Generator().manual_seed(epoch)).split(BATCH):
                mine = batch.tensor_split(world)[rank]
                embeddings = network(data[mine])
                loss = loss_fn(embeddings, labels[mine], mine)
                optimiser.zero_grad()
                loss.backward()
                optimiser.step()
                loss_fn.update(embeddings.detach(), mine)
        torch.save({"model": model.state_dict(), "loss": loss_fn.state_dict()}, out)


if __name__ == "__main__":
    main(sys.argv[1])
