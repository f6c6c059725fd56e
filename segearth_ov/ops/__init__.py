"""Native ops with one Python entry point each."""
from .adaptive_conv import adaptive_conv, adaptive_conv_backend, local_correlation
from .bicubic_conv import bicubic_conv

__all__ = ['adaptive_conv', 'adaptive_conv_backend', 'bicubic_conv', 'local_correlation']
