r"""One report comparing CNN and GCN conversion, built only from the results records, with its figures.

``spikegcn report [--results results] [--out results/report.md]`` reads

==================================  ===================================================================
``textgcn/*.json``, ``cnn/*.json``  conversion records (``spikegcn textgcn``; CNN records with the same keys:
                                    ``task``, ``dataset``/``model``, ``code {T, Q, Tw, shift}``, ``ann_accuracy``,
                                    ``snn {mode: {accuracy, loss_points, spikes_per_neuron, energy_fp32,
                                    energy_int8}}``)
``textgcn_table5.json``             Table V runs and Q/T sweeps (``benchmarks/textgcn_table5.py``)
``cnn_tables.json``                 CNN tables incl. the Tw sweep (``benchmarks/cnn_tables.py``)
``sweep_*.json``                    grid sweeps (``spikegcn sweep``)
``mape*.json``                      Eq. 5 curves (``spikegcn mape``)
==================================  ===================================================================

and writes ``report.md`` plus PNG figures (``report_*.png``) next to it. Every number in the report is read from
a record, with the record's file and configuration next to it; derived quantities (sums, ratios, the latency of
:func:`spikegcn.energy.latency`, sample errors) say how they were derived. Missing inputs are listed with the
command that produces them. A file that cannot be parsed raises ``ValueError`` naming it and the problem.
"""
from __future__ import annotations

from .figures import plot_mape
from .records import PRODUCERS, Conversion, Results, load_results
from .sections import build_report

__all__ = ["Conversion", "Results", "load_results", "build_report", "plot_mape", "PRODUCERS"]
