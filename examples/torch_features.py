"""Torch model features: embed images with a small CNN, cached per batch, on GPU when present.

Images (two synthetic classes: stripes and blobs) are made in batches, embedded by a small
convolutional network, and scored with a nearest-centroid classifier. Every step is a node,
so asking a second question of the same features (here: per-class feature norms) reuses the
cached embeddings instead of running the network again. On a GPU the features stay on the
device; the store counts them against ``cuda_limit`` and empties torch's CUDA cache when it
evicts them.

Run it:

    python examples/torch_features.py                       # 512 images, cuda if available
    python examples/torch_features.py --images 8192 --device cpu
"""

from __future__ import annotations

import argparse

import torch
from torch import nn

import lazygraph


@lazygraph.node
def make_batch(index: int, size: int, pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``size`` images (3 x pixels x pixels) and their labels: 0 = stripes, 1 = blobs."""
    gen = torch.Generator().manual_seed(index)
    labels = torch.arange(size) % 2
    grid = torch.linspace(0, 6.28, pixels)
    stripes = torch.sin(grid * 4).expand(pixels, pixels)
    blobs = torch.sin(grid)[:, None] * torch.sin(grid)[None, :]
    base = torch.where(labels[:, None, None].bool(), blobs, stripes)
    images = base[:, None].expand(size, 3, pixels, pixels)
    return images + 0.5 * torch.randn(size, 3, pixels, pixels, generator=gen), labels


@lazygraph.node
def build_model(width: int, seed: int, device: str) -> nn.Module:
    """A small CNN with fixed random weights (a stand-in for loading a pretrained one)."""
    torch.manual_seed(seed)
    model = nn.Sequential(
        nn.Conv2d(3, width, 5, padding=2),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(width, width, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
    )
    return model.to(device).eval()


@lazygraph.node
def embed(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The model's features for one batch, on the model's device."""
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(batch[0].to(device))


@lazygraph.node
def labels_of(batches: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    return torch.cat([labels for _, labels in batches])


@lazygraph.node
def accuracy(features: list[torch.Tensor], labels: torch.Tensor) -> float:
    """Nearest-centroid accuracy, fitted on the first half and scored on the second."""
    x = torch.cat(features).cpu()
    half = len(x) // 2
    centroids = torch.stack([x[:half][labels[:half] == c].mean(0) for c in (0, 1)])
    predicted = torch.cdist(x[half:], centroids).argmin(1)
    return float((predicted == labels[half:]).float().mean())


@lazygraph.node
def class_norms(features: list[torch.Tensor], labels: torch.Tensor) -> list[float]:
    """Mean feature norm per class."""
    norms = torch.cat(features).norm(dim=1).cpu()
    return [round(float(norms[labels == c].mean()), 4) for c in (0, 1)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=512, help="images (default 512)")
    parser.add_argument("--batch", type=int, default=64, help="images per batch (default 64)")
    parser.add_argument("--pixels", type=int, default=32, help="image side (default 32)")
    parser.add_argument("--width", type=int, default=32, help="feature size (default 32)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)

    model = build_model(args.width, 0, args.device)
    batches = [make_batch(i, args.batch, args.pixels) for i in range(args.images // args.batch)]
    features = [embed(model, b) for b in batches]
    labels = labels_of(batches)

    with lazygraph.Session(progress=False, cuda_limit="2GB") as session:
        score = accuracy(features, labels).compute()
        ran = session.stats().computes
        print(f"device {args.device}: {len(batches)} batches embedded, {ran} nodes computed")
        print(f"nearest-centroid accuracy {score:.3f}")
        print("features of batch 0:", features[0].info().summary)

        norms = class_norms(features, labels).compute()
        print(
            f"second question (class norms {norms}): "
            f"{session.stats().computes - ran} node computed, the network did not run again"
        )
        print(session.report())


if __name__ == "__main__":
    main()
