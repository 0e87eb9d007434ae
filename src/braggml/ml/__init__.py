"""Learned peak finders: candidate patches classified by a CNN (PyTorch) or an SVM (scikit-learn).

The only part of braggml that imports torch and scikit-learn (``pip install 'braggml[ml]'``); nothing is
imported until a submodule is used.

- :mod:`braggml.ml.patches`: candidates, patches, labels, frame-wise splits;
- :mod:`braggml.ml.cnn`: :class:`~braggml.ml.cnn.PatchCNN`, training, ``load_model``;
- :mod:`braggml.ml.svm`: the scikit-learn pipeline, grid search, pickle-free ``load_model``;
- :mod:`braggml.ml.finders`: the ``cnn`` and ``svm`` peak finders;
- :mod:`braggml.ml.checkpoint`: the model file (safetensors arrays + JSON settings);
- :mod:`braggml.ml.describe`: what a model file holds (``braggml info MODEL``);
- :mod:`braggml.ml.cli_support`: ``braggml train``.
"""
