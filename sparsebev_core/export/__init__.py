"""Deployment without PyTorch: ONNX export of the two seam calls and the onnxruntime runtime.

``onnx_export.export_onnx`` writes ``encoder.onnx``, ``head.onnx`` and ``export.json``;
``manifest`` reads and checks that folder; ``onnx_runtime.OnnxRuntime`` runs it behind the
runtime seam (``model/runtime.py``). docs/deploy.md has the whole route.
"""
