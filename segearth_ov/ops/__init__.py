"""Native ops with one Python entry point each."""
from .adaptive_conv import adaptive_conv, adaptive_conv_backend

__all__ = ['adaptive_conv', 'adaptive_conv_backend']
