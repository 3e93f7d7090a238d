"""Shared test support: a tiny in-memory dataset and model so the loop's tests do not depend on the zoo or the files."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn


class TinyLoader:
    """Seeded per-epoch shuffling like the in-memory loader: order depends on (seed, epoch) only."""

    def __init__(self, x, y, batch_size, shuffle, seed=0):
        self.x, self.y, self.batch_size, self.shuffle, self.seed, self.epoch = x, y, batch_size, shuffle, seed, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        n = len(self.x)
        return n // self.batch_size if self.shuffle else -(-n // self.batch_size)

    def __iter__(self):
        n = len(self.x)
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self.x[idx]
            if self.shuffle:  # a random flip, drawn from the loader's own generator
                flip = torch.rand(len(idx), generator=g) < 0.5
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            yield x, self.y[idx]


def make_bundle(n_train=96, n_test=40, batch_size=16, seed=0, classes=3):
    g = torch.Generator().manual_seed(123)
    centers = torch.randn(classes, 1, 6, 6, generator=g) * 2
    def draw(n):
        y = torch.randint(0, classes, (n,), generator=g)
        return centers[y] + 0.5 * torch.randn(n, 1, 6, 6, generator=g), y
    xtr, ytr = draw(n_train)
    xte, yte = draw(n_test)
    info = SimpleNamespace(name="tiny", classes=[f"c{i}" for i in range(classes)], input_size=(1, 6, 6),
                           mean=(0.0,), std=(1.0,))
    return SimpleNamespace(info=info, train=TinyLoader(xtr, ytr, batch_size, True, seed),
                           test=TinyLoader(xte, yte, batch_size, False), num_train=n_train, num_test=n_test)


class TinyNet(nn.Module):
    def __init__(self, classes=3):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.2)  # makes the global RNG matter for exact resume
        self.fc = nn.Linear(8, classes)
        self.model_config = {"name": "tinynet"}

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(x.mean((2, 3))))


def dropout_free_net(seed: int = 0) -> TinyNet:
    """A seeded TinyNet without dropout: a hand-written reference loop need not replay the
    trainer's RNG draws."""
    torch.manual_seed(seed)
    net = TinyNet()
    net.drop = nn.Identity()
    return net


def trained_with_plain_sgd(lr: float, momentum: float, epochs: int, **kw) -> TinyNet:
    """:func:`dropout_free_net` trained by resnet_lab's trainer at a constant rate, with plain
    momentum and no decay, so that one ``torch.optim.SGD`` over all parameters is the same optimizer;
    ``kw``: further TrainConfig fields (the option under test)."""
    return plain_sgd_run(lr, momentum, epochs, **kw)[0]


def plain_sgd_run(lr: float, momentum: float, epochs: int, **kw):
    """:func:`trained_with_plain_sgd`, returning the trained net and the run's History."""
    from resnet_lab.train import TrainConfig, train

    net = dropout_free_net()
    history = train(net, make_bundle(), TrainConfig(epochs=epochs, lr=lr, momentum=momentum, nesterov=False,
                                                    weight_decay=0.0, schedule="constant", progress=False,
                                                    plots=False, device="cpu", **kw))
    return net, history
