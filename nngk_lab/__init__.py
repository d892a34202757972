"""nngk_lab: deep metric learning and classification with nearest neighbour Gaussian
kernels (Meyer, Harwood, Drummond, ICIP 2018), for notebooks and the command line.

Modules, in the order data flows: ``data`` + ``models`` -> ``loss`` + ``bank`` ->
``config`` -> ``loaders`` + ``parts`` + ``step`` + ``classify`` -> ``runs`` -> ``train`` ->
``evaluate`` -> ``compare`` -> ``cli``; then ``explore``, ``viz`` and ``widgets`` for the
notebooks.
"""

__version__ = "0.1.0"
