"""Clients of external services (Rucio, the Tier-0 Data Service)."""
