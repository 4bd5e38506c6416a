"""Compute backends: `local` (processes on this machine) and `kubernetes` (Jobs)."""
