"""Model export: ONNX, TensorRT engines (installed as ``nullswap_sdk.export``)."""
