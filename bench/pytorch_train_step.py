"""Training throughput of the Autograph embedding network in PyTorch on the CPU, for comparison
with burn (trainer/benches/train_step.rs runs this and prints the ratio). Not a dependency of
anything: install torch from PyPI into a venv and point AUTOGRAPH_TORCH_PYTHON at its python.

The same network as trainer/src/model.rs: per block conv3x3 -> BatchNorm -> ReLU -> maxpool2x2,
then global average pooling, Linear to 128 and L2 normalisation; AdamW; a triplet loss with
in-batch semi-hard mining over `writers` x `per_writer` images. Prints one JSON line.
"""

import argparse
import json
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class EmbeddingNet(nn.Module):
    def __init__(self, channels, dim=128):
        super().__init__()
        layers, previous = [], 1
        for c in channels:
            layers += [nn.Conv2d(previous, c, 3, padding=1), nn.BatchNorm2d(c), nn.ReLU(), nn.MaxPool2d(2)]
            previous = c
        self.features = nn.Sequential(*layers)
        self.linear = nn.Linear(previous, dim)

    def forward(self, x):
        x = self.features(x).mean(dim=(2, 3))
        return F.normalize(self.linear(x), dim=1, eps=1e-12)


def semi_hard_triplet_loss(embeddings, writers, margin=0.5):
    d = torch.cdist(embeddings, embeddings)
    same = writers[:, None] == writers[None, :]
    eye = torch.eye(len(writers), dtype=torch.bool)
    positive = same & ~eye
    # For each anchor-positive pair: the closest negative farther than the positive (semi-hard),
    # else the farthest negative.
    ap = d[:, :, None]
    an = d[:, None, :]
    negative = ~same[:, None, :]
    semi = negative & (an > ap)
    big = torch.finfo(d.dtype).max
    closest = torch.where(semi, an, torch.full_like(an, big)).min(dim=2).values
    fallback = torch.where(negative, an, torch.zeros_like(an)).max(dim=2).values
    chosen = torch.where(closest < big, closest, fallback)
    losses = F.relu(d - chosen + margin)[positive]
    return losses.mean()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--height", type=int, default=64)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--channels", default="16,32,64,128")
    parser.add_argument("--writers", type=int, default=8)
    parser.add_argument("--per-writer", type=int, default=8)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.manual_seed(0)
    torch.set_num_threads(args.threads)
    channels = [int(c) for c in args.channels.split(",")]
    model = EmbeddingNet(channels).to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    n = args.writers * args.per_writer
    images = torch.rand(n, 1, args.height, args.width).to(memory_format=torch.channels_last)
    writers = torch.arange(args.writers).repeat_interleave(args.per_writer)

    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = semi_hard_triplet_loss(model(images), writers)
        loss.backward()
        optimizer.step()

    for _ in range(args.warmup):
        step()
    start = time.perf_counter()
    for _ in range(args.steps):
        step()
    seconds = (time.perf_counter() - start) / args.steps
    print(json.dumps({
        "framework": f"pytorch {torch.__version__}",
        "threads": args.threads,
        "images_per_step": n,
        "seconds_per_step": seconds,
        "images_per_second": n / seconds,
    }))


if __name__ == "__main__":
    main()
