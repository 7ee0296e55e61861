"""The same architectures in PyTorch, with a minidist model's weights copied in (used by
the benchmark scripts' torch workers; needs torch)."""
from __future__ import annotations

from minidist import nn


def to_torch(torch, model):
    """A torch.nn.Sequential mirroring the minidist Sequential `model`, same weights."""
    tnn = torch.nn
    layers = []
    for m in model:
        if isinstance(m, nn.Linear):
            layers.append(tnn.Linear(m.in_features, m.out_features))
        elif isinstance(m, nn.Conv2d):
            o, c, kh, kw = m.weight.shape
            layers.append(tnn.Conv2d(c, o, (kh, kw), stride=m.stride, padding=m.padding))
        elif isinstance(m, nn.BatchNorm2d):
            layers.append(tnn.BatchNorm2d(m.num_features))
        elif isinstance(m, nn.ReLU):
            layers.append(tnn.ReLU())
        elif isinstance(m, nn.MaxPool2d):
            layers.append(tnn.MaxPool2d(m.kernel_size, m.stride, m.padding))
        elif isinstance(m, nn.Flatten):
            layers.append(tnn.Flatten())
        else:
            raise TypeError(f"no torch counterpart written for {type(m).__name__}")
    net = tnn.Sequential(*layers)
    with torch.no_grad():
        for (_, src), (_, dst) in zip(model.named_parameters(), net.named_parameters()):
            dst.copy_(torch.from_numpy(src.data.copy()))
    return net
