"""Inverse problems: forward operators generating ``(x, y)`` pairs, and posterior statistics.

``y = A(x) + noise``; a conditional flow (`tfinv.models.ConditionalGlow`,
`tfinv.models.ConditionalVectorFlow`) learns ``p(x | y)``.
"""

from tfinv.inverse_problems.baselines import (cnn_regressor, matched_cnn_regressor, matched_unet_regressor,
                                              unet_regressor)
from tfinv.inverse_problems.calibration_chart import calibration_chart
from tfinv.inverse_problems.deblurring import Deblurring, gaussian_kernel
from tfinv.inverse_problems.inpainting import Inpainting
from tfinv.inverse_problems.linear_gaussian import LinearGaussian, gaussian_kl
from tfinv.inverse_problems.posterior import (calibration, credible_interval, posterior_mean, posterior_std,
                                              psnr)
from tfinv.inverse_problems.super_resolution import SuperResolution
from tfinv.inverse_problems.tomography import FilteredBackProjection, Tomography, random_ellipses, shepp_logan

__all__ = ["Deblurring", "FilteredBackProjection", "Inpainting", "LinearGaussian", "SuperResolution", "Tomography",
           "calibration", "calibration_chart", "cnn_regressor", "credible_interval", "gaussian_kernel", "gaussian_kl",
           "matched_cnn_regressor", "matched_unet_regressor", "posterior_mean", "posterior_std", "psnr",
           "random_ellipses", "shepp_logan", "unet_regressor"]
