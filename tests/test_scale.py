"""Layer-wise (chunked, memory-mapped) and sharded (torch.distributed, gloo) inference: bit-identical outputs."""
import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from conftest import sbm_graph
from torch import nn
from torch_geometric.nn import GCNConv, GraphConv, SAGEConv
from torch_geometric.nn.models import GCN, GraphSAGE

from spikegcn import PhaseCode, convert
from spikegcn.inference import NotAChainError, layerwise

# (mode, Tw): functional; exact with Tw = T (one pass); exact with Tw < T (late and false spikes, fused kernel)
SETTINGS = [("functional", 16), ("exact", 16), ("exact", 5)]


@pytest.fixture(scope="module")
def graph():
    return sbm_graph(n=500)


def _model(name):
    torch.manual_seed(0)
    return (GraphSAGE(16, 32, 3, 4) if name == "sage" else GCN(16, 32, 3, 4)).eval()


def _snns(name, data):
    model = _model(name)
    return [convert(model, data, PhaseCode(16, 1.3, Tw=tw), mode=mode) for mode, tw in SETTINGS]


@pytest.mark.parametrize("name", ["gcn", "sage"])
def test_chunked_equals_whole_graph(graph, name, tmp_path):
    for snn in _snns(name, graph):
        ref = snn(graph.x, graph.edge_index)
        for k in (64, 150, 500):  # the 500-node graph in blocks of 64 (+ a merged remainder), 150, one block
            assert torch.equal(layerwise(snn, graph.x, graph.edge_index, chunk_size=k), ref)
        out = layerwise(snn, graph.x, graph.edge_index, chunk_size=100, storage=tmp_path / "codes")
        assert torch.equal(out, ref)
        with torch.device("meta"):  # every tensor the engine makes follows the CPU inputs
            out = layerwise(snn, graph.x, graph.edge_index, chunk_size=100, storage=tmp_path / "codes")
        assert out.device.type == "cpu" and torch.equal(out, ref)
        assert os.listdir(tmp_path / "codes") == []  # the memory-mapped codes are removed


class _SumGraphConv(nn.Module):
    """SAGE with a sum and no root weight, then GraphConv (mean): composite operators of other shapes."""

    def __init__(self):
        super().__init__()
        self.conv1 = SAGEConv(16, 32, aggr="sum", root_weight=False)
        self.conv2, self.conv3 = GraphConv(32, 32, aggr="mean"), SAGEConv(32, 4)

    def forward(self, x, edge_index):
        h = F.relu(self.conv2(F.relu(self.conv1(x, edge_index)), edge_index))
        return self.conv3(h, edge_index)


def _spikes_and_output(snn, graph):
    from spikegcn.spikes import PhaseSpikes

    seen = []
    hooks = [m.register_forward_hook(lambda m, a, o: seen.append(o) if isinstance(o, PhaseSpikes) else None)
             for m in snn.modules()]
    out = snn(graph.x, graph.edge_index)
    for h in hooks:
        h.remove()
    return seen, out


@pytest.mark.parametrize("name", ["sage", "sum_graphconv"])
def test_late_bins_equal_event_path(graph, name, monkeypatch):
    """Exact mode at Tw < T on composite operators (SAGE mean with root, SAGE sum without, GraphConv): all late
    phases' bins at once and the compiled neurons give the event path's spikes bit for bit, in blocks of rows, on the
    binary input of the first layer and one-spike input after; whole graph and chunked."""
    import copy

    from spikegcn import late_bins, simulate
    from spikegcn.kernels import fused_cpu

    if fused_cpu.load() is None:
        pytest.skip("needs the fused kernels (`spikegcn build-kernels`)")
    monkeypatch.setattr(simulate, "_BINS_ROWS", 96)  # 500 rows: several blocks and a short last one
    used, real = [], late_bins.late_bins
    monkeypatch.setattr(late_bins, "late_bins", lambda *a: (used.append(type(a[1]).__name__), real(*a))[1])
    torch.manual_seed(0)
    model = (_model("sage") if name == "sage" else _SumGraphConv()).eval()
    snn = convert(model, graph, PhaseCode(16, 1.3, Tw=5), mode="exact")
    spikes, out = _spikes_and_output(snn, graph)
    assert {"BinarySpikes", "PhaseSpikes"} <= set(used)  # both kinds of input took the batched path
    chunked = layerwise(snn, graph.x, graph.edge_index, chunk_size=150)
    events = copy.deepcopy(snn)
    for m in events.modules():
        if hasattr(m, "backend"):
            m.backend = "torch_scatter"  # the event path, phase by phase
    used.clear()
    ref_spikes, ref = _spikes_and_output(events, graph)
    assert not used and len(spikes) == len(ref_spikes) >= 2
    for a, b in zip(spikes, ref_spikes):
        assert torch.equal(a.phase, b.phase) and (a.sign is None) == (b.sign is None)
        assert a.sign is None or torch.equal(a.sign, b.sign)
        assert a.phase.count_nonzero() > 0 and (a.phase > 6).any()  # late spikes, not a degenerate case
    assert torch.equal(out, ref) and torch.equal(chunked, ref)


def test_method_and_row_wise_tail(graph):
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = GCNConv(16, 32), GCNConv(32, 4)

        def forward(self, x, edge_index):
            return F.log_softmax(self.conv2(F.relu(self.conv1(x, edge_index)), edge_index), dim=1)

    torch.manual_seed(0)
    snn = convert(Net().eval(), graph, mode="functional")
    ref = snn(graph.x, graph.edge_index)
    assert torch.equal(snn.inference(graph.x, graph.edge_index, chunk_size=128), ref)


def test_refuses_what_is_not_a_chain(graph):
    class Skip(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2, self.conv3 = SAGEConv(16, 32), SAGEConv(32, 32), SAGEConv(32, 4)

        def forward(self, x, edge_index):
            h = F.relu(self.conv1(x, edge_index))
            return self.conv3(F.relu(self.conv2(h, edge_index)) + h, edge_index)

    torch.manual_seed(0)
    snn = convert(Skip().eval(), graph, mode="functional")
    with pytest.raises(NotAChainError, match="conv1|join|several"):
        layerwise(snn, graph.x, graph.edge_index, chunk_size=128)
    gcn = _snns("gcn", graph)[0]
    with pytest.raises(ValueError, match="chunk_size must be an int >= 64"):
        layerwise(gcn, graph.x, graph.edge_index, chunk_size=8)
    with pytest.raises(ValueError, match="edge_index"):
        layerwise(gcn, graph.x, graph.edge_index + 1000, chunk_size=128)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _halves(data):
    n = data.num_nodes
    return [data.subgraph(torch.arange(0, n // 2)), data.subgraph(torch.arange(n // 2, n))]


def _observer_reduced(data, rank):
    """Each rank calibrates on its half of the graph; all_reduce(MAX) of the observers gives every rank the
    lambdas of the whole calibration set."""
    from spikegcn.conversion import calibrate, prepare
    from spikegcn.distributed import all_reduce_observers

    prepared = prepare(_model("gcn"), data)
    calibrate(prepared, _halves(data)[rank])
    return convert(all_reduce_observers(prepared), PhaseCode(16, 1.3), mode="functional")


def _rank_chain_reused(snn, data, expected):
    """A rank's chain holds only its own CSR rows, gives the same output when passed in, and refuses another
    graph, a whole-graph chain and other bounds."""
    from spikegcn.distributed import inference, rank_chain
    from spikegcn.inference import GraphChain

    chain = rank_chain(snn, data.x, data.edge_index)
    whole = GraphChain.from_model(snn, data.x, data.edge_index)
    mine, full = chain.stages[1][0].op.adj._nnz(), whole.stages[1][0].op.adj._nnz()
    assert 0 < mine < full
    assert torch.equal(inference(snn, data.x, data.edge_index, chunk_size=64, chain=chain)[1], expected)
    # the chain holds the operators: the graph may be freed before the run
    assert torch.equal(inference(snn, data.x, None, chunk_size=64, chain=chain)[1], expected)
    with pytest.raises(ValueError, match="edge_index is None"):
        inference(snn, data.x, None, chunk_size=64)
    with torch.device("meta"):  # bounds, halo buffers and node ids follow the CPU inputs
        meta_chain = rank_chain(snn, data.x, data.edge_index)
        ids, out = inference(snn, data.x, data.edge_index, chunk_size=64, chain=meta_chain)
    assert ids.device.type == out.device.type == "cpu" and torch.equal(out, expected)
    with pytest.raises(ValueError, match="not this rank's range"):
        inference(snn, data.x, data.edge_index, chunk_size=64, chain=chain, bounds=[0, 100, data.num_nodes])
    with pytest.raises(ValueError, match="chain was built over 500 nodes but x has shape"):
        inference(snn, data.x[:300], data.edge_index, chunk_size=64, chain=chain)
    with pytest.raises(TypeError, match="rank_chain"):
        inference(snn, data.x, data.edge_index, chunk_size=64, chain=whole)
    with pytest.raises(ValueError, match="bounds must rise"):
        rank_chain(snn, data.x, data.edge_index, bounds=[0, data.num_nodes])


def _worker(rank, world, port, names, data, path):
    from spikegcn.distributed import HaloSource, exchange_halo, inference

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    snns = [s for name in names for s in _snns(name, data)]  # seeded: every process converts the same models
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        snns.append(_observer_reduced(data, rank))
        results = []
        for snn in snns:
            rec = {}
            ids, out = inference(snn, data.x, data.edge_index, chunk_size=64, record=rec)
            results.append((ids, out, rec))
        codes = os.path.join(path, f"codes{rank}")  # own and halo codes memory-mapped: the same rows
        mapped, init = [], HaloSource.__init__

        def spy(self, *args, **kwargs):
            init(self, *args, **kwargs)
            mapped.append(self.store.path is not None)

        HaloSource.__init__ = spy
        try:
            assert torch.equal(inference(snns[1], data.x, data.edge_index, chunk_size=64, storage=codes)[1],
                               results[1][1])
        finally:
            HaloSource.__init__ = init
        assert mapped and all(mapped) and os.listdir(codes) == []
        # a graph whose halves do not touch: no rank needs a halo, the exchanges are empty
        n, (a, b) = data.num_nodes, _halves(data)
        block = torch.cat([a.edge_index, b.edge_index + n // 2], 1)
        rec = {}
        out = inference(snns[2], data.x, block, chunk_size=64, record=rec)[1]
        assert torch.equal(out, snns[2](data.x, block)[rank * n // 2:(rank + 1) * n // 2])
        assert [info["halo_nodes"] for info in rec["layers"]] == [0] * len(rec["layers"])
        own = SimpleNamespace(data=torch.zeros(4, 3, dtype=torch.int8))
        with pytest.raises(ValueError, match=r"out must be a contiguous torch.int8 tensor of shape \(2, 3\)"):
            exchange_halo(own, torch.tensor([7, 9]), torch.tensor([0, 5, 10]), out=torch.empty(2, 4))
        _rank_chain_reused(snns[0], data, results[0][1])
        torch.save(results, os.path.join(path, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_two_gloo_processes_equal_one(graph, tmp_path):
    names = ("gcn", "sage")
    snns = [s for name in names for s in _snns(name, graph)]
    from spikegcn.conversion import calibrate, prepare

    both = calibrate(prepare(_model("gcn"), graph), _halves(graph))  # one process, both halves
    snns.append(convert(both, PhaseCode(16, 1.3), mode="functional"))
    mp.spawn(_worker, args=(2, _free_port(), names, graph, str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    for i, snn in enumerate(snns):
        ref = snn(graph.x, graph.edge_index)
        ids = torch.cat([ranks[r][i][0] for r in range(2)])
        out = torch.cat([ranks[r][i][1] for r in range(2)])
        assert torch.equal(ids, torch.arange(graph.num_nodes))
        assert torch.equal(out, ref)
        for r in range(2):
            layers = ranks[r][i][2]["layers"]
            # layer 1 reads the features every rank holds; later aggregations receive int8 halo codes only
            assert layers[0]["code_bytes_received"] == 0
            for info in layers[1:]:
                assert info["halo_nodes"] > 0
                # one byte per neuron: GCN sends its messages X W (32 or 4 channels), SAGE its layer outputs
                assert info["channels"] in (32, 4)
                assert info["code_bytes_received"] == info["halo_nodes"] * info["channels"]
            # every stage's seconds: the exchange (0-ish for layer 1) and its rows
            assert all(info["exchange_s"] >= 0 and info["compute_s"] > 0 for info in layers)


def _worker3(rank, world, port, data, path):
    from spikegcn.distributed import inference

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    snn = _snns("sage", data)[2]  # seeded: the same model as the caller's
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.save(inference(snn, data.x, data.edge_index, chunk_size=64), os.path.join(path, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_three_ranks_middle_halo_on_both_sides(graph, tmp_path):
    """The middle rank of three receives halo rows from below and above its range: still bit-identical."""
    from spikegcn.distributed import partition

    snn = _snns("sage", graph)[2]  # exact, Tw < T
    lo, hi = partition(graph.num_nodes, 3)[1:3].tolist()
    src, dst = graph.edge_index
    halo = src[(dst >= lo) & (dst < hi)]
    assert bool((halo < lo).any()) and bool((halo >= hi).any())
    mp.spawn(_worker3, args=(3, _free_port(), graph, str(tmp_path)), nprocs=3, join=True)
    parts = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(3)]
    assert torch.equal(torch.cat([p[0] for p in parts]), torch.arange(graph.num_nodes))
    assert torch.equal(torch.cat([p[1] for p in parts]), snn(graph.x, graph.edge_index))


def test_layers_share_one_adjacency(graph):
    from spikegcn.inference import GraphChain
    from spikegcn.operators import Sparse
    from spikegcn.simulate import GraphOp

    def adjacencies(op):
        own = [id(op)] if isinstance(op, (GraphOp, Sparse)) else []
        return own + [i for o in getattr(op, "ops", ()) for i in adjacencies(o)]

    for name in ("gcn", "sage"):  # three layers on one graph: one A-hat (GCN) / one mean matrix (SAGE) in memory
        chain = GraphChain.from_model(_snns(name, graph)[0], graph.x, graph.edge_index)
        assert len({i for stage in chain.stages for s in stage for i in adjacencies(s.op)}) == 1


@pytest.mark.parametrize("name", ["gcn", "sage"])
def test_saved_model_runs_through_the_recipe(graph, name, tmp_path, monkeypatch):
    """``torch.save`` of a converted PyG model, then ``python -m spikegcn.distributed MODEL GRAPH`` (as one torchrun
    process): the reloaded model's output equals the original's, and the JSON record is written."""
    import json

    from spikegcn.distributed import main

    snn = _snns(name, graph)[2]  # exact mode, Tw < T
    torch.save(snn, tmp_path / "snn.pt")
    torch.save({"x": graph.x, "edge_index": graph.edge_index}, tmp_path / "graph.pt")
    for k, v in dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), RANK="0", WORLD_SIZE="1").items():
        monkeypatch.setenv(k, v)
    main([str(tmp_path / "snn.pt"), str(tmp_path / "graph.pt"), "--chunk-size", "64", "--out",
          str(tmp_path / "rec.json"), "--save", str(tmp_path / "out.pt")])
    assert torch.equal(torch.load(tmp_path / "out.pt"), snn(graph.x, graph.edge_index))
    rec = json.loads((tmp_path / "rec.json").read_text())
    assert rec["num_nodes"] == graph.num_nodes and rec["ranks"][0]["world_size"] == 1


def test_gcn_large_benchmark_runs_small(tmp_path):
    """benchmarks/gcn_large.py end to end on a 1,225-node graph: the ANN and exact Tw = T/2 in their own processes,
    then 1 and 2 gloo processes with --repeat 2 (every wall time kept, the outputs' hashes equal), into its record."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = tmp_path / "gl"
    cmd = [sys.executable, str(root / "benchmarks" / "gcn_large.py"), "--scale", "0.0005", "--models", "gcn",
           "--kinds", "ann,snn-exact-tw,dist1,dist2", "--repeat", "2", "--epochs", "2", "--train-nodes", "500",
           "--chunk-size", "256", "--cache", str(tmp_path / "cache"), "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    rec = json.loads(out.with_suffix(".json").read_text())
    runs, summary = rec["models"]["gcn"]["runs"], rec["models"]["gcn"]["summary"]
    assert rec["graph"]["nodes"] == 1225 and summary["dist_bit_identical"] is True
    assert all(len(r["walls_s"]) == 2 and r["wall_s"] == min(r["walls_s"]) for k in ("dist1", "dist2")
               for r in runs[k]["ranks"])
    assert [r["nodes"] for r in runs["dist2"]["ranks"]] == [[0, 612], [612, 1225]]
    assert summary["bytes_per_layer"][0] == 0 and min(summary["bytes_per_layer"][1:]) > 0
    assert 0.5 <= summary["argmax_agreement_with_ann"]["snn-exact-tw"] <= 1.0
    assert "Best of 2 runs" in out.with_suffix(".md").read_text()
