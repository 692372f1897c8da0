"""EdgeFleet device agent. Importing it stays light: no FastAPI, SQLModel, onnx or TensorFlow."""

__version__ = "0.1.0"
