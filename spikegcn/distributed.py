r"""Sharded layer-wise inference on ``torch.distributed``: each rank owns a node range, only int8 codes travel.

Call :func:`inference` on every rank of an initialised process group (gloo on CPU, NCCL on GPU). Rank ``r``
owns nodes ``bounds[r]..bounds[r+1]-1`` (equal contiguous ranges by default), runs the chain of layers of
:mod:`spikegcn.inference` on them block by block, and before each layer that reads neighbours receives the
packed int8 codes (``sign * phase``) of exactly the halo nodes its rows need from their owners, with
``all_to_all_single`` and per-peer split sizes (gloo implements it as alltoallv; its list form ``all_to_all``
needs equal sizes).
No float activation is ever sent. Every row is computed by the same engine in the same summation order as in
one process, so the union over ranks is bit-identical to ``snn(x, edge_index)``.

Every rank holds the input features (they may be memory-mapped: only the owned rows and the halo rows of ``x`` are
read) and the graph until :func:`rank_chain` has built its operators from it. Calibrating lambda at scale: run the
prepared model on each rank's part of the calibration data, then :func:`all_reduce_observers` (``all_reduce(MAX)``
of the running maxima) before converting; every rank then builds the same SNN.

Runnable recipe (two processes on one machine)::

    torchrun --nproc-per-node 2 -m spikegcn.distributed MODEL.pt GRAPH.pt --out results/infer.json
"""
from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .inference import (
    MIN_ROWS,
    CodeStore,
    FeatureSource,
    GraphChain,
    Step,
    _check_chunk_size,
    _progress,
    chunks,
    run_chain,
    sources,
)
from .operators import Chain, Join, Sparse
from .simulate import GraphOp

__all__ = ["partition", "RankChain", "rank_chain", "inference", "exchange_halo", "all_reduce_observers", "main"]


def partition(num_nodes: int, world_size: int) -> Tensor:
    """``bounds`` of ``world_size`` contiguous, near-equal node ranges (``bounds[r]..bounds[r+1]-1``)."""
    return torch.tensor([num_nodes * r // world_size for r in range(world_size + 1)], dtype=torch.long, device="cpu")


@dataclass
class RankChain(GraphChain):
    """A rank's chain: the sparse operators keep only the CSR rows of the nodes ``lo..hi-1`` it owns."""

    lo: int = 0
    hi: int = 0


def _own_rows(op, lo: int, hi: int, memo: dict):
    """``op`` with every CSR row outside ``lo..hi-1`` emptied; ids stay global (the row pointer is padded), so
    :func:`~spikegcn.inference.sources` and :func:`~spikegcn.inference.restrict` serve the rank's blocks
    unchanged. The rows' edges are copied: the whole-graph arrays can be freed."""
    if isinstance(op, (GraphOp, Sparse)):
        if id(op) not in memo:  # layers sharing one adjacency keep sharing its rows
            adj = op.adj
            crow, col, val = adj.crow_indices(), adj.col_indices(), adj.values()
            a, b = int(crow[lo]), int(crow[hi])
            ptr = torch.cat([crow.new_zeros(lo), crow[lo:hi + 1] - a, crow.new_full((adj.shape[0] - hi,), b - a)])
            sub = torch.sparse_csr_tensor(ptr, col[a:b].clone(), val[a:b].clone(), size=adj.shape,
                                          device=col.device, check_invariants=False)
            memo[id(op)] = type(op)(sub)
        return memo[id(op)]
    if isinstance(op, Chain):
        return Chain(*(_own_rows(o, lo, hi, memo) for o in op.ops))
    if isinstance(op, Join):
        return Join(*(_own_rows(o, lo, hi, memo) for o in op.ops), inputs=op.inputs)
    return op


def rank_chain(snn: nn.Module, x: Tensor, edge_index: Tensor, edge_weight: Tensor | None = None,
               bounds: Tensor | None = None, group=None) -> RankChain:
    """The chain this rank runs: the model's layers with only the rows of the nodes it owns (half the edges
    per rank on two ranks). Build it once and pass it to :func:`inference` (``chain=``) to run it again."""
    if x is None or x.dim() != 2:
        raise ValueError("distributed inference needs node features x of shape [num_nodes, features]")
    _, lo, hi = _rank_bounds(bounds, x.shape[0], group)  # before the operators are built
    chain = GraphChain.from_model(snn, x, edge_index, edge_weight)
    memo: dict = {}
    stages = [[Step(s.name, s.layer, _own_rows(s.op, lo, hi, memo)) for s in stage] for stage in chain.stages]
    return RankChain(chain.encoder, stages, chain.tail, chain.num_nodes, lo, hi)


def _rank_bounds(bounds: Tensor | None, n: int, group=None) -> tuple[Tensor, int, int]:
    """Every rank's bounds (``bounds`` checked, or :func:`partition`) and this rank's node range ``lo..hi-1``."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    bounds = partition(n, world) if bounds is None else torch.as_tensor(bounds, dtype=torch.long, device="cpu")
    if bounds.numel() != world + 1 or int(bounds[0]) != 0 or int(bounds[-1]) != n or bool((bounds.diff() < 0).any()):
        raise ValueError(f"bounds must rise from 0 to num_nodes = {n} in {world + 1} entries, got {bounds.tolist()}")
    lo, hi = int(bounds[rank]), int(bounds[rank + 1])
    if hi - lo < min(MIN_ROWS, n):
        raise ValueError(f"rank {rank} owns {hi - lo} nodes; every rank needs at least {MIN_ROWS} (use fewer ranks)")
    return bounds, lo, hi


class HaloSource:
    """A layer's codes as one rank sees them: its own rows and then the halo rows received from their owners,
    in one buffer (in memory, or memory-mapped where the own rows were), read through a global id -> row table
    (one gather per block, as in one process)."""

    def __init__(self, own: CodeStore, need: Tensor, bounds: Tensor, group=None):
        self.lo, self.hi, n = own.offset, own.offset + own.data.shape[0], int(bounds[-1])
        storage = os.path.dirname(own.path) if own.path is not None else None
        self.store = CodeStore(own.data.shape[0] + need.numel(), own.like, storage)
        self.info = exchange_halo(own, need, bounds, group, out=self.store.data[own.data.shape[0]:])[1]
        self.store.data[:own.data.shape[0]] = own.data  # after the exchange: its reply buffer is gone
        own.close()
        # ids outside the own range and the halo (none by construction) index past the end: an IndexError
        self.row = torch.full((n,), self.store.data.shape[0], dtype=torch.long, device=need.device)
        self.row[self.lo:self.hi] = torch.arange(self.hi - self.lo, device=need.device)
        self.row[need] = torch.arange(self.hi - self.lo, self.hi - self.lo + need.numel(), device=need.device)

    def spikes(self, ids):
        if isinstance(ids, slice):
            return self.store.spikes(slice(ids.start - self.lo, ids.stop - self.lo))
        return self.store.spikes(self.row[ids])

    def close(self) -> None:
        self.store.close()
        self.row = None


def exchange_halo(own: CodeStore, need: Tensor, bounds: Tensor, group=None, out: Tensor | None = None
                  ) -> tuple[Tensor, dict]:
    """Codes of the sorted global ids ``need`` (owned by other ranks), fetched with ``all_to_all_single``
    (variable split sizes: gloo's alltoallv): the counts, the ids each rank asks of each peer, then the int8
    code rows the peers send back (in ``need`` order, as the ranges are sorted by rank), into ``out`` if given
    (``[len(need), C]``, contiguous)."""
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    width, dtype = own.data.shape[1], own.data.dtype
    if out is not None and (out.shape != (need.numel(), width) or out.dtype != dtype or not out.is_contiguous()):
        raise ValueError(f"out must be a contiguous {dtype} tensor of shape {(need.numel(), width)}, "
                         f"got {out.dtype} {tuple(out.shape)}")  # before this rank's first collective
    owner = torch.bucketize(need, bounds[1:], right=True)
    ask_counts = torch.bincount(owner, minlength=world).to(torch.long)
    asked_counts = torch.empty_like(ask_counts)
    dist.all_to_all_single(asked_counts, ask_counts, group=group)
    ask_split, asked_split = ask_counts.tolist(), asked_counts.tolist()
    asked = need.new_empty(sum(asked_split))
    dist.all_to_all_single(asked, need.contiguous(), asked_split, ask_split, group=group)
    reply = own.rows(asked).contiguous()
    halo = torch.empty((need.numel(), width), dtype=dtype, device=own.data.device) if out is None else out
    dist.all_to_all_single(halo.view(-1), reply.view(-1), [c * width for c in ask_split],
                           [c * width for c in asked_split], group=group)
    item = halo.element_size()
    sent = (sum(asked_split) - asked_split[rank]) * width * item
    index = (sum(ask_split) - ask_split[rank]) * need.element_size()
    return halo, {"halo_nodes": int(need.numel()), "channels": int(width), "code_bytes_sent": int(sent),
                  "code_bytes_received": int(halo.numel() * item), "index_bytes_sent": int(index)}


@torch.no_grad()
def inference(snn: nn.Module, x: Tensor, edge_index: Tensor | None, edge_weight: Tensor | None = None,
              chunk_size: int = 65536, bounds: Tensor | None = None, group=None, storage: str | None = None,
              progress: bool = False, record: dict | None = None,
              chain: RankChain | None = None) -> tuple[Tensor, Tensor]:
    """This rank's part of ``snn(x, edge_index)``: ``(node_ids, out)`` for the nodes it owns.

    Args:
        snn: the converted model (the same on every rank).
        x, edge_index, edge_weight: the whole graph (on every rank; ``x`` may be memory-mapped); with ``chain``
            the operators are built, so ``edge_index`` and ``edge_weight`` are not read and may be ``None`` (the
            graph's memory freed before the run).
        chunk_size: target nodes per block.
        bounds: node range of every rank (:func:`partition` by default).
        group: the process group (default: the world).
        storage: a directory for memory-mapped codes (see :func:`spikegcn.inference.layerwise`).
        record: if given, filled with ``"layers"``: per stage the halo size, the bytes exchanged and the seconds
            spent on the exchange (``exchange_s``, including waits for a slower peer) and on the stage's rows
            (``compute_s``).
        chain: this rank's operators from :func:`rank_chain` (built with the same ``bounds``), to build them once
            for several runs; by default they are built here.
    """
    if not dist.is_available() or not dist.is_initialized():
        raise RuntimeError("spikegcn.distributed.inference needs an initialised torch.distributed process group "
                           "(dist.init_process_group, or launch with torchrun)")
    chunk_size = _check_chunk_size(chunk_size)
    world, rank = dist.get_world_size(group), dist.get_rank(group)
    if chain is None:
        if edge_index is None:
            raise ValueError("edge_index is None: pass the graph, or the chain from rank_chain built over it")
        chain = rank_chain(snn, x, edge_index, edge_weight, bounds, group)
    elif not isinstance(chain, RankChain):
        raise TypeError(f"chain must come from spikegcn.distributed.rank_chain, got {type(chain).__name__}")
    elif x is None or x.dim() != 2 or chain.num_nodes != x.shape[0]:
        raise ValueError(f"chain was built over {chain.num_nodes} nodes but x has shape "
                         f"{None if x is None else tuple(x.shape)}: build it over the same graph")
    bounds, lo, hi = _rank_bounds(bounds, chain.num_nodes, group)
    if (chain.lo, chain.hi) != (lo, hi):
        raise ValueError(f"chain was built for nodes {chain.lo}..{chain.hi - 1}, not this rank's range under "
                         f"bounds: build it with the same bounds and group")
    layers: list[dict] = []
    clock = [time.perf_counter()]  # when the previous stage's compute began

    def halo_exchange(k: int, stage: list, source):
        t0 = time.perf_counter()
        if layers:  # the previous stage's rows are done: its compute time
            layers[-1]["compute_s"] = t0 - clock[0]
        info = {"stage": [s.name for s in stage], "halo_nodes": 0, "channels": 0, "code_bytes_sent": 0,
                "code_bytes_received": 0, "index_bytes_sent": 0, "exchange_s": 0.0}
        layers.append(info)
        if not (k == 0 or stage[0].row_local or world == 1):  # layer 1 reads the features every rank holds
            need = sources(stage[0].op, lo, hi)
            source = HaloSource(source, need[(need < lo) | (need >= hi)], bounds, group)
            info.update(source.info)
        clock[0] = time.perf_counter()
        # the halo's ids, the exchange (with any wait for a slower peer at its collectives) and the halo buffer
        info["exchange_s"] = clock[0] - t0
        return source

    bar = _progress(len(chain.stages) * len(list(chunks(lo, hi, chunk_size))), progress and rank == 0,
                    f"rank {rank} inference")
    try:
        result = run_chain(chain, FeatureSource(x, chain.encoder), lo, hi, chunk_size, storage,
                           prepare=halo_exchange, tick=bar.update if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    if layers:
        layers[-1]["compute_s"] = time.perf_counter() - clock[0]
    if record is not None:
        record.update(rank=rank, world_size=world, lo=lo, hi=hi, layers=layers)
    return torch.arange(lo, hi, device=result.device), result


@torch.no_grad()
def all_reduce_observers(prepared: nn.Module, group=None) -> nn.Module:
    """``all_reduce(MAX)`` of the running maxima of every observer of a prepared model (each rank calibrated
    on its own data), so every rank converts with the lambdas of the whole calibration set."""
    observers = [m for m in prepared.modules() if hasattr(m, "pos") and hasattr(m, "neg") and hasattr(m, "rows")]
    if not observers:
        raise ValueError("no observers found: pass the model returned by spikegcn.conversion.prepare, calibrated")
    for obs in observers:
        if obs.pos is None:
            raise ValueError(f"observer {obs.name} has seen no data on rank {dist.get_rank(group)}: calibrate "
                             f"every rank before reducing")
        if getattr(obs, "percentile", None) is not None:
            raise ValueError(f"observer {obs.name} keeps rows for a percentile; only max calibration reduces "
                             f"across ranks")
        for t in (obs.pos, obs.neg):
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=group)
    return prepared


def main(argv: list[str] | None = None) -> dict:
    """``torchrun --nproc-per-node P -m spikegcn.distributed MODEL GRAPH``: run a saved converted model
    (``torch.save(snn)``) over a saved graph (a dict or PyG ``Data`` with ``x`` and ``edge_index``); rank 0
    gathers the output and writes it (``--save``) and a JSON record (``--out``)."""
    p = argparse.ArgumentParser(prog="python -m spikegcn.distributed", description=main.__doc__)
    p.add_argument("model")
    p.add_argument("graph")
    p.add_argument("--chunk-size", type=int, default=65536)
    p.add_argument("--storage", default=None, help="directory for memory-mapped int8 codes")
    p.add_argument("--out", default=None, help="JSON record (rank 0)")
    p.add_argument("--save", default=None, help="torch file for the gathered output (rank 0)")
    p.add_argument("--threads", type=int, default=None, help="torch threads per process")
    args = p.parse_args(argv)
    from .fileio import load_torch, torch_save, write_json

    if args.threads:
        torch.set_num_threads(args.threads)
    snn = torch.load(args.model, weights_only=False)
    graph = load_torch(args.graph, "graph")
    x, edge_index = graph["x"], graph["edge_index"]
    single = not dist.is_available() or "WORLD_SIZE" not in os.environ
    if single:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get("MASTER_PORT", "29511"),
                          RANK="0", WORLD_SIZE="1")
    dist.init_process_group("gloo")
    try:
        rec: dict = {}
        t0 = time.perf_counter()
        ids, out = inference(snn, x, edge_index, chunk_size=args.chunk_size, storage=args.storage, progress=True,
                             record=rec)
        rec["seconds"] = time.perf_counter() - t0
        records = [None] * dist.get_world_size()
        dist.all_gather_object(records, rec)
        outs: list[Any] = [None] * dist.get_world_size()
        dist.all_gather_object(outs, (ids, out))
        result = {"model": args.model, "graph": args.graph, "num_nodes": int(x.shape[0]),
                  "chunk_size": args.chunk_size, "ranks": records}
        if dist.get_rank() == 0:
            if args.save:
                torch_save(torch.cat([o for _, o in outs]), args.save)
            if args.out:
                write_json(args.out, result)
            print(json.dumps({k: v for k, v in result.items() if k != "ranks"}))
        return result
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
