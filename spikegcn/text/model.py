r"""Text GCN (Yao et al., AAAI 2019) as a PyG model, with featureless input handled without a dense identity.

.. math::
    \mathbf{Z} = \hat{\mathbf{A}}\,\mathrm{ReLU}(\hat{\mathbf{A}}\mathbf{X}\mathbf{W}_0)\mathbf{W}_1,
    \qquad \mathbf{X} = \mathbf{I}

Both layers are ``GCNConv`` (no bias, ``normalize=False``: :math:`\hat{\mathbf{A}}` is precomputed) applied to a
torch sparse CSR adjacency, so aggregation is one spmm. Text GCN's :math:`\hat{\mathbf{A}}` is symmetric, so the
layers are :class:`SymmetricGCNConv`: their backward pass multiplies by :math:`\hat{\mathbf{A}}` again instead of
letting autograd transpose it (on 20NG a 27 M non-zero sort per layer and step, two thirds of a training step).
``X = I`` is passed as a sparse identity: ``X W_0`` costs N row copies, and :func:`spikegcn.convert` turns it into
one spike per node at phase 1.
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


def is_symmetric(adj: sp.spmatrix, rtol: float = 0.0) -> bool:
    """Whether a square scipy sparse matrix equals its transpose: the same non-zero pattern, and every value within
    ``rtol`` (relative) of its mirror (``rtol = 0``: exactly; a little slack absorbs the rounding of
    :math:`d_i^{-1/2} a_{ij} d_j^{-1/2}` evaluated in two orders). Stored zeros do not count as entries."""
    a = sp.csr_matrix(adj, copy=True)
    if a.shape[0] != a.shape[1]:
        return False
    a.sum_duplicates()  # also sorts the indices
    a.eliminate_zeros()
    at = a.T.tocsr()
    at.sum_duplicates()
    if not (np.array_equal(a.indptr, at.indptr) and np.array_equal(a.indices, at.indices)):
        return False
    return bool(np.all(np.abs(a.data - at.data) <= rtol * np.maximum(np.abs(a.data), np.abs(at.data))))


class _SymmetricSpMM(torch.autograd.Function):
    """``adj @ x`` for a symmetric sparse ``adj``: d(adj @ x)/dx applied to ``g`` is ``adj^T @ g = adj @ g``."""

    @staticmethod
    def forward(ctx, adj: Tensor, x: Tensor) -> Tensor:
        ctx.save_for_backward(adj)
        return torch.sparse.mm(adj, x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        (adj,) = ctx.saved_tensors
        return None, (torch.sparse.mm(adj, grad) if ctx.needs_input_grad[1] else None)


class SymmetricGCNConv(GCNConv):
    r"""A :class:`~torch_geometric.nn.conv.GCNConv` for a **symmetric** sparse adjacency (such as
    :math:`\hat{\mathbf{A}} = \mathbf{D}^{-1/2}(\mathbf{A}+\mathbf{I})\mathbf{D}^{-1/2}` of an undirected
    graph): :math:`\mathbf{X}' = \hat{\mathbf{A}}\mathbf{X}\mathbf{\Theta}`, whose gradient with respect to
    :math:`\mathbf{X}\mathbf{\Theta}` is :math:`\hat{\mathbf{A}}^\top\mathbf{G} = \hat{\mathbf{A}}\mathbf{G}`.

    The forward pass and the parameters are exactly those of ``GCNConv`` (it converts and loads state dicts the
    same way); only the backward pass of a constant torch sparse CSR ``adj_t`` differs, reusing ``adj_t`` instead
    of building its transpose. The caller guarantees the symmetry (:func:`is_symmetric` checks a scipy matrix);
    other ``adj_t`` types, and an ``adj_t`` whose values require a gradient, take ``GCNConv``'s own path.
    """

    def message_and_aggregate(self, adj_t: Tensor, x: Tensor) -> Tensor:
        if (isinstance(adj_t, Tensor) and adj_t.layout == torch.sparse_csr and not adj_t.requires_grad
                and self.aggr in ("add", "sum")):
            return _SymmetricSpMM.apply(adj_t, x)
        return super().message_and_aggregate(adj_t, x)


class TextGCN(nn.Module):
    """Two-layer Text GCN: ``forward(x, adj_t)`` with ``x`` a sparse identity (featureless) and ``adj_t`` = A-hat
    (symmetric, as :func:`~spikegcn.text.graph.build_text_graph` makes it)."""

    def __init__(self, num_nodes: int, num_classes: int, hidden: int = 200, dropout: float = 0.5):
        super().__init__()
        self.conv1 = SymmetricGCNConv(num_nodes, hidden, bias=False, normalize=False)
        self.conv2 = SymmetricGCNConv(hidden, num_classes, bias=False, normalize=False)
        self.dropout = dropout
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for conv in (self.conv1, self.conv2):
            nn.init.xavier_uniform_(conv.lin.weight)  # Glorot, as the original

    def layer1(self, x: Tensor, adj_t: Tensor) -> Tensor:
        """``H = ReLU(Â X W_0)`` (before dropout)."""
        return F.relu(self.conv1(x, adj_t))

    def layer2(self, h: Tensor, adj_t: Tensor) -> Tensor:
        """``Z = Â dropout(H) W_1`` (dropout only in training mode)."""
        return self.conv2(F.dropout(h, self.dropout, self.training), adj_t)

    def forward(self, x: Tensor, adj_t: Tensor) -> Tensor:
        return self.layer2(self.layer1(x, adj_t), adj_t)
