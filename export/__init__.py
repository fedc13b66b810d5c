"""tfinv.export: the export stage (ONNX and TF Serving SavedModel); depends on tfinv, never the reverse."""
