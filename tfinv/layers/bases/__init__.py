"""Family base classes of the layers: the shared wiring of one family of invertible layers
(couplings, LU linear maps, Fourier-domain and triangular convolutions, convolution exponentials,
reversible blocks, residual blocks). They are not part of the layer contract (`tfinv.core`);
each concrete layer in `tfinv.layers` subclasses one of them. Nothing is imported here, so a
layer module can import its base without importing every layer."""
