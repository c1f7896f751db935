"""fastbp from other libraries: scikit-learn estimators."""
