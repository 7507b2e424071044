"""The experiment harness: the pipelines, training loops, sweeps and the report that produce the results under
``results/``. It imports the library (:mod:`spikegcn.coding` -> :mod:`spikegcn.neuron` -> :mod:`spikegcn.kernels`
-> :mod:`spikegcn.nn` -> :mod:`spikegcn.conversion`, and the model/data libraries :mod:`spikegcn.text` and
:mod:`spikegcn.vision`); nothing in the library imports it (``tests/test_layout.py`` checks).

* :mod:`~spikegcn.experiments.textgcn`: Text GCN end to end (build the graph, train, convert, evaluate, record);
  ``spikegcn textgcn``. Its training loop: :mod:`~spikegcn.experiments.textgcn_train`.
* :mod:`~spikegcn.experiments.cnn`: a trained CNN converted and evaluated on an image set; ``spikegcn cnn``.
  Training, fine-tuning and checkpoints: :mod:`~spikegcn.experiments.cnn_train` (``spikegcn finetune``).
* :mod:`~spikegcn.experiments.sweep`: resumable grid sweeps over (T, Q, Tw) and the MAPE curves
  (``spikegcn sweep``, ``spikegcn mape``); their ``--T``/``--Q``/``--Tw`` grids: :mod:`~spikegcn.experiments.grid`.
* :mod:`~spikegcn.experiments.report`: the CNN-vs-GCN report and its figures (``spikegcn report``).

Submodules are imported on use, so ``import spikegcn.experiments`` loads nothing heavy.
"""
