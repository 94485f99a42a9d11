"""A small residual CNN for scikit-learn's bundled handwritten digits (8×8, 10 classes).

The CIFAR-10 / ResNet-56 experiment of LWIQ (arXiv 2408.01534) at this machine's scale: the data
ships inside scikit-learn (``sklearn.datasets.load_digits``, 1797 images, no download), the
network is a ResNet-style stack of 3×3 convolutions (three stages of two basic blocks, 16/32/64
channels, ~0.17M parameters) that trains to ~98-99% test accuracy in well under a minute on one
CPU thread.

Run ``python benchmarks/digits_cnn.py`` to train once and print accuracy and time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

__all__ = ["DigitsData", "ResNetDigits", "accuracy", "load_digits_data", "train"]


@dataclass(frozen=True)
class DigitsData:
    """Stratified train / validation / test splits as float tensors (N, 1, 8, 8) in [0, 1]."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor

    def batches(
        self, split: str = "train", batch_size: int = 128
    ) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The split as a list of (images, labels) batches, in a fixed order."""
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        return [
            (x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(y), batch_size)
        ]


def load_digits_data(seed: int = 0, val: float = 0.1, test: float = 0.2) -> DigitsData:
    """Load the bundled digits and split them (stratified, seeded)."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = torch.tensor(digits.images / 16.0, dtype=torch.float32)[:, None]
    y = torch.tensor(digits.target, dtype=torch.int64)
    idx = np.arange(len(y))
    rest, te = train_test_split(idx, test_size=test, stratify=digits.target, random_state=seed)
    tr, va = train_test_split(
        rest, test_size=val / (1 - test), stratify=digits.target[rest], random_state=seed
    )
    return DigitsData(x[tr], y[tr], x[va], y[va], x[te], y[te])


class _Block(nn.Module):
    """Basic residual block: conv-BN-ReLU-conv-BN plus an identity or 1×1 projection."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetDigits(nn.Module):
    """Stem 3×3 conv (1→w), three stages of ``blocks`` basic blocks (w, 2w, 4w), pool, linear."""

    def __init__(self, width: int = 16, blocks: int = 2, n_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        layers: list[nn.Module] = []
        c = width
        for stage, mult in enumerate((1, 2, 4)):
            for b in range(blocks):
                stride = 2 if (stage > 0 and b == 0) else 1
                layers.append(_Block(c, width * mult, stride))
                c = width * mult
        self.layers = nn.Sequential(*layers)
        self.fc = nn.Linear(c, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.layers(self.stem(x))
        return self.fc(h.mean(dim=(2, 3)))


def _shift(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random translation by up to one pixel (zero padding), per image."""
    pad = nn.functional.pad(x, (1, 1, 1, 1))
    dx, dy = torch.randint(0, 3, (2,), generator=gen).tolist()
    return pad[:, :, dy : dy + 8, dx : dx + 8]


def train(
    model: nn.Module,
    data: DigitsData,
    *,
    epochs: int = 30,
    lr: float = 0.05,
    batch_size: int = 64,
    seed: int = 0,
) -> nn.Module:
    """SGD with momentum, cosine schedule, label smoothing 0.05, one-pixel shifts; in place."""
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4, nesterov=True)
    steps = epochs * ((len(data.y_train) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.15)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(data.y_train), generator=gen)
        for i in range(0, len(perm), batch_size):
            rows = perm[i : i + batch_size]
            x = _shift(data.x_train[rows], gen)
            loss = loss_fn(model(x), data.y_train[rows])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    return model


@torch.no_grad()
def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in percent (eval mode)."""
    was = model.training
    model.eval()
    correct = sum(
        int((model(x[i : i + 512]).argmax(1) == y[i : i + 512]).sum())
        for i in range(0, len(y), 512)
    )
    model.train(was)
    return 100.0 * correct / len(y)


if __name__ == "__main__":
    torch.set_num_threads(1)
    torch.manual_seed(0)
    d = load_digits_data()
    net = ResNetDigits()
    t0 = time.perf_counter()
    train(net, d)
    print(
        f"params {sum(p.numel() for p in net.parameters())}  "
        f"train {time.perf_counter() - t0:.1f}s  "
        f"val {accuracy(net, d.x_val, d.y_val):.2f}%  test {accuracy(net, d.x_test, d.y_test):.2f}%"
    )
