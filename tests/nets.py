"""Networks written the way users write them, for the tests of a user's own model
(test_formats.py, test_conventions.py, test_cli.py).

This file is also the user's model file in those tests: they copy it beside the weights
they save and load them with `model_code="path/net.py:Net"` (`--model-code` on the
command line), the way a user names a class of their own. So it imports only torch, and
its classes take what users' models take: images (N, 1, 28, 28) or flat (N, 784), and
they return log-probabilities or logits.

A network that one test needs for a property of its own stays in that test file
(test_prepare.py's ExampleNet, test_attribution.py's UserNet).
"""

import torch
import torch.nn as nn
import torch.nn.functional as F


class Net(nn.Module):
    """PyTorch's examples/mnist Net (its main.py): functional ReLUs and pooling, dropout
    modules, a final log_softmax; it is trained on standardized pixels. The default
    widths are the example's; SmallNet is the same network, narrower."""

    def __init__(self, channels=(32, 64), hidden=128):
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels[0], 3, 1)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 3, 1)
        self.dropout1 = nn.Dropout(0.25)
        self.dropout2 = nn.Dropout(0.5)
        self.fc1 = nn.Linear(channels[1] * 12 * 12, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        x = self.conv1(x)
        x = F.relu(x)
        x = self.conv2(x)
        x = F.relu(x)
        x = F.max_pool2d(x, 2)
        x = self.dropout1(x)
        x = torch.flatten(x, 1)
        x = self.fc1(x)
        x = F.relu(x)
        x = self.dropout2(x)
        x = self.fc2(x)
        output = F.log_softmax(x, dim=1)
        return output


class SmallNet(Net):
    """Net with 8 and 16 channels and 64 hidden units: trained in a second or two."""

    def __init__(self):
        super().__init__(channels=(8, 16), hidden=64)


class TinyNet(nn.Module):
    """One strided conv and a linear layer on [0, 1] pixels, functional ReLU,
    log_softmax: trains to over 80% in a fraction of a second."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 5, 2)
        self.fc = nn.Linear(4 * 12 * 12, 10)

    def forward(self, x):
        return F.log_softmax(self.fc(F.relu(self.conv(x)).flatten(1)), dim=1)


class MLP(nn.Module):
    """Takes flat images, (N, 784); returns logits."""

    def __init__(self, hidden=64):
        super().__init__()
        self.fc1 = nn.Linear(784, hidden)
        self.fc2 = nn.Linear(hidden, 10)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(x)))


class RawMLP(MLP):
    """MLP on flat vectors of raw 0-255 pixels, which it scales itself."""

    def forward(self, x):
        return super().forward(x / 255.0 * 4 - 1)


class Wide(nn.Module):
    """A class whose constructor needs an argument (`arch_kwargs={"width": ...}`)."""

    def __init__(self, width):
        super().__init__()
        self.fc = nn.Linear(784, width)
        self.head = nn.Linear(width, 10)

    def forward(self, x):
        return self.head(F.relu(self.fc(x.flatten(1))))
