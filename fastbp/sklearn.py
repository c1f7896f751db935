"""Deprecated: the scikit-learn estimators are in ``fastbp.interop.sklearn``."""
import warnings

from fastbp.interop.sklearn import MLPClassifier, MLPRegressor  # noqa: F401

warnings.warn("fastbp.sklearn is deprecated and will be removed in the next release; import MLPClassifier and "
              "MLPRegressor from fastbp.interop.sklearn", DeprecationWarning, stacklevel=2)
