"""A sequence-reduction trial's data: the labelled set, its normalisation and its validation split.

`load_classification` takes the `ClassificationData` from the trial's context. `normalise` centres
and whitens (Section 3.4.3.1). Supervised methods hold out a seeded stratified `valid_fraction` of
the training set, the same split in every trial (`split_indices`, seed `judges.SPLIT_SEED`).
"""

from __future__ import annotations

import numpy as np

from seqrep.method import ClassificationData, SeqrepError, Session
from trainables.kit.judges import SPLIT_SEED


def load_classification(session: Session) -> ClassificationData:
    data = session.context.data
    if not isinstance(data, ClassificationData):
        raise SeqrepError(f"sequence reduction needs a labelled sequence data set (ucr-<name>, characters, "
                          f"tidigits), got {session.context.dataset!r}")
    return data


def normalise(data: ClassificationData, how: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Centre and whiten each sequence or the whole set (Section 3.4.3.1); returns (train, test).

    `sequence`: every sequence's features to mean 0 and standard deviation 1 over its own steps
    (a constant feature is only centred). `dataset`: PCA whitening (scikit-learn, `whiten=True`)
    fitted on all training frames and applied to both splits.
    """
    train, test = list(data.train), list(data.test)
    if how == "none":
        return train, test
    if how == "sequence":
        def z(s: np.ndarray) -> np.ndarray:
            std = s.std(0)
            return ((s - s.mean(0)) / np.where(std > 0, std, 1.0)).astype(np.float32)
        return [z(s) for s in train], [z(s) for s in test]
    if how == "dataset":
        from sklearn.decomposition import PCA

        pca = PCA(whiten=True).fit(np.concatenate(train).astype(np.float64))
        return ([pca.transform(s).astype(np.float32) for s in train],
                [pca.transform(s).astype(np.float32) for s in test])
    raise ValueError(f"normalise must be none, sequence or dataset, got {how!r}")


def split_indices(data: ClassificationData, supervised: bool, valid_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    """Training rows to fit on and rows to validate on: a stratified held-out part for supervised
    methods (at least 2 examples per class), all rows and none for unsupervised ones."""
    from sklearn.model_selection import train_test_split

    y_all = np.asarray(data.y_train)
    if not supervised:
        return np.arange(len(y_all)), np.arange(0)
    counts = np.bincount(y_all, minlength=data.n_classes)
    if counts.min() < 2:
        raise SeqrepError(f"{data.name}: class {data.classes[int(counts.argmin())]!r} has {int(counts.min())} "
                          "training example(s); a stratified validation split needs at least 2")
    fit_idx, valid_idx = train_test_split(np.arange(len(y_all)), test_size=valid_fraction,
                                          stratify=y_all, random_state=SPLIT_SEED)
    return np.sort(fit_idx), np.sort(valid_idx)
