"""The ``topselect demo`` search on scikit-learn's handwritten digits."""

from topselect.demo._run import DemoResult, DemoSettings, accuracy, build_model, run_demo

__all__ = ["DemoResult", "DemoSettings", "accuracy", "build_model", "run_demo"]
