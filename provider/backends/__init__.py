"""Adapters: one module per real system behind each port in provider.services.ports."""
