"""nngk_lab: deep metric learning and classification with nearest neighbour Gaussian
kernels (Meyer, Harwood, Drummond, ICIP 2018), for notebooks and the command line.

Modules, in the order data flows: ``data`` -> ``models`` -> ``bank`` + ``loss`` ->
``train`` -> ``evaluate`` -> ``compare``.
"""

__version__ = "0.1.0"
