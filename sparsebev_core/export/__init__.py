"""Deployment without PyTorch, the exporting side: ONNX graphs of the two seam calls.

``onnx_export.export_onnx`` (``sparsebev export-onnx``) writes ``encoder.onnx``, ``head.onnx``
and ``export.json``; ``graphs`` holds the seam calls as modules (the v1 head or, for
SparseBEV++, the recurrent head with its state in and out; ``recurrent_probe``: the stream
that head is traced and measured on). Running an export is the
streaming side's: ``streaming.onnx_manifest`` reads and checks the folder and
``streaming.onnx_runtime.OnnxRuntime`` runs it behind the runtime seam
(``streaming/runtime.py``). docs/deploy.md has the whole route.
"""
