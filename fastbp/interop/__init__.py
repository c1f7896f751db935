"""fastbp with other libraries: scikit-learn estimators, and ONNX export."""
