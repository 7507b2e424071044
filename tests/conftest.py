import os

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch_geometric.data import Data
from torch_geometric.nn import GCNConv

torch.set_num_threads(min(2, os.cpu_count() or 1))


def sbm_graph(seed: int = 0, n: int = 600, classes: int = 4, feats: int = 16):
    """Stochastic block model with class-dependent Gaussian node features."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % classes
    prob = torch.where(y[:, None] == y[None, :], 0.05, 0.01)
    a = (torch.rand(n, n, generator=g) < prob).triu(1)
    ei = a.nonzero().t()
    ei = torch.cat([ei, ei.flip(0)], 1)
    mu = torch.randn(classes, feats, generator=g)
    x = mu[y] * 0.5 + torch.randn(n, feats, generator=g)
    train = torch.rand(n, generator=g) < 0.5
    return Data(x=x, edge_index=ei, y=y, train_mask=train, test_mask=~train)


class GCN(nn.Module):
    def __init__(self, i, h, o):
        super().__init__()
        self.conv1 = GCNConv(i, h)
        self.conv2 = GCNConv(h, o)

    def forward(self, x, edge_index):
        x = F.relu(self.conv1(x, edge_index))
        x = F.dropout(x, 0.5, self.training)
        return self.conv2(x, edge_index)


def train_gcn(data, hidden=32, epochs=200, seed=0):
    torch.manual_seed(seed)
    m = GCN(data.num_features, hidden, int(data.y.max()) + 1)
    opt = torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=5e-4)
    for _ in range(epochs):
        m.train()
        opt.zero_grad()
        F.cross_entropy(m(data.x, data.edge_index)[data.train_mask], data.y[data.train_mask]).backward()
        opt.step()
    return m.eval()


def accuracy(out, data):
    return float((out.argmax(1)[data.test_mask] == data.y[data.test_mask]).float().mean())


@pytest.fixture(scope="session")
def sbm():
    data = sbm_graph()
    return data, train_gcn(data)
