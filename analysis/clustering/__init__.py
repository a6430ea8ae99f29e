"""Clustering: the kNN graph, the estimators (scikit-learn API), condensing, metrics."""
