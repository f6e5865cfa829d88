"""hvdweather."""
