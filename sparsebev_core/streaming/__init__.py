"""Streaming inference: one ``Frame`` in, ``Detections`` out, with a cache of past features.

``detector`` (``StreamingDetector``: the orchestration), ``runtime`` (the seam: the two calls a
network implementation provides, and ``EagerRuntime``, torch eager), ``onnx_runtime`` +
``onnx_manifest`` (the seam on onnxruntime sessions of an export folder), ``feature_cache``.
A new runtime (TensorRT, ...) goes here, beside them.
"""
