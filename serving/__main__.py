"""``python -m tfinv.serving --export-dir DIR [--port 8501]``: the ONNX server (no TensorFlow)."""

import sys

from tfinv.serving.cli import main

if __name__ == "__main__":
    sys.exit(main())
