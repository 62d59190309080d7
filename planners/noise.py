"""Sampling noise for trajectory optimisers: white and colored (1/f^beta) Gaussian noise.

Colored noise along the horizon makes sampled action sequences temporally correlated,
which iCEM (Pinneri et al., 2020, "Sample-efficient Cross-Entropy Method for Real-time
Planning") found to need far fewer samples than white noise on tasks that want smooth
actions. The generator follows Timmer & Koenig (1995): draw Gaussian Fourier coefficients
whose power falls as f^-beta, transform back, and rescale to unit variance.
"""

from __future__ import annotations

import functools
import math

import torch

__all__ = ["sample_noise"]


@functools.lru_cache(maxsize=64)
def _colored_spectrum(horizon: int, beta: float) -> tuple[torch.Tensor, float]:
    """Amplitude per frequency bin and the std of the resulting time series.

    Computed once per (horizon, beta) on the CPU: a constant of the config. Computing it on
    the sampling device each call would cost a host synchronisation per iteration on CUDA
    (`sigma` is a Python float), which also forbids recording a plan as a CUDA graph.

    Returns:
        scale: Tensor[horizon // 2 + 1], the amplitude f^(-beta / 2), with frequencies
            below 1/horizon raised to 1/horizon so that the zero-frequency term stays finite.
        sigma: the exact standard deviation of a series built by `sample_noise` from these
            amplitudes, used to normalise its output to unit variance.
    """
    freqs = torch.fft.rfftfreq(horizon, dtype=torch.float64)
    freqs = freqs.clamp(min=1.0 / horizon)
    scale = freqs.pow(-beta / 2.0)
    power = scale.pow(2)
    # irfft of n points: x_t = (X_0 + 2 sum_k Re(X_k e^{2 pi i k t / n}) [+ X_nyq (-1)^t]) / n.
    # The real-only bins (zero and, for even n, Nyquist) carry variance 2 s^2 each; every
    # other bin contributes 4 s^2 (two quadratures, doubled by its mirror frequency).
    variance = 2.0 * power[0]
    if horizon % 2 == 0:
        variance = variance + 4.0 * power[1:-1].sum() + 2.0 * power[-1]
    else:
        variance = variance + 4.0 * power[1:].sum()
    sigma = math.sqrt(float(variance)) / horizon
    return scale.to(torch.float32), sigma


@functools.lru_cache(maxsize=64)
def _spectrum_on(horizon: int, beta: float, device: torch.device) -> tuple[torch.Tensor, float]:
    """`_colored_spectrum` moved to `device` once: a copy from host memory inside the
    sampling call would be a synchronous transfer, which a CUDA graph cannot record."""
    scale, sigma = _colored_spectrum(horizon, beta)
    return scale.to(device), sigma


def sample_noise(
    shape: tuple[int, ...],
    beta: float,
    generator: torch.Generator | None,
    device: torch.device,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard Gaussian noise, white (beta = 0) or colored along the horizon axis.

    Args:
        shape: (..., H, A): the horizon is the second-to-last axis.
        beta: power-spectrum exponent; 0 is white noise, 1 pink, 2 brown (red).
        generator: random source; the same generator state gives the same noise.
        device, dtype: where and how to create the noise.

    Returns:
        Tensor[shape] with zero mean and unit variance per entry.
    """
    if beta == 0.0:
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    *lead, horizon, action_dim = shape
    if horizon == 1:
        # A single step has no frequencies to colour.
        return torch.randn(shape, generator=generator, device=device, dtype=dtype)
    scale, sigma = _spectrum_on(horizon, float(beta), torch.device(device))
    num_bins = scale.shape[0]
    coeff_shape = (*lead, action_dim, num_bins)
    real = torch.randn(coeff_shape, generator=generator, device=device) * scale
    imag = torch.randn(coeff_shape, generator=generator, device=device) * scale
    # The zero-frequency coefficient (and the Nyquist one of an even horizon) of a real
    # series is real: drop the imaginary part and keep the same power.
    imag[..., 0] = 0.0
    real[..., 0] = real[..., 0] * math.sqrt(2.0)
    if horizon % 2 == 0:
        imag[..., -1] = 0.0
        real[..., -1] = real[..., -1] * math.sqrt(2.0)
    series = torch.fft.irfft(torch.complex(real, imag), n=horizon, dim=-1) / sigma  # [..., A, H]
    return series.transpose(-1, -2).to(dtype).contiguous()  # [..., H, A]
