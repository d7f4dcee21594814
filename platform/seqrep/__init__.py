"""seqrep: the experiments of Bayer's *Learning Sequence Representations* (2015) as Ray Tune studies.

Importing this package has no side effects: Ray, MLflow and data are touched only by the
functions that need them.
"""

__version__ = "0.1.0"
