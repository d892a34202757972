"""NNGK in a plain PyTorch loop: the small CNN on the digits with nngk_lab.NNGKLoss.
Run: python examples/own_loop.py [epochs]"""
import sys

import torch
from pytorch_metric_learning import losses  # noqa: F401 (for the one line that swaps the loss)
from sklearn.datasets import load_digits
from torch.utils.data import DataLoader, TensorDataset

from nngk_lab import BanklessLoss, NNGKLoss, WithIndex, build_model  # noqa: F401

torch.manual_seed(0)
digits = load_digits()  # 1797 8x8 images of 10 digits: 1500 to train on, the rest to test
images = torch.tensor(digits.images, dtype=torch.float32).div(16).unsqueeze(1).expand(-1, 3, -1, -1)
labels = torch.tensor(digits.target)
train_set = WithIndex(TensorDataset(images[:1500], labels[:1500]))  # items (image, label, index)
train_loader = DataLoader(train_set, batch_size=64, shuffle=True)
bank_loader = DataLoader(train_set, batch_size=256)  # what the refresh embeds: no augmentation

model = build_model("small_cnn", pretrained="none", normalise=True)
loss_fn = NNGKLoss(len(train_set), sigma=0.2, num_neighbours=20)
# loss_fn = BanklessLoss(losses.MultiSimilarityLoss())  # this line instead: a pytorch-metric-learning loss
optimiser = torch.optim.Adam([*model.parameters(), *loss_fn.parameters()], lr=1e-3)

for epoch in range(int(sys.argv[1]) if len(sys.argv) > 1 else 5):
    loss_fn.refresh(model, bank_loader)  # every centre recomputed, K nearest searched (PML: nothing)
    model.train()
    for x, y, index in train_loader:
        loss = loss_fn(model(x), y, index)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    print(f"epoch {epoch + 1}: last batch's loss {loss.item():.4f}")

model.eval()
with torch.no_grad():
    nearest = torch.cdist(model(images[1500:]), model(images[:1500])).argmin(1)
print(f"test accuracy of the nearest training image's label: {(labels[nearest] == labels[1500:]).float().mean():.3f}")
