"""Train an MLP on scikit-learn's handwritten digits and report test accuracy."""
import time

import numpy as np

import fastbp

try:
    from sklearn.datasets import load_digits
except ImportError:
    raise SystemExit("this example needs scikit-learn: pip install 'fastbp[sklearn]'") from None

X, y = load_digits(return_X_y=True)
X = X / 16.0
order = np.random.default_rng(0).permutation(len(X))
test, train = order[:360], order[360:]

model = fastbp.MLP([64, 128, 10], activation="relu", seed=0)
trainer = fastbp.Trainer(model, fastbp.CrossEntropyLoss(), fastbp.Adam(model, lr=2e-3))
start = time.perf_counter()
history = trainer.fit(X[train], y[train], epochs=40, batch_size=32, seed=0).loss
elapsed = time.perf_counter() - start
accuracy = (trainer.predict(X[test]).argmax(1) == y[test]).mean()
print(f"epochs 40  first loss {history[0]:.4f}  last loss {history[-1]:.4f}")
print(f"test accuracy {accuracy:.4f} on {len(test)} held-out digits  ({elapsed:.2f} s)")
