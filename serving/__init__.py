"""tfinv.serving: the serving stage (TF Serving config and client, ONNX Runtime server); depends on tfinv.export."""
