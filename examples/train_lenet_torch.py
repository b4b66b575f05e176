#!/usr/bin/python3
"""Trains examples/lenet.cpp's LeNet in PyTorch on Fashion-MNIST and saves it as safetensors,
for examples/lenet_from_torch.cpp to load into tapegrad:

  /usr/bin/python3 examples/train_lenet_torch.py lenet_torch.safetensors [--epochs 1] [--data DIR]
  build/examples/lenet_from_torch lenet_torch.safetensors

Needs Debian's python3-torch and dataset-fashion-mnist (read from /usr/share/datasets/
fashion-mnist); the file is written by hand (json + struct, no `safetensors` package) with
tests/fixtures/make_safetensors_reference.py's writer. The same recipe as examples/lenet.cpp:
SGD (lr 0.05, momentum 0.9), batches of 64 in a seeded random order, pixels normalised with
mean 0.2860 and std 0.3530 exactly as tapegrad's DataLoader computes them in float32 (so
both programs see bit-identical test images). Prints the test accuracy and stores it in the
file's metadata ("test_correct", "test_images"), which lenet_from_torch compares with its own.
"""
import argparse
import gzip
import os
import struct
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "fixtures"))
from make_safetensors_reference import write_safetensors  # noqa: E402

MEAN, STD = 0.2860, 0.3530


def read_idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    _, _, rank = struct.unpack(">HBB", data[:4])
    sizes = struct.unpack(">" + "I" * rank, data[4:4 + 4 * rank])
    return np.frombuffer(data, np.uint8, offset=4 + 4 * rank).reshape(sizes)


def normalise(images):
    """[N, 28, 28] bytes -> [N, 1, 28, 28] float32, as nn::DataLoader: byte * a + c in float32
    with a = float(1/255 / std) and c = float(-mean / std) rounded from double."""
    a = np.float32((1.0 / 255.0) * (1.0 / STD))
    c = np.float32(-MEAN * (1.0 / STD))
    return torch.from_numpy(images.astype(np.float32) * a + c).unsqueeze(1)


def lenet():
    """examples/lenet_model.hpp's make_lenet()."""
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5, padding=2), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(16 * 5 * 5, 120), torch.nn.ReLU(),
        torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", nargs="?", default="lenet_torch.safetensors")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    def load(prefix):
        return (normalise(read_idx(os.path.join(args.data, prefix + "-images-idx3-ubyte.gz"))),
                torch.from_numpy(read_idx(os.path.join(args.data, prefix + "-labels-idx1-ubyte.gz"))
                                 .astype(np.int64)))

    train_x, train_y = load("train")
    test_x, test_y = load("t10k")
    model = lenet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for epoch in range(args.epochs):
        model.train()
        order = torch.randperm(len(train_y))
        loss_sum, batches = 0.0, 0
        for begin in range(0, len(order), 64):
            index = order[begin:begin + 64]
            loss = torch.nn.functional.cross_entropy(model(train_x[index]), train_y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            loss_sum += loss.item()
            batches += 1
        print(f"epoch {epoch + 1}: train loss {loss_sum / batches:.4f}")

    model.eval()
    correct = 0
    with torch.no_grad():
        for begin in range(0, len(test_y), 1000):
            predicted = model(test_x[begin:begin + 1000]).argmax(1)
            correct += int((predicted == test_y[begin:begin + 1000]).sum())
    print(f"PyTorch: test accuracy {100.0 * correct / len(test_y):.2f}% "
          f"({correct} of {len(test_y)} images)")
    write_safetensors(args.out, list(model.state_dict().items()),
                      {"format": "pt", "epochs": str(args.epochs), "test_correct": str(correct),
                       "test_images": str(len(test_y))})
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
