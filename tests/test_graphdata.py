"""Graph benchmark data: raw-file staging for Planetoid / TUDataset, the SGNNBench split and k-fold CV."""
import hashlib
import pickle

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from spikegcn.graphdata import DataFileError, kfold_splits, load_planetoid, load_tudataset, sgnnbench_split


def _labels(sizes=(300, 250, 400, 350, 200, 350, 150)):
    return torch.cat([torch.full((n,), c) for c, n in enumerate(sizes)])[torch.randperm(sum(sizes))]


def test_sgnnbench_split_sizes_disjoint_and_per_class():
    y = _labels()
    train, val, test = sgnnbench_split(y, seed=123)
    assert (len(train), len(val), len(test)) == (140, 500, 1000)
    assert torch.bincount(y[train]).tolist() == [20] * 7
    everything = torch.cat([train, val, test])
    assert everything.unique().numel() == everything.numel()


def test_sgnnbench_split_follows_its_global_rng_procedure():
    # SGNNBench draws with the global generator right after seeding it; our private generator must match
    y = _labels()
    torch.manual_seed(124)
    idx, train, pool = torch.arange(y.numel()), [], []
    for c in y.unique():
        members = idx[y == c]
        members = members[torch.randperm(members.numel())]
        train += members[:20].tolist()
        pool += members[20:].tolist()
    pool = torch.tensor(pool)[torch.randperm(len(pool))]
    ours = sgnnbench_split(y, seed=124)
    assert ours[0].tolist() == train and ours[1].tolist() == pool[:500].tolist()
    assert ours[2].tolist() == pool[500:1500].tolist()
    state = torch.random.get_rng_state()
    sgnnbench_split(y, seed=5)
    assert torch.equal(state, torch.random.get_rng_state())  # the global generator is left alone
    assert not torch.equal(sgnnbench_split(y, seed=5)[1], ours[1])


def test_sgnnbench_split_bad_input():
    with pytest.raises(ValueError, match="class 1 has 5 nodes"):
        sgnnbench_split(torch.tensor([0] * 30 + [1] * 5), seed=0, num_val=1, num_test=1)
    with pytest.raises(ValueError, match="integer class labels"):
        sgnnbench_split(torch.rand(10), seed=0)
    with pytest.raises(ValueError, match="unlabelled nodes"):
        sgnnbench_split(torch.tensor([0] * 30 + [1] * 30), seed=0)


def test_kfold_partitions_the_test_parts():
    y = torch.tensor([0] * 60 + [1] * 40)
    folds = kfold_splits(y, folds=10, seed=0)
    tests = torch.cat([t for _, _, t in folds])
    assert sorted(tests.tolist()) == list(range(100))
    for train, val, test in folds:
        assert len(set(train.tolist()) | set(val.tolist()) | set(test.tolist())) == 100
        assert len(train) + len(val) + len(test) == 100
        assert int(y[test].sum()) == 4  # stratified: 40 % positives in every fold
    assert [t.tolist() for _, _, t in kfold_splits(y, seed=0)] == [t.tolist() for _, _, t in folds]


def _sums(folder):
    lines = [f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.name}" for p in sorted(folder.iterdir())]
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def _write_planetoid(folder, name="toy", n=510, n_test=5):
    """A Planetoid raw set (PyG takes the 500 nodes after the training nodes as validation): a path graph, 2
    training nodes in x, n - n_test nodes in allx, the last n_test nodes as the test set."""
    folder.mkdir(parents=True)
    feats = sp.csr_matrix(np.random.default_rng(0).random((n, 3)).astype(np.float32))
    onehot = np.eye(2)[np.arange(n) % 2]
    k = n - n_test
    graph = {i: [j for j in (i - 1, i + 1) if 0 <= j < n] for i in range(n)}
    parts = {"x": feats[:2], "allx": feats[:k], "tx": feats[k:], "y": onehot[:2], "ally": onehot[:k],
             "ty": onehot[k:], "graph": graph}
    for part, obj in parts.items():
        with open(folder / f"ind.{name}.{part}", "wb") as f:
            pickle.dump(obj, f)
    (folder / f"ind.{name}.test.index").write_text("".join(f"{i}\n" for i in range(k, n)))
    _sums(folder)


def _write_tu(folder, name="TOY"):
    """Two triangles with labels 0 and 1."""
    folder.mkdir(parents=True)
    edges = [(1, 2), (2, 1), (2, 3), (3, 2), (4, 5), (5, 4), (5, 6), (6, 5)]
    (folder / f"{name}_A.txt").write_text("".join(f"{a}, {b}\n" for a, b in edges))
    (folder / f"{name}_graph_indicator.txt").write_text("1\n1\n1\n2\n2\n2\n")
    (folder / f"{name}_graph_labels.txt").write_text("0\n1\n")
    (folder / f"{name}_node_labels.txt").write_text("0\n1\n0\n1\n1\n0\n")
    (folder / "README.txt").write_text("toy\n")
    _sums(folder)


@pytest.fixture
def dirs(tmp_path, monkeypatch):
    data, cache = tmp_path / "data", tmp_path / "cache"
    monkeypatch.setenv("SPIKEGCN_DATA", str(data))
    monkeypatch.setenv("SPIKEGCN_CACHE", str(cache))
    return data, cache


def test_planetoid_from_local_copy_is_staged_in_the_cache(dirs):
    data, cache = dirs
    _write_planetoid(data / "planetoid")
    g = load_planetoid("toy", download=False)[0]
    assert g.num_nodes == 510 and g.y.tolist() == [i % 2 for i in range(510)] and int(g.train_mask.sum()) == 2
    assert int(g.test_mask.sum()) == 5 and g.num_edges == 2 * 509
    raw = cache / "graphs" / "toy" / "raw" / "ind.toy.graph"
    assert raw.is_symlink() and raw.resolve() == (data / "planetoid" / "ind.toy.graph").resolve()


def test_tudataset_from_local_copy(dirs):
    data, cache = dirs
    _write_tu(data / "tudataset" / "TOY")
    ds = load_tudataset("TOY", download=False)
    assert len(ds) == 2 and ds.y.tolist() == [0, 1] and ds.num_features == 2
    assert not (cache / "graphs" / "TOY" / "raw" / "README.txt").exists()  # only the data files are laid out


def test_corrupted_local_file_is_named(dirs):
    data, _ = dirs
    _write_tu(data / "tudataset" / "TOY")
    (data / "tudataset" / "TOY" / "TOY_A.txt").write_text("1, 2\n")
    with pytest.raises(DataFileError, match=r"TOY_A\.txt is corrupted or truncated"):
        load_tudataset("TOY")


def test_missing_data_offline_is_one_clear_line(dirs, monkeypatch):
    with pytest.raises(DataFileError, match="no raw files under .*download=False") as err:
        load_planetoid("toy", download=False)
    assert "\n" not in str(err.value)

    def offline(*args, **kwargs):
        raise OSError("no network")

    monkeypatch.setattr("torch_geometric.io.fs.cp", offline)
    with pytest.raises(DataFileError, match="PyG's download failed .*no network.*SPIKEGCN_DATA") as err:
        load_tudataset("TOY")
    assert "\n" not in str(err.value)
