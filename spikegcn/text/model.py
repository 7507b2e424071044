r"""Text GCN (Yao et al., AAAI 2019) as a PyG model, with featureless input handled without a dense identity.

.. math::
    \mathbf{Z} = \hat{\mathbf{A}}\,\mathrm{ReLU}(\hat{\mathbf{A}}\mathbf{X}\mathbf{W}_0)\mathbf{W}_1, \qquad \mathbf{X} = \mathbf{I}

Both layers are ``GCNConv`` (no bias, ``normalize=False``: :math:`\hat{\mathbf{A}}` is precomputed) applied to a
torch sparse CSR adjacency, so aggregation is one spmm. ``X = I`` is passed as a sparse identity: ``X W_0``
costs N row copies, and :func:`spikegcn.convert` turns it into one spike per node at phase 1.
"""
from __future__ import annotations

import warnings

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch_geometric.nn import GCNConv


def sparse_identity(n: int) -> Tensor:
    idx = torch.arange(n).repeat(2, 1)
    return torch.sparse_coo_tensor(idx, torch.ones(n), (n, n)).coalesce()


def to_torch_csr(adj: sp.spmatrix) -> Tensor:
    """scipy CSR -> torch sparse CSR with int32 indices (2-4x faster spmm on CPU than int64)."""
    adj = sp.csr_matrix(adj)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(torch.from_numpy(adj.indptr.astype(np.int32)),
                                       torch.from_numpy(adj.indices.astype(np.int32)),
                                       torch.from_numpy(adj.data.astype(np.float32)), adj.shape)


class TextGCN(nn.Module):
    """Two-layer Text GCN: ``forward(x, adj_t)`` with ``x`` a sparse identity (featureless) and ``adj_t`` = A-hat."""

    def __init__(self, num_nodes: int, num_classes: int, hidden: int = 200, dropout: float = 0.5):
        super().__init__()
        self.conv1 = GCNConv(num_nodes, hidden, bias=False, normalize=False)
        self.conv2 = GCNConv(hidden, num_classes, bias=False, normalize=False)
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.lin.weight)  # Glorot, as the original

    def forward(self, x: Tensor, adj_t: Tensor) -> Tensor:
        h = F.relu(self.conv1(x, adj_t))
        h = F.dropout(h, self.dropout, self.training)
        return self.conv2(h, adj_t)
