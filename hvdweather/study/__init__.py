"""Studies: a grid of trainings (hvdweather-sweep) and one table comparing runs (hvdweather-compare)."""
