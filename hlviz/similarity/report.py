"""The result of :func:`~hlviz.similarity.cka_matrix`: the layer x layer table and how to read it.

>>> import pandas as pd
>>> table = pd.DataFrame([[1.0, 0.3], [0.3, 1.0]], index=["a", "b"], columns=["a", "b"])
>>> report = CKAReport(table, method="linear", n=100)
>>> report.summary()
  layer best_match  cka  same_layer
0     a          b  0.3         1.0
1     b          a  0.3         1.0
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes

__all__ = ["CKAReport"]


@dataclass(frozen=True)
class CKAReport:
    """CKA between every pair of layers: ``matrix`` is a ``pandas.DataFrame`` whose rows are
    the layers of ``acts`` and whose columns are those of ``other`` (the same layers when
    ``other`` was not given: then it is symmetric with a unit diagonal). ``method`` is the
    estimator (``"linear"``, ``"rbf"``, ``"minibatch"``) and ``n`` the number of inputs.

    ``loc``, ``iloc``, ``values``, ``index``, ``columns`` and ``shape`` read the matrix as a
    DataFrame would; :meth:`to_frame` gives a copy of it.
    """

    matrix: pd.DataFrame
    method: str
    n: int

    @property
    def symmetric(self) -> bool:
        """Whether rows and columns are the same layers (one set of activations)."""
        return list(self.matrix.index) == list(self.matrix.columns)

    def to_frame(self) -> pd.DataFrame:
        """A copy of the layer x layer table."""
        return self.matrix.copy()

    def summary(self) -> pd.DataFrame:
        """One row per row layer: ``best_match`` (the column layer most similar to it, itself
        excluded when rows and columns are the same layers), its ``cka``, and ``same_layer``
        (CKA with the column of the same name: across two models or seeds, how much the
        layer was reproduced; NaN when there is none)."""
        import pandas as pd

        values = self.matrix.to_numpy(dtype=float).copy()
        cols = [str(c) for c in self.matrix.columns]
        rows = []
        for i, name in enumerate(map(str, self.matrix.index)):
            line = values[i].copy()
            if self.symmetric and len(cols) > 1:
                line[i] = -np.inf
            j = int(np.argmax(line))
            same = float(values[i, cols.index(name)]) if name in cols else float("nan")
            rows.append((name, cols[j], float(values[i, j]), same))
        return pd.DataFrame(rows, columns=["layer", "best_match", "cka", "same_layer"])

    def plot(self, *, ax: Axes | None = None, annot: bool = True, title: str | None = None) -> Axes:
        """The table as a heat map on a fixed 0..1 scale (:func:`hlviz.plotting.plot_cka`,
        seaborn); returns the Axes."""
        from ..plotting.figures import plot_cka

        return plot_cka(self.matrix, ax=ax, annot=annot, title=title)

    # read-only DataFrame views, so code written for the table keeps reading it
    @property
    def loc(self) -> Any:
        """``matrix.loc``: ``report.loc["layer1", "layer2"]``."""
        return self.matrix.loc

    @property
    def iloc(self) -> Any:
        """``matrix.iloc``."""
        return self.matrix.iloc

    @property
    def values(self) -> np.ndarray:
        """The CKA values, ``(rows, columns)``."""
        return self.matrix.to_numpy()

    @property
    def index(self) -> pd.Index:
        """The row layers."""
        return self.matrix.index

    @property
    def columns(self) -> pd.Index:
        """The column layers."""
        return self.matrix.columns

    @property
    def shape(self) -> tuple[int, int]:
        """``(row layers, column layers)``."""
        return self.matrix.shape
