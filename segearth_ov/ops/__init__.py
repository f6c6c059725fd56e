"""Native ops with one Python entry point each."""
from .adaptive_conv import adaptive_conv, adaptive_conv_backend, local_correlation

__all__ = ['adaptive_conv', 'adaptive_conv_backend', 'local_correlation']
